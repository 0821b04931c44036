//! `impl ProxyHttp for Gateway`: orchestrates the Pingora phases; each concern lives in its module.

mod log_record;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::{CacheKey, NoCacheReason, RespCacheable};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::body;
use crate::cache;
use crate::cache::request::Keyed;
use crate::config::{Config, UnapprovedPolicy};
use crate::ctx::{CacheState, RequestCtx, Target, UnifiedState};
use crate::endpoints::{self, UnifiedRoute};
use crate::error::GatewayError;
use crate::export::Exporter;
use crate::failover::attempts::{ExchangeError, Recovery, Step};
use crate::failover::{self, health::Health, CodeSet, FallbackEntry, Verdict};
use crate::forward::Forwarder;
use crate::headers;
use crate::lifecycle;
use crate::limits::policy as rate_policy;
use crate::limits::rules::{Plan, RateLimits};
use crate::limits::{self, OriginLimits};
use crate::metrics::{Metrics, Observation};
use crate::routing::{self, RequestMeta, Route, RouteKind};
use crate::ssrf;
use crate::unified::{request as unified_request, response as unified_response, Op};
use crate::upstream;
use crate::usage::Tap;

pub struct Gateway {
    pub cfg: Arc<Config>,
    pub guard: ssrf::Guard,
    pub origins: routing::OriginCache,
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
    pub cache: Option<crate::cache::ResponseCache>,
    /// Request bodies held in memory by all requests (`limits.max_inflight_body_bytes`).
    pub body_budget: Arc<body::BodyBudget>,
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

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers.get(name).map(|v| v.as_bytes())
}

async fn respond_json(
    session: &mut Session,
    status: u16,
    body: impl Into<Bytes>,
    id: &str,
) -> Result<()> {
    let body = body.into();
    let mut h = ResponseHeader::build(status, Some(3))?;
    h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    h.insert_header(headers::HELICONE_ID.clone(), id)?;
    lifecycle::close_if_draining(session);
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}

async fn respond_error(session: &mut Session, ctx: &RequestCtx, e: &GatewayError) {
    respond_error_closing(session, ctx, e, false).await
}

/// Writes the error; `close` tells the client the connection ends here (Pingora will not reuse
/// it after a proxy failure, and a client that reused it would see a reset).
async fn respond_error_closing(
    session: &mut Session,
    ctx: &RequestCtx,
    e: &GatewayError,
    close: bool,
) {
    let res = async {
        let (mut h, body) = e.response(&ctx.facts.id)?;
        if close {
            // Pingora writes `Connection:` from the session's keep-alive state
            session.as_downstream_mut().set_keepalive(None);
            h.insert_header(http::header::CONNECTION, "close")?;
        }
        if let Some(i) = ctx.attempts.fallback_index() {
            h.insert_header(headers::FALLBACK_INDEX.clone(), i.to_string())?;
        }
        insert_limit_headers(&mut h, ctx)?;
        lifecycle::close_if_draining(session);
        session.write_response_header(Box::new(h), false).await?;
        session.write_response_body(Some(body), true).await
    };
    if let Err(err) = res.await {
        log::debug!("could not send error response ({e}): {err}");
    }
}

