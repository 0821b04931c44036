//! `impl ProxyHttp for Gateway`: orchestrates the Pingora phases; each concern lives in its module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::body;
use crate::config::{Config, UnapprovedPolicy};
use crate::ctx::RequestCtx;
use crate::error::GatewayError;
use crate::forward::{Forwarder, Outcome};
use crate::headers;
use crate::limits::origin_quota::OriginQuota;
use crate::metrics::{Metrics, Observation, Rejection};
use crate::routing::{self, RequestMeta};
use crate::ssrf;
use crate::upstream;

pub struct Gateway {
    pub cfg: Arc<Config>,
    pub guard: ssrf::Guard,
    pub origins: routing::OriginCache,
    pub quota: Arc<OriginQuota>,
    pub metrics: Arc<Metrics>,
    pub forwarder: Forwarder,
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

type Refusal = (Option<Rejection>, GatewayError);

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers.get(name).map(|v| v.as_bytes())
}

async fn respond_json(
    session: &mut Session,
    status: u16,
    body: &'static str,
    id: &str,
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(3))?;
    h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    h.insert_header(headers::HELICONE_ID.clone(), id)?;
    session.write_response_header(Box::new(h), false).await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await
}

async fn respond_error(session: &mut Session, ctx: &RequestCtx, e: &GatewayError) {
    let res = async {
        let (h, body) = e.response(&ctx.id)?;
        session.write_response_header(Box::new(h), false).await?;
        session.write_response_body(Some(body), true).await
    };
    if let Err(err) = res.await {
        log::debug!("could not send error response ({e}): {err}");
    }
}

impl Gateway {
    /// Everything `request_filter` decides, in order: health, auth, route, SSRF, quota, body.
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<Admitted, Refusal> {
        let req = session.req_header();
        ctx.id = header(req, headers::REQUEST_ID)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| uuid::Uuid::parse_str(v.trim()).ok())
            .unwrap_or_else(uuid::Uuid::new_v4)
            .to_string();
        let target = header(req, headers::TARGET_URL);
        if target.is_none() {
            let ready = match req.uri.path() {
                "/healthz" | "/healthcheck" => Some(true),
                "/readyz" => Some(self.ready.load(Ordering::Relaxed)),
                _ => None,
            };
            if let Some(ok) = ready {
                let (status, body) = if ok {
                    (200, r#"{"status":"ok"}"#)
                } else {
                    (503, r#"{"status":"shutting down"}"#)
                };
                if let Err(e) = respond_json(session, status, body, &ctx.id).await {
                    log::debug!("health response failed: {e}");
                }
                return Ok(Admitted::Done);
            }
        }

        if !self.cfg.keys.is_empty() {
            let key = self
                .cfg
                .keys
                .authenticate(header(req, headers::HELICONE_AUTH));
            ctx.key_id = Some(key.map_err(|e| (Some(Rejection::Auth), e))?);
        }

        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.host());
        let path_and_query = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let meta = RequestMeta {
            target_url: target,
            target_provider: header(req, headers::TARGET_PROVIDER),
            host,
            path_and_query,
        };
        let route = routing::resolve(&meta, &self.cfg.catalogue, &self.origins)
            .map_err(|e| (Some(Rejection::BadRequest), e))?
            .ok_or_else(|| {
                (
                    Some(Rejection::NoRoute),
                    GatewayError::NotFound(format!(
                        "no route for {} {}: send 'Helicone-Target-Url: <provider origin>' or use a provider prefix such as /openai/v1/chat/completions",
                        req.method,
                        req.uri.path()
                    )),
                )
            })?;

        let policy = self
            .cfg
            .origin_policy(&route.origin)
            .cloned()
            .unwrap_or_default();
        let approved = route.approved || policy.approved;
        if !approved && self.cfg.unapproved.policy == UnapprovedPolicy::Deny {
            return Err((
                Some(Rejection::Denied),
                GatewayError::Forbidden(format!(
                    "origin {} is not an approved provider and this gateway refuses unapproved origins; approve it under `origins:` in the gateway config",
                    route.origin
                )),
            ));
        }
        let addr = self
            .guard
            .resolve(&route.origin, policy.allow_private)
            .await
            .map_err(|e| {
                let reason = matches!(e, GatewayError::Forbidden(_)).then_some(Rejection::Ssrf);
                (reason, e)
            })?;
        if !approved {
            self.quota
                .admit(&route.origin.to_string())
                .map_err(|e| (Some(Rejection::Quota), e))?;
        }
        ctx.addr = Some(addr);
        ctx.policy = policy;
        ctx.route = Some(route);

        ctx.body = body::read(session, self.cfg.limits.max_body_bytes)
            .await
            .map_err(|e| {
                let reason = if matches!(e, GatewayError::PayloadTooLarge { .. }) {
                    Rejection::Size
                } else {
                    Rejection::BadRequest
                };
                (Some(reason), e)
            })?;
        if ctx.body.present && !ctx.body.replayable {
            let peer = self.peer(ctx).map_err(|e| (None, e))?;
            return match self
                .forwarder
                .forward(session, ctx, peer, &self.cfg.upstream)
                .await
            {
                Outcome::Relayed => Ok(Admitted::Done),
                Outcome::Failed(e) => Err((None, e)),
            };
        }
        Ok(Admitted::Proxy)
    }

