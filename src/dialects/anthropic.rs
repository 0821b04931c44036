//! Anthropic Messages as a provider dialect: chat requests translated into Messages, Messages answers (whole, stream via `anthropic_stream`) and errors back into chat form, usage read.

use serde_json::{json, Map, Value};

pub use super::anthropic_map::{finish_reason, openai_usage, prompt_tokens, usage};
use super::{bad, n, AnswerMap, Canonical, Egress, Op, Reader, Site, TranslateError};
use crate::error::GatewayError;
use crate::usage::Usage;

/// Used when the request sets neither `max_completion_tokens` nor `max_tokens` (Anthropic
/// requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// What the translation of a request decided.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagesRequest {
    pub body: Value,
    pub stream: bool,
    /// `stream_options.include_usage`: the translated stream ends with a usage chunk.
    pub include_usage: bool,
}

/// Text of an OpenAI `content` (a string, or an array of parts of which the text ones count).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Anthropic prompt caching: a part's or message's `cache_control` (`{"type": "ephemeral"}`,
/// optionally with a `ttl`) carried onto the block it becomes.
fn with_cache_control(mut block: Value, from: &Value) -> Value {
    if let Some(cc) = from.get("cache_control").filter(|c| !c.is_null()) {
        block["cache_control"] = cc.clone();
    }
    block
}

/// A message-level `cache_control` marks the last block of that message (as Anthropic caches a
/// prefix up to a block).
fn mark_last(blocks: &mut [Value], message: &Value) {
    if let Some(last) = blocks.last_mut() {
        let marked = with_cache_control(std::mem::take(last), message);
        *last = marked;
    }
}

/// Text blocks of an OpenAI `content`: a string is one block, an array gives one per text part
/// (each with its own `cache_control`).
fn text_blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) if !s.is_empty() => vec![json!({"type": "text", "text": s})],
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| {
                p.get("text")
                    .and_then(Value::as_str)
                    .map(|t| with_cache_control(json!({"type": "text", "text": t}), p))
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn has_cache_control(blocks: &[Value]) -> bool {
    blocks.iter().any(|b| b.get("cache_control").is_some())
}

/// An OpenAI image part's URL as an Anthropic image source.
fn image_source(url: &str) -> Result<Value, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| bad("image_url: a data URL needs a ',' before its data"))?;
        let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
            bad("image_url: only base64 data URLs are supported (data:image/png;base64,...)")
        })?;
        return Ok(json!({"type": "base64", "media_type": media_type, "data": data}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "url", "url": url}));
    }
    Err(bad(
        "image_url.url must be an http(s) URL or a base64 data URL",
    ))
}

/// OpenAI user content -> Anthropic content blocks.
fn user_blocks(content: &Value, at: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(with_cache_control(json!({"type": "text", "text": p.get("text").and_then(Value::as_str).unwrap_or("")}), p)),
                Some("image_url") => {
                    let url = p
                        .pointer("/image_url/url")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(format!("{at}.content[{i}].image_url.url is missing")))?;
                    Ok(with_cache_control(json!({"type": "image", "source": image_source(url)?}), p))
                }
                other => Err(bad(format!(
                    "{at}.content[{i}]: part type {other:?} cannot be sent to Anthropic (text and image_url can)"
                ))),
            })
            .collect(),
        Value::Null => Ok(vec![]),
        _ => Err(bad(format!("{at}.content must be a string or an array of parts"))),
    }
}

/// Appends blocks to the last message when it has the same role (Anthropic wants alternating
/// roles; OpenAI allows runs, such as several tool results in a row).
fn push(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut() {
        if last["role"] == role {
            if let Some(c) = last["content"].as_array_mut() {
                c.extend(blocks);
                return;
            }
        }
    }
    messages.push(json!({"role": role, "content": blocks}));
}

