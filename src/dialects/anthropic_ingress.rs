//! Anthropic Messages as a client dialect: a Messages request read into the canonical (OpenAI chat) form, and canonical answers (JSON, errors) written back as Messages.
//!
//! Field mappings follow Anthropic's Messages API reference
//! (<https://docs.anthropic.com/en/api/messages>) and OpenAI's chat completions reference
//! (<https://platform.openai.com/docs/api-reference/chat/create>). A field that changes the
//! answer and that chat completions cannot express is an error naming it; a hint (prompt
//! caching, beta flags, context management, effort) is dropped and listed in `dropped`.

use serde_json::{json, Map, Value};

pub use super::anthropic_map::{error_type, messages_usage as usage, stop_reason};
use super::{bad, AnswerMap, Canonical, Ingress, Op, TranslateError};
use crate::error::GatewayError;

/// Anthropic Messages (`/v1/messages`) as a client dialect.
pub struct Messages;

impl Ingress for Messages {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn parse(&self, op: Op, bytes: &[u8]) -> Result<Canonical, TranslateError> {
        match op {
            Op::CountTokens => parse_count(bytes),
            _ => parse(bytes),
        }
    }

    fn answer(&self, sse: bool) -> Option<Box<dyn AnswerMap>> {
        Some(if sse {
            Box::new(super::anthropic_ingress_stream::MessagesStream::new())
        } else {
            Box::new(super::WholeJson::new(rewrite_json))
        })
    }

    fn error(&self, status: u16, canonical: &Value) -> Value {
        error(status, canonical)
    }
}

/// A whole chat completion as a Messages response (or a Messages error saying why not).
fn rewrite_json(buf: &[u8]) -> Vec<u8> {
    let translated = serde_json::from_slice::<Value>(buf)
        .map_err(|e| format!("the provider's answer is not JSON ({e})"))
        .and_then(|v| response(&v).map_err(|e| e.to_string()));
    match translated {
        Ok(v) => v.to_string().into_bytes(),
        Err(why) => {
            let e = GatewayError::BadGateway(format!(
                "the gateway could not translate the provider's answer: {why}"
            ));
            let canonical: Value = serde_json::from_slice(&e.to_json()).unwrap_or(Value::Null);
            error(e.status(), &canonical).to_string().into_bytes()
        }
    }
}

/// Anthropic's stop sequences fit OpenAI's `stop` only up to this many ("Up to 4 sequences",
/// OpenAI's chat reference).
const MAX_STOP: usize = 4;

/// What a Messages request became in the canonical form.
#[derive(Debug, Default)]
pub struct Translated {
    pub body: Map<String, Value>,
    /// Hints chat completions cannot honour, dropped (field paths, as the client wrote them).
    pub dropped: Vec<String>,
}

fn field_err(path: &str, why: &str) -> TranslateError {
    bad(format!("`{path}` {why}"))
}

/// Parses a Messages body: the facts every attempt needs, the client's own body (sent as it
/// came to a provider that speaks Messages) and its chat-completions translation (or why it
/// has none, which only matters for attempts that need it).
pub fn parse(bytes: &[u8]) -> Result<Canonical, TranslateError> {
    let shape = r#"{"model": "claude-sonnet-4", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hello"}]}"#;
    let body = super::parse_object(bytes, shape)?;
    let model = super::model_of(&body, shape, "claude-sonnet-4")?;
    super::check_messages(&body, shape)?;
    match body.get("max_tokens") {
        Some(v) if v.as_u64().is_some_and(|n| n > 0) => {}
        Some(_) => return Err(bad("`max_tokens` must be a positive integer")),
        None => {
            return Err(bad(format!(
                "`max_tokens` is missing (the Messages API requires it); send a JSON object such as {shape}"
            )))
        }
    }
    let stream = super::stream_of(&body)?;
    let (chat, untranslatable) = match to_chat(&body) {
        Ok(t) => (t, None),
        Err(e) => (Translated::default(), Some(e)),
    };
    Ok(Canonical {
        op: Op::Chat,
        body: chat.body,
        model,
        stream,
        // the Messages stream always ends with its usage (`message_delta`)
        include_usage: true,
        native: Some(super::Native {
            dialect: "anthropic",
            body,
        }),
        untranslatable,
        dropped: chat.dropped,
    })
}

