//! OpenAI chat-completion chunks -> Anthropic Messages stream: a stateful translator fed with the stream's decoded events, writing `event: <type>` / `data: {...}` frames for a Messages client served by an OpenAI-compatible provider.
//!
//! The sequence follows Anthropic's streaming reference
//! (<https://docs.anthropic.com/en/docs/build-with-claude/streaming>): `message_start`, `ping`,
//! content blocks one after another (`content_block_start`, deltas, `content_block_stop`),
//! `message_delta` (stop reason, usage), `message_stop`; or an `error` event, after which
//! nothing follows. OpenAI reports usage only at the end, so `message_start` carries zeros and
//! `message_delta` the whole usage.

use serde::Deserialize;
use serde_json::{json, Value};

use super::anthropic_map::{error_type, messages_usage as usage, stop_reason};
use super::sse::SseEvent;
use super::AnswerMap;

/// Anthropic's error types (its errors reference): a provider error of one of these types
/// keeps it, any other becomes `api_error`.
const ERROR_TYPES: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
    "timeout_error",
];

const CUT_SHORT: &str = "the provider's stream ended before the message was complete";

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<Function>,
}

#[derive(Deserialize)]
struct Function {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// A tool call seen so far: OpenAI's tool index and id, and its content block.
struct Tool {
    k: Option<usize>,
    id: String,
    block: usize,
}

/// The content block being written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(usize),
    Tool(usize),
}

/// Translates one response stream. Create one per request.
pub struct MessagesStream {
    started: bool,
    /// Content blocks started so far (the next block's index).
    blocks: usize,
    open: Option<Open>,
    tools: Vec<Tool>,
    /// The provider's `finish_reason`, once it came.
    finish: Option<String>,
    /// The provider's last `usage` object.
    usage: Option<Value>,
    done: bool,
}

impl Default for MessagesStream {
    fn default() -> Self {
        Self::new()
    }
}

impl MessagesStream {
    pub fn new() -> Self {
        MessagesStream {
            started: false,
            blocks: 0,
            open: None,
            tools: Vec::new(),
            finish: None,
            usage: None,
            done: false,
        }
    }

    /// Translates the stream's next events; appends Messages SSE frames to `out`.
    pub fn push_events(&mut self, events: &[SseEvent], out: &mut Vec<u8>) {
        for ev in events {
            self.on_event(ev, false, out);
        }
    }

