//! Per-request state carried through the Pingora phases, in parts, each written by one owner:
//!
//! - `facts` ([`Facts`]): what the request is (id, start, key, body and its parsed extras,
//!   unified op, prompt, metadata). Written by admission in `proxy/admit.rs` (`admit`,
//!   `admit_unified`, `read_body`), with the body rewrites of `rewrite.rs`; read everywhere
//!   after.
//! - `attempts` ([`Attempts`], `failover::attempts`): targets, cursor, retries, fallbacks, the
//!   attempt log. Filled by the plans of `plan.rs`; moved only by the attempt machine, through
//!   the verdicts of `proxy/attempt.rs`.
//! - `replay` ([`Replay`], `body.rs`): what of the request body each connection was sent.
//! - `cache` ([`CacheState`], `cache/request.rs`): the response-cache lookup (key, bucket, hit
//!   or miss, reference). Written by `cache::request` (`make_key`, `outcome`), which touches no
//!   other part: a hit's answering attempt is handed back to the orchestrator, which points the
//!   attempts at it.
//! - `limits` ([`LimitState`]): the rate-limit policy header, the deferred plan of a cache
//!   lookup, what the request holds and the headers it is shown. Written by `limits::rules`
//!   (`admit`, `peek`, `settle` take `&mut ctx.limits.counted`) and admission's `count`
//!   (`proxy/admit.rs`, with the plan of `limits::request`).
//! - `response` ([`ResponseState`], `answer.rs`): the answer on its way out (upstream start,
//!   ttfb, the stream decoded once for the usage tap and the dialect mapper, captured body).
//!   Set up by `proxy/respond.rs` (`shape_response`) and `proxy/attempt.rs` (`next_attempt`),
//!   fed by the body filter.
//! - `outcome` ([`Outcome`]): how the request ends (rejection, an error decided in a hook
//!   that cannot answer, the in-flight gauge). Written by the Pingora hooks in `proxy/mod.rs`.
//!
//! Only the orchestrator (`proxy/` and its hooks) moves data from one part to another; the
//! end of the request (`proxy/finish.rs`, `proxy/log_record.rs`) reads them all.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

pub use crate::answer::ResponseState;
use crate::body::{Replay, RequestBody};
pub use crate::cache::request::CacheState;
use crate::error::GatewayError;
pub use crate::export::record::Attempt;
pub use crate::failover::attempts::Target;
use crate::failover::Attempts;
use crate::metrics::Rejection;
use crate::routing::Route;
use crate::unified::Op;

/// A unified-API request's own state.
pub struct UnifiedState {
    pub op: Op,
    /// What the client asked for: the translated Anthropic stream ends with a usage chunk.
    pub include_usage: bool,
    /// Hints the canonical form could not carry (reported when a translated attempt answers).
    pub dropped: Vec<String>,
}

/// What the request is, decided at admission.
pub struct Facts {
    /// `Helicone-Id` of this request.
    pub id: String,
    pub start: Instant,
    pub started_at: std::time::SystemTime,
    /// A health probe: answered, counted, not logged as a request.
    pub health_probe: bool,
    /// Id of the gateway key that authenticated the request (never the key).
    pub key_id: Option<Arc<str>>,
    pub body: RequestBody,
    /// Set for requests of the unified API.
    pub unified: Option<UnifiedState>,
    /// The prompt template the request was rendered from.
    pub prompt: Option<crate::prompts::Used>,
    /// Helicone metadata from a unified body's `helicone` object.
    pub body_meta: Option<crate::metadata::BodyMeta>,
    /// The dialect the client speaks (its errors and answers come back in it).
    pub client: crate::dialects::Client,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            id: String::new(),
            start: Instant::now(),
            started_at: std::time::SystemTime::now(),
            health_probe: false,
            key_id: None,
            body: RequestBody::default(),
            unified: None,
            prompt: None,
            body_meta: None,
            client: Default::default(),
        }
    }
}

/// The request's rate limits.
#[derive(Default)]
pub struct LimitState {
    /// `Helicone-RateLimit-Policy`, parsed.
    pub policy: Option<crate::limits::policy::Policy>,
    /// What the request holds in the rate-limit counters, and the headers it gets.
    pub counted: crate::limits::rules::Counted,
    /// The limits of a request that looks up the cache: counted on a miss, only shown on a hit
    /// (a cache hit does not count against rate limits).
    pub deferred: Option<crate::limits::rules::Plan>,
}

/// How the request ends.
#[derive(Default)]
pub struct Outcome {
    pub rejection: Option<Rejection>,
    /// An error decided inside a hook that cannot answer itself (`upstream_peer`).
    pub pending_error: Option<GatewayError>,
    /// `requests_in_flight` was incremented for this request.
    pub in_flight: bool,
}

#[derive(Default)]
pub struct RequestCtx {
    pub facts: Facts,
    /// Targets, retries, fallbacks and the attempt log.
    pub attempts: Attempts,
    pub replay: Replay,
    /// Set when the request asked for the cache.
    pub cache: Option<CacheState>,
    pub limits: LimitState,
    pub response: ResponseState,
    pub outcome: Outcome,
}

impl RequestCtx {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the request looks up the response cache (it asked, and its key was made).
    pub fn looks_up_cache(&self) -> bool {
        self.cache.as_ref().is_some_and(|c| !c.key.is_empty())
    }

    /// A cached answer was served.
    pub fn cache_hit(&self) -> bool {
        self.cache.as_ref().is_some_and(CacheState::hit)
    }

    pub fn target(&self) -> Option<&Target> {
        self.attempts.target()
    }

    pub fn route(&self) -> Option<&Route> {
        self.target().map(|t| &t.route)
    }

    /// The body the current target gets (its own, or the client's).
    pub fn body_bytes(&self) -> &Bytes {
        self.target()
            .and_then(|t| t.body.as_ref())
            .unwrap_or(&self.facts.body.bytes)
    }

    pub fn provider_label(&self) -> &str {
        self.route().map_or("none", Route::provider_label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_part_keeps_what_the_client_got_up_to_the_cap() {
        let mut r = ResponseState::default();
        let mut chunk = Some(Bytes::from_static(b"hello"));
        r.filter_body(&mut chunk, false, 4);
        let mut rest = Some(Bytes::from_static(b" world"));
        r.filter_body(&mut rest, true, 4);
        assert_eq!(chunk.as_deref(), Some(&b"hello"[..]));
        assert_eq!(r.capture, b"hell");
        assert_eq!(r.total, 11);
        assert!(!r.stream_complete());
    }

    #[test]
    fn a_new_ctx_looks_up_no_cache_and_sends_the_clients_body() {
        let mut ctx = RequestCtx::new();
        assert!(!ctx.looks_up_cache() && !ctx.cache_hit());
        ctx.facts.body.bytes = Bytes::from_static(b"{}");
        assert_eq!(ctx.body_bytes().as_ref(), b"{}");
        assert_eq!(ctx.provider_label(), "none");
    }
}
