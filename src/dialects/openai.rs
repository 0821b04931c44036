//! OpenAI chat completions, completions, embeddings (and the Responses API's usage): the canonical dialect, as client and as provider.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::sse::SseEvent;
use super::{
    bad, n, nonempty, write_event, AnswerMap, Canonical, Egress, Ingress, Op, Reader, Site,
    TranslateError,
};
use crate::usage::Usage;

/// OpenAI and every OpenAI-compatible provider.
pub struct OpenAi;

/// Parses and checks the client's body for `op`.
pub fn parse(op: Op, bytes: &[u8]) -> Result<Canonical, TranslateError> {
    let shape = match op {
        Op::Chat => "{\"model\": \"gpt-4o-mini\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}",
        Op::Embeddings => "{\"model\": \"text-embedding-3-small\", \"input\": \"text\"}",
        Op::Completions => "{\"model\": \"gpt-4o-mini\", \"prompt\": \"Say hi\"}",
        Op::CountTokens => return Err(bad("token counting is a Messages endpoint: POST /v1/messages/count_tokens")),
    };
    let body = super::parse_object(bytes, shape)?;
    let model = super::model_of(&body, shape, "gpt-4o-mini")?;
    match op {
        Op::Chat => super::check_messages(&body, shape)?,
        Op::Completions => match body.get("prompt") {
            Some(Value::String(_)) => {}
            Some(Value::Array(a)) if !a.is_empty() => {}
            Some(_) => {
                return Err(bad(
                    "`prompt` must be a string or a non-empty array of strings",
                ))
            }
            None => {
                return Err(bad(format!(
                    "`prompt` is missing; send a JSON object such as {shape}"
                )))
            }
        },
        Op::CountTokens => {}
        Op::Embeddings => {
            if body.get("input").is_none_or(Value::is_null) {
                return Err(bad(format!(
                    "`input` is missing; send a JSON object such as {shape}"
                )));
            }
        }
    }
    let stream = super::stream_of(&body)?;
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Canonical {
        op,
        body,
        model,
        stream,
        include_usage,
        native: None,
        untranslatable: None,
        dropped: Vec::new(),
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

/// The client's body as one attempt sends it, written straight from the parsed map: `model`
/// replaced and, for a stream, `stream_options.include_usage` set (the usage chunk is how a
/// stream's tokens and cost get logged). Nothing is copied.
pub(crate) struct Outgoing<'a> {
    pub body: &'a Map<String, Value>,
    pub edits: Option<&'a super::Edits>,
    pub model: &'a str,
    pub ask_usage: bool,
}

/// `stream_options` with `include_usage: true`.
struct WithUsage<'a>(&'a Map<String, Value>);

impl Serialize for WithUsage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0 {
            if k != "include_usage" {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry("include_usage", &true)?;
        m.end()
    }
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        let (mut model_written, mut options_written) = (false, false);
        let max_tokens = self.edits.and_then(|e| e.max_tokens);
        for (k, v) in self.body {
            if self.edits.is_some_and(|e| e.omit.contains(&k.as_str())) {
                continue;
            }
            match (k.as_str(), v) {
                ("max_tokens", _) if max_tokens.is_some() => {
                    m.serialize_entry(k, &max_tokens)?;
                }
                ("model", _) => {
                    m.serialize_entry(k, self.model)?;
                    model_written = true;
                }
                ("stream_options", Value::Object(o)) if self.ask_usage => {
                    m.serialize_entry(k, &WithUsage(o))?;
                    options_written = true;
                }
                _ => m.serialize_entry(k, v)?,
            }
        }
        if !model_written {
            m.serialize_entry("model", self.model)?;
        }
        if self.ask_usage && !options_written && !self.body.contains_key("stream_options") {
            m.serialize_entry("stream_options", &WithUsage(&Map::new()))?;
        }
        m.end()
    }
}

/// The attempt's body for an OpenAI-compatible provider.
pub fn body(
    req: &Canonical,
    model_id: &str,
    edits: &super::Edits,
) -> Result<Vec<u8>, TranslateError> {
    serde_json::to_vec(&Outgoing {
        body: req.canonical()?,
        edits: Some(edits),
        model: model_id,
        ask_usage: req.stream,
    })
    .map_err(|e| bad(format!("cannot encode the upstream body: {e}")))
}

/// OpenAI chat/completions/embeddings `usage`.
pub fn absorb_usage(usage: &mut Usage, u: &Value) {
    let Some(p) = n(u, &["prompt_tokens"]) else {
        return;
    };
    usage.prompt_tokens = Some(p);
    usage.completion_tokens = n(u, &["completion_tokens"])
        .or(usage.completion_tokens)
        .or(Some(0));
    usage.cached_tokens = n(u, &["prompt_tokens_details", "cached_tokens"]).or(usage.cached_tokens);
    usage.reasoning_tokens =
        n(u, &["completion_tokens_details", "reasoning_tokens"]).or(usage.reasoning_tokens);
}

/// OpenAI Responses API `usage` (`input_tokens`, `output_tokens`).
pub fn absorb_responses_usage(usage: &mut Usage, u: &Value) {
    if let Some(i) = n(u, &["input_tokens"]) {
        usage.prompt_tokens = Some(i);
        usage.completion_tokens = n(u, &["output_tokens"]).or(Some(0));
        usage.cached_tokens = n(u, &["input_tokens_details", "cached_tokens"]);
        usage.reasoning_tokens = n(u, &["output_tokens_details", "reasoning_tokens"]);
    } else if let Some(o) = n(u, &["output_tokens"]) {
        usage.completion_tokens = Some(o);
    }
}

