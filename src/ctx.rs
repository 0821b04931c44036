//! Per-request state carried through the Pingora phases.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::body::{Replay, RequestBody};
use crate::config::OriginPolicy;
use crate::metrics::Rejection;
use crate::routing::Route;

pub struct RequestCtx {
    /// `Helicone-Id` of this request.
    pub id: String,
    pub start: Instant,
    /// Id of the gateway key that authenticated the request (never the key).
    pub key_id: Option<Arc<str>>,
    pub route: Option<Route>,
    /// The SSRF-checked address the upstream connection goes to.
    pub addr: Option<SocketAddr>,
    pub policy: OriginPolicy,
    pub body: RequestBody,
    pub replay: Replay,
    /// Upstream attempts so far (a stale pooled connection may cost a second one).
    pub attempt: u32,
    pub upstream_start: Option<Instant>,
    pub ttfb: Option<Duration>,
    pub rejection: Option<Rejection>,
    /// `requests_in_flight` was incremented for this request.
    pub in_flight: bool,
}

impl RequestCtx {
    pub fn new() -> Self {
        RequestCtx {
            id: String::new(),
            start: Instant::now(),
            key_id: None,
            route: None,
            addr: None,
            policy: OriginPolicy::default(),
            body: RequestBody::default(),
            replay: Replay::default(),
            attempt: 0,
            upstream_start: None,
            ttfb: None,
            rejection: None,
            in_flight: false,
        }
    }

    pub fn provider_label(&self) -> &str {
        self.route.as_ref().map_or("none", Route::provider_label)
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
