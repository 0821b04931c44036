//! What one unified attempt sends: the provider's path, headers (its key, never the client's) and the body its dialect builds from the canonical request.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::{Candidate, Op};
pub use crate::dialects::openai::ask_for_stream_usage;
/// A unified request body, parsed once (the canonical form).
pub use crate::dialects::Canonical as UnifiedRequest;
use crate::error::GatewayError;

/// Parses and checks the client's body for `op` (the OpenAI endpoints' dialect).
pub fn parse(op: Op, bytes: &[u8]) -> Result<UnifiedRequest, GatewayError> {
    crate::dialects::openai_ingress()
        .parse(op, bytes)
        .map_err(|e| GatewayError::BadRequest(e.0))
}

/// One attempt's request.
#[derive(Debug)]
pub struct Prepared {
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Builds what `c` is sent. `accept`/`user_agent` are the client's, passed on.
pub fn prepare(
    req: &UnifiedRequest,
    c: &Candidate,
    accept: Option<&HeaderValue>,
    user_agent: Option<&HeaderValue>,
) -> Result<Prepared, GatewayError> {
    let ep = &c.endpoint;
    // what the provider's dialect cannot express is the client's to change
    let body = ep.dialect().body(req, &c.model_id).map_err(|e| {
        GatewayError::BadRequest(format!(
            "this request cannot be sent to {} ({}): {e}",
            ep.name,
            c.label()
        ))
    })?;
    let mut headers = Vec::with_capacity(4 + ep.headers.len());
    headers.push((http::header::CONTENT_TYPE, JSON.clone()));
    headers.push((
        http::header::ACCEPT,
        accept.cloned().unwrap_or_else(|| JSON.clone()),
    ));
    if let Some(ua) = user_agent {
        headers.push((http::header::USER_AGENT, ua.clone()));
    }
    if let Some(v) = &ep.auth_value {
        headers.push((ep.auth_header.clone(), v.clone()));
    }
    headers.extend(ep.headers.iter().cloned());
    Ok(Prepared {
        path: ep.path(req.op, c.deployment.as_deref()),
        headers,
        body: Bytes::from(body),
    })
}