/// OpenAI fields whose effect an Anthropic model cannot give: refused (a 400 naming the field)
/// rather than dropped, so that no client gets an answer it did not ask for. Sampling hints
/// without an equivalent (`seed`, penalties, `logit_bias`, `service_tier`, `store`) are dropped.
fn refuse_unsupported(obj: &Map<String, Value>) -> Result<(), TranslateError> {
    let set = |k: &str| {
        obj.get(k)
            .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
    };
    if let Some(rf) = obj.get("response_format").filter(|v| !v.is_null()) {
        let kind = rf.get("type").and_then(Value::as_str).unwrap_or("?");
        if kind != "text" {
            return Err(bad(format!(
                "response_format {kind:?} cannot be enforced on Anthropic models; use a model that supports it, or a tool with the schema and tool_choice"
            )));
        }
    }
    for (k, why) in [
        ("logprobs", "Anthropic returns no log probabilities"),
        ("top_logprobs", "Anthropic returns no log probabilities"),
        ("audio", "Anthropic models do not produce audio"),
        ("prediction", "Anthropic has no predicted outputs"),
        (
            "web_search_options",
            "web search is not translated for Anthropic",
        ),
        ("functions", "use `tools` instead of the legacy `functions`"),
        (
            "function_call",
            "use `tool_choice` instead of the legacy `function_call`",
        ),
        (
            "reasoning_effort",
            "Anthropic takes `thinking: {\"type\": \"enabled\", \"budget_tokens\": N}` instead",
        ),
    ] {
        if set(k) {
            return Err(bad(format!("`{k}` cannot be sent to Anthropic: {why}")));
        }
    }
    if let Some(m) = obj.get("modalities").and_then(Value::as_array) {
        if m.iter().any(|x| x != "text") {
            return Err(bad(
                "`modalities` other than \"text\" cannot be sent to Anthropic",
            ));
        }
    }
    Ok(())
}

/// Translates an OpenAI chat-completions request for Anthropic's Messages API.
pub fn request(openai: &Value, model: &str) -> Result<MessagesRequest, TranslateError> {
    let obj = openai
        .as_object()
        .ok_or_else(|| bad("the request body must be a JSON object"))?;
    request_map(obj, model)
}

/// [`request`] from the parsed map (the unified API's canonical body, read without a copy).
pub fn request_map(
    obj: &Map<String, Value>,
    model: &str,
) -> Result<MessagesRequest, TranslateError> {
    if obj.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(bad(
            "n > 1 is not supported by Anthropic models: send n requests",
        ));
    }
    refuse_unsupported(obj)?;
    let msgs = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages must be an array"))?;
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{at}.role is missing")))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                let mut blocks = text_blocks(content);
                mark_last(&mut blocks, m);
                system.extend(blocks);
            }
            "user" => {
                let mut blocks = user_blocks(content, &at)?;
                mark_last(&mut blocks, m);
                push(&mut messages, "user", blocks);
            }
            "assistant" => {
                let mut blocks = text_blocks(content);
                if !has_cache_control(&blocks) {
                    // one text block, as the parts are one answer
                    let text = text_of(content);
                    blocks = if text.is_empty() {
                        Vec::new()
                    } else {
                        vec![json!({"type": "text", "text": text})]
                    };
                }
                for (k, tc) in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let f = &tc["function"];
                    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                    let input: Value = if args.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(args).map_err(|e| {
                            bad(format!(
                                "{at}.tool_calls[{k}].function.arguments is not JSON: {e}"
                            ))
                        })?
                    };
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": tc.get("id").and_then(Value::as_str).unwrap_or_default(),
                        "name": f.get("name").and_then(Value::as_str).unwrap_or_default(),
                        "input": input,
                    }));
                }
                mark_last(&mut blocks, m);
                push(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{at}.tool_call_id is missing")))?;
                push(
                    &mut messages,
                    "user",
                    vec![with_cache_control(
                        json!({"type": "tool_result", "tool_use_id": id, "content": text_of(content)}),
                        m,
                    )],
                );
            }
            other => {
                return Err(bad(format!(
                    "{at}.role {other:?} is not one of system, developer, user, assistant, tool"
                )))
            }
        }
    }
    if messages.is_empty() {
        return Err(bad("messages needs at least one user message"));
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    let max_tokens = obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max_tokens));
    if has_cache_control(&system) {
        // cached system prompts must be blocks
        out.insert("system".into(), Value::Array(system));
    } else if !system.is_empty() {
        let text: Vec<&str> = system.iter().filter_map(|b| b["text"].as_str()).collect();
        out.insert("system".into(), json!(text.join("\n\n")));
    }
    if let Some(t) = obj.get("temperature").and_then(Value::as_f64) {
        // OpenAI allows 0..2, Anthropic 0..1
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = obj.get("top_p") {
        out.insert("top_p".into(), p.clone());
    }
    match obj.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function").map(|f| (t, f)))
            .map(|(tool, f)| {
                let mut t = json!({
                    "name": f.get("name").cloned().unwrap_or_default(),
                    "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
                });
                if let Some(d) = f.get("description") {
                    t["description"] = d.clone();
                }
                with_cache_control(t, tool)
            })
            .collect();
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    let no_parallel = obj.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let choice = match obj.get("tool_choice") {
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.function.name is missing"))?;
            Some(json!({"type": "tool", "name": name}))
        }
        None => no_parallel.then(|| json!({"type": "auto"})),
        Some(other) => {
            return Err(bad(format!(
                "tool_choice {other} is not none, auto, required or a function"
            )))
        }
    };
    if let Some(mut c) = choice {
        if no_parallel && c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
        out.insert("tool_choice".into(), c);
    }
    if let Some(u) = obj.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    // Anthropic's own knobs, for clients that know which provider they reach
    for k in ["top_k", "thinking"] {
        if let Some(v) = obj.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if stream {
        out.insert("stream".into(), json!(true));
    }
    let include_usage = stream
        && obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
    Ok(MessagesRequest {
        body: Value::Object(out),
        stream,
        include_usage,
    })
}