/// `Helicone-RateLimit-*` while a limit applies to the request.
fn insert_limit_headers(h: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    if let Some(shown) = &ctx.limits.counted.shown {
        for (name, value) in shown.headers() {
            h.insert_header(name, value)?;
        }
    }
    Ok(())
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

    /// Everything `request_filter` decides, in order: health, auth, plan (route or fallbacks,
    /// retry policy), SSRF, quota, body.
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<Admitted, GatewayError> {
        let req = session.req_header();
        ctx.facts.id = uuid::Uuid::new_v4().to_string();
        if let Some(v) = header(req, headers::REQUEST_ID) {
            let given = String::from_utf8_lossy(v);
            match uuid::Uuid::parse_str(given.trim()) {
                Ok(id) => ctx.facts.id = id.to_string(),
                Err(_) => {
                    return Err(GatewayError::BadRequest(format!(
                        "Helicone-Request-Id '{given}' is not a UUID: send one such as {} (it becomes the request's id), or leave the header out",
                        ctx.facts.id
                    )))
                }
            }
        }
        let target = header(req, headers::TARGET_URL);
        let fallbacks = header(req, headers::FALLBACKS);
        if target.is_none() && fallbacks.is_none() {
            let ready = self.ready.load(Ordering::Relaxed);
            if let Some((status, body)) = endpoints::probe(req.uri.path(), ready) {
                ctx.facts.health_probe = true;
                if let Err(e) = respond_json(session, status, body, &ctx.facts.id).await {
                    log::debug!("health response failed: {e}");
                }
                return Ok(Admitted::Done);
            }
        }

        let unified = if target.is_none() && fallbacks.is_none() {
            endpoints::unified_route(req, &self.cfg)
        } else {
            None
        };
        if !self.cfg.keys.is_empty() {
            let mut carried = header(req, headers::HELICONE_AUTH);
            if carried.is_none() && unified.is_some() {
                // the OpenAI SDK's api_key; it never goes upstream (unified attempts carry only
                // the provider's key)
                carried = header(req, http::header::AUTHORIZATION.as_str());
            }
            let key = self.cfg.keys.authenticate(carried);
            ctx.facts.key_id = Some(key?);
        }

        if let Some(v) = header(req, headers::RATELIMIT_POLICY) {
            let v = std::str::from_utf8(v).map_err(|_| {
                GatewayError::BadRequest("Helicone-RateLimit-Policy is not valid UTF-8".into())
            })?;
            ctx.limits.policy = Some(rate_policy::parse(v)?);
        }
        let path_and_query = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let entries = match fallbacks {
            Some(raw) => failover::parse_fallbacks(raw)?,
            None => Vec::new(),
        };
        let retry = failover::parse_retry(headers::reader(&req.headers))?;
        ctx.attempts.set_retry(retry);
        if self.cache.is_some() {
            let policy = cache::policy(headers::reader(&req.headers))?;
            ctx.attempts.defer_first_quota(policy.is_some());
            ctx.cache = policy.map(CacheState::new);
        }
        match unified {
            None => {}
            Some(UnifiedRoute::Local(local)) => {
                let what = local.what();
                let answer =
                    local.answer(req, &self.registry.routing(), self.prompts.as_deref())?;
                if let Err(e) = respond_json(session, answer.0, answer.1, &ctx.facts.id).await {
                    log::debug!("{what} response failed: {e}");
                }
                return Ok(Admitted::Done);
            }
            Some(UnifiedRoute::Call(op)) => return self.admit_unified(session, ctx, op).await,
        }
        let mut plan: Vec<(Route, Option<FallbackEntry>)> =
            Vec::with_capacity(entries.len().max(1));
        if entries.is_empty() {
            let host = req
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .or_else(|| req.uri.host());
            let meta = RequestMeta {
                target_url: target,
                target_provider: header(req, headers::TARGET_PROVIDER),
                host,
                path_and_query,
            };
            let route = routing::resolve(&meta, &self.cfg.catalogue, &self.origins)?.ok_or_else(|| {
                GatewayError::NotFound(format!(
                    "no route for {} {}: send 'Helicone-Target-Url: <provider origin>' or use a provider prefix such as /openai/v1/chat/completions",
                    req.method,
                    req.uri.path()
                ))
            })?;
            plan.push((route, None));
        } else {
            ctx.attempts.use_fallbacks();
            for e in entries {
                let provider = self.cfg.catalogue.for_origin(&e.origin);
                let route = Route {
                    origin: e.origin.clone(),
                    upstream_path: path_and_query.to_string(),
                    approved: provider.as_ref().is_some_and(|p| p.approved),
                    provider,
                    kind: RouteKind::Fallback,
                };
                plan.push((route, Some(e)));
            }
        }

        // every target passes the same checks before anything is sent anywhere
        let mut overrides = Vec::with_capacity(plan.len());
        for (route, entry) in plan {
            let policy = self
                .cfg
                .origin_policy(&route.origin)
                .cloned()
                .unwrap_or_default();
            let approved = route.approved || policy.approved;
            if !approved && self.cfg.unapproved.policy == UnapprovedPolicy::Deny {
                return Err(GatewayError::OriginDenied(format!(
                    "origin {} is not an approved provider and this gateway refuses unapproved origins; approve it under `origins:` in the gateway config",
                    route.origin
                )));
            }
            let addr = self
                .guard
                .resolve(&route.origin, policy.allow_private)
                .await?;
            let (headers, on_codes, over) = match entry {
                Some(e) => (Some(e.headers), Some(e.on_codes), e.body_override),
                None => (None, None, None),
            };
            overrides.push(over);
            ctx.attempts.push(Target {
                origin: route.origin.to_string(),
                route,
                addr,
                policy,
                approved,
                headers,
                body: None,
                on_codes,
                unified: None,
            });
        }
        // the first attempt's quota is charged now, before the body is read; later attempts
        // are charged in `next_attempt`
        if let Some(first) = ctx.attempts.charged_at_admission() {
            self.origin_limits
                .admit(&first.origin, &self.metrics)
                .await?;
        }

        self.read_body(session, ctx).await?;
        self.inject_stream_usage(session, ctx)?;
        for (i, over) in overrides.iter().enumerate() {
            if let Some(v) = over {
                ctx.attempts.targets_mut()[i].body =
                    Some(failover::override_body(&ctx.facts.body.bytes, v, i)?);
            }
        }
        self.cache_key(session, ctx).await;
        self.count(session, ctx).await?;
        if ctx.facts.body.present && !ctx.facts.body.replayable {
            return Ok(self.forward_manually(session, ctx).await);
        }
        Ok(Admitted::Proxy)
    }

    /// The cache key and bucket of a request that asked for the cache (after its body is read
    /// and its targets are planned). Bodies Pingora cannot replay (chunked over 64 KiB) take the
    /// manual exchange, which has no cache.
    async fn cache_key(&self, session: &Session, ctx: &mut RequestCtx) {
        let (Some(rc), Some(state)) = (self.cache.as_ref(), ctx.cache.as_mut()) else {
            return;
        };
        if ctx.facts.body.present && !ctx.facts.body.replayable {
            ctx.cache = None;
            return;
        }
        let target = match (&ctx.facts.unified, ctx.attempts.targets().first()) {
            (Some(u), _) => Keyed::Unified(u.op),
            (None, Some(t)) => Keyed::Passthrough {
                origin: &t.origin,
                path: &t.route.upstream_path,
            },
            (None, None) => return,
        };
        let (req, body) = (session.req_header(), &ctx.facts.body.bytes);
        let tenant = ctx.facts.key_id.as_deref();
        cache::request::make_key(rc, state, req, target, body, tenant).await;
    }

    /// A unified body's own extras, taken out before it goes anywhere: Helicone metadata
    /// (`helicone`: session, properties, user) and, for chat, a `prompt_id` rendered into the
    /// request (which is then routed, cached, limited and logged like any other).
    fn rewrite_unified_body(
        &self,
        ctx: &mut RequestCtx,
        op: Op,
    ) -> std::result::Result<(), GatewayError> {
        let has = |needle: &[u8]| memchr::memmem::find(&ctx.facts.body.bytes, needle).is_some();
        if !(has(b"\"helicone\"") || op == Op::Chat && has(b"\"prompt_id\"")) {
            return Ok(());
        }
        let (mut meta, mut prompt) = (None, None);
        ctx.facts.body.edit_json(|body| {
            meta = crate::metadata::take(body)?;
            if op == Op::Chat && body.contains_key("prompt_id") {
                let Some(store) = &self.prompts else {
                    return Err(GatewayError::BadRequest(
                        "this gateway serves no prompts, so `prompt_id` cannot be used: set `prompts: {dir: ...}` in its config, or send `messages`".into(),
                    ));
                };
                prompt = store.apply(body)?;
            }
            Ok(meta.is_some() || prompt.is_some())
        })?;
        ctx.facts.body_meta = meta;
        ctx.facts.prompt = prompt;
        Ok(())
    }

    /// `Helicone-Stream-Usage: true` on a passthrough stream: `stream_options.include_usage` is
    /// added so that the provider reports usage (the unified API always asks for it).
    fn inject_stream_usage(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), GatewayError> {
        let Some(v) = header(session.req_header(), headers::STREAM_USAGE) else {
            return Ok(());
        };
        match v.trim_ascii() {
            v if v.eq_ignore_ascii_case(b"true") => {}
            v if v.eq_ignore_ascii_case(b"false") => return Ok(()),
            _ => {
                return Err(GatewayError::BadRequest(
                    "Helicone-Stream-Usage must be true or false".into(),
                ))
            }
        }
        ctx.facts.body.edit_json(|body| {
            if body.get("stream") != Some(&serde_json::Value::Bool(true)) {
                return Ok(false);
            }
            unified_request::ask_for_stream_usage(body)
                .ok_or_else(|| GatewayError::BadRequest("stream_options must be an object".into()))
        })?;
        Ok(())
    }

    /// Counts the request against its rate-limit policy and its key's limits (after the body is
    /// read: a per-user policy may need the body's `user`, a money limit its model and
    /// `max_tokens`; and after the cache key is made). A request that looks up the cache is
    /// checked now (a bad segment is a 400 either way) but counted only on a miss, in
    /// `proxy_upstream_filter`.
    async fn count(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), GatewayError> {
        let Some(plan) = self.limit_plan(session, ctx)? else {
            return Ok(());
        };
        if ctx.looks_up_cache() {
            ctx.limits.deferred = Some(plan);
            return Ok(());
        }
        self.rate_limits.admit(plan, &mut ctx.limits.counted).await
    }

    /// The limits that apply to this request (`None`: none does, nothing is read).
    fn limit_plan(
        &self,
        session: &Session,
        ctx: &RequestCtx,
    ) -> std::result::Result<Option<Plan>, GatewayError> {
        let r = limits::request::Request {
            key_id: ctx.facts.key_id.as_deref(),
            policy: ctx.limits.policy.as_ref(),
            headers: &session.req_header().headers,
            body: &ctx.facts.body,
            meta: ctx.facts.body_meta.as_ref(),
            targets: ctx.attempts.targets(),
        };
        let default_completion = self.cfg.limits.default_completion_tokens;
        let pricing = || self.registry.pricing();
        limits::request::plan(&self.rate_limits, &r, &pricing, default_completion)
    }

    async fn read_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), GatewayError> {
        ctx.facts.body =
            body::read(session, self.cfg.limits.max_body_bytes, &self.body_budget).await?;
        Ok(())
    }

    /// The unified API: body, model string, provider attempts (each with its own path, key and
    /// body), all SSRF-checked before anything is sent.
    async fn admit_unified(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        op: Op,
    ) -> std::result::Result<Admitted, GatewayError> {
        self.read_body(session, ctx).await?;
        self.rewrite_unified_body(ctx, op)?;
        let req = unified_request::parse(op, &ctx.facts.body.bytes)?;
        let health = &self.health;
        let candidates = self.registry.routing().plan(&req.model, op, &|ep| {
            ep.origin
                .as_ref()
                .is_none_or(|o| health.allow(&o.to_string()))
        })?;
        let client = session.req_header();
        let accept = client.headers.get(http::header::ACCEPT).cloned();
        let user_agent = client.headers.get(http::header::USER_AGENT).cloned();
        let mut problems: Vec<GatewayError> = Vec::new();
        for c in candidates {
            let Some(origin) = c.endpoint.origin.clone() else {
                continue;
            };
            let prepared =
                match unified_request::prepare(&req, &c, accept.as_ref(), user_agent.as_ref()) {
                    Ok(p) => p,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                };
            let policy = self.cfg.origin_policy(&origin).cloned().unwrap_or_default();
            let addr = match self.guard.resolve(&origin, policy.allow_private).await {
                Ok(a) => a,
                Err(e) => {
                    log::warn!("unified attempt {} left out: {e}", c.label());
                    problems.push(e);
                    continue;
                }
            };
            ctx.attempts.push(Target {
                origin: origin.to_string(),
                route: Route {
                    origin,
                    upstream_path: prepared.path,
                    provider: Some(c.endpoint.provider.clone()),
                    approved: true,
                    kind: RouteKind::Unified,
                },
                addr,
                policy,
                // the operator chose these origins, not the client
                approved: true,
                headers: Some(prepared.headers),
                body: Some(prepared.body),
                on_codes: Some(CodeSet::non_success()),
                unified: Some(c),
            });
        }
        if ctx.attempts.targets().is_empty() {
            return Err(GatewayError::no_attempt(problems));
        }
        ctx.facts.unified = Some(UnifiedState {
            op,
            include_usage: req.include_usage,
        });
        self.cache_key(session, ctx).await;
        self.count(session, ctx).await?;
        if ctx.facts.body.present && !ctx.facts.body.replayable {
            return Ok(self.forward_manually(session, ctx).await);
        }
        Ok(Admitted::Proxy)
    }

    /// Before each upstream attempt: what the attempt machine asks for (backoff wait, async
    /// with no thread held; the origin quota of every attempt after the first).
    async fn next_attempt(&self, ctx: &mut RequestCtx) -> std::result::Result<(), GatewayError> {
        loop {
            match ctx.attempts.next_step(&self.health, &*self.metrics)? {
                Step::Wait(d) => tokio::time::sleep(d).await,
                Step::Charge(origin) => {
                    match self.origin_limits.admit(&origin, &self.metrics).await {
                        Ok(()) => ctx.attempts.charged(),
                        Err(e) if self.quota_refused(ctx, &e).again() => {}
                        Err(e) => return Err(e),
                    }
                }
                Step::Go => {
                    ctx.response.upstream_start.get_or_insert_with(Instant::now);
                    return Ok(());
                }
            }
        }
    }

    /// The manual exchange (chunked uploads over 64 KiB), with the same retries and fallbacks;
    /// its failures are answered here: they are not rejections.
    async fn forward_manually(&self, session: &mut Session, ctx: &mut RequestCtx) -> Admitted {
        if let Err(e) = self.exchange_manually(session, ctx).await {
            respond_error(session, ctx, &e).await;
        }
        Admitted::Done
    }

    async fn exchange_manually(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), GatewayError> {
        loop {
            self.next_attempt(ctx).await?;
            let peer = self.peer(ctx)?;
            let Some(t) = ctx.target() else {
                return Err(GatewayError::Internal("no upstream target".into()));
            };
            let mut req = session.req_header().clone();
            let body = ctx.body_bytes().clone();
            upstream::prepare_request(&mut req, &t.route, Some(body.len()), t.headers.as_deref())?;
            match self
                .forwarder
                .send(req, body, &peer, &self.cfg.upstream)
                .await
            {
                Err(e) => {
                    if self.judge_connect(ctx, &e).again() {
                        continue;
                    }
                    let g = GatewayError::from_proxy_error(&e)
                        .unwrap_or_else(|| GatewayError::BadGateway(e.to_string()));
                    return Err(g);
                }
                Ok(up) => {
                    let Some(resp) = up.response_header() else {
                        return Err(GatewayError::BadGateway(
                            "upstream sent no response header".into(),
                        ));
                    };
                    if self.judge_response(ctx, resp).again() {
                        continue;
                    }
                    let mut resp = Box::new(resp.clone());
                    ctx.response.ttfb = Some(ctx.facts.start.elapsed());
                    self.shape_response(&mut resp, ctx)
                        .map_err(|e| GatewayError::Internal(e.to_string()))?;
                    let cap = self.capture_cap();
                    self.forwarder
                        .relay(
                            session,
                            up,
                            resp,
                            &peer,
                            &self.cfg.upstream,
                            &mut |body, end| ctx.response.filter_body(body, end, cap),
                        )
                        .await;
                    return Ok(());
                }
            }
        }
    }

    /// A cache hit answered by a unified attempt: the attempts point at it (its translation
    /// replays the cached answer).
    fn point_at_cached(ctx: &mut RequestCtx, provider: &str, model: Option<&String>) {
        let answered = ctx.attempts.targets().iter().position(|t| {
            t.unified
                .as_ref()
                .is_some_and(|u| u.endpoint.name == provider && Some(&u.model_id) == model)
        });
        if let Some(i) = answered {
            ctx.attempts.point_at(i);
        }
    }

    /// The response header the client gets: usage tap set up, the unified mapping chosen,
    /// gateway headers added.
    fn shape_response(&self, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        let content_type = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        // a cache hit consumed no tokens: its record points at the original's instead
        let hit = ctx.cache_hit();
        ctx.response.tap = (!hit).then(|| Tap::new(content_type));
        let sse = content_type.is_some_and(|c| c.starts_with("text/event-stream"));
        if let Some(c) = ctx.target().and_then(|t| t.unified.clone()) {
            let status = resp.status.as_u16();
            let include_usage = ctx.facts.unified.as_ref().is_some_and(|u| u.include_usage);
            let mapper = if (200..300).contains(&status) {
                resp.insert_header(headers::PROVIDER.clone(), c.endpoint.name.as_str())?;
                resp.insert_header(headers::MODEL.clone(), c.model_id.as_str())?;
                unified_response::Mapper::for_success(c.endpoint.format, sse, include_usage)
            } else {
                // the last attempt failed too: the client gets the aggregated error
                let reports = ctx.attempts.reports();
                resp.set_status(unified_response::telling_status(&reports))?;
                Some(unified_response::Mapper::Failed {
                    buf: Vec::new(),
                    format: c.endpoint.format,
                    reports,
                })
            };
            if let Some(m) = &mapper {
                // the body changes length: chunked to the client (without a length and without
                // chunked, Pingora would delimit the body by closing the connection)
                resp.remove_header(&http::header::CONTENT_LENGTH);
                resp.remove_header(&http::header::CONTENT_ENCODING);
                resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
                if let Some(ct) = m.content_type() {
                    resp.insert_header(http::header::CONTENT_TYPE, ct)?;
                }
                if matches!(m, unified_response::Mapper::AnthropicSse(_)) {
                    resp.insert_header(http::header::CACHE_CONTROL, "no-cache")?;
                }
            }
            ctx.response.mapper = mapper;
        }
        self.add_response_headers(resp, ctx)
    }

    fn add_response_headers(&self, resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
        resp.insert_header(headers::HELICONE_ID.clone(), ctx.facts.id.as_str())?;
        insert_limit_headers(resp, ctx)?;
        if let Some(p) = &ctx.facts.prompt {
            resp.insert_header(headers::PROMPT_ID.clone(), p.id.as_str())?;
            resp.insert_header(headers::PROMPT_VERSION.clone(), p.version.to_string())?;
        }
        if ctx.attempts.is_fallbacks() {
            let i = ctx.attempts.index();
            resp.insert_header(headers::FALLBACK_INDEX.clone(), i.to_string())?;
            self.metrics.fallback_served(i);
        }
        Ok(())
    }

    fn peer(&self, ctx: &RequestCtx) -> std::result::Result<HttpPeer, GatewayError> {
        match ctx.target() {
            Some(t) => Ok(upstream::peer(
                &t.route,
                t.addr,
                &t.policy,
                &self.cfg.upstream,
            )),
            None => Err(GatewayError::Internal(
                "upstream chosen before routing".into(),
            )),
        }
    }

    /// The attempt machine's verdict on a failed connection (or manual exchange).
    fn judge_connect(&self, ctx: &mut RequestCtx, e: &Error) -> Verdict {
        let (health, metrics) = (&self.health, &*self.metrics);
        ctx.attempts
            .on_connect_error(health, metrics, timed_out(e), &e.to_string())
    }

    /// The attempt machine's verdict on an origin quota that refused the next attempt.
    fn quota_refused(&self, ctx: &mut RequestCtx, e: &GatewayError) -> Verdict {
        ctx.attempts
            .on_quota_refused(&self.health, &*self.metrics, e)
    }

    /// The attempt machine's verdict on an upstream answer.
    fn judge_response(&self, ctx: &mut RequestCtx, resp: &ResponseHeader) -> Verdict {
        let retry_after = resp
            .headers
            .get(&headers::RETRY_AFTER)
            .map(|v| v.as_bytes());
        let status = resp.status.as_u16();
        ctx.attempts
            .on_response(&self.health, &*self.metrics, status, retry_after)
    }
}