    fn peer(&self, ctx: &RequestCtx) -> std::result::Result<HttpPeer, GatewayError> {
        match (&ctx.route, ctx.addr) {
            (Some(route), Some(addr)) => {
                Ok(upstream::peer(route, addr, &ctx.policy, &self.cfg.upstream))
            }
            _ => Err(GatewayError::Internal(
                "upstream chosen before routing".into(),
            )),
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
        ctx.in_flight = true;
        match self.admit(session, ctx).await {
            Ok(Admitted::Proxy) => Ok(false),
            Ok(Admitted::Done) => Ok(true),
            Err((reason, e)) => {
                ctx.rejection = reason;
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
        ctx.attempt += 1;
        ctx.upstream_start.get_or_insert_with(Instant::now);
        self.peer(ctx)
            .map(Box::new)
            .map_err(|e| Error::explain(ErrorType::InternalError, e.to_string()))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no route");
        };
        let body_len = ctx.body.present.then_some(ctx.body.bytes.len());
        upstream::prepare_request(upstream_request, route, body_len)
            .map_err(|e| Error::explain(ErrorType::HTTPStatus(e.status()), e.to_string()))
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.replay
            .filter(ctx.attempt, &ctx.body, body, end_of_stream);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.ttfb.get_or_insert_with(|| ctx.start.elapsed());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response.insert_header(headers::HELICONE_ID.clone(), ctx.id.as_str())?;
        Ok(())
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
        let final_sent = session
            .response_written()
            .is_some_and(|r| !r.status.is_informational());
        // only a stale pooled connection is retried (once more, on a fresh one), and only
        // while nothing has reached the client and the body can be replayed
        if *e.esource() == ErrorSource::Upstream && !final_sent && ctx.body.replayable {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
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
        let code = match (written, GatewayError::from_proxy_error(e)) {
            (Some(status), _) => status,
            (None, Some(g)) => {
                respond_error(session, ctx, &g).await;
                g.status()
            }
            (None, None) => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(
        &self,
        session: &mut Session,
        e: Option<&pingora_error::Error>,
        ctx: &mut RequestCtx,
    ) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let now = Instant::now();
        self.metrics.observe(&Observation {
            provider: ctx.provider_label(),
            status,
            duration: now - ctx.start,
            upstream: ctx.upstream_start.map(|s| now - s),
            ttfb: ctx.ttfb,
            bytes_in: ctx.body.bytes.len() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            rejection: ctx.rejection,
        });
        if ctx.in_flight {
            self.metrics.in_flight.dec();
        }
        if let Some(e) = e {
            log::debug!("request {} ended with error: {e}", ctx.id);
        }
    }
}
