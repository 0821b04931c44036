//! The request log record (spec section 10): one per client request, built in `logging` (`proxy/log_record.rs`).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

/// One upstream attempt, for the request's log record.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub target: String,
    /// 0 when no response came (see `error`).
    pub status: u16,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// Retries on this target before this attempt.
    pub retry: u32,
    /// Unified API: the provider and its model id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Body bytes kept as they came (no copy, no UTF-8 check on the request path); serialized by
/// the exporter, invalid UTF-8 replaced by U+FFFD.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BodyText {
    pub bytes: Bytes,
    /// The gateway parsed these bytes as one JSON document already (request `model`, response
    /// usage), so the exporter can embed them as JSON without checking them again.
    pub valid_json: bool,
}

impl BodyText {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub fn to_str_lossy(&self) -> std::borrow::Cow<'_, str> {
        // the validator of `from_utf8` is much faster than the lossy decoder on valid text
        match std::str::from_utf8(&self.bytes) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(&self.bytes),
        }
    }
}

impl From<&str> for BodyText {
    fn from(s: &str) -> Self {
        BodyText {
            bytes: Bytes::copy_from_slice(s.as_bytes()),
            valid_json: false,
        }
    }
}

impl Serialize for BodyText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_str_lossy())
    }
}

/// Known-valid JSON text written into the output as it is. serde_json writes a struct with
/// this name verbatim; this is how its own `RawValue` serializes (the `raw_value` feature),
/// without a second validation pass (`tests::complete_json_is_embedded...` guards it).
struct RawJson<'a>(&'a str);

impl Serialize for RawJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        const TOKEN: &str = "$serde_json::private::RawValue";
        let mut st = s.serialize_struct(TOKEN, 1)?;
        st.serialize_field(TOKEN, self.0)?;
        st.end()
    }
}

/// A body kept in the record: omitted on request, or truncated at the configured size.
///
/// Serialized as `{"kind": "json", "json": <the body>, "bytes": n}` when the body is complete,
/// valid JSON that a strict reader takes (embedded as it is, so no escaping and a record that
/// `jq` can walk; a lone surrogate escape is not), otherwise
/// `{"kind": "text", "text": "...", "truncated": bool, "bytes": n}`, or `{"kind": "omitted"}`.
#[derive(Debug, Clone, PartialEq)]
pub enum LoggedBody {
    Omitted,
    Text {
        text: BodyText,
        truncated: bool,
        bytes: usize,
    },
}

/// Valid JSON on one line: raw newlines in valid JSON can only be whitespace between tokens, so
/// they become spaces (JSONL keeps one record per line).
fn one_line(json: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if memchr::memchr2(b'\n', b'\r', json).is_some() {
        std::borrow::Cow::Owned(
            json.iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(json)
    }
}

/// Whether `json` is one JSON document that a strict reader (`jq`, Python, a JSON column) takes.
/// The gateway's own parses skip the fields they do not need, and skipping checks an escape's
/// form but not what it decodes to, so a lone surrogate (`"\ud800"`) passed them: embedded
/// as it was, it made the record unreadable to `jq` from there on. This asks serde_json for every
/// string and key, so it decodes each escape (refusing lone surrogates), and builds nothing.
fn strictly_valid(json: &str) -> bool {
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    struct Strict;
    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
            d.deserialize_any(Strict)
        }
    }
    impl<'de> Visitor<'de> for Strict {
        type Value = Strict;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
            Ok(Strict)
        }
        // borrowed and owned strings end here too: serde_json has decoded the string by now
        fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_unit<E>(self) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
            while seq.next_element::<Strict>()?.is_some() {}
            Ok(Strict)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
            // a key is asked for as a value too: a string, decoded
            while map.next_entry::<Strict, Strict>()?.is_some() {}
            Ok(Strict)
        }
    }
    serde_json::from_str::<Strict>(json).is_ok()
}