/// A `count_tokens` body (a Messages body without `max_tokens`): it goes only to a provider
/// that speaks Messages, as it came.
pub fn parse_count(bytes: &[u8]) -> Result<Canonical, TranslateError> {
    let shape =
        r#"{"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "Hello"}]}"#;
    let body = super::parse_object(bytes, shape)?;
    let model = super::model_of(&body, shape, "claude-sonnet-4")?;
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err(bad(format!(
            "`messages` must be an array; send a JSON object such as {shape}"
        )));
    }
    Ok(Canonical {
        op: Op::CountTokens,
        body: Map::new(),
        model,
        stream: false,
        include_usage: false,
        native: Some(super::Native {
            dialect: "anthropic",
            body,
        }),
        untranslatable: Some(bad(
            "a token count goes only to a provider that speaks Messages",
        )),
        dropped: Vec::new(),
    })
}

/// A content block's `type`.
fn kind(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or("")
}

/// An Anthropic image block as an OpenAI `image_url` part.
fn image_part(block: &Value, path: &str) -> Result<Value, TranslateError> {
    let src = block
        .get("source")
        .ok_or_else(|| field_err(path, "has no `source`"))?;
    let url = match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = src
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or_else(|| field_err(&format!("{path}.source"), "has no `media_type`"))?;
            let data = src
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| field_err(&format!("{path}.source"), "has no `data`"))?;
            format!("data:{media};base64,{data}")
        }
        Some("url") => src
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| field_err(&format!("{path}.source"), "has no `url`"))?
            .to_string(),
        other => {
            return Err(field_err(
                &format!("{path}.source.type"),
                &format!(
                "{:?} cannot be sent to an OpenAI-compatible provider (base64 and url images can)",
                other.unwrap_or("")
            ),
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// Notes a hint on `v` that chat completions cannot honour.
fn drop_hints(v: &Value, path: &str, dropped: &mut Vec<String>) {
    if v.get("cache_control").is_some_and(|c| !c.is_null()) {
        dropped.push(format!("{path}.cache_control"));
    }
}

/// Text of a `tool_result`'s content, and its images (sent in a user message after the tool
/// messages: OpenAI's tool messages carry text only).
fn tool_result(
    block: &Value,
    path: &str,
    dropped: &mut Vec<String>,
) -> Result<(String, Vec<Value>), TranslateError> {
    let mut text = String::new();
    let mut images = Vec::new();
    match block.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => text.push_str(s),
        Some(Value::Array(parts)) => {
            for (k, p) in parts.iter().enumerate() {
                let pp = format!("{path}.content[{k}]");
                drop_hints(p, &pp, dropped);
                match kind(p) {
                    "text" => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(p.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                    "image" => images.push(image_part(p, &pp)?),
                    other => {
                        return Err(field_err(
                            &format!("{pp}.type"),
                            &format!("\"{other}\" cannot be sent to an OpenAI-compatible provider in a tool result (text and image can)"),
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(field_err(
                &format!("{path}.content"),
                "must be a string or an array of blocks",
            ))
        }
    }
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        // chat completions has no error flag on a tool message: the model reads it in the text
        text = format!("Error: {text}");
    }
    Ok((text, images))
}

/// One Messages turn as chat messages (a user turn with tool results becomes tool messages
/// first, then the rest of the turn).
fn turn(
    m: &Value,
    i: usize,
    out: &mut Vec<Value>,
    dropped: &mut Vec<String>,
) -> Result<(), TranslateError> {
    let path = format!("messages[{i}]");
    let role = m.get("role").and_then(Value::as_str).unwrap_or("");
    if role == "system" {
        // a mid-conversation system message (Claude Code sends one for models that are not
        // Claude): chat completions takes system messages anywhere
        let content = match m.get("content") {
            Some(Value::String(s)) => json!(s),
            Some(Value::Array(blocks)) => {
                let mut parts = Vec::with_capacity(blocks.len());
                for (j, b) in blocks.iter().enumerate() {
                    let bp = format!("{path}.content[{j}]");
                    drop_hints(b, &bp, dropped);
                    if kind(b) != "text" {
                        return Err(field_err(
                            &format!("{bp}.type"),
                            "must be \"text\" in a system message",
                        ));
                    }
                    parts.push(
                        json!({"type": "text", "text": b.get("text").cloned().unwrap_or_default()}),
                    );
                }
                Value::Array(parts)
            }
            _ => {
                return Err(field_err(
                    &format!("{path}.content"),
                    "must be a string or an array of text blocks",
                ))
            }
        };
        out.push(json!({"role": "system", "content": content}));
        return Ok(());
    }
    if role != "user" && role != "assistant" {
        return Err(field_err(
            &format!("{path}.role"),
            "must be \"user\", \"assistant\" or \"system\"",
        ));
    }
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => {
            return Err(field_err(
                &format!("{path}.content"),
                "must be a string or an array of content blocks",
            ))
        }
    };
    let mut parts: Vec<Value> = Vec::new();
    let mut text = String::new();
    let mut tool_calls: Vec<Value> = Vec::new();
    let mut after_tools: Vec<Value> = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bp = format!("{path}.content[{j}]");
        drop_hints(b, &bp, dropped);
        match (role, kind(b)) {
            (_, "text") => {
                let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                if role == "assistant" {
                    text.push_str(t);
                } else {
                    parts.push(json!({"type": "text", "text": t}));
                }
            }
            ("user", "image") => parts.push(image_part(b, &bp)?),
            ("user", "tool_result") => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| field_err(&bp, "has no `tool_use_id`"))?;
                let (content, images) = tool_result(b, &bp, dropped)?;
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
                after_tools.extend(images);
            }
            ("assistant", "tool_use") => {
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(json!({
                    "id": b.get("id").cloned().unwrap_or_default(),
                    "type": "function",
                    "function": {
                        "name": b.get("name").cloned().unwrap_or_default(),
                        "arguments": input.to_string(),
                    },
                }));
            }
            // an earlier turn's reasoning: chat completions has no field for it, and the
            // answer is the model's to give again
            ("assistant", "thinking" | "redacted_thinking") => dropped.push(bp),
            (_, other) => {
                return Err(field_err(
                    &format!("{bp}.type"),
                    &format!("\"{other}\" in a {role} message cannot be sent to an OpenAI-compatible provider (it can take text, image, tool_use and tool_result)"),
                ))
            }
        }
    }
    if !after_tools.is_empty() {
        parts.splice(0..0, after_tools);
    }
    if role == "assistant" {
        let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) }});
        if !tool_calls.is_empty() {
            msg["tool_calls"] = Value::Array(tool_calls);
        }
        out.push(msg);
    } else if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

