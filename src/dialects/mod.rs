//! Wire formats ("dialects") behind two traits, pure code without Pingora types: what a client speaks (`Ingress`), what a provider speaks (`Egress`), and the canonical form between them.
//!
//! The canonical form is OpenAI chat completions (and completions, embeddings): a client
//! dialect parses its request into a [`Canonical`] request, a provider dialect builds its own
//! body from that, and maps its answers (JSON, stream, error) back into the canonical answer.
//! N client dialects and M provider dialects meet there instead of in N x M branches; a pair
//! that speaks the same format passes the body through unchanged.
//!
//! Adding a provider dialect: one module here implementing [`Egress`] (path, body, answer
//! mapping, error shape) and [`Reader`] (usage, first token, end of stream), one
//! `ApiFormat` variant in the catalogue, and one arm in [`egress`]. Nothing in `proxy/`
//! changes.

pub mod anthropic;
pub mod anthropic_ingress;
pub mod anthropic_ingress_stream;
pub mod anthropic_map;
pub mod anthropic_stream;
pub mod azure;
pub mod count_tokens;
pub mod gemini;
pub mod openai;
pub mod sse;

use serde_json::{Map, Value};

use crate::config::catalogue::{ApiFormat, ProviderApi};
use crate::usage::Usage;
use sse::SseEvent;

/// Why a request cannot be translated: the client gets a 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TranslateError(pub String);

pub(crate) fn bad(msg: impl Into<String>) -> TranslateError {
    TranslateError(msg.into())
}

/// Which unified operation a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Chat,
    Embeddings,
    Completions,
    /// Anthropic's `POST /v1/messages/count_tokens`.
    CountTokens,
}

impl Op {
    /// The OpenAI path suffix of the operation.
    pub fn suffix(self) -> &'static str {
        match self {
            Op::Chat => "chat/completions",
            Op::Embeddings => "embeddings",
            Op::Completions => "completions",
            Op::CountTokens => "messages/count_tokens",
        }
    }
}

/// A request in the canonical form (an OpenAI chat-completions, completions or embeddings
/// body), parsed once by the client's dialect. Attempts build their bodies from it by
/// reference: no attempt copies the map.
#[derive(Debug)]
pub struct Canonical {
    pub op: Op,
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it.
    pub include_usage: bool,
    /// The client's own body, for a provider that speaks the client's dialect (sent as it
    /// came, but for the model id).
    pub native: Option<Native>,
    /// Why the client's body has no canonical form (only attempts that need one fail).
    pub untranslatable: Option<TranslateError>,
    /// Hints the canonical form cannot carry, dropped on the way (field paths).
    pub dropped: Vec<String>,
}

/// A client's body in its own dialect.
#[derive(Debug)]
pub struct Native {
    /// The client dialect's name (`anthropic`).
    pub dialect: &'static str,
    pub body: Map<String, Value>,
}

impl Canonical {
    /// The client's body for a provider speaking `dialect`, if the client speaks it too.
    pub fn native_for(&self, dialect: &str) -> Option<&Map<String, Value>> {
        self.native
            .as_ref()
            .filter(|n| n.dialect == dialect)
            .map(|n| &n.body)
    }

    /// The canonical body, or why there is none.
    pub fn canonical(&self) -> Result<&Map<String, Value>, TranslateError> {
        match &self.untranslatable {
            Some(e) => Err(e.clone()),
            None => Ok(&self.body),
        }
    }
}

/// One attempt's changes to the canonical body, for what its model can take (a translated
/// request's `max_tokens` clamped to the model's output limit, a setting it lacks left out).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Edits {
    pub max_tokens: Option<u64>,
    pub omit: Vec<&'static str>,
}

/// Where on a provider's origin its API lives (from the catalogue and the operator's config).
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    pub base_path: &'a str,
    /// Azure: the deployment that serves the model.
    pub deployment: Option<&'a str>,
    /// Azure: the `api-version` query parameter.
    pub api_version: &'a str,
}

