//! Admission (`request_filter`), in order: the request's id, probes and local endpoints, auth, its header policies, its planned and checked targets, its body, cache key and rate limits.

use std::sync::atomic::Ordering;

use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::{respond, Admitted, Gateway};
use crate::body;
use crate::cache::{self, request::Keyed};
use crate::ctx::{CacheState, RequestCtx, UnifiedState};
use crate::dialects::{self, Client};
use crate::endpoints::{self, UnifiedRoute};
use crate::error::GatewayError;
use crate::failover;
use crate::headers;
use crate::limits::{self, policy as rate_policy};
use crate::plan;
use crate::rewrite;
use crate::unified::{request as unified_request, Op};

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers.get(name).map(|v| v.as_bytes())
}

/// The request's id: `Helicone-Request-Id` when the client sent one (it must be a UUID), else
/// `fresh` (which the error suggests).
fn request_id(given: Option<&[u8]>, fresh: &str) -> Result<String, GatewayError> {
    let Some(v) = given else {
        return Ok(fresh.to_string());
    };
    let given = String::from_utf8_lossy(v);
    match uuid::Uuid::parse_str(given.trim()) {
        Ok(id) => Ok(id.to_string()),
        Err(_) => Err(GatewayError::BadRequest(format!(
            "Helicone-Request-Id '{given}' is not a UUID: send one such as {fresh} (it becomes the request's id), or leave the header out"
        ))),
    }
}

/// A body Pingora cannot replay (chunked over 64 KiB) takes the manual exchange.
fn manual(ctx: &RequestCtx) -> bool {
    ctx.facts.body.present && !ctx.facts.body.replayable
}