impl Reader for OpenAi {
    fn absorb(&self, usage: &mut Usage, v: &Value) {
        if let Some(m) = v.get("model").and_then(Value::as_str) {
            usage.model = Some(m.to_string());
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            if u.get("prompt_tokens").is_some() {
                absorb_usage(usage, u);
            } else {
                absorb_responses_usage(usage, u);
            }
        }
        // Responses API stream: response.completed carries the whole response
        if let Some(r) = v
            .get("response")
            .filter(|r| r.get("usage").is_some_and(Value::is_object))
        {
            self.absorb(usage, r);
        }
    }

    fn has_content(&self, v: &Value) -> bool {
        if let Some(c) = v.get("choices").and_then(|c| c.get(0)) {
            let d = c.get("delta").unwrap_or(c);
            return nonempty(d.get("content"))
                || nonempty(d.get("text"))
                || nonempty(c.get("text"))
                || d.get("tool_calls").is_some();
        }
        v.get("type").and_then(Value::as_str) == Some("response.output_text.delta")
            && nonempty(v.get("delta"))
    }

    fn is_terminal(&self, event: Option<&str>, data: &[u8]) -> bool {
        event == Some("response.completed") || data.trim_ascii() == b"[DONE]"
    }
}

impl Egress for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn serves(&self, op: Op) -> bool {
        op != Op::CountTokens
    }

    fn path(&self, site: &Site<'_>, op: Op) -> String {
        format!("{}/{}", site.base_path, op.suffix())
    }

    fn body(
        &self,
        req: &Canonical,
        model_id: &str,
        edits: &super::Edits,
    ) -> Result<Vec<u8>, TranslateError> {
        body(req, model_id, edits)
    }

    fn answer(&self, sse: bool, include_usage: bool) -> Option<Box<dyn AnswerMap>> {
        (sse && !include_usage).then(|| Box::new(DropUsage) as Box<dyn AnswerMap>)
    }

    fn error(&self, status: u16, body: &Value) -> (u16, Value) {
        (status, body.clone())
    }

    fn reader(&self) -> &'static dyn Reader {
        &OpenAi
    }
}

impl Ingress for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn parse(&self, op: Op, bytes: &[u8]) -> Result<Canonical, TranslateError> {
        parse(op, bytes)
    }

    fn answer(&self, _sse: bool) -> Option<Box<dyn AnswerMap>> {
        None
    }

    fn error(&self, _status: u16, canonical: &Value) -> Value {
        canonical.clone()
    }
}

/// An OpenAI-format stream for which the gateway asked for usage (to log it) and the client did
/// not: the usage-only chunk (`"choices": []`) is taken out, everything else passes.
pub struct DropUsage;

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

impl AnswerMap for DropUsage {
    fn content_type(&self) -> Option<&'static str> {
        None
    }

    fn chunk(&mut self, chunk: &[u8], _end: bool, out: &mut Vec<u8>) {
        // only streams are mapped: a JSON body passes as it came
        out.extend_from_slice(chunk);
    }

    fn events(&mut self, events: &[SseEvent], _end: bool, out: &mut Vec<u8>) {
        for ev in events {
            if !is_usage_only(&ev.data) {
                write_event(ev, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(body: &str, op: Op) -> Canonical {
        parse(op, body.as_bytes()).unwrap()
    }

    #[test]
    fn the_attempts_body_replaces_the_model_and_asks_for_stream_usage_without_a_copy() {
        let c = canonical(
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":false,"x":1}}"#,
            Op::Chat,
        );
        let v: Value = serde_json::from_slice(
            &body(&c, "gpt-4o-mini-2024-07-18", &Default::default()).unwrap(),
        )
        .unwrap();
        assert_eq!(v["model"], "gpt-4o-mini-2024-07-18");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["x"], 1);
        assert_eq!(v["messages"][0]["content"], "Hi");
        // the client's map is untouched
        assert_eq!(c.body["model"], "gpt-4o-mini");
        assert_eq!(c.body["stream_options"]["include_usage"], false);

        let plain = canonical(r#"{"model":"m","input":"x"}"#, Op::Embeddings);
        let v: Value = serde_json::from_slice(
            &body(&plain, "text-embedding-3-small", &Default::default()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model": "text-embedding-3-small", "input": "x"})
        );

        let streamed = canonical(
            r#"{"model":"m","prompt":"x","stream":true}"#,
            Op::Completions,
        );
        let v: Value =
            serde_json::from_slice(&body(&streamed, "m2", &Default::default()).unwrap()).unwrap();
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"include_usage": true})
        );
    }

    #[test]
    fn a_stream_options_that_is_not_an_object_is_passed_as_sent() {
        let c = canonical(
            r#"{"model":"m","messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":"x"}"#,
            Op::Chat,
        );
        let v: Value =
            serde_json::from_slice(&body(&c, "m", &Default::default()).unwrap()).unwrap();
        assert_eq!(v["stream_options"], "x");
    }

    #[test]
    fn the_reader_takes_chat_and_responses_usage() {
        let mut u = Usage::default();
        OpenAi.absorb(
            &mut u,
            &serde_json::json!({"model": "gpt-4o", "usage": {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}}),
        );
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
            (Some(10), Some(3), Some(4))
        );
        let mut r = Usage::default();
        OpenAi.absorb(
            &mut r,
            &serde_json::json!({"type": "response.completed", "response": {"model": "o3", "usage": {"input_tokens": 7, "output_tokens": 2}}}),
        );
        assert_eq!((r.prompt_tokens, r.completion_tokens), (Some(7), Some(2)));
        assert_eq!(r.model.as_deref(), Some("o3"));
        assert!(OpenAi.is_terminal(None, b" [DONE]"));
        assert!(!OpenAi.is_terminal(Some("message_stop"), b"{}"));
    }
}