/// A provider-side dialect: what one attempt sends and how its answer becomes canonical.
pub trait Egress: Sync {
    /// The dialect's name (`openai`, `azure`, `anthropic`), as logged.
    fn name(&self) -> &'static str;
    /// Whether the dialect has an endpoint for `op`.
    fn serves(&self, op: Op) -> bool;
    /// Path and query of `op` on the provider.
    fn path(&self, site: &Site<'_>, op: Op) -> String;
    /// The provider's body for `req`, with the provider's id for the model and the attempt's
    /// `edits`.
    fn body(
        &self,
        req: &Canonical,
        model_id: &str,
        edits: &Edits,
    ) -> Result<Vec<u8>, TranslateError>;
    /// What turns a successful answer (`sse`: a stream) into the canonical one; `None` when
    /// it already is and nothing needs rewriting.
    fn answer(&self, sse: bool, include_usage: bool) -> Option<Box<dyn AnswerMap>>;
    /// A provider error body as (status, canonical error body `{"error": {...}}`).
    fn error(&self, status: u16, body: &Value) -> (u16, Value);
    /// How its answers are read for usage.
    fn reader(&self) -> &'static dyn Reader;
}

/// A client-side dialect: how a client's request is read into the canonical form, and how
/// canonical answers and errors are written back in the client's shape.
pub trait Ingress: Sync {
    fn name(&self) -> &'static str;
    /// The client's body for `op`, parsed and checked once; the message says what to send.
    fn parse(&self, op: Op, bytes: &[u8]) -> Result<Canonical, TranslateError>;
    /// What turns a canonical answer (`sse`: a stream) into the client's; `None` when the
    /// client speaks the canonical form.
    fn answer(&self, sse: bool) -> Option<Box<dyn AnswerMap>>;
    /// A canonical error body (`{"error": {...}}`) in the client's shape.
    fn error(&self, status: u16, canonical: &Value) -> Value;
}

/// The client dialects the unified API serves, by route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Client {
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
    #[default]
    OpenAi,
    /// `/v1/messages` (Claude Code, the anthropic SDK).
    Anthropic,
}

impl Client {
    pub fn ingress(self) -> &'static dyn Ingress {
        match self {
            Client::OpenAi => &openai::OpenAi,
            Client::Anthropic => &anthropic_ingress::Messages,
        }
    }

    pub fn name(self) -> &'static str {
        self.ingress().name()
    }

    /// A provider speaking `egress` takes this client's own body, and its answer goes back
    /// unmapped.
    pub fn is_native(self, egress: &dyn Egress) -> bool {
        self != Client::OpenAi && self.name() == egress.name()
    }

    /// An error body of the gateway's (canonical JSON) in this client's shape.
    pub fn error_body(self, status: u16, canonical: &[u8]) -> Vec<u8> {
        if self == Client::OpenAi {
            return canonical.to_vec();
        }
        let v: Value = serde_json::from_slice(canonical).unwrap_or(Value::Null);
        self.ingress().error(status, &v).to_string().into_bytes()
    }
}

/// A whole JSON answer, collected and rewritten once complete (known by its parsing, since an
/// answer replayed while it is cached ends without an end-of-stream call).
pub struct WholeJson {
    buf: Vec<u8>,
    done: bool,
    content_type: &'static str,
    rewrite: fn(&[u8]) -> Vec<u8>,
}

/// A JSON answer larger than this is not rewritten (the client gets an error).
const MAX_JSON: usize = 32 * 1024 * 1024;

impl WholeJson {
    pub fn new(rewrite: fn(&[u8]) -> Vec<u8>) -> WholeJson {
        WholeJson {
            buf: Vec::new(),
            done: false,
            content_type: "application/json",
            rewrite,
        }
    }
}

impl AnswerMap for WholeJson {
    fn content_type(&self) -> Option<&'static str> {
        Some(self.content_type)
    }

    fn chunk(&mut self, chunk: &[u8], end: bool, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.buf.len() + chunk.len() <= MAX_JSON {
            self.buf.extend_from_slice(chunk);
        } else {
            self.buf.clear();
            self.buf.push(b'!'); // not JSON: reported at the end
        }
        let complete = self.buf.trim_ascii_end().ends_with(b"}")
            && serde_json::from_slice::<serde::de::IgnoredAny>(&self.buf).is_ok();
        if end || complete {
            *out = (self.rewrite)(&self.buf);
            self.done = true;
        }
    }

    fn events(&mut self, events: &[SseEvent], _end: bool, out: &mut Vec<u8>) {
        // a JSON answer is never decoded as a stream; should one be, it passes as it came
        for ev in events {
            write_event(ev, out);
        }
    }
}

