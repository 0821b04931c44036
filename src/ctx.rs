//! Per-request state carried through the Pingora phases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::body::{Replay, RequestBody};
use crate::cache::Policy;
use crate::error::GatewayError;
pub use crate::export::record::Attempt;
pub use crate::failover::attempts::Target;
use crate::failover::Attempts;
use crate::metrics::Rejection;
use crate::routing::Route;
use crate::unified::response::Mapper;
use crate::unified::Op;
use crate::usage::Tap;

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
    /// Targets, retries, fallbacks and the attempt log.
    pub attempts: Attempts,
    /// An error decided inside a hook that cannot answer itself (`upstream_peer`).
    pub pending_error: Option<GatewayError>,
    pub body: RequestBody,
    pub replay: Replay,
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
            attempts: Attempts::default(),
            pending_error: None,
            body: RequestBody::default(),
            replay: Replay::default(),
            upstream_start: None,
            ttfb: None,
            rejection: None,
            in_flight: false,
            tap: None,
            response_capture: Vec::new(),
            response_total: 0,
            unified: None,
            cache: None,
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
        self.attempts.target()
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
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