impl Serialize for LoggedBody {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            LoggedBody::Omitted => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("kind", "omitted")?;
                m.end()
            }
            LoggedBody::Text {
                text,
                truncated,
                bytes,
            } => {
                if text.valid_json && !truncated {
                    let line = one_line(&text.bytes);
                    if let Some(json) = std::str::from_utf8(&line)
                        .ok()
                        .filter(|j| strictly_valid(j))
                    {
                        let mut m = s.serialize_map(Some(3))?;
                        m.serialize_entry("kind", "json")?;
                        m.serialize_entry("json", &RawJson(json))?;
                        m.serialize_entry("bytes", bytes)?;
                        return m.end();
                    }
                }
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("kind", "text")?;
                m.serialize_entry("text", text)?;
                m.serialize_entry("truncated", truncated)?;
                m.serialize_entry("bytes", bytes)?;
                m.end()
            }
        }
    }
}

impl LoggedBody {
    /// Bytes of body text held.
    fn len(&self) -> usize {
        match self {
            LoggedBody::Omitted => 0,
            LoggedBody::Text { text, .. } => text.len(),
        }
    }

    /// The first `cap` bytes of `bytes` (shared when that is all of it); `valid_json`: the whole body
    /// was parsed as JSON.
    pub fn capture(bytes: &Bytes, omit: bool, cap: usize, valid_json: bool) -> Option<LoggedBody> {
        let kept = if bytes.len() <= cap {
            bytes.clone()
        } else {
            // a copy, so that the queued record does not keep a large body alive
            Bytes::copy_from_slice(&bytes[..cap])
        };
        Self::keep(kept, bytes.len(), omit, valid_json)
    }