/// Top-level fields that change nothing chat completions could express, dropped and listed.
const HINTS: &[&str] = &[
    "cache_control",
    "context_management",
    "container",
    "mcp_servers",
    "service_tier",
    "inference_geo",
    "speed",
];

/// A Messages request in chat-completions form.
pub fn to_chat(req: &Map<String, Value>) -> Result<Translated, TranslateError> {
    let mut dropped = Vec::new();
    let mut out = Map::new();
    if let Some(m) = req.get("model") {
        out.insert("model".into(), m.clone());
    }
    let mut messages = Vec::new();
    match req.get("system") {
        None | Some(Value::Null) => {}
        // "system" (not "developer"): every OpenAI-compatible provider reads it
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let bp = format!("system[{j}]");
                drop_hints(b, &bp, &mut dropped);
                if kind(b) != "text" {
                    return Err(field_err(&format!("{bp}.type"), "must be \"text\""));
                }
                parts.push(
                    json!({"type": "text", "text": b.get("text").cloned().unwrap_or_default()}),
                );
            }
            messages.push(json!({"role": "system", "content": parts}));
        }
        Some(_) => {
            return Err(field_err(
                "system",
                "must be a string or an array of text blocks",
            ))
        }
    }
    if let Some(Value::Array(ms)) = req.get("messages") {
        for (i, m) in ms.iter().enumerate() {
            turn(m, i, &mut messages, &mut dropped)?;
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    for (k, v) in req {
        match k.as_str() {
            "model" | "messages" | "system" => {}
            "max_tokens" | "temperature" | "top_p" | "stream" => {
                out.insert(k.clone(), v.clone());
            }
            "stop_sequences" => {
                let stops = v.as_array().ok_or_else(|| field_err(k, "must be an array of strings"))?;
                if stops.len() > MAX_STOP {
                    return Err(field_err(k, &format!("has {} sequences; an OpenAI-compatible provider takes at most {MAX_STOP}", stops.len())));
                }
                if !stops.is_empty() {
                    out.insert("stop".into(), v.clone());
                }
            }
            "metadata" => {
                if let Some(u) = v.get("user_id").and_then(Value::as_str) {
                    out.insert("user".into(), json!(u));
                }
            }
            "tools" => {
                let tools = v.as_array().ok_or_else(|| field_err(k, "must be an array"))?;
                let mut fns = Vec::with_capacity(tools.len());
                for (j, t) in tools.iter().enumerate() {
                    let tp = format!("tools[{j}]");
                    drop_hints(t, &tp, &mut dropped);
                    match t.get("type").and_then(Value::as_str) {
                        None | Some("custom") => {}
                        Some(other) => {
                            return Err(field_err(
                                &format!("{tp}.type"),
                                &format!("\"{other}\" is an Anthropic server tool; an OpenAI-compatible provider runs only client tools (name, description, input_schema)"),
                            ))
                        }
                    }
                    let mut f = json!({
                        "name": t.get("name").cloned().unwrap_or_default(),
                        "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
                    });
                    if let Some(d) = t.get("description") {
                        f["description"] = d.clone();
                    }
                    fns.push(json!({"type": "function", "function": f}));
                }
                if !fns.is_empty() {
                    out.insert("tools".into(), Value::Array(fns));
                }
            }
            "tool_choice" => {
                // Messages `any` is chat's `required`; `tool` names one function
                let (choice, no_parallel) = match v.get("type").and_then(Value::as_str) {
                    Some("auto") => (json!("auto"), v.get("disable_parallel_tool_use")),
                    Some("any") => (json!("required"), v.get("disable_parallel_tool_use")),
                    Some("none") => (json!("none"), None),
                    Some("tool") => (
                        json!({"type": "function", "function": {"name": v.get("name").cloned().unwrap_or_default()}}),
                        v.get("disable_parallel_tool_use"),
                    ),
                    other => {
                        return Err(field_err(
                            "tool_choice.type",
                            &format!("{other:?} is not a tool_choice an OpenAI-compatible provider knows (auto, any, tool, none)"),
                        ))
                    }
                };
                out.insert("tool_choice".into(), choice);
                if no_parallel.and_then(Value::as_bool) == Some(true) {
                    out.insert("parallel_tool_calls".into(), json!(false));
                }
            }
            "thinking" => match v.get("type").and_then(Value::as_str) {
                Some("enabled") => {
                    // a budget maps onto OpenAI's reasoning effort (its reasoning guide names
                    // low, medium and high); the bounds are this gateway's choice
                    let budget = v.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0);
                    let effort = match budget {
                        0..4096 => "low",
                        4096..16384 => "medium",
                        _ => "high",
                    };
                    out.insert("reasoning_effort".into(), json!(effort));
                }
                _ => dropped.push("thinking".into()),
            },
            "output_config" => dropped.push("output_config".into()),
            "top_k" => return Err(field_err(k, "changes sampling and an OpenAI-compatible provider has no top_k: leave it out, or use top_p")),
            k if HINTS.contains(&k) => dropped.push(k.to_string()),
            other => {
                return Err(field_err(
                    other,
                    "cannot be sent to an OpenAI-compatible provider: leave it out, or choose an Anthropic model",
                ))
            }
        }
    }
    if out.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Translated { body: out, dropped })
}

