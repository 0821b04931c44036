//! Token usage and time to first token, tapped from JSON and SSE responses as they stream by
//! (OpenAI chat/completions/embeddings/responses, Anthropic messages, Gemini `usageMetadata`).

use std::time::Instant;

use bytes::BytesMut;
use serde::Serialize;
use serde_json::Value;

use crate::translate::sse::{SseDecoder, SseEvent};

/// JSON bodies larger than this are not parsed for usage (their usage is unknown).
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;
/// One SSE line longer than this is skipped.
const MAX_SSE_LINE: usize = 1024 * 1024;

/// Tokens as the provider reported them; `None` = unknown (never guessed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// All input tokens, cached ones included.
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Input tokens read from the provider's prompt cache (a subset of `prompt_tokens`).
    pub cached_tokens: Option<u64>,
    /// Input tokens written to the provider's prompt cache (Anthropic; a subset of `prompt_tokens`).
    pub cache_write_tokens: Option<u64>,
    /// Reasoning tokens (a subset of `completion_tokens`).
    pub reasoning_tokens: Option<u64>,
    /// The model the provider says answered.
    pub model: Option<String>,
}

fn n(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

impl Usage {
    /// Merges what one JSON document (a whole body or one SSE event) says.
    pub fn absorb(&mut self, v: &Value) {
        if let Some(m) = v
            .get("model")
            .and_then(Value::as_str)
            .or_else(|| v.get("modelVersion").and_then(Value::as_str))
        {
            self.model = Some(m.to_string());
        }
        // Anthropic stream: message_start carries the message (model, input usage)
        if let Some(msg) = v.get("message").filter(|m| m.get("usage").is_some()) {
            self.absorb(msg);
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            if let Some(p) = n(u, &["prompt_tokens"]) {
                // OpenAI chat/completions/embeddings
                self.prompt_tokens = Some(p);
                self.completion_tokens = n(u, &["completion_tokens"])
                    .or(self.completion_tokens)
                    .or(Some(0));
                self.cached_tokens =
                    n(u, &["prompt_tokens_details", "cached_tokens"]).or(self.cached_tokens);
                self.reasoning_tokens = n(u, &["completion_tokens_details", "reasoning_tokens"])
                    .or(self.reasoning_tokens);
            } else if u.get("cache_read_input_tokens").is_some()
                || u.get("cache_creation_input_tokens").is_some()
                || v.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t == "message" || t == "message_delta")
            {
                // Anthropic: input_tokens excludes cache reads and writes
                let read = n(u, &["cache_read_input_tokens"]);
                let write = n(u, &["cache_creation_input_tokens"]);
                if let Some(i) = n(u, &["input_tokens"]) {
                    self.prompt_tokens = Some(crate::translate::anthropic::prompt_tokens(
                        i,
                        read.unwrap_or(0),
                        write.unwrap_or(0),
                    ));
                    self.cached_tokens = read.or(Some(0));
                    self.cache_write_tokens = write.or(Some(0));
                }
                if let Some(o) = n(u, &["output_tokens"]) {
                    self.completion_tokens = Some(o);
                }
            } else if let Some(i) = n(u, &["input_tokens"]) {
                // OpenAI Responses API
                self.prompt_tokens = Some(i);
                self.completion_tokens = n(u, &["output_tokens"]).or(Some(0));
                self.cached_tokens = n(u, &["input_tokens_details", "cached_tokens"]);
                self.reasoning_tokens = n(u, &["output_tokens_details", "reasoning_tokens"]);
            } else if let Some(o) = n(u, &["output_tokens"]) {
                self.completion_tokens = Some(o);
            }
        }
        // OpenAI Responses API stream: response.completed carries the whole response
        if let Some(r) = v
            .get("response")
            .filter(|r| r.get("usage").is_some_and(Value::is_object))
        {
            self.absorb(r);
        }
        if let Some(g) = v.get("usageMetadata") {
            self.prompt_tokens = n(g, &["promptTokenCount"]).or(self.prompt_tokens);
            self.completion_tokens = n(g, &["candidatesTokenCount"])
                .map(|c| c + n(g, &["thoughtsTokenCount"]).unwrap_or(0))
                .or(self.completion_tokens);
            self.cached_tokens = n(g, &["cachedContentTokenCount"]).or(self.cached_tokens);
            self.reasoning_tokens = n(g, &["thoughtsTokenCount"]).or(self.reasoning_tokens);
        }
    }

    pub fn is_known(&self) -> bool {
        self.prompt_tokens.is_some() || self.completion_tokens.is_some()
    }
}