/// Reads a provider's answer as it goes by: usage, the first token, the end of a stream.
pub trait Reader: Sync {
    /// Merges what one JSON document (a whole body or one SSE event's data) says.
    fn absorb(&self, usage: &mut Usage, v: &Value);
    /// The SSE event carries generated content (the first token).
    fn has_content(&self, v: &Value) -> bool;
    /// The last event of a complete stream.
    fn is_terminal(&self, event: Option<&str>, data: &[u8]) -> bool;
}

/// Rewrites an answer body on its way to the client, chunk by chunk (JSON) or event by event
/// (SSE, decoded once for the usage reader and the mapper alike).
pub trait AnswerMap: Send + Sync {
    /// Content type of the mapped body (`None`: the provider's).
    fn content_type(&self) -> Option<&'static str>;
    /// A JSON body's chunk (`end`: the body is complete).
    fn chunk(&mut self, chunk: &[u8], end: bool, out: &mut Vec<u8>);
    /// A stream's events (`end`: the stream is complete).
    fn events(&mut self, events: &[SseEvent], end: bool, out: &mut Vec<u8>);
}

/// The provider dialect of a catalogue format.
pub fn egress(format: ApiFormat) -> &'static dyn Egress {
    match format {
        ApiFormat::Openai => &openai::OpenAi,
        ApiFormat::Azure => &azure::Azure,
        ApiFormat::Anthropic => &anthropic::Anthropic,
    }
}

/// Who reads a passthrough answer: Gemini's native paths by their path; a path under a
/// catalogue provider's API base by that provider's dialect; anything else (an unknown origin,
/// a path outside the API) by its shape ([`ANY`]).
pub fn passthrough_reader(path: &str, api: Option<&ProviderApi>) -> &'static dyn Reader {
    let path = path.split('?').next().unwrap_or(path);
    if path.ends_with(":generateContent") || path.ends_with(":streamGenerateContent") {
        return &gemini::Gemini;
    }
    match api {
        Some(a) if path.starts_with(a.base_path.as_str()) => egress(a.format).reader(),
        _ => &ANY,
    }
}

/// Reads any dialect's answer by its shape: for origins whose dialect is not known.
pub struct AnyShape;

pub static ANY: AnyShape = AnyShape;

impl Reader for AnyShape {
    fn absorb(&self, usage: &mut Usage, v: &Value) {
        if let Some(m) = v
            .get("model")
            .and_then(Value::as_str)
            .or_else(|| v.get("modelVersion").and_then(Value::as_str))
        {
            usage.model = Some(m.to_string());
        }
        // Anthropic stream: message_start carries the message (model, input usage)
        if let Some(msg) = v.get("message").filter(|m| m.get("usage").is_some()) {
            self.absorb(usage, msg);
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            if u.get("prompt_tokens").is_some() {
                openai::absorb_usage(usage, u);
            } else if anthropic::is_anthropic_usage(v, u) {
                anthropic::absorb_usage(usage, u);
            } else {
                openai::absorb_responses_usage(usage, u);
            }
        }
        // OpenAI Responses API stream: response.completed carries the whole response
        if let Some(r) = v
            .get("response")
            .filter(|r| r.get("usage").is_some_and(Value::is_object))
        {
            self.absorb(usage, r);
        }
        if let Some(g) = v.get("usageMetadata") {
            gemini::absorb_usage(usage, g);
        }
    }

    fn has_content(&self, v: &Value) -> bool {
        openai::OpenAi.has_content(v)
            || anthropic::Anthropic.has_content(v)
            || gemini::Gemini.has_content(v)
    }

    fn is_terminal(&self, event: Option<&str>, data: &[u8]) -> bool {
        openai::OpenAi.is_terminal(event, data) || anthropic::Anthropic.is_terminal(event, data)
    }
}

/// A client's body as a JSON object; the messages show `shape`, a body that would do.
pub(crate) fn parse_object(
    bytes: &[u8],
    shape: &str,
) -> Result<Map<String, Value>, TranslateError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(format!(
            "the request body is empty; send a JSON object such as {shape}"
        )));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "the request body is not valid JSON ({e}); send a JSON object such as {shape}"
        ))
    })?;
    match v {
        Value::Object(body) => Ok(body),
        _ => Err(bad(format!(
            "the request body must be a JSON object such as {shape}"
        ))),
    }
}

/// The body's `model` string (`example`: a model string of the client's dialect).
pub(crate) fn model_of(
    body: &Map<String, Value>,
    shape: &str,
    example: &str,
) -> Result<String, TranslateError> {
    match body.get("model") {
        Some(Value::String(m)) => Ok(m.clone()),
        Some(_) => Err(bad(format!(
            "`model` must be a string such as \"{example}\" or \"{example}/<provider>,<fallback model>\""
        ))),
        None => Err(bad(format!(
            "`model` is missing; send a JSON object such as {shape}"
        ))),
    }
}