/// A chat completion as a Messages response.
pub fn response(chat: &Value) -> Result<Value, TranslateError> {
    let choice = chat
        .pointer("/choices/0")
        .ok_or_else(|| bad("the provider's answer has no choices"))?;
    let msg = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(t) = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for tc in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let args = tc
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input: Value = serde_json::from_str(if args.trim().is_empty() { "{}" } else { args })
            .map_err(|e| {
            bad(format!(
                "the provider's tool call arguments are not JSON ({e})"
            ))
        })?;
        content.push(json!({
            "type": "tool_use",
            "id": tc.get("id").cloned().unwrap_or_default(),
            "name": tc.pointer("/function/name").cloned().unwrap_or_default(),
            "input": input,
        }));
    }
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let id = chat.get("id").and_then(Value::as_str).unwrap_or("");
    Ok(json!({
        "id": if id.starts_with("msg_") { id.to_string() } else { format!("msg_{id}") },
        "type": "message",
        "role": "assistant",
        "model": chat.get("model").cloned().unwrap_or_default(),
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": usage(chat.get("usage")),
    }))
}

/// A canonical error body (`{"error": {"message", "type", ...}}`) in Anthropic's shape.
pub fn error(status: u16, canonical: &Value) -> Value {
    let message = canonical
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("the gateway could not serve the request");
    let mut e = json!({"type": error_type(status), "message": message});
    // the gateway's own detail (attempts, code) stays available to the client
    if let Some(obj) = canonical.get("error").and_then(Value::as_object) {
        for (k, v) in obj {
            if k != "message" && k != "type" {
                e[k] = v.clone();
            }
        }
    }
    json!({"type": "error", "error": e})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mid_conversation_system_message_stays_a_system_message() {
        // Claude Code sends one for models that are not Claude
        let req = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "Available agent types", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "go"}]});
        let t = to_chat(req.as_object().unwrap()).unwrap();
        let m = t.body["messages"].as_array().unwrap();
        assert_eq!(m[1]["role"], "system");
        assert_eq!(m[1]["content"][0]["text"], "Available agent types");
        assert_eq!(t.dropped, ["messages[1].content[0].cache_control"]);
        let bad =
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "tool", "content": "x"}]});
        let e = to_chat(bad.as_object().unwrap()).unwrap_err();
        assert!(e.0.contains("messages[0].role"), "{e}");
    }
}