/// `true` when an SSE event carries generated content (the first token).
fn has_content(v: &Value) -> bool {
    let nonempty = |x: Option<&Value>| x.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    if let Some(c) = v.get("choices").and_then(|c| c.get(0)) {
        let d = c.get("delta").unwrap_or(c);
        return nonempty(d.get("content"))
            || nonempty(d.get("text"))
            || nonempty(c.get("text"))
            || d.get("tool_calls").is_some();
    }
    match v.get("type").and_then(Value::as_str) {
        Some("content_block_delta") => true,
        Some("response.output_text.delta") => nonempty(v.get("delta")),
        _ => v
            .pointer("/candidates/0/content/parts/0/text")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty()),
    }
}

/// The top-level fields `Usage::absorb` reads from a whole JSON body. Everything else (the
/// choices and their content, most of the bytes) is skipped by the parser without being built.
#[derive(serde::Deserialize)]
struct UsageFields {
    model: Option<Value>,
    #[serde(rename = "modelVersion")]
    model_version: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<Value>,
    usage: Option<Value>,
    #[serde(rename = "usageMetadata")]
    usage_metadata: Option<Value>,
    message: Option<Box<UsageFields>>,
    response: Option<Box<UsageFields>>,
}

impl UsageFields {
    fn into_value(self) -> Value {
        let mut m = serde_json::Map::new();
        let nested = |f: Option<Box<UsageFields>>| f.map(|f| f.into_value());
        for (k, v) in [
            ("model", self.model),
            ("modelVersion", self.model_version),
            ("type", self.kind),
            ("usage", self.usage),
            ("usageMetadata", self.usage_metadata),
            ("message", nested(self.message)),
            ("response", nested(self.response)),
        ] {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        }
        Value::Object(m)
    }
}

/// The last event of a complete stream, in each dialect.
fn is_terminal(event: Option<&str>, data: &[u8]) -> bool {
    matches!(event, Some("message_stop" | "response.completed")) || data.trim_ascii() == b"[DONE]"
}

/// Watches a response body go by without holding it back.
#[derive(Debug)]
pub struct Tap {
    json: BytesMut,
    json_too_big: bool,
    /// `Some` for an SSE body.
    events: Option<SseDecoder>,
    pending: Vec<SseEvent>,
    pub usage: Usage,
    pub first_token: Option<Instant>,
    /// The whole (non-SSE) body parsed as one JSON document.
    parsed_json: bool,
    /// An SSE stream's terminal event went by (`data: [DONE]`, Anthropic's `message_stop`,
    /// the Responses API's `response.completed`): a client may close the connection after it.
    pub terminal: bool,
}

impl Tap {
    pub fn new(content_type: Option<&str>) -> Tap {
        let sse = content_type.is_some_and(|c| c.starts_with("text/event-stream"));
        Tap {
            json: BytesMut::new(),
            json_too_big: false,
            events: sse.then(|| SseDecoder::new(MAX_SSE_LINE)),
            pending: Vec::new(),
            usage: Usage::default(),
            first_token: None,
            parsed_json: false,
            terminal: false,
        }
    }

    pub fn is_sse(&self) -> bool {
        self.events.is_some()
    }

    /// After `finish`: the body was one valid JSON document.
    pub fn parsed_json(&self) -> bool {
        self.parsed_json
    }

    pub fn on_chunk(&mut self, chunk: &[u8]) {
        let Some(decoder) = self.events.as_mut() else {
            if !self.json_too_big {
                if self.json.len() + chunk.len() > MAX_JSON_BODY {
                    self.json_too_big = true;
                    self.json = BytesMut::new();
                } else {
                    self.json.extend_from_slice(chunk);
                }
            }
            return;
        };
        decoder.push(chunk, &mut self.pending);
        self.take_events();
    }

    fn take_events(&mut self) {
        let mut events = std::mem::take(&mut self.pending);
        for ev in events.drain(..) {
            if is_terminal(ev.event.as_deref(), ev.data.as_bytes()) {
                self.terminal = true;
            }
            self.on_event(ev.data.as_bytes());
        }
        self.pending = events;
    }