    /// The upstream stream ended. Without `[DONE]`, a stream whose finish reason came is
    /// complete; any other ends with an error event, never as if it were complete.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.started && self.finish.is_some() {
            self.complete(out);
        } else {
            self.error(out, "api_error", CUT_SHORT);
        }
    }

    /// `true` once the stream is complete (`message_stop` or `error` written).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// `cut`: the stream's last event, which the end of the stream may have cut off.
    fn on_event(&mut self, ev: &SseEvent, cut: bool, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let data = ev.data.trim();
        if data.is_empty() {
            return;
        }
        if data == "[DONE]" {
            if self.started {
                self.complete(out);
            } else {
                self.error(out, "api_error", CUT_SHORT);
            }
            return;
        }
        let chunk = match serde_json::from_str::<Chunk>(data) {
            Ok(c) => c,
            // the end of the stream cut it off: [`Self::finish`] says what the stream was
            Err(_) if cut => return,
            Err(e) => {
                return self.error(
                    out,
                    "api_error",
                    &format!("the provider sent an event that is not valid: {e}"),
                )
            }
        };
        if let Some(e) = &chunk.error {
            return self.provider_error(out, e);
        }
        if !self.started {
            self.start(out, &chunk);
        }
        if let Some(u) = chunk.usage.filter(Value::is_object) {
            self.usage = Some(u);
        }
        // a Messages answer has one choice: the first (`n` > 1 cannot be expressed)
        let Some(choice) = chunk
            .choices
            .into_iter()
            .flatten()
            .find(|c| c.index.unwrap_or(0) == 0)
        else {
            return;
        };
        if let Some(delta) = choice.delta {
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                self.text(out, &text);
            }
            for tc in delta.tool_calls.into_iter().flatten() {
                self.tool(out, tc);
            }
        }
        if let Some(f) = choice.finish_reason.filter(|f| !f.is_empty()) {
            self.finish = Some(f);
        }
    }

    fn start(&mut self, out: &mut Vec<u8>, chunk: &Chunk) {
        let id = chunk.id.as_deref().unwrap_or("");
        let id = if id.starts_with("msg_") {
            id.to_string()
        } else {
            format!("msg_{id}")
        };
        emit(
            out,
            &json!({"type": "message_start", "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": chunk.model.as_deref().unwrap_or(""),
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        );
        emit(out, &json!({"type": "ping"}));
        self.started = true;
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        let i = match self.open {
            Some(Open::Text(i)) => i,
            _ => {
                let i = self.next_block(out);
                emit(
                    out,
                    &json!({"type": "content_block_start", "index": i,
                        "content_block": {"type": "text", "text": ""}}),
                );
                self.open = Some(Open::Text(i));
                i
            }
        };
        emit(
            out,
            &json!({"type": "content_block_delta", "index": i,
                "delta": {"type": "text_delta", "text": text}}),
        );
    }

    /// One tool-call piece: the call's first piece starts its block (OpenAI sends the id and
    /// name once, then argument pieces under the same index).
    fn tool(&mut self, out: &mut Vec<u8>, tc: ToolCall) {
        let id = tc.id.filter(|s| !s.is_empty());
        let (name, args) = match tc.function {
            Some(f) => (f.name, f.arguments),
            None => (None, None),
        };
        let known = match &id {
            // a provider may repeat the id on every piece, or reuse an index for a new call
            Some(id) => self.tools.iter().find(|t| &t.id == id),
            None => match tc.index {
                Some(k) => self.tools.iter().rev().find(|t| t.k == Some(k)),
                None => self.tools.last(),
            },
        };
        let block = match known {
            Some(t) => t.block,
            None => {
                let i = self.next_block(out);
                // a provider that names no id: one the client can send back in its tool_result
                let id = id.unwrap_or_else(|| format!("call_{i}"));
                emit(
                    out,
                    &json!({"type": "content_block_start", "index": i, "content_block": {
                        "type": "tool_use",
                        "id": id,
                        "name": name.as_deref().unwrap_or(""),
                        "input": {},
                    }}),
                );
                self.tools.push(Tool {
                    k: tc.index,
                    id,
                    block: i,
                });
                self.open = Some(Open::Tool(i));
                i
            }
        };
        // pieces of an earlier call after a later one started (no provider is known to
        // interleave) go to the earlier block by its index: clients accumulate by index
        if let Some(piece) = args.filter(|a| !a.is_empty()) {
            emit(
                out,
                &json!({"type": "content_block_delta", "index": block,
                    "delta": {"type": "input_json_delta", "partial_json": piece}}),
            );
        }
    }

    /// Stops the open block; the index of the next one.
    fn next_block(&mut self, out: &mut Vec<u8>) -> usize {
        self.close(out);
        let i = self.blocks;
        self.blocks += 1;
        i
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some(Open::Text(i) | Open::Tool(i)) = self.open.take() {
            emit(out, &json!({"type": "content_block_stop", "index": i}));
        }
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        self.close(out);
        let finish = self.finish.as_deref().unwrap_or("stop");
        emit(
            out,
            &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason(finish), "stop_sequence": null},
                "usage": usage(self.usage.as_ref())}),
        );
        emit(out, &json!({"type": "message_stop"}));
        self.done = true;
    }

    /// A provider's error event (`{"error": {"message", "type", "code"}}`, or a bare string).
    fn provider_error(&mut self, out: &mut Vec<u8>, e: &Value) {
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| e.as_str())
            .unwrap_or("the provider reported an error");
        let code = e.get("code").and_then(|c| {
            c.as_u64()
                .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
        });
        let kind = match e.get("type").and_then(Value::as_str) {
            Some(t) if ERROR_TYPES.contains(&t) => t,
            // an HTTP status as the code (Gemini's OpenAI-compatible errors)
            _ => match code {
                Some(c @ 400..=599) => u16::try_from(c).map_or("api_error", error_type),
                _ => "api_error",
            },
        };
        self.error(out, kind, message);
    }

    /// An `error` event, then nothing more.
    fn error(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        emit(
            out,
            &json!({"type": "error", "error": {"type": kind, "message": message}}),
        );
        self.done = true;
    }
}

