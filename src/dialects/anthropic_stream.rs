//! Anthropic Messages stream -> OpenAI chat-completion chunks: a stateful translator fed with the stream's decoded events, writing `data: {...}` frames and `data: [DONE]`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::anthropic_map::{finish_reason, openai_usage};
use super::sse::SseEvent;
use super::AnswerMap;

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block,
    },
    ContentBlockDelta {
        index: usize,
        delta: Delta,
    },
    ContentBlockStop {},
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<Usage>,
    },
    MessageStop {},
    Ping {},
    Error {
        error: ErrorBody,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct StartMessage {
    id: String,
    model: String,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {},
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta {
    #[serde(rename = "text_delta")]
    Text { text: String },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: String },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// Translates one response stream. Create one per request.
pub struct StreamTranslator {
    /// From the request: send a last chunk with usage (`stream_options.include_usage`).
    include_usage: bool,
    created: i64,
    id: String,
    model: String,
    /// Anthropic content-block index -> OpenAI tool-call index.
    tool_index: Vec<(usize, usize)>,
    tools: usize,
    input_tokens: u64,
    cache_read: u64,
    cache_write: u64,
    output_tokens: u64,
    finish: Option<&'static str>,
    started: bool,
    done: bool,
}

impl StreamTranslator {
    /// `created`: the Unix time for the chunks' `created` field.
    pub fn new(include_usage: bool, created: i64) -> StreamTranslator {
        StreamTranslator {
            include_usage,
            created,
            id: String::new(),
            model: String::new(),
            tool_index: Vec::new(),
            tools: 0,
            input_tokens: 0,
            cache_read: 0,
            cache_write: 0,
            output_tokens: 0,
            finish: None,
            started: false,
            done: false,
        }
    }

    /// Translates the stream's next events; appends OpenAI SSE frames to `out`.
    pub fn push_events(&mut self, events: &[SseEvent], out: &mut Vec<u8>) {
        for ev in events {
            self.on_event(ev, out);
        }
    }

    /// The upstream stream ended. A stream cut short (no `message_stop`) ends with an error
    /// frame, never as if it were complete.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.done {
            self.error(
                out,
                "upstream_error",
                "the provider's stream ended before the message was complete",
            );
        }
    }

    /// `true` once the stream is complete (`[DONE]` written).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let parsed = match serde_json::from_str::<Event>(&ev.data) {
            Ok(e) => e,
            Err(e) => {
                return self.error(
                    out,
                    "upstream_error",
                    &format!("the provider sent an event that is not valid: {e}"),
                )
            }
        };
        match parsed {
            Event::MessageStart { message } => {
                self.id = format!("chatcmpl-{}", message.id);
                self.model = message.model;
                if let Some(u) = message.usage {
                    self.absorb(&u);
                }
                self.started = true;
                self.delta(out, json!({"role": "assistant", "content": ""}), None);
            }
            Event::ContentBlockStart {
                index,
                content_block: Block::ToolUse { id, name },
            } => {
                let i = self.tools;
                self.tools += 1;
                self.tool_index.push((index, i));
                self.delta(
                    out,
                    json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                    None,
                );
            }
            Event::ContentBlockStart { .. } | Event::ContentBlockStop {} | Event::Ping {} => {}
            Event::ContentBlockDelta { index, delta } => match delta {
                Delta::Text { text } => self.delta(out, json!({ "content": text }), None),
                Delta::InputJson { partial_json } if partial_json.is_empty() => {}
                Delta::InputJson { partial_json } => {
                    if let Some(&(_, i)) = self.tool_index.iter().find(|(b, _)| *b == index) {
                        self.delta(
                            out,
                            json!({"tool_calls": [{"index": i, "function": {"arguments": partial_json}}]}),
                            None,
                        );
                    }
                }
                Delta::Other => {}
            },
            Event::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    self.absorb(&u);
                }
                if let Some(r) = delta.stop_reason {
                    self.finish = Some(finish_reason(&r));
                }
            }
            Event::MessageStop {} => {
                self.delta(out, json!({}), Some(self.finish.unwrap_or("stop")));
                if self.include_usage {
                    let usage = self.usage();
                    self.frame(out, &self.base(json!([]), Some(usage)));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            Event::Error { error } => {
                let kind = if error.kind.is_empty() {
                    "upstream_error".to_string()
                } else {
                    error.kind
                };
                self.error(out, &kind, &error.message)
            }
            Event::Unknown => {}
        }
    }

    fn absorb(&mut self, u: &Usage) {
        if let Some(i) = u.input_tokens {
            self.input_tokens = i;
            self.cache_read = u.cache_read_input_tokens.unwrap_or(0);
            self.cache_write = u.cache_creation_input_tokens.unwrap_or(0);
        }
        if let Some(o) = u.output_tokens {
            self.output_tokens = o;
        }
    }

    fn usage(&self) -> Value {
        openai_usage(
            self.input_tokens,
            self.output_tokens,
            self.cache_read,
            self.cache_write,
        )
    }

    fn base(&self, choices: Value, usage: Option<Value>) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }

    fn delta(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        let choice =
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
        self.frame(out, &self.base(choice, None));
    }

    fn frame(&self, out: &mut Vec<u8>, v: &Value) {
        out.extend_from_slice(b"data: ");
        // a Value always serializes
        let _ = serde_json::to_writer(&mut *out, v);
        out.extend_from_slice(b"\n\n");
    }

    /// An OpenAI-style error frame, then the end of the stream.
    fn error(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        let v = json!({"error": {"message": message, "type": kind, "code": kind}});
        self.frame(out, &v);
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }
}