    fn on_event(&mut self, data: &[u8]) {
        let data = data.trim_ascii_start();
        if !data.starts_with(b"{") {
            return;
        }
        // once the first token and the model are known, only events that carry usage matter:
        // skip parsing the (many) content deltas
        if self.first_token.is_some()
            && self.usage.model.is_some()
            && memchr::memmem::find(data, b"sage").is_none()
        {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(data) {
            if self.first_token.is_none() && has_content(&v) {
                self.first_token = Some(Instant::now());
            }
            self.usage.absorb(&v);
        }
    }

    /// Usage once the body is complete.
    pub fn finish(&mut self) -> Usage {
        if let Some(decoder) = self.events.as_mut() {
            decoder.finish(&mut self.pending);
            self.take_events();
        } else if !self.json.is_empty() {
            if let Ok(f) = serde_json::from_slice::<UsageFields>(&self.json) {
                self.usage.absorb(&f.into_value());
                self.parsed_json = true;
            }
            self.json = BytesMut::new();
        }
        self.usage.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Usage {
        let mut t = Tap::new(Some("application/json"));
        for piece in body.as_bytes().chunks(7) {
            t.on_chunk(piece);
        }
        t.finish()
    }

    #[test]
    fn knows_a_streams_terminal_event() {
        let mut t = Tap::new(Some("text/event-stream"));
        t.on_chunk(b"data: {\"choices\":[]}\n\ndata: [DO");
        assert!(!t.terminal);
        t.on_chunk(b"NE]\n\n");
        assert!(t.terminal, "OpenAI's [DONE]");
        let mut t = Tap::new(Some("text/event-stream"));
        t.on_chunk(b"event: message_delta\ndata: {}\n\n");
        assert!(!t.terminal);
        t.on_chunk(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        assert!(t.terminal, "Anthropic's message_stop");
        let mut t = Tap::new(Some("text/event-stream"));
        t.on_chunk(b"event: response.completed\ndata: {}\n\n");
        assert!(t.terminal, "the Responses API's response.completed");
    }

    fn sse(body: &str) -> (Usage, bool) {
        let mut t = Tap::new(Some("text/event-stream; charset=utf-8"));
        for piece in body.as_bytes().chunks(5) {
            t.on_chunk(piece);
        }
        (t.finish(), t.first_token.is_some())
    }

    #[test]
    fn openai_chat_json_with_cached_and_reasoning() {
        let u = json(
            r#"{"model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":100,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":40},"completion_tokens_details":{"reasoning_tokens":5}}}"#,
        );
        assert_eq!(u.prompt_tokens, Some(100));
        assert_eq!(u.completion_tokens, Some(20));
        assert_eq!(u.cached_tokens, Some(40));
        assert_eq!(u.reasoning_tokens, Some(5));
        assert_eq!(u.model.as_deref(), Some("gpt-4o-2024-08-06"));
    }

    #[test]
    fn openai_embeddings_and_responses_api() {
        let u = json(
            r#"{"object":"list","model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#,
        );
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(8), Some(0)));
        let u = json(
            r#"{"object":"response","model":"o4-mini","usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":10},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":12}}}"#,
        );
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.cached_tokens,
                u.reasoning_tokens
            ),
            (Some(50), Some(30), Some(10), Some(12))
        );
    }

    #[test]
    fn openai_stream_with_and_without_usage() {
        let body = "data: {\"model\":\"gpt-4o-mini\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
                    data: {\"model\":\"gpt-4o-mini\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
                    data: {\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n\
                    data: [DONE]\n\n";
        let (u, ttft) = sse(body);
        assert!(ttft);
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(9), Some(2)));
        let (u, _) =
            sse("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n");
        assert!(
            !u.is_known(),
            "a stream without usage has unknown tokens, not zero"
        );
        assert_eq!(u.prompt_tokens, None);
    }

    #[test]
    fn anthropic_json_and_stream_with_cache_tokens() {
        let u = json(
            r#"{"type":"message","model":"claude-sonnet-4-20250514","usage":{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":50,"output_tokens":7}}"#,
        );
        assert_eq!(
            (
                u.prompt_tokens,
                u.cached_tokens,
                u.cache_write_tokens,
                u.completion_tokens
            ),
            (Some(160), Some(100), Some(50), Some(7))
        );
        let body = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"type\":\"message\",\"model\":\"claude-3-5-haiku-20241022\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
                    event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
                    event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n";
        let (u, ttft) = sse(body);
        assert!(ttft);
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(25), Some(15)));
        assert_eq!(u.model.as_deref(), Some("claude-3-5-haiku-20241022"));
    }

    #[test]
    fn gemini_usage_metadata() {
        let u = json(
            r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]}}],"modelVersion":"gemini-2.5-flash","usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":4,"thoughtsTokenCount":6,"cachedContentTokenCount":2}}"#,
        );
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.reasoning_tokens,
                u.cached_tokens
            ),
            (Some(12), Some(10), Some(6), Some(2))
        );
        assert_eq!(u.model.as_deref(), Some("gemini-2.5-flash"));
    }

    #[test]
    fn non_json_and_oversized_bodies_have_unknown_usage() {
        assert!(!json("<html>oops</html>").is_known());
        let mut t = Tap::new(None);
        t.on_chunk(&vec![b' '; MAX_JSON_BODY + 1]);
        assert!(!t.finish().is_known());
    }
}
