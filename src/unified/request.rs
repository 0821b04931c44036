//! What one unified attempt sends: the provider's path, headers (its key, never the client's) and the body its dialect builds from the canonical request.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::{Candidate, Op};
pub use crate::dialects::openai::ask_for_stream_usage;
/// A unified request body, parsed once (the canonical form).
pub use crate::dialects::Canonical as UnifiedRequest;
use crate::dialects::{Client, Edits};
use crate::error::GatewayError;
use crate::headers;

/// One attempt's request.
#[derive(Debug)]
pub struct Prepared {
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// What this attempt's model could not take, dropped or clamped (reported when it answers).
    pub dropped: Vec<String>,
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The client's headers a provider speaking the client's own dialect gets (Anthropic's API
/// version and beta flags); other providers get none of them.
const NATIVE_HEADERS: [&str; 2] = [headers::ANTHROPIC_VERSION, headers::ANTHROPIC_BETA];

/// Parses the client's body in its dialect (`client`) for `op`.
pub fn parse_as(client: Client, op: Op, bytes: &[u8]) -> Result<UnifiedRequest, GatewayError> {
    client
        .ingress()
        .parse(op, bytes)
        .map_err(|e| GatewayError::BadRequest(e.0))
}

/// Builds what `c` is sent. The client's `Accept` and `User-Agent` are passed on, and to a
/// provider that speaks the client's dialect, that dialect's own headers.
pub fn prepare(
    req: &UnifiedRequest,
    c: &Candidate,
    client: &http::HeaderMap,
) -> Result<Prepared, GatewayError> {
    let accept = client.get(http::header::ACCEPT);
    let user_agent = client.get(http::header::USER_AGENT);
    let ep = &c.endpoint;
    let native = req.native_for(ep.dialect().name()).is_some();
    let (edits, dropped) = if native {
        (Edits::default(), Vec::new())
    } else {
        fit(req, c)
    };
    // what the provider's dialect cannot express is the client's to change
    let body = ep.dialect().body(req, &c.model_id, &edits).map_err(|e| {
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
    if native {
        for name in NATIVE_HEADERS {
            let mut given = client.get_all(name).iter().peekable();
            if given.peek().is_some() {
                headers.retain(|(n, _)| n.as_str() != name);
                let name = HeaderName::from_static(name);
                headers.extend(given.map(|v| (name.clone(), v.clone())));
            }
        }
    }
    Ok(Prepared {
        path: ep.path(req.op, c.deployment.as_deref()),
        headers,
        body: Bytes::from(body),
        dropped,
    })
}

/// What a request translated from another client dialect must change for `c`'s model: a
/// `max_tokens` over the model's output limit is clamped to it, and a reasoning effort (from
/// `thinking`) is left out for a model without one; both are reported.
fn fit(req: &UnifiedRequest, c: &Candidate) -> (Edits, Vec<String>) {
    let mut edits = Edits::default();
    let mut dropped = Vec::new();
    if req.native.is_none() {
        return (edits, dropped);
    }
    let asked = req
        .body
        .get("max_tokens")
        .and_then(serde_json::Value::as_u64);
    if let (Some(asked), Some(limit)) = (asked, c.max_output) {
        if asked > limit {
            edits.max_tokens = Some(limit);
            dropped.push(format!(
                "max_tokens (clamped from {asked} to {limit}, the output limit of {})",
                c.model
            ));
        }
    }
    if req.body.contains_key("reasoning_effort") && !c.reasoning {
        edits.omit.push("reasoning_effort");
        dropped.push(format!("thinking ({} has no reasoning setting)", c.model));
    }
    (edits, dropped)
}