/// Translates an Anthropic Messages response into an OpenAI chat completion.
pub fn response(anthropic: &Value, created: i64) -> Result<Value, TranslateError> {
    let content = anthropic
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("the provider's answer has no content array"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or_default(),
                    "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            })),
            _ => {} // thinking and other blocks have no OpenAI equivalent
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) }});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let finish = finish_reason(
        anthropic
            .get("stop_reason")
            .and_then(Value::as_str)
            .unwrap_or("end_turn"),
    );
    Ok(json!({
        "id": format!("chatcmpl-{}", anthropic.get("id").and_then(Value::as_str).unwrap_or("")),
        "object": "chat.completion",
        "created": created,
        "model": anthropic.get("model").cloned().unwrap_or_default(),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage(anthropic.get("usage").unwrap_or(&Value::Null)),
    }))
}

/// An Anthropic error answer as (OpenAI status, OpenAI-shaped error body).
pub fn error(status: u16, anthropic: &Value) -> (u16, Value) {
    let kind = anthropic
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("api_error");
    let message = anthropic
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("the provider answered with an error");
    let status = match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        // Anthropic's 529: clients know 503 as "try again later"
        "overloaded_error" => 503,
        "api_error" => 500,
        _ => status,
    };
    (
        status,
        json!({"error": {"message": message, "type": kind, "code": kind}}),
    )
}

/// Anthropic's Messages API as a provider.
pub struct Anthropic;

/// A `usage` object in Anthropic's shape (a message, `message_start` or `message_delta`).
pub fn is_anthropic_usage(v: &Value, u: &Value) -> bool {
    u.get("cache_read_input_tokens").is_some()
        || u.get("cache_creation_input_tokens").is_some()
        || v.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t == "message" || t == "message_delta")
}

/// Anthropic `usage`: its `input_tokens` exclude cache reads and writes.
pub fn absorb_usage(usage: &mut Usage, u: &Value) {
    let read = n(u, &["cache_read_input_tokens"]);
    let write = n(u, &["cache_creation_input_tokens"]);
    if let Some(i) = n(u, &["input_tokens"]) {
        usage.prompt_tokens = Some(prompt_tokens(i, read.unwrap_or(0), write.unwrap_or(0)));
        usage.cached_tokens = read.or(Some(0));
        usage.cache_write_tokens = write.or(Some(0));
    }
    if let Some(o) = n(u, &["output_tokens"]) {
        usage.completion_tokens = Some(o);
    }
}