impl AnswerMap for StreamTranslator {
    fn content_type(&self) -> Option<&'static str> {
        Some(super::SSE_CONTENT_TYPE)
    }

    fn chunk(&mut self, _chunk: &[u8], end: bool, out: &mut Vec<u8>) {
        // a stream's bytes arrive as events; a body that is not a stream is cut short
        if end {
            self.finish(out);
        }
    }

    fn events(&mut self, events: &[SseEvent], end: bool, out: &mut Vec<u8>) {
        self.push_events(events, out);
        if end {
            self.finish(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sse::SseDecoder;
    use super::*;

    const TEXT: &str = include_str!("../../tests/fixtures/anthropic/stream_text.sse");
    const TOOLS: &str = include_str!("../../tests/fixtures/anthropic/stream_tools.sse");
    const TEXT_OUT: &str = include_str!("../../tests/fixtures/anthropic/stream_text.openai.sse");
    const TOOLS_OUT: &str = include_str!("../../tests/fixtures/anthropic/stream_tools.openai.sse");

    fn translate(chunks: &[&[u8]], include_usage: bool) -> String {
        let mut t = StreamTranslator::new(include_usage, 1_764_590_400);
        let mut d = SseDecoder::new(1 << 20);
        let (mut out, mut events) = (vec![], vec![]);
        for c in chunks {
            d.push(c, &mut events);
            t.push_events(&events, &mut out);
            events.clear();
        }
        d.finish(&mut events);
        t.push_events(&events, &mut out);
        t.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn golden_text_and_parallel_tool_calls() {
        assert_eq!(translate(&[TEXT.as_bytes()], true), TEXT_OUT);
        assert_eq!(translate(&[TOOLS.as_bytes()], false), TOOLS_OUT);
    }

    #[test]
    fn every_split_point_gives_identical_output() {
        for (input, usage, want) in [(TEXT, true, TEXT_OUT), (TOOLS, false, TOOLS_OUT)] {
            let b = input.as_bytes();
            for i in 0..=b.len() {
                assert_eq!(translate(&[&b[..i], &b[i..]], usage), want, "split at {i}");
            }
            // and one byte at a time
            let bytes: Vec<&[u8]> = b.chunks(1).collect();
            assert_eq!(translate(&bytes, usage), want);
        }
    }

    #[test]
    fn the_output_is_what_an_openai_client_reassembles() {
        let out = translate(&[TOOLS.as_bytes()], false);
        let mut args = vec![String::new(); 2];
        let mut names = vec![String::new(); 2];
        let mut finish = None;
        for frame in out.split("\n\n").filter(|f| !f.is_empty()) {
            let data = frame.strip_prefix("data: ").unwrap();
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["id"], "chatcmpl-msg_01Tools");
            let c = &v["choices"][0];
            for tc in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap() as usize;
                if let Some(n) = tc["function"]["name"].as_str() {
                    names[i].push_str(n);
                }
                args[i].push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
        assert_eq!(names, ["get_weather", "get_time"]);
        let a: Value = serde_json::from_str(&args[0]).unwrap();
        assert_eq!(a["city"], "Paris");
        let b: Value = serde_json::from_str(&args[1]).unwrap();
        assert_eq!(b["tz"], "Europe/Paris");
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        assert!(out.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn errors_mid_stream_and_cut_streams_end_with_an_error_frame() {
        let cut = &TEXT[..TEXT.find("event: message_delta").unwrap()];
        let out = translate(&[cut.as_bytes()], true);
        assert!(out.contains(r#""content":"Hello""#), "{out}");
        let last = out.trim_end().rsplit("\n\n").nth(1).unwrap();
        assert!(
            last.contains(r#""error""#) && last.contains("ended before"),
            "{out}"
        );
        assert!(out.ends_with("data: [DONE]\n\n"));

        let overloaded = format!(
            "{cut}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n"
        );
        let out = translate(&[overloaded.as_bytes()], true);
        assert!(out.contains(r#"{"error":{"code":"overloaded_error","message":"Overloaded","type":"overloaded_error"}}"#), "{out}");
        assert_eq!(out.matches("[DONE]").count(), 1);
    }
}