/// One event, named after its JSON's `type`.
fn emit(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(
        v.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .as_bytes(),
    );
    out.extend_from_slice(b"\ndata: ");
    // a Value always serializes
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
}

impl AnswerMap for MessagesStream {
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
        let n = events.len();
        for (i, ev) in events.iter().enumerate() {
            self.on_event(ev, end && i + 1 == n, out);
        }
        if end {
            self.finish(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sse::SseDecoder;
    use super::*;

    /// A text answer as OpenAI streams it (`stream_options.include_usage`).
    const TEXT: &str = concat!(
        "data: {\"id\":\"chatcmpl-Text01\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-Text01\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"chatcmpl-Text01\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\", wörld! \\u00e9\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-Text01\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-Text01\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17,\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );

    /// A short text, then two parallel tool calls with their arguments in pieces, CRLF
    /// line endings, then the usage chunk.
    const TOOLS: &str = concat!(
        "data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Let me check.\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_Weather1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"ci\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ty\\\": \\\"Pa\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ris\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_Time2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{\\\"tz\\\":\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\" \\\"Europe/Paris\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":null}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":1200,\"completion_tokens\":48,\"total_tokens\":1248,\"prompt_tokens_details\":{\"cached_tokens\":1024,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\r\n\r\n",
        "data: [DONE]\r\n\r\n",
    );

    /// Decodes `chunks` (split anywhere) and translates them through the [`AnswerMap`] calls
    /// the proxy makes.
    fn translate(chunks: &[&[u8]]) -> String {
        let mut t = MessagesStream::new();
        let mut d = SseDecoder::new(1 << 20);
        let (mut out, mut events) = (vec![], vec![]);
        for c in chunks {
            d.push(c, &mut events);
            t.events(&events, false, &mut out);
            events.clear();
        }
        d.finish(&mut events);
        t.events(&events, true, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// The output's events as (name, data), checking the framing: every event is named after
    /// its data's `type`.
    fn events(out: &str) -> Vec<(String, Value)> {
        assert!(out.ends_with("\n\n"), "{out}");
        out.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                let (name, data) = f.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(v["type"], name, "{f}");
                (name.to_string(), v)
            })
            .collect()
    }

    /// What the anthropic SDK's `MessageStream` accumulates (`get_final_message()`), checking
    /// the order Anthropic guarantees on the way: `message_start` first, blocks started in
    /// index order, one block at a time, each stopped once, `message_stop` last.
    /// `Err`: the stream's error event.
    fn final_message(out: &str) -> Result<Value, Value> {
        let evs = events(out);
        let mut msg = Value::Null;
        let mut bufs: Vec<String> = vec![];
        let mut open: Option<usize> = None;
        let mut stopped = false;
        for (k, (name, v)) in evs.iter().enumerate() {
            assert!(!stopped, "nothing after message_stop: {out}");
            if name != "error" {
                assert_eq!(msg.is_null(), name == "message_start", "{out}");
            }
            match name.as_str() {
                "message_start" => {
                    msg = v["message"].clone();
                    assert_eq!(evs[k + 1].0, "ping");
                }
                "ping" => {}
                "content_block_start" => {
                    assert_eq!(open, None, "one block at a time: {out}");
                    let i = v["index"].as_u64().unwrap() as usize;
                    let content = msg["content"].as_array_mut().unwrap();
                    assert_eq!(i, content.len(), "{out}");
                    content.push(v["content_block"].clone());
                    bufs.push(String::new());
                    open = Some(i);
                }
                "content_block_delta" => {
                    let i = v["index"].as_u64().unwrap() as usize;
                    assert_eq!(open, Some(i), "{out}");
                    let d = &v["delta"];
                    let block = &mut msg["content"][i];
                    match d["type"].as_str().unwrap() {
                        "text_delta" => {
                            assert_eq!(block["type"], "text");
                            let t = format!(
                                "{}{}",
                                block["text"].as_str().unwrap(),
                                d["text"].as_str().unwrap()
                            );
                            block["text"] = json!(t);
                        }
                        "input_json_delta" => {
                            assert_eq!(block["type"], "tool_use");
                            bufs[i].push_str(d["partial_json"].as_str().unwrap());
                        }
                        other => panic!("{other}"),
                    }
                }
                "content_block_stop" => {
                    let i = v["index"].as_u64().unwrap() as usize;
                    assert_eq!(open, Some(i), "{out}");
                    open = None;
                }
                "message_delta" => {
                    assert_eq!(open, None, "every block stopped: {out}");
                    msg["stop_reason"] = v["delta"]["stop_reason"].clone();
                    msg["stop_sequence"] = v["delta"]["stop_sequence"].clone();
                    for (k, n) in v["usage"].as_object().unwrap() {
                        msg["usage"][k] = n.clone();
                    }
                }
                "message_stop" => stopped = true,
                "error" => {
                    assert_eq!(k, evs.len() - 1, "nothing after an error: {out}");
                    return Err(v["error"].clone());
                }
                other => panic!("unexpected event {other}"),
            }
        }
        assert!(stopped, "{out}");
        for (i, buf) in bufs.iter().enumerate() {
            if !buf.is_empty() {
                msg["content"][i]["input"] = serde_json::from_str(buf).unwrap();
            }
        }
        Ok(msg)
    }

    #[test]
    fn a_text_stream_becomes_a_message() {
        let out = translate(&[TEXT.as_bytes()]);
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let m = final_message(&out).unwrap();
        assert_eq!(
            m,
            json!({
                "id": "msg_chatcmpl-Text01",
                "type": "message",
                "role": "assistant",
                "model": "gpt-4o-mini-2024-07-18",
                "content": [{"type": "text", "text": "Hello, wörld! é"}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": 12, "output_tokens": 5,
                    "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
            })
        );
    }

    #[test]
    fn parallel_tool_calls_become_tool_use_blocks() {
        let out = translate(&[TOOLS.as_bytes()]);
        let m = final_message(&out).unwrap();
        assert_eq!(m["id"], "msg_chatcmpl-Tools02");
        assert_eq!(m["model"], "gpt-4o-2024-08-06");
        assert_eq!(
            m["content"],
            json!([
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "call_Weather1", "name": "get_weather",
                    "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_Time2", "name": "get_time",
                    "input": {"tz": "Europe/Paris"}},
            ])
        );
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["usage"]["input_tokens"], 176);
        assert_eq!(m["usage"]["cache_read_input_tokens"], 1024);
        assert_eq!(m["usage"]["output_tokens"], 48);
        // the arguments' pieces are passed on as they came
        assert_eq!(out.matches("input_json_delta").count(), 5);
    }

    #[test]
    fn every_split_point_gives_identical_output() {
        for input in [TEXT, TOOLS] {
            let want = translate(&[input.as_bytes()]);
            let b = input.as_bytes();
            for i in 0..=b.len() {
                assert_eq!(translate(&[&b[..i], &b[i..]]), want, "split at {i}");
            }
            // and one byte at a time
            let bytes: Vec<&[u8]> = b.chunks(1).collect();
            assert_eq!(translate(&bytes), want);
        }
    }

    #[test]
    fn a_stream_without_done_is_complete_once_its_finish_reason_came() {
        let cut = &TOOLS[..TOOLS.find("data: [DONE]").unwrap()];
        assert_eq!(translate(&[cut.as_bytes()]), translate(&[TOOLS.as_bytes()]));
        // before the usage chunk: complete, without usage
        let cut = &TOOLS[..TOOLS.find("data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],").unwrap()];
        let m = final_message(&translate(&[cut.as_bytes()])).unwrap();
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["usage"]["output_tokens"], 0);
    }

