//! The answer on its way to the client: a stream decoded once and fed to the usage tap (the answering dialect's `Reader`) and the dialect mapper; the body kept for the log record.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use crate::dialects::sse::{SseDecoder, SseEvent};
use crate::dialects::Reader;
use crate::unified::response::Mapper;
use crate::usage::Usage;

/// JSON bodies larger than this are not parsed for usage (their usage is unknown).
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;
/// Longest SSE line decoded (a chunk of a long tool-call argument fits many times over); a
/// longer one is skipped.
const MAX_SSE_LINE: usize = 16 * 1024 * 1024;

/// The top-level fields a reader reads from a whole JSON body. Everything else (the choices
/// and their content, most of the bytes) is skipped by the parser without being built.
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

/// Watches an answer go by without holding it back: usage, first token, end of stream, as
/// the answering dialect's reader understands them.
pub struct Tap {
    reader: &'static dyn Reader,
    json: BytesMut,
    json_too_big: bool,
    sse: bool,
    pub usage: Usage,
    pub first_token: Option<Instant>,
    /// The whole (non-SSE) body parsed as one JSON document.
    parsed_json: bool,
    /// An SSE stream's terminal event went by (`data: [DONE]`, Anthropic's `message_stop`,
    /// the Responses API's `response.completed`): a client may close the connection after it.
    pub terminal: bool,
}

impl Tap {
    pub fn new(sse: bool, reader: &'static dyn Reader) -> Tap {
        Tap {
            reader,
            json: BytesMut::new(),
            json_too_big: false,
            sse,
            usage: Usage::default(),
            first_token: None,
            parsed_json: false,
            terminal: false,
        }
    }

    pub fn is_sse(&self) -> bool {
        self.sse
    }

    /// After the end: the body was one valid JSON document.
    pub fn parsed_json(&self) -> bool {
        self.parsed_json
    }

    /// A chunk of a JSON body (kept until the end, up to a bound).
    pub fn on_json(&mut self, chunk: &[u8]) {
        if self.json_too_big {
            return;
        }
        if self.json.len() + chunk.len() > MAX_JSON_BODY {
            self.json_too_big = true;
            self.json = BytesMut::new();
        } else {
            self.json.extend_from_slice(chunk);
        }
    }

    /// A stream's decoded events.
    pub fn on_events(&mut self, events: &[SseEvent]) {
        for ev in events {
            if self
                .reader
                .is_terminal(ev.event.as_deref(), ev.data.as_bytes())
            {
                self.terminal = true;
            }
            self.on_event(ev.data.as_bytes());
        }
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
            if self.first_token.is_none() && self.reader.has_content(&v) {
                self.first_token = Some(Instant::now());
            }
            self.reader.absorb(&mut self.usage, &v);
        }
    }

    /// A JSON body is complete: its usage is read.
    pub fn finish_json(&mut self) {
        if !self.json.is_empty() {
            if let Ok(f) = serde_json::from_slice::<UsageFields>(&self.json) {
                self.reader.absorb(&mut self.usage, &f.into_value());
                self.parsed_json = true;
            }
            self.json = BytesMut::new();
        }
    }
}

/// An answer of this content type is a stream of server-sent events.
pub fn is_sse(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| c.starts_with("text/event-stream"))
}

/// The answer on its way to the client.
#[derive(Default)]
pub struct ResponseState {
    pub upstream_start: Option<Instant>,
    pub ttfb: Option<Duration>,
    /// Watches the response for usage and the first token.
    pub tap: Option<Tap>,
    /// Rewrites a unified answer on its way to the client (dialect translation, aggregated
    /// error).
    pub mapper: Option<Mapper>,
    /// The stream's decoder (an SSE answer that is tapped or mapped), shared by both.
    sse: Option<SseDecoder>,
    events: Vec<SseEvent>,
    /// The body's end went by (or was flushed at the end of the request).
    ended: bool,
    /// The start of the response body, kept for the log record (up to the export cap).
    pub capture: Vec<u8>,
    pub total: usize,
}

impl ResponseState {
    /// Sets up the pipeline for an answer (`sse`: a stream): a tap with `reader` (`None`: the
    /// answer consumed no tokens, a cache hit), and a mapper if the answer is rewritten.
    pub fn start(
        &mut self,
        sse: bool,
        reader: Option<&'static dyn Reader>,
        mapper: Option<Mapper>,
    ) {
        self.tap = reader.map(|r| Tap::new(sse, r));
        let mapped_events = mapper.as_ref().is_some_and(Mapper::takes_events);
        self.sse =
            (sse && (self.tap.is_some() || mapped_events)).then(|| SseDecoder::new(MAX_SSE_LINE));
        self.mapper = mapper;
    }