impl Reader for Anthropic {
    fn absorb(&self, usage: &mut Usage, v: &Value) {
        if let Some(m) = v.get("model").and_then(Value::as_str) {
            usage.model = Some(m.to_string());
        }
        // message_start carries the message (model, input usage)
        if let Some(msg) = v.get("message").filter(|m| m.get("usage").is_some()) {
            self.absorb(usage, msg);
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            absorb_usage(usage, u);
        }
    }

    fn has_content(&self, v: &Value) -> bool {
        v.get("type").and_then(Value::as_str) == Some("content_block_delta")
    }

    fn is_terminal(&self, event: Option<&str>, _data: &[u8]) -> bool {
        event == Some("message_stop")
    }
}

impl Egress for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn serves(&self, op: Op) -> bool {
        // Anthropic has no embeddings and no legacy completions
        matches!(op, Op::Chat | Op::CountTokens)
    }

    fn path(&self, site: &Site<'_>, op: Op) -> String {
        match op {
            Op::CountTokens => format!("{}/messages/count_tokens", site.base_path),
            _ => format!("{}/messages", site.base_path),
        }
    }

    fn body(
        &self,
        req: &Canonical,
        model_id: &str,
        _edits: &super::Edits,
    ) -> Result<Vec<u8>, TranslateError> {
        // a Messages client's body is sent as it came; an OpenAI client's is translated with
        // its own max_tokens (Anthropic refuses one over the model's limit with a clear 400)
        if let Some(native) = req.native_for("anthropic") {
            // a Messages client: its body goes as it came (thinking blocks, signatures,
            // cache_control, documents and server tools included), with the provider's model id
            let out = super::openai::Outgoing {
                body: native,
                edits: None,
                model: model_id,
                ask_usage: false,
            };
            return serde_json::to_vec(&out)
                .map_err(|e| bad(format!("cannot encode the upstream body: {e}")));
        }
        let t = request_map(req.canonical()?, model_id)?;
        serde_json::to_vec(&t.body)
            .map_err(|e| bad(format!("cannot encode the upstream body: {e}")))
    }

    fn answer(&self, sse: bool, include_usage: bool) -> Option<Box<dyn AnswerMap>> {
        Some(if sse {
            Box::new(super::anthropic_stream::StreamTranslator::new(
                include_usage,
                super::unix_now(),
            ))
        } else {
            Box::new(super::WholeJson::new(translate_json))
        })
    }

    fn error(&self, status: u16, body: &Value) -> (u16, Value) {
        error(status, body)
    }

    fn reader(&self) -> &'static dyn Reader {
        &Anthropic
    }
}

fn translate_json(buf: &[u8]) -> Vec<u8> {
    let translated = serde_json::from_slice::<Value>(buf)
        .map_err(|e| format!("the provider's answer is not JSON ({e})"))
        .and_then(|v| response(&v, super::unix_now()).map_err(|e| e.to_string()));
    match translated {
        Ok(v) => v.to_string().into_bytes(),
        Err(why) => GatewayError::BadGateway(format!(
            "the gateway could not translate the provider's answer: {why}"
        ))
        .to_json()
        .to_vec(),
    }
}

/// Golden files in tests/fixtures/anthropic: a request with every translated feature, and an
/// answer with thinking, text, parallel tool calls and cache usage. `SWITCHYARD_UPDATE_GOLDEN=1`
/// rewrites the expected files (then review the diff).
#[cfg(test)]
mod golden_tests {
    use super::*;

    fn golden(input: &str, expected: &str, translate: impl Fn(&Value) -> Value) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/anthropic/");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap();
        let got = translate(&serde_json::from_str(&read(input)).unwrap());
        if std::env::var_os("SWITCHYARD_UPDATE_GOLDEN").is_some() {
            let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
            std::fs::write(format!("{dir}{expected}"), text).unwrap();
        }
        let want: Value = serde_json::from_str(&read(expected)).unwrap();
        assert_eq!(
            got,
            want,
            "{expected} differs:\n{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
    }

