//! What the client of the unified API gets back: the answering dialect's mapping of a successful answer, and the aggregated error when every attempt failed.

use serde_json::{json, Value};

use crate::dialects::sse::{SseDecoder, SseEvent};
use crate::dialects::{AnswerMap, Client, Egress};
use crate::error::GatewayError;

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
    /// A successful answer in the provider's dialect, made canonical by that dialect or put in
    /// the client's by the client's (`sse`: it is a stream and is mapped event by event).
    Answer { map: Box<dyn AnswerMap>, sse: bool },
    /// Both: the provider's answer made canonical, then the client's (a stream is decoded
    /// again between the two).
    Chain(Box<Chain>),
    /// The last attempt failed: its body is read for its message, then replaced by the
    /// aggregated error in the client's shape.
    Failed {
        buf: Vec<u8>,
        dialect: &'static dyn Egress,
        client: Client,
        reports: Vec<Report>,
    },
}

/// Two mappings in a row.
pub struct Chain {
    first: Box<dyn AnswerMap>,
    second: Box<dyn AnswerMap>,
    sse: bool,
    between: SseDecoder,
    events: Vec<SseEvent>,
    buf: Vec<u8>,
}

/// Longest SSE line decoded between two mappings.
const MAX_SSE_LINE: usize = 16 * 1024 * 1024;

impl Mapper {
    /// The mapper for a successful answer from a provider speaking `dialect` to a client
    /// speaking `client`, if it needs one: none when both speak the same dialect.
    pub fn for_success(
        dialect: &dyn Egress,
        client: Client,
        sse: bool,
        include_usage: bool,
    ) -> Option<Mapper> {
        if client.is_native(dialect) {
            return None;
        }
        let first = dialect.answer(sse, include_usage);
        let second = client.ingress().answer(sse);
        match (first, second) {
            (None, None) => None,
            (Some(map), None) | (None, Some(map)) => Some(Mapper::Answer { map, sse }),
            (Some(first), Some(second)) => Some(Mapper::Chain(Box::new(Chain {
                first,
                second,
                sse,
                between: SseDecoder::new(MAX_SSE_LINE),
                events: Vec::new(),
                buf: Vec::new(),
            }))),
        }
    }

    /// Whether it reads the stream's decoded events rather than the raw bytes.
    pub fn takes_events(&self) -> bool {
        match self {
            Mapper::Answer { sse, .. } => *sse,
            Mapper::Chain(c) => c.sse,
            Mapper::Failed { .. } => false,
        }
    }

    /// Content type of the mapped body (`None`: the provider's).
    pub fn content_type(&self) -> Option<&'static str> {
        match self {
            Mapper::Answer { map, .. } => map.content_type(),
            Mapper::Chain(c) => c.second.content_type().or(c.first.content_type()),
            Mapper::Failed { .. } => Some("application/json"),
        }
    }

    /// Writes to `out` what the client gets for one chunk of the provider's answer (`events`:
    /// what that chunk completed of a stream, decoded once upstream of the mapper).
    pub fn map(&mut self, chunk: &[u8], events: &[SseEvent], end: bool, out: &mut Vec<u8>) {
        match self {
            Mapper::Answer { map, sse: true } => map.events(events, end, out),
            Mapper::Answer { map, sse: false } => map.chunk(chunk, end, out),
            Mapper::Chain(c) => {
                c.buf.clear();
                if c.sse {
                    c.first.events(events, end, &mut c.buf);
                    c.between.push(&c.buf, &mut c.events);
                    if end {
                        c.between.finish(&mut c.events);
                    }
                    c.second.events(&c.events, end, out);
                    c.events.clear();
                } else {
                    c.first.chunk(chunk, end, &mut c.buf);
                    c.second.chunk(&c.buf, end, out);
                }
            }
            Mapper::Failed {
                buf,
                dialect,
                client,
                reports,
            } => {
                let room = MAX_ERROR_BODY.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if end {
                    // the body is read once, in the canonical error shape
                    let status = reports.last().map_or(0, |r| r.status);
                    let canonical = serde_json::from_slice::<Value>(buf)
                        .ok()
                        .map(|v| dialect.error(status, &v).1);
                    if let (Some(last), Some(m)) = (
                        reports.last_mut(),
                        canonical.as_ref().and_then(error_message),
                    ) {
                        last.message = m;
                    }
                    let e = aggregate(reports, canonical.as_ref());
                    *out = client.error_body(e.status(), &e.to_json());
                }
            }
        }
    }
}

/// The message of a provider's error (in the canonical shape), if it has one.
fn error_message(m: &Value) -> Option<String> {
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

/// The client's error when every attempt failed. `last` is the final attempt's error body in the
/// canonical shape, when it answered one: with one attempt, its error type and code are passed on.
pub fn aggregate(reports: &[Report], last: Option<&Value>) -> GatewayError {
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
    if let (1, Some(v)) = (reports.len(), last) {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        if let (Some(t), c) = (s("/error/type"), s("/error/code")) {
            upstream = Some((t.clone(), c.unwrap_or(t)));
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
    use crate::dialects::sse::SseDecoder;
    use crate::dialects::{anthropic::Anthropic, openai::OpenAi};

    /// Feeds `chunk` to `m` as the answer pipeline does (a stream decoded first); `None`: the
    /// chunk was held back.
    fn run(m: &mut Mapper, d: &mut SseDecoder, chunk: &[u8], end: bool) -> Option<Vec<u8>> {
        let mut events = Vec::new();
        if m.takes_events() {
            d.push(chunk, &mut events);
            if end {
                d.finish(&mut events);
            }
        }
        let mut out = Vec::new();
        m.map(chunk, &events, end, &mut out);
        (!out.is_empty()).then_some(out)
    }

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
            dialect: &Anthropic,
            client: Client::OpenAi,
            reports: vec![Report {
                provider: "anthropic".into(),
                model: "claude-sonnet-4".into(),
                status: 400,
                message: "upstream answered 400".into(),
            }],
        };
        let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}"#;
        let d = &mut SseDecoder::new(1024);
        assert!(
            run(&mut m, d, &body[..20], false).is_none(),
            "nothing is sent before the end"
        );
        let chunk = run(&mut m, d, &body[20..], true);
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
        let mut m = Mapper::for_success(&Anthropic, Client::OpenAi, false, false).unwrap();
        let d = &mut SseDecoder::new(1024);
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":2}}"#;
        assert!(run(&mut m, d, &body[..30], false).is_none());
        let b = run(&mut m, d, &body[30..], true);
        let v: Value = serde_json::from_slice(&b.unwrap()).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(v["usage"]["total_tokens"], 7);
        assert!(Mapper::for_success(&OpenAi, Client::OpenAi, false, false).is_none());
        assert!(Mapper::for_success(&OpenAi, Client::OpenAi, true, true).is_none());
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
            let mut m = Mapper::for_success(&OpenAi, Client::OpenAi, true, false).unwrap();
            let d = &mut SseDecoder::new(1024);
            let mut out = Vec::new();
            for (part, end) in [(&b[..cut], false), (&b[cut..], true)] {
                out.extend(run(&mut m, d, part, end).unwrap_or_default());
            }
            assert_eq!(String::from_utf8(out).unwrap(), want, "cut at {cut}");
        }
    }
}