    #[test]
    fn cut_streams_end_with_an_error_event() {
        // in the middle of the second tool call's arguments
        let cut = &TOOLS[..TOOLS.find("Europe").unwrap()];
        let out = translate(&[cut.as_bytes()]);
        let e = final_message(&out).unwrap_err();
        assert_eq!(e, json!({"type": "api_error", "message": CUT_SHORT}));
        assert!(out.contains("call_Time2"), "{out}");
        assert!(!out.contains("message_delta"), "{out}");
        // nothing at all, or keep-alives only: the error event alone
        for empty in ["", ": keep-alive\n\n"] {
            let out = translate(&[empty.as_bytes()]);
            assert_eq!(
                events(&out),
                [(
                    "error".to_string(),
                    json!({"type": "error", "error": {"type": "api_error", "message": CUT_SHORT}})
                )]
            );
        }
        // [DONE] and nothing before it
        let out = translate(&[b"data: [DONE]\n\n"]);
        assert_eq!(final_message(&out).unwrap_err()["type"], "api_error");
    }

    #[test]
    fn provider_errors_end_the_stream_with_an_error_event() {
        let head = &TOOLS[..TOOLS.find("data: {\"id\":\"chatcmpl-Tools02\",\"object\":\"chat.completion.chunk\",\"created\":1764590400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,").unwrap()];
        for (error, kind, message) in [
            (
                r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","code":null}}"#,
                "api_error",
                "The server had an error while processing your request.",
            ),
            (
                r#"{"error":{"message":"Too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
                "invalid_request_error",
                "Too long",
            ),
            (
                r#"{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}"#,
                "rate_limit_error",
                "Resource exhausted",
            ),
            (
                "{\"id\":\"chatcmpl-Tools02\",\"choices\":[",
                "api_error",
                "the provider sent an event that is not valid",
            ),
        ] {
            // the rest of the stream after the error changes nothing
            let input = format!("{head}data: {error}\n\n{}", &TOOLS[head.len()..]);
            let out = translate(&[input.as_bytes()]);
            let e = final_message(&out).unwrap_err();
            assert_eq!(e["type"], kind, "{out}");
            assert!(e["message"].as_str().unwrap().starts_with(message), "{out}");
            assert_eq!(out.matches("event: error").count(), 1);
            assert!(!out.contains("call_Time2"), "{out}");
            // an error right away: the error event alone
            let out = translate(&[format!("data: {error}\n\n").as_bytes()]);
            assert!(out.starts_with("event: error\n"), "{out}");
            assert_eq!(events(&out).len(), 1);
        }
    }

