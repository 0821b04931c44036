//! What one unified attempt sends: the provider's path, headers (its key, never the client's) and
//! body (`model` replaced, or translated for Anthropic).

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::{Candidate, Op};
use crate::config::catalogue::ApiFormat;
use crate::error::GatewayError;
use crate::translate::anthropic;

/// A unified request body, parsed once.
#[derive(Debug)]
pub struct UnifiedRequest {
    pub op: Op,
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: bool,
}

fn bad(msg: String) -> GatewayError {
    GatewayError::BadRequest(msg)
}

/// Parses and checks the client's body for `op`.
pub fn parse(op: Op, bytes: &[u8]) -> Result<UnifiedRequest, GatewayError> {
    let shape = match op {
        Op::Chat => "{\"model\": \"gpt-4o-mini\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}",
        Op::Embeddings => "{\"model\": \"text-embedding-3-small\", \"input\": \"text\"}",
        Op::Completions => "{\"model\": \"gpt-4o-mini\", \"prompt\": \"Say hi\"}",
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(format!(
            "the request body is empty; send a JSON object such as {shape}"
        )));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "the request body is not valid JSON ({e}); send a JSON object such as {shape}"
        ))
    })?;
    let Value::Object(body) = v else {
        return Err(bad(format!(
            "the request body must be a JSON object such as {shape}"
        )));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(bad("`model` must be a string such as \"gpt-4o-mini\" or \"gpt-4o/openai,claude-sonnet-4/anthropic\"".into())),
        None => return Err(bad(format!("`model` is missing; send a JSON object such as {shape}"))),
    };
    match op {
        Op::Chat => match body.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => {}
            Some(Value::Array(_)) => {
                return Err(bad("`messages` is empty; send at least one message".into()))
            }
            Some(_) => {
                return Err(bad(
                    "`messages` must be an array of {\"role\", \"content\"} objects".into(),
                ))
            }
            None => {
                return Err(bad(format!(
                    "`messages` is missing; send a JSON object such as {shape}"
                )))
            }
        },
        Op::Completions => match body.get("prompt") {
            Some(Value::String(_)) => {}
            Some(Value::Array(a)) if !a.is_empty() => {}
            Some(_) => {
                return Err(bad(
                    "`prompt` must be a string or a non-empty array of strings".into(),
                ))
            }
            None => {
                return Err(bad(format!(
                    "`prompt` is missing; send a JSON object such as {shape}"
                )))
            }
        },
        Op::Embeddings => {
            if body.get("input").is_none_or(Value::is_null) {
                return Err(bad(format!(
                    "`input` is missing; send a JSON object such as {shape}"
                )));
            }
        }
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("`stream` must be true or false".into())),
    };
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(UnifiedRequest {
        op,
        body,
        model,
        stream,
        include_usage,
    })
}

/// Sets `stream_options.include_usage: true` (a streamed answer then ends with a usage chunk).
/// `Some(changed)`, or `None` when `stream_options` is there but not an object.
pub fn ask_for_stream_usage(body: &mut Map<String, Value>) -> Option<bool> {
    let Value::Object(opts) = body
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()))
    else {
        return None;
    };
    Some(opts.insert("include_usage".into(), Value::Bool(true)) != Some(Value::Bool(true)))
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
    let body = match ep.format {
        ApiFormat::Openai | ApiFormat::Azure => {
            let mut b = req.body.clone();
            b.insert("model".into(), Value::String(c.model_id.clone()));
            if req.stream {
                // the usage chunk is how a stream's tokens and cost get logged
                ask_for_stream_usage(&mut b);
            }
            serde_json::to_vec(&b)
        }
        ApiFormat::Anthropic => {
            let t =
                anthropic::request(&Value::Object(req.body.clone()), &c.model_id).map_err(|e| {
                    bad(format!(
                        "this request cannot be sent to {} ({}): {e}",
                        ep.name,
                        c.label()
                    ))
                })?;
            serde_json::to_vec(&t.body)
        }
    }
    .map_err(|e| GatewayError::Internal(format!("cannot encode the upstream body: {e}")))?;
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
