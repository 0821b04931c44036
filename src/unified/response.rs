//! What the client of the unified API gets back: Anthropic answers turned into OpenAI ones (JSON and
//! SSE), and the aggregated error when every attempt failed.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::config::catalogue::ApiFormat;
use crate::error::GatewayError;
use crate::translate::sse::{SseDecoder, SseEvent};
use crate::translate::{anthropic, anthropic_stream::StreamTranslator};

/// An Anthropic JSON answer larger than this is not translated (the client gets an error).
const MAX_JSON: usize = 32 * 1024 * 1024;
/// How much of a failed attempt's body is read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// One attempt as the client's error lists it.
#[derive(Debug, Clone)]
pub struct Report {
    pub provider: String,
    pub model: String,
    /// 0: no answer (see `message`).
    pub status: u16,
    pub message: String,
}

/// Rewrites a response body on its way to the client.
pub enum Mapper {
    /// An Anthropic JSON answer, collected and translated once it is complete (known by its
    /// parsing, since an answer replayed while it is cached ends without an end-of-stream call).
    AnthropicJson {
        buf: Vec<u8>,
        done: bool,
    },
    AnthropicSse(Box<StreamTranslator>),
    /// An OpenAI-format stream for which the gateway asked for usage (to log it) and the client
    /// did not: the usage-only chunk (`"choices": []`) is taken out, everything else passes.
    DropUsage {
        sse: SseDecoder,
        events: Vec<SseEvent>,
    },
    /// The last attempt failed: its body is read for its message, then replaced by the
    /// aggregated error.
    Failed {
        buf: Vec<u8>,
        format: ApiFormat,
        reports: Vec<Report>,
    },
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Mapper {
    /// The mapper for a successful answer from a provider speaking `format`, if it needs one.
    pub fn for_success(format: ApiFormat, sse: bool, include_usage: bool) -> Option<Mapper> {
        match (format, sse) {
            (ApiFormat::Anthropic, true) => Some(Mapper::AnthropicSse(Box::new(
                StreamTranslator::new(include_usage, unix_now()),
            ))),
            (ApiFormat::Anthropic, false) => Some(Mapper::AnthropicJson {
                buf: Vec::new(),
                done: false,
            }),
            (_, true) if !include_usage => Some(Mapper::DropUsage {
                sse: SseDecoder::new(MAX_SSE_LINE),
                events: Vec::new(),
            }),
            _ => None,
        }
    }

    /// Content type of the mapped body (`None`: the provider's).
    pub fn content_type(&self) -> Option<&'static str> {
        match self {
            Mapper::AnthropicSse(_) => Some("text/event-stream; charset=utf-8"),
            Mapper::DropUsage { .. } => None,
            _ => Some("application/json"),
        }
    }

    /// Replaces `body` (one chunk of the provider's answer) with what the client gets.
    pub fn map(&mut self, body: &mut Option<Bytes>, end: bool) {
        let chunk = body.take().unwrap_or_default();
        let mut out = Vec::new();
        match self {
            Mapper::AnthropicSse(t) => {
                t.push(&chunk, &mut out);
                if end {
                    t.finish(&mut out);
                }
            }
            Mapper::DropUsage { sse, events } => {
                sse.push(&chunk, events);
                if end {
                    sse.finish(events);
                }
                for ev in events.drain(..) {
                    if !is_usage_only(&ev.data) {
                        write_event(&ev, &mut out);
                    }
                }
            }
            Mapper::AnthropicJson { buf, done } => {
                if *done {
                    return;
                }
                if buf.len() + chunk.len() <= MAX_JSON {
                    buf.extend_from_slice(&chunk);
                } else {
                    buf.clear();
                    buf.push(b'!'); // not JSON: reported at the end
                }
                let complete = buf.trim_ascii_end().ends_with(b"}")
                    && serde_json::from_slice::<serde::de::IgnoredAny>(buf).is_ok();
                if end || complete {
                    out = translate_json(buf);
                    *done = true;
                }
            }
            Mapper::Failed {
                buf,
                format,
                reports,
            } => {
                let room = MAX_ERROR_BODY.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if end {
                    if let Some(last) = reports.last_mut() {
                        if let Some(m) = error_message(*format, last.status, buf) {
                            last.message = m;
                        }
                    }
                    let e = aggregate(reports, Some((*format, buf.as_slice())));
                    out = e.to_json().to_vec();
                }
            }
        }
        if !out.is_empty() {
            *body = Some(Bytes::from(out));
        }
    }
}