impl Gateway {
    /// Everything `request_filter` decides, in order: health, auth, plan (route or fallbacks,
    /// retry policy), SSRF, quota, body.
    pub(super) async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Admitted, GatewayError> {
        let req = session.req_header();
        ctx.facts.id = uuid::Uuid::new_v4().to_string();
        ctx.facts.id = request_id(header(req, headers::REQUEST_ID), &ctx.facts.id)?;
        let fallbacks = header(req, headers::FALLBACKS);
        let local = header(req, headers::TARGET_URL).is_none() && fallbacks.is_none();
        if local {
            let ready = self.ready.load(Ordering::Relaxed);
            if let Some((status, body)) = endpoints::probe(req.uri.path(), ready) {
                ctx.facts.health_probe = true;
                respond::json(session, status, body, &ctx.facts.id, "health").await;
                return Ok(Admitted::Done);
            }
        }
        let unified = local
            .then(|| endpoints::unified_route(req, &self.cfg))
            .flatten();
        ctx.facts.client = unified
            .as_ref()
            .map_or(Client::OpenAi, UnifiedRoute::client);
        if !self.keys.is_empty() {
            let key = match header(req, headers::HELICONE_AUTH) {
                Some(h) => self.keys.authenticate(Some(h)),
                // the SDKs' own key headers (the OpenAI SDK's `Authorization: Bearer`, the
                // anthropic SDK's `x-api-key`); they never go upstream (unified attempts carry
                // only the provider's key)
                None if unified.is_some() => {
                    let bearer = header(req, http::header::AUTHORIZATION.as_str());
                    let bare = header(req, headers::X_API_KEY);
                    match (bearer, bare) {
                        (Some(h), _) => self.keys.authenticate(Some(h)),
                        (None, Some(k)) => self.keys.authenticate_key(Some(k)),
                        (None, None) if ctx.facts.client == Client::Anthropic => {
                            self.keys.authenticate_key(None)
                        }
                        (None, None) => self.keys.authenticate(None),
                    }
                }
                None => self.keys.authenticate(None),
            };
            ctx.facts.key_id = Some(key?);
        }

        if let Some(v) = header(req, headers::RATELIMIT_POLICY) {
            let v = std::str::from_utf8(v).map_err(|_| {
                GatewayError::BadRequest("Helicone-RateLimit-Policy is not valid UTF-8".into())
            })?;
            ctx.limits.policy = Some(rate_policy::parse(v)?);
        }
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
                let prompts = self.prompts.as_deref();
                let (status, body) = local.answer(req, &self.registry.routing(), prompts)?;
                respond::json(session, status, body, &ctx.facts.id, what).await;
                return Ok(Admitted::Done);
            }
            Some(UnifiedRoute::Call(op, client)) => {
                return self.admit_unified(session, ctx, op, client).await
            }
            Some(UnifiedRoute::CountTokens) => return self.count_tokens(session, ctx).await,
        }

        if !entries.is_empty() {
            ctx.attempts.use_fallbacks();
        }
        let routes = plan::passthrough_routes(req, entries, &self.cfg.catalogue, &self.origins)?;
        let overrides =
            plan::passthrough(routes, &self.cfg, &self.guard, &mut ctx.attempts).await?;
        // the first attempt's quota is charged now, before the body is read; later attempts
        // are charged in `next_attempt`
        if let Some(first) = ctx.attempts.charged_at_admission() {
            self.origin_limits
                .admit(&first.origin, &self.metrics)
                .await?;
        }

        self.read_body(session, ctx).await?;
        let stream_usage = header(session.req_header(), headers::STREAM_USAGE);
        rewrite::stream_usage(stream_usage, &mut ctx.facts.body)?;
        for (i, over) in overrides.iter().enumerate() {
            if let Some(v) = over {
                ctx.attempts.targets_mut()[i].body =
                    Some(failover::override_body(&ctx.facts.body.bytes, v, i)?);
            }
        }
        self.admit_planned(session, ctx).await
    }

    /// The unified API: body, model string, provider attempts (each with its own path, key and
    /// body), all SSRF-checked before anything is sent.
    async fn admit_unified(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        op: Op,
        client: Client,
    ) -> Result<Admitted, GatewayError> {
        self.read_body(session, ctx).await?;
        let prompts = self.prompts.as_deref();
        let extras = rewrite::unified_extras(&mut ctx.facts.body, op, client, prompts)?;
        ctx.facts.body_meta = extras.meta;
        ctx.facts.prompt = extras.prompt;
        let mut req = unified_request::parse_as(client, op, &ctx.facts.body.bytes)?;
        let mut dropped = std::mem::take(&mut req.dropped);
        if let Some(beta) = header(session.req_header(), headers::ANTHROPIC_BETA) {
            // beta flags reach only a provider that speaks Anthropic's dialect
            dropped.push(format!("anthropic-beta: {}", String::from_utf8_lossy(beta)));
        }
        self.plan_unified(session, ctx, &req, dropped).await
    }

    /// A unified request's attempts, planned and checked, then the steps every request takes.
    async fn plan_unified(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        req: &unified_request::UnifiedRequest,
        dropped: Vec<String>,
    ) -> Result<Admitted, GatewayError> {
        let registry = self.registry.routing();
        let client = session.req_header();
        let (cfg, guard) = (&self.cfg, &self.guard);
        for t in plan::unified(req, &registry, &self.health, client, cfg, guard).await? {
            ctx.attempts.push(t);
        }
        ctx.facts.unified = Some(UnifiedState {
            op: req.op,
            include_usage: req.include_usage,
            dropped,
        });
        self.admit_planned(session, ctx).await
    }

    /// `POST /v1/messages/count_tokens`: a model one of whose providers speaks Messages is
    /// counted by that provider (the gateway's key, the model id rewritten, with the same
    /// attempts and fallbacks); any other model is counted here, with its tokenizer where one
    /// is known, and the answer says how (`Helicone-Token-Count`). Never a 404: Claude Code
    /// calls it before every turn.
    async fn count_tokens(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Admitted, GatewayError> {
        self.read_body(session, ctx).await?;
        let op = Op::CountTokens;
        let req = unified_request::parse_as(Client::Anthropic, op, &ctx.facts.body.bytes)?;
        let registry = self.registry.routing();
        let health = |ep: &crate::unified::Endpoint| {
            ep.origin
                .as_ref()
                .is_none_or(|o| self.health.allow(&o.to_string()))
        };
        let candidates = registry.plan(&req.model, Op::Chat, &health)?;
        if candidates.iter().any(|c| c.endpoint.dialect().serves(op)) {
            drop(registry);
            return self.plan_unified(session, ctx, &req, Vec::new()).await;
        }
        let model_id = candidates
            .first()
            .map_or(req.model.as_str(), |c| &c.model_id);
        let native = req.native_for("anthropic").ok_or_else(|| {
            GatewayError::Internal("a count_tokens body without its Messages form".into())
        })?;
        let (tokens, method) = dialects::count_tokens::count(native, model_id);
        let body = serde_json::json!({ "input_tokens": tokens }).to_string();
        let how = [(headers::TOKEN_COUNT.clone(), method.header_value())];
        respond::json_with(session, 200, body, &ctx.facts.id, "count_tokens", &how).await;
        Ok(Admitted::Done)
    }

    /// The last steps of both paths, once the body is read and the targets are planned: the
    /// cache key, the rate limits, and the manual exchange for a body Pingora cannot replay.
    async fn admit_planned(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Admitted, GatewayError> {
        self.cache_key(session, ctx).await;
        self.count(session, ctx).await?;
        if manual(ctx) {
            return Ok(self.forward_manually(session, ctx).await);
        }
        Ok(Admitted::Proxy)
    }

    async fn read_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        ctx.facts.body =
            body::read(session, self.cfg.limits.max_body_bytes, &self.body_budget).await?;
        Ok(())
    }

    /// The cache key and bucket of a request that asked for the cache (after its body is read
    /// and its targets are planned). Bodies Pingora cannot replay take the manual exchange,
    /// which has no cache.
    async fn cache_key(&self, session: &Session, ctx: &mut RequestCtx) {
        let (Some(rc), Some(state)) = (self.cache.as_ref(), ctx.cache.as_mut()) else {
            return;
        };
        if ctx.facts.body.present && !ctx.facts.body.replayable {
            ctx.cache = None;
            return;
        }
        let target = match (&ctx.facts.unified, ctx.attempts.targets().first()) {
            (Some(u), _) => Keyed::Unified(u.op, ctx.facts.client.name()),
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

    /// Counts the request against its rate-limit policy and its key's limits (after the body is
    /// read: a per-user policy may need the body's `user`, a money limit its model and
    /// `max_tokens`; and after the cache key is made). A request that looks up the cache is
    /// checked now (a bad segment is a 400 either way) but counted only on a miss, in
    /// `proxy_upstream_filter`.
    async fn count(&self, session: &Session, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
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
        let plan = limits::request::plan(&self.rate_limits, &r, &pricing, default_completion)?;
        let Some(plan) = plan else {
            return Ok(());
        };
        if ctx.looks_up_cache() {
            ctx.limits.deferred = Some(plan);
            return Ok(());
        }
        self.rate_limits.admit(plan, &mut ctx.limits.counted).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_id_is_the_clients_uuid_or_a_fresh_one() {
        let fresh = "6f1c2a1e-0000-4000-8000-000000000000";
        assert_eq!(request_id(None, fresh).unwrap(), fresh);
        let given = b" 3F2504E0-4F89-11D3-9A0C-0305E82C3301 ";
        assert_eq!(
            request_id(Some(given), fresh).unwrap(),
            "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
        );
        let e = request_id(Some(b"abc"), fresh).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains(fresh), "{e}");
    }
}