#[cfg(test)]
mod round_trip {
    //! Property-style: many generated Messages requests go to chat form and a chat answer comes
    //! back as Messages; every field chat completions can express survives both ways.
    use super::*;

    /// A small deterministic generator (no dependency): 48-bit LCG.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(25_214_903_917).wrapping_add(11) & ((1 << 48) - 1);
            (self.0 >> 16) % n
        }
        fn text(&mut self) -> String {
            let words = [
                "hi",
                "Grüße ✓",
                "a\"quote",
                "line\nbreak",
                "",
                "{json}",
                "tab\tend",
            ];
            (0..1 + self.next(3))
                .map(|_| words[self.next(words.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        }
    }

    fn request(g: &mut Gen) -> Value {
        let mut req = json!({"model": "gpt-4o-mini", "max_tokens": 1 + g.next(4000)});
        let system = g.text();
        match g.next(3) {
            0 => {}
            1 => req["system"] = json!(system),
            _ => req["system"] = json!([{"type": "text", "text": system}]),
        }
        let tools = g.next(2) == 1;
        if tools {
            req["tools"] = json!([{"name": "get_weather", "description": g.text(),
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
            req["tool_choice"] = match g.next(4) {
                0 => json!({"type": "auto"}),
                1 => json!({"type": "any", "disable_parallel_tool_use": true}),
                2 => json!({"type": "tool", "name": "get_weather"}),
                _ => json!({"type": "none"}),
            };
        }
        if g.next(2) == 1 {
            req["temperature"] = json!(g.next(10) as f64 / 10.0);
            req["top_p"] = json!(0.5);
        }
        if g.next(2) == 1 {
            req["stop_sequences"] = json!(["END", "\n\n"]);
        }
        if g.next(2) == 1 {
            req["metadata"] = json!({"user_id": format!("user-{}", g.next(100))});
        }
        let mut messages = vec![json!({"role": "user", "content": g.text()})];
        if tools && g.next(2) == 1 {
            let id = format!("toolu_{}", g.next(1000));
            messages.push(json!({"role": "assistant", "content": [
                {"type": "text", "text": g.text()},
                {"type": "tool_use", "id": id, "name": "get_weather", "input": {"city": g.text()}}]}));
            messages.push(json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": id, "content": g.text()},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "text", "text": g.text()}]}));
        }
        req["messages"] = Value::Array(messages);
        req
    }

    #[test]
    fn every_expressible_field_survives_the_round_trip() {
        let mut g = Gen(7);
        for case in 0..500 {
            let req = request(&mut g);
            let chat = to_chat(req.as_object().unwrap())
                .unwrap_or_else(|e| panic!("case {case}: {e}\n{req}"));
            let c = &chat.body;
            assert!(chat.dropped.is_empty(), "case {case}: {:?}", chat.dropped);
            assert_eq!(c["max_tokens"], req["max_tokens"], "case {case}");
            for k in ["temperature", "top_p"] {
                assert_eq!(c.get(k), req.get(k), "case {case}: {k}");
            }
            assert_eq!(c.get("stop"), req.get("stop_sequences"), "case {case}");
            assert_eq!(
                c.get("user"),
                req.pointer("/metadata/user_id"),
                "case {case}"
            );
            let msgs = c["messages"].as_array().unwrap();
            // the system prompt is a `system` message, first
            if let Some(s) = req.get("system") {
                assert_eq!(msgs[0]["role"], "system", "case {case}");
                let text = match s {
                    Value::String(t) => t.clone(),
                    _ => s[0]["text"].as_str().unwrap().to_string(),
                };
                let got = match &msgs[0]["content"] {
                    Value::String(t) => t.clone(),
                    v => v[0]["text"].as_str().unwrap().to_string(),
                };
                assert_eq!(got, text, "case {case}");
            }
            // tool ids pass through unchanged, and each tool result follows its call
            let calls: Vec<&Value> = msgs.iter().filter_map(|m| m.get("tool_calls")).collect();
            for m in msgs.iter().filter(|m| m["role"] == "tool") {
                let id = m["tool_call_id"].as_str().unwrap();
                assert!(id.starts_with("toolu_"), "case {case}");
                assert!(calls.iter().any(|c| c[0]["id"] == id), "case {case}");
            }
            if let Some(tc) = req.get("tool_choice") {
                let want = match tc["type"].as_str().unwrap() {
                    "auto" => json!("auto"),
                    "any" => json!("required"),
                    "none" => json!("none"),
                    _ => json!({"type": "function", "function": {"name": "get_weather"}}),
                };
                assert_eq!(c["tool_choice"], want, "case {case}");
            }
            // a chat answer for it: text, or a tool call when tools are offered
            let finish = ["stop", "length", "tool_calls", "content_filter"][g.next(4) as usize];
            let text = g.text();
            let mut message = json!({"role": "assistant", "content": text});
            if c.contains_key("tools") {
                message["tool_calls"] = json!([{"id": "call_x", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]);
            }
            let answer = json!({"id": "chatcmpl-1", "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 30, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 10}}});
            let m = response(&answer).unwrap();
            assert_eq!(m["type"], "message");
            assert_eq!(m["model"], "gpt-4o-mini-2024-07-18");
            let blocks = m["content"].as_array().unwrap();
            if !text.is_empty() {
                assert_eq!(
                    blocks[0],
                    json!({"type": "text", "text": text}),
                    "case {case}"
                );
            }
            if c.contains_key("tools") {
                let tu = blocks.iter().find(|b| b["type"] == "tool_use").unwrap();
                assert_eq!(tu["id"], "call_x");
                assert_eq!(tu["input"], json!({"city": "Paris"}));
            }
            let want_stop = match finish {
                "length" => "max_tokens",
                "tool_calls" => "tool_use",
                "content_filter" => "refusal",
                _ => "end_turn",
            };
            assert_eq!(m["stop_reason"], want_stop, "case {case}");
            // the stop reason maps back to the finish reason it came from
            assert_eq!(
                super::super::anthropic_map::finish_reason(want_stop),
                finish
            );
            assert_eq!(
                m["usage"],
                json!({"input_tokens": 20, "output_tokens": 9,
                "cache_read_input_tokens": 10, "cache_creation_input_tokens": 0})
            );
        }
    }
}
