//! `impl ProxyHttp for Gateway`: orchestrates the Pingora phases. Each hook calls one module's API and moves data between the parts of the request's context; the work lives in the modules: admission (`admit`), targets (`crate::plan`), each attempt (`attempt`), the manual exchange (`manual`), what the client gets (`respond`), the end of the request (`finish`, `log_record`), the cache (`crate::cache::request`) and the limits (`crate::limits`).

mod admit;
mod attempt;
mod finish;
mod log_record;
mod manual;
mod respond;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::{CacheKey, NoCacheReason, RespCacheable};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::body::BodyBudget;
use crate::cache::{self, ResponseCache};
use crate::config::Config;
use crate::ctx::RequestCtx;
use crate::error::GatewayError;
use crate::export::Exporter;
use crate::failover::health::Health;
use crate::forward::Forwarder;
use crate::lifecycle;
use crate::limits::rules::RateLimits;
use crate::limits::OriginLimits;
use crate::metrics::Metrics;
use crate::routing::OriginCache;
use crate::ssrf;
use crate::upstream;

pub struct Gateway {
    pub cfg: Arc<Config>,
    /// Gateway keys (`auth.keys`).
    pub keys: crate::auth::KeyStore,
    pub guard: ssrf::Guard,
    pub origins: OriginCache,
    /// Unapproved-origin quotas.
    pub origin_limits: OriginLimits,
    /// Rate-limit policies and gateway-key limits.
    pub rate_limits: RateLimits,
    /// Prompt templates (`None` when `prompts:` is not configured).
    pub prompts: Option<Arc<crate::prompts::Store>>,
    pub metrics: Arc<Metrics>,
    pub forwarder: Forwarder,
    pub health: Health,
    pub exporter: Exporter,
    /// Prices and routes, swapped together by `pricing.refresh`.
    pub registry: Arc<crate::refresh::Live>,
    /// `None` when `cache.enabled` is false.
    pub cache: Option<ResponseCache>,
    /// Request bodies held in memory by all requests (`limits.max_inflight_body_bytes`).
    pub body_budget: Arc<BodyBudget>,
    /// Cleared when shutdown starts: `/readyz` then answers 503.
    pub ready: Arc<AtomicBool>,
}

/// How `admit` ended when it did not fail.
enum Admitted {
    /// Go on to the upstream through Pingora.
    Proxy,
    /// A response was already written.
    Done,
}

impl Gateway {
    /// How much of a response body the log record keeps (nothing when no sink is configured).
    fn capture_cap(&self) -> usize {
        if self.exporter.enabled() {
            self.cfg.export.max_body_bytes
        } else {
            0
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.metrics.in_flight.inc();
        ctx.outcome.in_flight = true;
        match self.admit(session, ctx).await {
            Ok(Admitted::Proxy) => Ok(false),
            Ok(Admitted::Done) => Ok(true),
            Err(e) => {
                ctx.outcome.rejection = e.rejection();
                respond::error(session, ctx, &e).await;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let fail =
            |e: GatewayError| Error::explain(ErrorType::HTTPStatus(e.status()), e.to_string());
        if let Err(e) = self.next_attempt(ctx).await {
            let err = fail(GatewayError::Internal(String::new()));
            ctx.outcome.pending_error = Some(e);
            return Err(err);
        }
        self.peer(ctx).map(Box::new).map_err(fail)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(t) = ctx.target() else {
            return Error::e_explain(ErrorType::InternalError, "no route");
        };
        let body_len = ctx.facts.body.present.then(|| ctx.body_bytes().len());
        upstream::prepare_request(upstream_request, &t.route, body_len, t.headers.as_deref())
            .map_err(|e| Error::explain(ErrorType::HTTPStatus(e.status()), e.to_string()))
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let bytes = ctx.body_bytes().clone();
        ctx.replay.filter(
            ctx.attempts.connections(),
            ctx.facts.body.present,
            &bytes,
            body,
            end_of_stream,
        );
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if self.judge_response(ctx, upstream_response).again() {
            return Err(attempt::dropped(status));
        }
        ctx.response
            .ttfb
            .get_or_insert_with(|| ctx.facts.start.elapsed());
        if let Some(e) = respond::failed_without_body(ctx, upstream_response) {
            ctx.outcome.pending_error = Some(e);
            let failed = "every unified attempt failed";
            return Err(Error::explain(ErrorType::HTTPStatus(status), failed));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(rc), Some(state)) = (self.cache.as_ref(), ctx.cache.as_mut()) {
            if let Some((provider, model)) =
                cache::request::outcome(rc, &session.cache, upstream_response, state)?
            {
                attempt::point_at_cached(&mut ctx.attempts, &provider, model.as_ref());
            }
        }
        lifecycle::close_if_draining(session);
        if let Some(plan) = ctx.limits.deferred.take() {
            // a cache hit: not counted, shown the limits' room as it is
            self.rate_limits.peek(plan, &mut ctx.limits.counted).await;
        }
        self.shape_response(upstream_response, ctx)
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        // a cache miss: the limits count it now, before anything goes upstream
        let Some(plan) = ctx.limits.deferred.take() else {
            return Ok(true);
        };
        if let Err(e) = self.rate_limits.admit(plan, &mut ctx.limits.counted).await {
            ctx.outcome.rejection = e.rejection();
            respond::error(session, ctx, &e).await;
            return Ok(false);
        }
        Ok(true)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if let Some(rc) = self.cache.as_ref().filter(|_| ctx.looks_up_cache()) {
            session
                .cache
                .enable(rc.store, None, None, Some(rc.lock), None);
        }
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        match ctx.cache.as_ref() {
            Some(c) => Ok(CacheKey::new(c.key.clone(), "")),
            None => Error::e_explain(ErrorType::InternalError, "cache key asked without a cache"),
        }
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let Some(c) = ctx.cache.as_ref() else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        let answered = ctx.target().and_then(|t| t.unified.as_ref());
        let answered = answered.map(|u| (u.endpoint.name.as_str(), u.model_id.as_str()));
        let latency = ctx.facts.start.elapsed();
        cache::request::cacheable(resp, &c.policy, &ctx.facts.id, latency, answered)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        ctx.response
            .filter_body(body, end_of_stream, self.capture_cap());
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.connect_failed(ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        self.exchange_failed(peer, session, e, ctx, client_reused)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        respond::fail_to_proxy(session, e, ctx).await
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        respond::finished_before_error(e, ctx)
    }

    async fn logging(
        &self,
        session: &mut Session,
        e: Option<&pingora_error::Error>,
        ctx: &mut RequestCtx,
    ) {
        let e = e.filter(|e| !respond::finished_before_error(e, ctx));
        self.finish(session, e, ctx).await
    }
}
