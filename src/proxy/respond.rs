//! What the client gets: the gateway's own JSON answers and errors, the upstream answer's header shaped (usage tap, unified mapping, gateway headers), and the answer to a failed proxy.

use bytes::Bytes;
use pingora_error::{Error, ErrorSource, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, Session};

use super::Gateway;
use crate::ctx::RequestCtx;
use crate::dialects;
use crate::error::GatewayError;
use crate::headers;
use crate::lifecycle;
use crate::unified::response as unified_response;

/// A JSON answer of the gateway's own; a failed write is only logged (`what` names it).
pub(super) async fn json(
    session: &mut Session,
    status: u16,
    body: impl Into<Bytes>,
    id: &str,
    what: &str,
) {
    json_with(session, status, body, id, what, &[]).await
}

/// [`json`] with headers of its own.
pub(super) async fn json_with(
    session: &mut Session,
    status: u16,
    body: impl Into<Bytes>,
    id: &str,
    what: &str,
    extra: &[(http::HeaderName, String)],
) {
    let res = async {
        let body = body.into();
        let mut h = ResponseHeader::build(status, Some(3 + extra.len()))?;
        h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        h.insert_header(headers::HELICONE_ID.clone(), id)?;
        for (name, value) in extra {
            h.insert_header(name.clone(), value.as_str())?;
        }
        lifecycle::close_if_draining(session);
        session.write_response_header(Box::new(h), false).await?;
        session.write_response_body(Some(body), true).await
    };
    if let Err(e) = res.await {
        log::debug!("{what} response failed: {e}");
    }
}

pub(super) async fn error(session: &mut Session, ctx: &RequestCtx, e: &GatewayError) {
    error_closing(session, ctx, e, false).await
}

/// Writes the error; `close` tells the client the connection ends here (Pingora will not reuse
/// it after a proxy failure, and a client that reused it would see a reset).
async fn error_closing(session: &mut Session, ctx: &RequestCtx, e: &GatewayError, close: bool) {
    let res = async {
        let (mut h, mut body) = e.response(&ctx.facts.id)?;
        if ctx.facts.client != dialects::Client::OpenAi {
            // in the client's own error shape
            body = Bytes::from(ctx.facts.client.error_body(e.status(), &body));
            h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        }
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

/// A unified request whose last attempt failed with an empty body: no body hook will run, so
/// the aggregated error is answered from `fail_to_proxy` (returned).
pub(super) fn failed_without_body(ctx: &RequestCtx, resp: &ResponseHeader) -> Option<GatewayError> {
    let empty = resp
        .headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    let failed = !(200..300).contains(&resp.status.as_u16());
    (ctx.facts.unified.is_some() && failed && empty)
        .then(|| unified_response::aggregate(&ctx.attempts.reports(), None))
}

/// A client that closed its connection after a stream's terminal event reached it (the openai
/// SDK stops reading at `data: [DONE]`) leaves a complete request, not a failed one.
pub(super) fn finished_before_error(e: &Error, ctx: &RequestCtx) -> bool {
    *e.esource() == ErrorSource::Downstream && ctx.response.stream_complete()
}

/// The answer to a request that could not be proxied, unless one was already written: the
/// error a hook decided, the aggregated attempts of the unified API, or Pingora's error.
pub(super) async fn fail_to_proxy(
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
            error_closing(session, ctx, &g, true).await;
            g.status()
        }
        (None, None) => 0,
    };
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

impl Gateway {
    /// The response header the client gets: usage tap set up, the unified mapping chosen,
    /// gateway headers added.
    pub(super) fn shape_response(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let sse = crate::answer::is_sse(
            resp.headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let unified = ctx.target().and_then(|t| t.unified.clone());
        // the dialect that answered reads the usage; on passthrough, the path and the catalogue
        // tell it, and an unknown origin is read by shape
        let reader = match (&unified, ctx.route()) {
            (Some(c), _) => c.endpoint.dialect().reader(),
            (None, Some(r)) => dialects::passthrough_reader(
                &r.upstream_path,
                r.provider.as_ref().and_then(|p| p.api.as_ref()),
            ),
            (None, None) => &dialects::ANY,
        };
        let mut mapper = None;
        if let Some(c) = unified {
            let status = resp.status.as_u16();
            let include_usage = ctx.facts.unified.as_ref().is_some_and(|u| u.include_usage);
            let dialect = c.endpoint.dialect();
            mapper = if (200..300).contains(&status) {
                resp.insert_header(headers::PROVIDER.clone(), c.endpoint.name.as_str())?;
                resp.insert_header(headers::MODEL.clone(), c.model_id.as_str())?;
                // what the provider's dialect could not honour, dropped on the way
                let dropped = super::log_record::dropped(ctx);
                if !dropped.is_empty() {
                    resp.insert_header(headers::DROPPED_FIELDS.clone(), dropped.join(", "))?;
                }
                let client = ctx.facts.client;
                unified_response::Mapper::for_success(dialect, client, sse, include_usage)
            } else {
                // the last attempt failed too: the client gets the aggregated error
                let reports = ctx.attempts.reports();
                resp.set_status(unified_response::telling_status(&reports))?;
                Some(unified_response::Mapper::Failed {
                    buf: Vec::new(),
                    dialect,
                    client: ctx.facts.client,
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
                    if crate::answer::is_sse(Some(ct)) {
                        resp.insert_header(http::header::CACHE_CONTROL, "no-cache")?;
                    }
                }
            }
        }
        // a cache hit consumed no tokens: its record points at the original's instead
        let reader = (!ctx.cache_hit()).then_some(reader);
        ctx.response.start(sse, reader, mapper);
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
}