    #[test]
    fn role_only_deltas_and_empty_content_produce_nothing() {
        let out = translate(&[concat!(
            "data: {\"id\":\"chatcmpl-E\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"chatcmpl-E\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"chatcmpl-E\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":0}}\n\n",
            "data: [DONE]\n\n",
        )
        .as_bytes()]);
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["message_start", "ping", "message_delta", "message_stop"]
        );
        let m = final_message(&out).unwrap();
        assert_eq!(m["content"], json!([]));
        assert_eq!(m["stop_reason"], "max_tokens");
        assert_eq!(m["usage"]["input_tokens"], 3);
    }

    #[test]
    fn a_whole_tool_call_in_one_piece_and_text_after_it() {
        // some OpenAI-compatible providers send each call whole, without an index
        let out = translate(&[concat!(
            "data: {\"id\":\"x1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"call_a\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}},{\"id\":\"call_b\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"id\":\"x1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"done\"},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        )
        .as_bytes()]);
        let m = final_message(&out).unwrap();
        assert_eq!(m["id"], "msg_x1");
        assert_eq!(
            m["content"],
            json!([
                {"type": "tool_use", "id": "call_a", "name": "f", "input": {"a": 1}},
                {"type": "tool_use", "id": "call_b", "name": "g", "input": {}},
                {"type": "text", "text": "done"},
            ])
        );
    }
}