    /// `kept`: what was captured of a body of `total` bytes.
    pub fn keep(kept: Bytes, total: usize, omit: bool, valid_json: bool) -> Option<LoggedBody> {
        if omit {
            return Some(LoggedBody::Omitted);
        }
        if total == 0 {
            return None;
        }
        Some(LoggedBody::Text {
            truncated: kept.len() < total,
            text: BodyText {
                bytes: kept,
                valid_json,
            },
            bytes: total,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The request id, sent back as `Helicone-Id` (the client's `Helicone-Request-Id` when it
    /// sent one, so two records can share it).
    pub id: String,
    /// Made by the gateway for this record alone (a UUID v4, fixed when the record is built):
    /// a replayed batch carries the same value, so sinks deduplicate on it.
    pub record_id: String,
    /// RFC 3339, UTC.
    pub start_time: String,
    /// Id of the gateway key (never the key).
    pub key_id: Option<String>,
    pub method: String,
    pub path: String,
    pub target: Option<String>,
    pub provider: Option<String>,
    pub model_requested: Option<String>,
    pub model_responded: Option<String>,
    /// 0 when no response reached the client.
    pub status: u16,
    pub attempts: Vec<Attempt>,
    pub fallback_index: Option<usize>,
    pub retries: u32,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
    pub ttft_ms: Option<u64>,
    pub stream: bool,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    /// Why `cost_usd` is what it is: `priced`, `unpriced` (the model has no price: never a
    /// silent 0), `no_usage` (the provider reported no tokens), `cache_hit` (0, served from
    /// cache); absent when no model was involved.
    pub cost_status: Option<&'static str>,
    /// The model used is marked deprecated or retired in the registry: find the callers to move.
    pub deprecated: bool,
    /// The client's dialect on the unified API (`openai`, `anthropic`); `None` for passthrough.
    pub dialect: Option<&'static str>,
    /// Hints the answering provider's dialect could not honour, dropped on the way (the
    /// `Helicone-Dropped-Fields` header's list).
    pub dropped_fields: Vec<String>,
    pub cache: Option<String>,
    /// On a cache hit: the id of the request whose answer was served.
    pub cache_reference_id: Option<String>,
    pub rate_limit: Option<String>,
    pub rejection: Option<String>,
    /// The prompt template the request was rendered from, and its version.
    pub prompt_id: Option<String>,
    pub prompt_version: Option<u32>,
    /// `Helicone-Model-Override`: the model the cost was computed for.
    pub model_override: Option<String>,
    /// `Helicone-Target-Provider` as the client sent it.
    pub target_provider: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub session_path: Option<String>,
    pub session_name: Option<String>,
    pub properties: BTreeMap<String, String>,
    pub request_body: Option<LoggedBody>,
    pub response_body: Option<LoggedBody>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub error: Option<String>,
}

impl Record {
    /// About what the record holds in memory (bounds the export queue in bytes).
    pub fn approx_bytes(&self) -> usize {
        512 + self.attempts.len() * 128
            + self.request_body.as_ref().map_or(0, LoggedBody::len)
            + self.response_body.as_ref().map_or(0, LoggedBody::len)
            + self
                .properties
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// A representative record of a proxied chat completion (about 3 KB as JSON, bodies included),
/// for benchmarks and the exporter throughput example.
pub fn sample(i: usize) -> Record {
    let request = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"You are a concise assistant for an on-call team."}},{{"role":"user","content":"Summarise the attached incident report in three bullet points for the on-call channel. {}"}}],"user":"user-{}"}}"#,
        "Report: the upstream timed out, 'retries' piled up, and the queue grew. ".repeat(12),
        i % 1000
    );
    let response = format!(
        r#"{{"id":"chatcmpl-{i}","object":"chat.completion","created":1764590400,"model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":812,"completion_tokens":164,"total_tokens":976}}}}"#,
        "- The outage began at 09:12 UTC when the provider slowed down.\\n".repeat(6)
    );
    let (request_len, response_len) = (request.len(), response.len());
    let mut properties = BTreeMap::new();
    properties.insert("team".to_string(), format!("t{}", i % 17));
    Record {
        id: format!("00000000-0000-4000-8000-{i:012}"),
        record_id: format!("00000000-0000-4000-9000-{i:012}"),
        start_time: "2026-12-01T12:00:00.000Z".into(),
        key_id: Some("team-a".into()),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        target: Some("https://api.openai.com".into()),
        provider: Some("openai".into()),
        model_requested: Some("gpt-4o-mini".into()),
        model_responded: Some("gpt-4o-mini-2024-07-18".into()),
        status: 200,
        attempts: vec![Attempt {
            target: "https://api.openai.com".into(),
            status: 200,
            latency_ms: 412,
            error: None,
            retry: 0,
            provider: None,
            model: None,
        }],
        fallback_index: None,
        retries: 0,
        latency_ms: 415,
        ttfb_ms: Some(180),
        ttft_ms: None,
        stream: false,
        prompt_tokens: Some(812),
        completion_tokens: Some(164),
        cached_tokens: Some(0),
        cache_write_tokens: None,
        reasoning_tokens: Some(0),
        cost_usd: Some(0.000_220_2),
        cost_status: Some("priced"),
        deprecated: false,
        dialect: None,
        dropped_fields: Vec::new(),
        cache: None,
        cache_reference_id: None,
        rate_limit: None,
        rejection: None,
        prompt_id: None,
        prompt_version: None,
        model_override: None,
        target_provider: None,
        user_id: Some(format!("user-{}", i % 1000)),
        session_id: None,
        session_path: None,
        session_name: None,
        properties,
        request_body: LoggedBody::keep(Bytes::from(request), request_len, false, true),
        response_body: LoggedBody::keep(Bytes::from(response), response_len, false, true),
        request_bytes: request_len as u64,
        response_bytes: response_len as u64,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ser(body: &str, cap: usize) -> serde_json::Value {
        // as the gateway knows it: parsed as JSON (for the model, or the usage) or not
        let valid = serde_json::from_str::<serde_json::Value>(body).is_ok();
        let b = LoggedBody::capture(&Bytes::copy_from_slice(body.as_bytes()), false, cap, valid)
            .unwrap();
        let line = serde_json::to_string(&b).unwrap();
        assert!(!line.contains('\n'), "one line: {line}");
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn complete_json_is_embedded_on_one_line_anything_else_is_text() {
        let v = ser("{\n  \"model\": \"gpt-4o\",\r\n  \"n\": [1, 2]\n}\n", 1000);
        assert_eq!(v["kind"], "json");
        assert_eq!(v["json"]["model"], "gpt-4o");
        assert_eq!(v["json"]["n"][1], 2);
        assert_eq!(v["bytes"], 40);
        // a string's escaped newline stays a newline in the value
        assert_eq!(ser(r#"{"a":"x\ny"}"#, 100)["json"]["a"], "x\ny");
        for (body, cap) in [
            ("{\"model\": \"gpt-4o\"", 1000),              // invalid
            ("{\"model\": \"gpt-4o\"}", 5),                // truncated
            ("data: {\"a\":1}\n\ndata: [DONE]\n\n", 1000), // SSE
            ("plain words", 1000),
            ("{\"a\":1} trailing", 1000),
        ] {
            let v = ser(body, cap);
            assert_eq!(v["kind"], "text", "{body}");
            assert_eq!(v["text"], &body[..body.len().min(cap)]);
            assert_eq!(v["truncated"], cap < body.len());
        }
        let bad = LoggedBody::capture(&Bytes::from_static(b"\xff\xfe{"), false, 10, false).unwrap();
        let v: serde_json::Value = serde_json::to_value(&bad).unwrap();
        assert_eq!(
            v["text"], "\u{fffd}\u{fffd}{",
            "invalid UTF-8 is replaced, not dropped"
        );
    }

    #[test]
    fn the_benchmark_sample_is_a_realistic_record() {
        let line = serde_json::to_string(&sample(7)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request_body"]["kind"], "json");
        assert_eq!(v["response_body"]["json"]["usage"]["prompt_tokens"], 812);
        assert!((2500..4000).contains(&line.len()), "{}", line.len());
    }

    /// How the gateway flags a body: its own parse skips what it does not need.
    fn flagged(body: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
    }

    /// The record line of `body`, read back by a strict parser (serde_json's `Value` decodes
    /// every string, as `jq` does).
    fn logged(body: &[u8]) -> serde_json::Value {
        let b = LoggedBody::capture(&Bytes::copy_from_slice(body), false, 1 << 16, flagged(body))
            .unwrap();
        let line = serde_json::to_string(&b).unwrap();
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a strict reader fails ({e}): {line}"))
    }

    #[test]
    fn bodies_a_strict_reader_refuses_are_logged_as_text() {
        for body in [
            r#"{"a":"\ud800"}"#,           // lone high surrogate
            r#"{"a":"\udc00"}"#,           // lone low surrogate
            r#"{"a":"\ud800\u0041"}"#,     // high surrogate, then no low one
            r#"{"\ud800":1}"#,             // in a key
            r#"[1,{"b":["x","\udfff"]}]"#, // deep inside
        ] {
            assert!(
                flagged(body.as_bytes()),
                "the gateway's parse let {body} through"
            );
            let v = logged(body.as_bytes());
            assert_eq!(v["kind"], "text", "{body}");
            assert_eq!(v["text"], body, "the text is the body as it came");
        }
        // invalid UTF-8 flagged as JSON (a skipped string is not checked): text, replaced
        let body = b"{\"a\":\"\xff\"}";
        let v = logged(body);
        assert_eq!(v["kind"], "text");
        assert_eq!(v["text"], "{\"a\":\"\u{fffd}\"}");
    }

    #[test]
    fn bodies_a_strict_reader_takes_are_embedded_as_json() {
        // a valid pair: one character
        let v = logged(br#"{"a":"\ud83d\ude00","n":[1,2.5,-3,true,null]}"#);
        assert_eq!(v["kind"], "json");
        assert_eq!(v["json"]["a"], "\u{1f600}");
        assert_eq!(v["json"]["n"][1], 2.5);
        // an escaped backslash followed by u is no escape: the six characters \ud800
        let v = logged(br#"{"a":"\\ud800","\\udc00":"k"}"#);
        assert_eq!(v["kind"], "json");
        assert_eq!(v["json"]["a"], "\\ud800");
        assert_eq!(v["json"]["\\udc00"], "k");
    }
}