    #[test]
    fn the_request_translates_to_the_golden_messages_request() {
        golden("request.openai.json", "request.anthropic.json", |v| {
            request(v, "claude-sonnet-4-20250514").unwrap().body
        });
    }

    #[test]
    fn the_answer_translates_to_the_golden_chat_completion() {
        golden("response.anthropic.json", "response.openai.json", |v| {
            response(v, 1_764_590_400).unwrap()
        });
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::*;

    #[test]
    fn fields_anthropic_cannot_honour_are_refused_by_name_and_harmless_ones_dropped() {
        let base = || json!({"messages": [{"role": "user", "content": "hi"}]});
        for (k, v, want) in [
            (
                "response_format",
                json!({"type": "json_schema", "json_schema": {}}),
                "response_format \"json_schema\"",
            ),
            ("logprobs", json!(true), "`logprobs`"),
            ("reasoning_effort", json!("high"), "thinking"),
            ("functions", json!([]), "legacy"),
            ("modalities", json!(["text", "audio"]), "modalities"),
        ] {
            let mut b = base();
            b[k] = v;
            let e = request(&b, "claude-sonnet-4-20250514").unwrap_err();
            assert!(e.0.contains(want), "{k}: {e}");
        }
        let mut b = base();
        for (k, v) in [
            ("response_format", json!({"type": "text"})),
            ("logprobs", json!(false)),
            ("seed", json!(7)),
            ("presence_penalty", json!(0.5)),
            ("top_k", json!(5)),
        ] {
            b[k] = v;
        }
        let t = request(&b, "m").unwrap();
        assert_eq!(t.body["top_k"], 5);
        assert!(t.body.get("seed").is_none() && t.body.get("presence_penalty").is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_survives_on_system_parts_messages_and_tools() {
        let eph = json!({"type": "ephemeral"});
        let b = request(
            &json!({
                "messages": [
                    {"role": "system", "content": [
                        {"type": "text", "text": "A long, stable system prompt.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                        {"type": "text", "text": "Today's note."}]},
                    {"role": "user", "content": [
                        {"type": "text", "text": "A long document.", "cache_control": eph},
                        {"type": "text", "text": "The question."}]},
                    {"role": "assistant", "content": "An answer.", "cache_control": eph},
                    {"role": "user", "content": "Next question.", "cache_control": eph}
                ],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}, "cache_control": eph}]
            }),
            "claude-sonnet-4-20250514",
        )
        .unwrap()
        .body;
        assert_eq!(
            b["system"],
            json!([
                {"type": "text", "text": "A long, stable system prompt.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": "Today's note."}
            ])
        );
        assert_eq!(b["messages"][0]["content"][0]["cache_control"], eph);
        assert!(b["messages"][0]["content"][1]
            .get("cache_control")
            .is_none());
        assert_eq!(
            b["messages"][1]["content"][0]["cache_control"], eph,
            "message level"
        );
        assert_eq!(b["messages"][2]["content"][0]["cache_control"], eph);
        assert_eq!(b["tools"][0]["cache_control"], eph);
        // without cache_control the system prompt stays a string
        let plain = request(
            &json!({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]}),
            "m",
        )
        .unwrap()
        .body;
        assert_eq!(plain["system"], "S");
        assert!(!plain.to_string().contains("cache_control"));
    }

    #[test]
    fn request_with_system_images_tools_and_tool_results() {
        let openai = json!({
            "model": "claude-sonnet-4",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather and time in Paris?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/map.png"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": "14:00"},
                {"role": "user", "content": "Thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                      {"type": "function", "function": {"name": "get_time"}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "temperature": 1.5,
            "top_p": 0.9,
            "stop": "END",
            "user": "user-7",
            "stream": true,
            "stream_options": {"include_usage": true}
        });
        let r = request(&openai, "claude-sonnet-4-20250514").unwrap();
        assert!(r.stream && r.include_usage);
        let b = &r.body;
        assert_eq!(b["model"], "claude-sonnet-4-20250514");
        assert_eq!(b["system"], "Be brief.\n\nUse tools.");
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(b["temperature"], 1.0);
        assert_eq!(b["top_p"], 0.9);
        assert_eq!(b["stop_sequences"], json!(["END"]));
        assert_eq!(b["metadata"]["user_id"], "user-7");
        assert_eq!(
            b["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            b["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(b["tools"][1]["input_schema"], json!({"type": "object"}));
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3, "{m:#?}");
        assert_eq!(
            m[0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
        );
        assert_eq!(
            m[0]["content"][2]["source"],
            json!({"type": "url", "url": "https://example.com/map.png"})
        );
        assert_eq!(m[1]["role"], "assistant");
        assert_eq!(
            m[1]["content"][0],
            json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}})
        );
        assert_eq!(m[1]["content"][1]["input"], json!({}));
        // both tool results and the next user turn form one user message
        assert_eq!(m[2]["role"], "user");
        assert_eq!(m[2]["content"].as_array().unwrap().len(), 3);
        assert_eq!(
            m[2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "call_1", "content": "18C"})
        );
        assert_eq!(
            m[2]["content"][2],
            json!({"type": "text", "text": "Thanks"})
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        for (body, want) in [
            (json!([]), "JSON object"),
            (json!({"messages": "hi"}), "messages must be an array"),
            (json!({"messages": []}), "at least one user message"),
            (
                json!({"n": 2, "messages": [{"role": "user", "content": "x"}]}),
                "n > 1",
            ),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
                "http(s) URL",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"tool_choice": 3, "messages": [{"role": "user", "content": "x"}]}),
                "tool_choice",
            ),
        ] {
            let e = request(&body, "m").unwrap_err();
            assert!(e.0.contains(want), "{body}: {e}");
        }
        let r = request(&json!({"max_tokens": 77, "tool_choice": {"type": "function", "function": {"name": "f"}}, "messages": [{"role": "user", "content": "x"}]}), "m").unwrap();
        assert_eq!(r.body["max_tokens"], 77);
        assert_eq!(r.body["tool_choice"], json!({"type": "tool", "name": "f"}));
        assert!(!r.stream && !r.include_usage);
        assert!(r.body.get("stream").is_none());
    }

    #[test]
    fn responses_with_text_tool_calls_and_cache_usage() {
        let a = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
            "content": [{"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}
        });
        let o = response(&a, 1).unwrap();
        assert_eq!(o["id"], "chatcmpl-msg_01");
        let c = &o["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(c["message"]["content"], "Checking.");
        assert_eq!(
            c["message"]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        let args: Value = serde_json::from_str(
            c["message"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args["city"], "Paris");
        assert_eq!(
            o["usage"],
            json!({"prompt_tokens": 115, "completion_tokens": 20, "total_tokens": 135, "prompt_tokens_details": {"cached_tokens": 100}})
        );
        let only_tools = json!({"id": "m", "model": "x", "stop_reason": "tool_use", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "usage": {}});
        assert_eq!(
            response(&only_tools, 1).unwrap()["choices"][0]["message"]["content"],
            Value::Null
        );
        assert!(response(&json!({"id": "m"}), 1).is_err());
    }

    #[test]
    fn errors_keep_their_meaning() {
        for (kind, status) in [
            ("invalid_request_error", 400),
            ("authentication_error", 401),
            ("rate_limit_error", 429),
            ("overloaded_error", 503),
            ("api_error", 500),
        ] {
            let (s, body) = error(
                418,
                &json!({"type": "error", "error": {"type": kind, "message": "m"}}),
            );
            assert_eq!(s, status);
            assert_eq!(
                body,
                json!({"error": {"message": "m", "type": kind, "code": kind}})
            );
        }
        assert_eq!(error(502, &json!("not json")).0, 500);
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        for (a, o) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("something_new", "stop"),
        ] {
            assert_eq!(finish_reason(a), o);
        }
    }
}
