//! Per-request state carried through the Pingora phases.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::body::{Replay, RequestBody};
use crate::cache::Policy;
use crate::config::OriginPolicy;
use crate::error::GatewayError;
pub use crate::export::record::Attempt;
use crate::failover::{CodeSet, Cursor, RetryPolicy};
use crate::metrics::Rejection;
use crate::routing::Route;
use crate::unified::response::{Mapper, Report};
use crate::unified::{Candidate, Op};
use crate::usage::Tap;

/// One upstream the request may go to: the primary, or a `Helicone-Fallbacks` entry.
pub struct Target {
    pub route: Route,
    /// The SSRF-checked address the upstream connection goes to.
    pub addr: SocketAddr,
    pub policy: OriginPolicy,
    pub approved: bool,
    /// `scheme://host[:port]`, for quotas, health and logs.
    pub origin: String,
    /// Replaces the client's headers for this target (fallback entries).
    pub headers: Option<Vec<(HeaderName, HeaderValue)>>,
    /// This target's body when it differs from the client's (`bodyKeyOverride`).
    pub body: Option<Bytes>,
    /// Statuses that move on to the next target (fallback entries, unified attempts).
    pub on_codes: Option<CodeSet>,
    /// The provider and model of a unified-API attempt.
    pub unified: Option<Candidate>,
}

/// A cached request's state (`Helicone-Cache-Enabled: true`).
pub struct CacheState {
    pub policy: Policy,
    /// The key of the chosen bucket (set once the body is read).
    pub key: String,
    pub bucket: u8,
    /// `hit` or `miss`, once known.
    pub status: Option<&'static str>,
    /// On a hit: the id of the request whose answer was served.
    pub reference: Option<String>,
}

/// A unified-API request's own state.
pub struct UnifiedState {
    pub op: Op,
    /// What the client asked for: the translated Anthropic stream ends with a usage chunk.
    pub include_usage: bool,
    /// Rewrites the answer on its way to the client (Anthropic translation, aggregated error).
    pub mapper: Option<Mapper>,
}

pub struct RequestCtx {
    /// `Helicone-Id` of this request.
    pub id: String,
    pub start: Instant,
    pub started_at: std::time::SystemTime,
    /// A health probe: answered, counted, not logged as a request.
    pub health_probe: bool,
    /// Id of the gateway key that authenticated the request (never the key).
    pub key_id: Option<Arc<str>>,
    /// Primary target first, then fallbacks.
    pub targets: Vec<Target>,
    pub cursor: Cursor,
    pub retry: Option<RetryPolicy>,
    /// `Helicone-Fallbacks` drove the plan (adds `Helicone-Fallback-Index`).
    pub fallback_mode: bool,
    pub attempts: Vec<Attempt>,
    pub attempt_start: Option<Instant>,
    /// The running attempt was already judged (and recorded) by a response hook.
    pub judged: bool,
    /// `upstream_response_filter` turned the answer into a retry (kept by `error_while_proxy`).
    pub retry_pending: bool,
    /// Wait before the next attempt (backoff), taken by `upstream_peer`.
    pub next_delay: Option<Duration>,
    /// An error decided inside a hook that cannot answer itself (`upstream_peer`).
    pub pending_error: Option<GatewayError>,
    pub body: RequestBody,
    pub replay: Replay,
    /// Upstream connections made so far (a stale pooled connection may cost one more).
    pub attempt: u32,
    pub upstream_start: Option<Instant>,
    pub ttfb: Option<Duration>,
    pub rejection: Option<Rejection>,
    /// `requests_in_flight` was incremented for this request.
    pub in_flight: bool,
    /// Watches the response for usage and the first token.
    pub tap: Option<Tap>,
    /// The start of the response body, kept for the log record (up to the export cap).
    pub response_capture: Vec<u8>,
    pub response_total: usize,
    /// Set for requests of the unified API.
    pub unified: Option<UnifiedState>,
    /// Set when the request asked for the cache.
    pub cache: Option<CacheState>,
    /// The first attempt's origin quota is charged when it starts (a cache hit is not charged).
    pub quota_deferred: bool,
    /// `Helicone-RateLimit-Policy`, parsed.
    pub rate_policy: Option<crate::limits::policy::Policy>,
    /// What the request holds in the rate-limit counters, and the headers it gets.
    pub limits: crate::limits::rules::Counted,
    /// The limits of a request that looks up the cache: counted on a miss, only shown on a hit
    /// (a cache hit does not count against rate limits).
    pub limits_deferred: Option<crate::limits::rules::Plan>,
    /// The prompt template the request was rendered from.
    pub prompt: Option<crate::prompts::Used>,
    /// Helicone metadata from a unified body's `helicone` object.
    pub body_meta: Option<crate::metadata::BodyMeta>,
}