/// Longest SSE line passed on (a chunk of a long tool-call argument fits many times over).
const MAX_SSE_LINE: usize = 16 * 1024 * 1024;

/// `"choices": []` with a `usage` object: the chunk that `include_usage` adds.
fn is_usage_only(data: &str) -> bool {
    let b = data.as_bytes();
    let Some(i) = memchr::memmem::find(b, b"\"choices\"") else {
        return false;
    };
    let rest = b[i + 9..]
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .take(3)
        .collect::<Vec<u8>>();
    if rest != b":[]" {
        return false;
    }
    serde_json::from_str::<Value>(data).is_ok_and(|v| v.get("usage").is_some_and(Value::is_object))
}

fn write_event(ev: &SseEvent, out: &mut Vec<u8>) {
    if let Some(name) = &ev.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in ev.data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

fn translate_json(buf: &[u8]) -> Vec<u8> {
    let translated = serde_json::from_slice::<Value>(buf)
        .map_err(|e| format!("the provider's answer is not JSON ({e})"))
        .and_then(|v| anthropic::response(&v, unix_now()).map_err(|e| e.to_string()));
    match translated {
        Ok(v) => v.to_string().into_bytes(),
        Err(why) => GatewayError::BadGateway(format!(
            "the gateway could not translate the provider's answer: {why}"
        ))
        .to_json()
        .to_vec(),
    }
}

/// The message of a provider's error body (OpenAI or Anthropic shape), if it has one.
fn error_message(format: ApiFormat, status: u16, body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let m = match format {
        ApiFormat::Anthropic => anthropic::error(status, &v).1,
        _ => v,
    };
    m.pointer("/error/message")
        .or_else(|| m.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The status that tells the client most about a failed chain: 401/403 (a key problem the
/// operator must fix) before 429 (try later) before the last attempt's status.
pub fn telling_status(reports: &[Report]) -> u16 {
    if let Some(r) = reports.iter().find(|r| matches!(r.status, 401 | 403)) {
        return r.status;
    }
    if reports.iter().any(|r| r.status == 429) {
        return 429;
    }
    match reports.last().map_or(0, |r| r.status) {
        0 => 502,
        // Anthropic's "overloaded": clients know 503 as "try again later"
        529 => 503,
        s => s,
    }
}

/// The client's error when every attempt failed. `last` is the final attempt's format and body,
/// when it answered: with one attempt, its error type and code are passed on.
pub fn aggregate(reports: &[Report], last: Option<(ApiFormat, &[u8])>) -> GatewayError {
    let status = telling_status(reports);
    let attempts = Value::Array(
        reports
            .iter()
            .map(|r| {
                json!({"provider": r.provider, "model": r.model,
                       "status": if r.status == 0 { Value::Null } else { json!(r.status) },
                       "message": r.message})
            })
            .collect(),
    );
    let list = reports
        .iter()
        .map(|r| {
            let status = if r.status == 0 {
                String::new()
            } else {
                format!("{} ", r.status)
            };
            format!("{}/{}: {status}{}", r.model, r.provider, r.message)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let (mut kind, mut code) = match status {
        401 => ("authentication_error", "upstream_auth_failed"),
        403 => ("permission_error", "upstream_forbidden"),
        429 => ("rate_limit_error", "rate_limited"),
        400..=499 => ("invalid_request_error", "upstream_rejected"),
        _ => ("upstream_error", "all_attempts_failed"),
    };
    let mut upstream: Option<(String, String)> = None;
    if let (1, Some((format, body))) = (reports.len(), last) {
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            let v = match format {
                ApiFormat::Anthropic => anthropic::error(status, &v).1,
                _ => v,
            };
            let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
            if let (Some(t), c) = (s("/error/type"), s("/error/code")) {
                upstream = Some((t.clone(), c.unwrap_or(t)));
            }
        }
    }
    if let Some((t, c)) = &upstream {
        kind = t;
        code = c;
    }
    let message = if reports.len() == 1 {
        format!("the provider failed: {list}")
    } else {
        format!("all {} provider attempts failed: {list}", reports.len())
    };
    GatewayError::AttemptsFailed {
        status,
        message,
        kind: kind.to_string(),
        code: code.to_string(),
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(provider: &str, status: u16) -> Report {
        Report {
            provider: provider.into(),
            model: "m".into(),
            status,
            message: format!("upstream answered {status}"),
        }
    }

    #[test]
    fn the_telling_status_prefers_key_problems_then_rate_limits_then_the_last() {
        assert_eq!(
            telling_status(&[r("a", 500), r("b", 401), r("c", 429)]),
            401
        );
        assert_eq!(telling_status(&[r("a", 403), r("b", 500)]), 403);
        assert_eq!(telling_status(&[r("a", 429), r("b", 500)]), 429);
        assert_eq!(telling_status(&[r("a", 500), r("b", 404)]), 404);
        assert_eq!(telling_status(&[r("a", 500), r("b", 0)]), 502);
        assert_eq!(telling_status(&[r("anthropic", 529)]), 503);
    }

    #[test]
    fn the_aggregated_error_lists_every_attempt() {
        let e = aggregate(&[r("openai", 500), r("anthropic", 429)], None);
        assert_eq!(e.status(), 429);
        let v: Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "rate_limited");
        assert_eq!(v["error"]["attempts"][0]["provider"], "openai");
        assert_eq!(v["error"]["attempts"][1]["status"], 429);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("all 2 provider attempts failed") && msg.contains("m/openai: 500"),
            "{msg}"
        );
    }

    #[test]
    fn a_failed_anthropic_answer_becomes_an_openai_error_with_its_message() {
        let mut m = Mapper::Failed {
            buf: Vec::new(),
            format: ApiFormat::Anthropic,
            reports: vec![Report {
                provider: "anthropic".into(),
                model: "claude-sonnet-4".into(),
                status: 400,
                message: "upstream answered 400".into(),
            }],
        };
        let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}"#;
        let mut chunk = Some(Bytes::from_static(&body[..20]));
        m.map(&mut chunk, false);
        assert!(chunk.is_none(), "nothing is sent before the end");
        let mut chunk = Some(Bytes::from_static(&body[20..]));
        m.map(&mut chunk, true);
        let v: Value = serde_json::from_slice(&chunk.unwrap()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens: too large"));
        assert_eq!(v["error"]["attempts"][0]["model"], "claude-sonnet-4");
    }

    #[test]
    fn an_anthropic_json_answer_is_translated_at_its_end() {
        let mut m = Mapper::for_success(ApiFormat::Anthropic, false, false).unwrap();
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":2}}"#;
        let mut a = Some(Bytes::from_static(&body[..30]));
        m.map(&mut a, false);
        assert!(a.is_none());
        let mut b = Some(Bytes::from_static(&body[30..]));
        m.map(&mut b, true);
        let v: Value = serde_json::from_slice(&b.unwrap()).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(v["usage"]["total_tokens"], 7);
        assert!(Mapper::for_success(ApiFormat::Openai, false, false).is_none());
        assert!(Mapper::for_success(ApiFormat::Openai, true, true).is_none());
    }

    #[test]
    fn the_usage_chunk_the_client_did_not_ask_for_is_taken_out_at_any_split() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
            ": keep-alive\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"choices\": [ ],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n",
            "data: [DONE]\n\n"
        );
        let want = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: [DONE]\n\n"
        );
        let b = stream.as_bytes();
        for cut in 0..b.len() {
            let mut m = Mapper::for_success(ApiFormat::Openai, true, false).unwrap();
            let mut out = Vec::new();
            for (part, end) in [(&b[..cut], false), (&b[cut..], true)] {
                let mut body = Some(Bytes::copy_from_slice(part));
                m.map(&mut body, end);
                out.extend_from_slice(&body.unwrap_or_default());
            }
            assert_eq!(String::from_utf8(out).unwrap(), want, "cut at {cut}");
        }
    }
}