    /// The answer was a stream whose terminal event went to the client: an error on the client
    /// side after that (the openai SDK closes the connection at `data: [DONE]`, before the
    /// body's last chunk) does not make the request fail.
    pub fn stream_complete(&self) -> bool {
        self.tap.as_ref().is_some_and(|t| t.terminal)
    }

    /// A response body chunk on its way to the client: decoded once, the tap reads the
    /// provider's events, the mapper rewrites them, the record keeps what the client got (up to
    /// `capture_cap`).
    pub fn filter_body(&mut self, body: &mut Option<Bytes>, end: bool, capture_cap: usize) {
        let chunk: &[u8] = body.as_deref().unwrap_or_default();
        self.read(chunk, end);
        if let Some(m) = self.mapper.as_mut() {
            let mut out = Vec::new();
            m.map(chunk, &self.events, end, &mut out);
            *body = (!out.is_empty()).then(|| Bytes::from(out));
        }
        self.events.clear();
        self.ended |= end;
        if let Some(b) = body.as_ref() {
            self.total += b.len();
            let room = capture_cap.saturating_sub(self.capture.len());
            self.capture.extend_from_slice(&b[..b.len().min(room)]);
        }
    }

    /// The tap once the request is over: what is left of the body (an answer cut short) is
    /// read first.
    pub fn finish_tap(&mut self) -> Option<&Tap> {
        if !self.ended {
            self.ended = true;
            self.read(&[], true);
            self.events.clear();
        }
        self.tap.as_ref()
    }

    /// Decodes `chunk` (a stream's events stay in `events` for the mapper) and feeds the tap;
    /// `end`: the body is complete.
    fn read(&mut self, chunk: &[u8], end: bool) {
        if let Some(d) = self.sse.as_mut() {
            d.push(chunk, &mut self.events);
            if end {
                d.finish(&mut self.events);
            }
            if let Some(t) = self.tap.as_mut() {
                t.on_events(&self.events);
            }
        } else if let Some(t) = self.tap.as_mut() {
            t.on_json(chunk);
            if end {
                t.finish_json();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialects::ANY;

    /// The answer pipeline with only the tap (no mapper), read with the shape-based reader.
    fn piped(content_type: &str) -> ResponseState {
        let mut r = ResponseState::default();
        r.start(is_sse(Some(content_type)), Some(&ANY), None);
        r
    }

    fn feed(r: &mut ResponseState, piece: &[u8]) {
        let mut b = Some(Bytes::copy_from_slice(piece));
        r.filter_body(&mut b, false, 0);
    }

    fn json(body: &str) -> Usage {
        let mut r = piped("application/json");
        for piece in body.as_bytes().chunks(7) {
            feed(&mut r, piece);
        }
        r.finish_tap().map(|t| t.usage.clone()).unwrap()
    }

    #[test]
    fn knows_a_streams_terminal_event() {
        let mut t = piped("text/event-stream");
        feed(&mut t, b"data: {\"choices\":[]}\n\ndata: [DO");
        assert!(!t.stream_complete());
        feed(&mut t, b"NE]\n\n");
        assert!(t.stream_complete(), "OpenAI's [DONE]");
        let mut t = piped("text/event-stream");
        feed(&mut t, b"event: message_delta\ndata: {}\n\n");
        assert!(!t.stream_complete());
        feed(
            &mut t,
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        assert!(t.stream_complete(), "Anthropic's message_stop");
        let mut t = piped("text/event-stream");
        feed(&mut t, b"event: response.completed\ndata: {}\n\n");
        assert!(
            t.stream_complete(),
            "the Responses API's response.completed"
        );
    }

    fn sse(body: &str) -> (Usage, bool) {
        let mut r = piped("text/event-stream; charset=utf-8");
        for piece in body.as_bytes().chunks(5) {
            feed(&mut r, piece);
        }
        let t = r.finish_tap().unwrap();
        (t.usage.clone(), t.first_token.is_some())
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
        let mut t = Tap::new(false, &ANY);
        t.on_json(&vec![b' '; MAX_JSON_BODY + 1]);
        t.finish_json();
        assert!(!t.usage.is_known());
    }
}