impl RequestCtx {
    pub fn new() -> Self {
        RequestCtx {
            id: String::new(),
            start: Instant::now(),
            started_at: std::time::SystemTime::now(),
            health_probe: false,
            key_id: None,
            targets: Vec::new(),
            cursor: Cursor::default(),
            retry: None,
            fallback_mode: false,
            attempts: Vec::new(),
            attempt_start: None,
            judged: false,
            retry_pending: false,
            next_delay: None,
            pending_error: None,
            body: RequestBody::default(),
            replay: Replay::default(),
            attempt: 0,
            upstream_start: None,
            ttfb: None,
            rejection: None,
            in_flight: false,
            tap: None,
            response_capture: Vec::new(),
            response_total: 0,
            unified: None,
            cache: None,
            quota_deferred: false,
            rate_policy: None,
            limits: Default::default(),
            limits_deferred: None,
            prompt: None,
            body_meta: None,
        }
    }

    /// Whether the request looks up the response cache (it asked, and its key was made).
    pub fn looks_up_cache(&self) -> bool {
        self.cache.as_ref().is_some_and(|c| !c.key.is_empty())
    }

    pub fn target(&self) -> Option<&Target> {
        self.targets.get(self.cursor.index)
    }

    pub fn route(&self) -> Option<&Route> {
        self.target().map(|t| &t.route)
    }

    /// The body the current target gets.
    pub fn body_bytes(&self) -> &Bytes {
        self.target()
            .and_then(|t| t.body.as_ref())
            .unwrap_or(&self.body.bytes)
    }

    pub fn provider_label(&self) -> &str {
        self.route().map_or("none", Route::provider_label)
    }

    /// The answer was a stream whose terminal event went to the client: an error on the client
    /// side after that (the openai SDK closes the connection at `data: [DONE]`, before the
    /// body's last chunk) does not make the request fail.
    pub fn stream_complete(&self) -> bool {
        self.tap.as_ref().is_some_and(|t| t.terminal)
    }

    /// The provider's answer, as it came (usage is read from it).
    pub fn tap_body(&mut self, chunk: &[u8]) {
        if let Some(t) = self.tap.as_mut() {
            t.on_chunk(chunk);
        }
    }

    /// The answer as the client gets it, kept for the record up to `capture_cap`.
    pub fn capture_body(&mut self, chunk: &[u8], capture_cap: usize) {
        self.response_total += chunk.len();
        let room = capture_cap.saturating_sub(self.response_capture.len());
        self.response_capture
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// Records the end of the running attempt.
    pub fn record_attempt(&mut self, status: u16, error: Option<String>) {
        let latency_ms = self
            .attempt_start
            .take()
            .map_or(0, |s| s.elapsed().as_millis() as u64);
        let target = self.target().map_or_else(String::new, |t| t.origin.clone());
        let unified = self.target().and_then(|t| t.unified.as_ref());
        let provider = unified.map(|c| c.endpoint.name.clone());
        let model = unified.map(|c| c.model_id.clone());
        self.attempts.push(Attempt {
            target,
            status,
            latency_ms,
            error,
            retry: self.cursor.retries,
            provider,
            model,
        });
    }

    /// The unified attempts so far, as the client's error lists them.
    pub fn reports(&self) -> Vec<Report> {
        self.attempts
            .iter()
            .map(|a| Report {
                provider: a.provider.clone().unwrap_or_default(),
                model: a.model.clone().unwrap_or_default(),
                status: a.status,
                message: a
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("the provider answered {}", a.status)),
            })
            .collect()
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_record_target_status_error_and_retry_number() {
        let mut ctx = RequestCtx::new();
        let (origin, _) = crate::routing::Origin::parse("https://a.example").unwrap();
        ctx.targets.push(Target {
            route: Route {
                origin,
                upstream_path: "/".into(),
                provider: None,
                approved: false,
                kind: crate::routing::RouteKind::TargetHeader,
            },
            addr: "1.1.1.1:443".parse().unwrap(),
            policy: OriginPolicy::default(),
            approved: false,
            origin: "https://a.example".into(),
            headers: None,
            body: None,
            on_codes: None,
            unified: None,
        });
        ctx.attempt_start = Some(Instant::now());
        ctx.record_attempt(502, Some("refused".into()));
        ctx.cursor.retries = 1;
        ctx.attempt_start = Some(Instant::now());
        ctx.record_attempt(200, None);
        let json = serde_json::to_value(&ctx.attempts).unwrap();
        assert_eq!(json[0]["target"], "https://a.example");
        assert_eq!(json[0]["status"], 502);
        assert_eq!(json[0]["error"], "refused");
        assert_eq!(json[0]["retry"], 0);
        assert_eq!(json[1]["status"], 200);
        assert_eq!(json[1]["retry"], 1);
        assert!(json[1]["error"].is_null());
    }
}