/// A client that closed its connection after a stream's terminal event reached it (the openai
/// SDK stops reading at `data: [DONE]`) leaves a complete request, not a failed one.
fn finished_before_error(e: &Error, ctx: &RequestCtx) -> bool {
    *e.esource() == ErrorSource::Downstream && ctx.response.stream_complete()
}

/// A timeout counts as 504, any other failure as 502.
fn timed_out(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
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
                respond_error(session, ctx, &e).await;
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
            // nothing has reached the client: drop this answer and try again (`error_while_proxy`
            // keeps the retry: the attempt machine knows the answer was dropped)
            let mut e = Error::explain(
                ErrorType::HTTPStatus(status),
                format!("upstream answered {status}; trying again"),
            )
            .into_up();
            e.set_retry(true);
            return Err(e);
        }
        ctx.response
            .ttfb
            .get_or_insert_with(|| ctx.facts.start.elapsed());
        if ctx.facts.unified.is_some()
            && !(200..300).contains(&status)
            && upstream_response
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() == b"0")
        {
            // the last attempt failed with an empty body: no body hook will run, so the
            // aggregated error is answered from `fail_to_proxy`
            ctx.outcome.pending_error =
                Some(unified_response::aggregate(&ctx.attempts.reports(), None));
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "every unified attempt failed",
            ));
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
                Self::point_at_cached(ctx, &provider, model.as_ref());
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
            respond_error(session, ctx, &e).await;
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
        mut e: Box<Error>,
    ) -> Box<Error> {
        let again = self.judge_connect(ctx, &e).again();
        e.set_retry(again && ctx.facts.body.replayable);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let message = e.to_string();
        let failure = ExchangeError {
            upstream: *e.esource() == ErrorSource::Upstream,
            answered: session
                .response_written()
                .is_some_and(|r| !r.status.is_informational()),
            replayable: ctx.facts.body.replayable,
            reused: client_reused,
            timed_out: timed_out(&e),
            message: &message,
        };
        match ctx
            .attempts
            .on_exchange_error(&self.health, &*self.metrics, failure)
        {
            Recovery::Again => e.set_retry(true),
            // a stale pooled connection: once more on a fresh one
            Recovery::Reconnect => e.retry.decide_reuse(true),
            Recovery::GiveUp => e.set_retry(false),
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let written = session
            .response_written()
            .map(|r| r.status.as_u16())
            .filter(|s| *s >= 200);
        let decided = ctx.outcome.pending_error.take().or_else(|| {
            if ctx.facts.unified.is_some() && !ctx.attempts.log().is_empty() {
                // no provider answered in the end: list every attempt
                Some(unified_response::aggregate(&ctx.attempts.reports(), None))
            } else {
                GatewayError::from_proxy_error(e)
            }
        });
        let code = match (written, decided) {
            (Some(status), _) => status,
            (None, Some(g)) => {
                respond_error_closing(session, ctx, &g, true).await;
                g.status()
            }
            (None, None) => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        finished_before_error(e, ctx)
    }

    async fn logging(
        &self,
        session: &mut Session,
        e: Option<&pingora_error::Error>,
        ctx: &mut RequestCtx,
    ) {
        let e = e.filter(|e| !finished_before_error(e, ctx));
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let now = Instant::now();
        self.metrics.observe(&Observation {
            provider: ctx.provider_label(),
            status,
            duration: now - ctx.facts.start,
            upstream: ctx.response.upstream_start.map(|s| now - s),
            ttfb: ctx.response.ttfb,
            bytes_in: ctx.facts.body.bytes.len() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            rejection: ctx.outcome.rejection,
        });
        if ctx.outcome.in_flight {
            self.metrics.in_flight.dec();
        }
        if !ctx.facts.health_probe {
            let summary = log_record::summarize(session, ctx, &self.registry.pricing());
            // the counters learn what the request really cost
            let answered = ctx
                .attempts
                .log()
                .iter()
                .any(|a| (200..300).contains(&a.status));
            self.rate_limits
                .settle(&mut ctx.limits.counted, summary.cost, answered)
                .await;
            let ttft = summary.ttft_ms.map(Duration::from_millis);
            self.metrics.usage(
                summary.provider.as_deref().unwrap_or("none"),
                &summary.model_label,
                &summary.usage,
                summary.cost,
                ttft,
            );
            // the record (bodies, attempts, headers) only when a sink takes it
            let max_body = self.cfg.export.max_body_bytes;
            if let Some(record) = log_record::when_exported(self.exporter.enabled(), || {
                let error = e.map(|e| e.to_string());
                log_record::record(session, ctx, summary, status, error, max_body)
            }) {
                self.exporter.submit(record);
            }
        }
        if let Some(e) = e {
            log::debug!("request {} ended with error: {e}", ctx.facts.id);
        }
        if ctx.attempts.log().len() > 1 {
            log::debug!(
                "request {} attempts: {}",
                ctx.facts.id,
                serde_json::to_string(ctx.attempts.log()).unwrap_or_default()
            );
        }
    }
}