/// `messages`: a non-empty array.
pub(crate) fn check_messages(body: &Map<String, Value>, shape: &str) -> Result<(), TranslateError> {
    match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => Ok(()),
        Some(Value::Array(_)) => Err(bad("`messages` is empty; send at least one message")),
        Some(_) => Err(bad(
            "`messages` must be an array of {\"role\", \"content\"} objects",
        )),
        None => Err(bad(format!(
            "`messages` is missing; send a JSON object such as {shape}"
        ))),
    }
}

/// `stream`: absent, null or a boolean.
pub(crate) fn stream_of(body: &Map<String, Value>) -> Result<bool, TranslateError> {
    match body.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad("`stream` must be true or false")),
    }
}

/// `n` at `path` in `v`.
pub(crate) fn n(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

/// A non-empty string at `x`.
pub(crate) fn nonempty(x: Option<&Value>) -> bool {
    x.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

/// The content type of a stream a mapper writes.
pub const SSE_CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";

/// Writes one SSE event as the provider framed it (`event:` line, `data:` lines).
pub fn write_event(ev: &SseEvent, out: &mut Vec<u8>) {
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

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(format: ApiFormat, base_path: &str) -> ProviderApi {
        ProviderApi {
            format,
            base_path: base_path.into(),
            key_env: "K".into(),
            auth_header: http::header::AUTHORIZATION,
            auth_scheme: Default::default(),
            headers: Vec::new(),
            chat: true,
            embeddings: false,
            completions: false,
            priority: 4,
        }
    }

    /// Which reader a passthrough answer gets, by name: a probe answer only one reader
    /// understands tells them apart.
    fn reads_anthropic_usage(r: &dyn Reader) -> bool {
        let mut u = Usage::default();
        r.absorb(
            &mut u,
            &serde_json::json!({"usage": {"input_tokens": 3, "output_tokens": 1}}),
        );
        // Anthropic: input_tokens alone is the prompt (no cache); the OpenAI reader takes it
        // as the Responses API's; the Gemini reader reads nothing
        u.cached_tokens == Some(0)
    }

    #[test]
    fn a_passthrough_answer_is_read_by_the_dialect_of_its_path_and_provider() {
        let anthropic = api(ApiFormat::Anthropic, "/v1");
        let openai = api(ApiFormat::Openai, "/v1");
        assert!(reads_anthropic_usage(passthrough_reader(
            "/v1/messages",
            Some(&anthropic)
        )));
        assert!(!reads_anthropic_usage(passthrough_reader(
            "/v1/chat/completions?x=1",
            Some(&openai)
        )));
        // Gemini's native path, whatever the catalogue says of the provider's unified API
        let gemini = api(ApiFormat::Openai, "/v1beta/openai");
        let r = passthrough_reader(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            Some(&gemini),
        );
        let mut u = Usage::default();
        r.absorb(&mut u, &serde_json::json!({"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2}}));
        assert_eq!(u.prompt_tokens, Some(4));
        // a path outside the provider's API base, or an unknown origin: by shape
        for r in [
            passthrough_reader("/v1/messages", None),
            passthrough_reader("/other/v1/messages", Some(&gemini)),
        ] {
            let mut u = Usage::default();
            r.absorb(&mut u, &serde_json::json!({"type": "message", "usage": {"input_tokens": 3, "cache_read_input_tokens": 2, "output_tokens": 1}}));
            assert_eq!((u.prompt_tokens, u.cached_tokens), (Some(5), Some(2)));
            let mut g = Usage::default();
            r.absorb(
                &mut g,
                &serde_json::json!({"usageMetadata": {"promptTokenCount": 4}}),
            );
            assert_eq!(g.prompt_tokens, Some(4));
        }
    }

    #[test]
    fn every_catalogue_format_has_a_dialect_named_after_it() {
        for f in [ApiFormat::Openai, ApiFormat::Azure, ApiFormat::Anthropic] {
            assert_eq!(egress(f).name(), f.as_str());
        }
        assert!(!egress(ApiFormat::Anthropic).serves(Op::Embeddings));
        assert!(egress(ApiFormat::Openai).serves(Op::Completions));
    }
}
