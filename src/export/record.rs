//! The request log record (spec section 10): one per client request, built in `logging`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ctx::Attempt;

/// A body kept in the record: omitted on request, or truncated at the configured size.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoggedBody {
    Omitted,
    Text {
        text: String,
        truncated: bool,
        bytes: usize,
    },
}

impl LoggedBody {
    pub fn capture(bytes: &[u8], omit: bool, cap: usize) -> Option<LoggedBody> {
        if omit {
            return Some(LoggedBody::Omitted);
        }
        if bytes.is_empty() {
            return None;
        }
        let keep = &bytes[..bytes.len().min(cap)];
        Some(LoggedBody::Text {
            text: String::from_utf8_lossy(keep).into_owned(),
            truncated: keep.len() < bytes.len(),
            bytes: bytes.len(),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub id: String,
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
    pub cache: Option<String>,
    pub rate_limit: Option<String>,
    pub rejection: Option<String>,
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

impl LoggedBody {
    fn len(&self) -> usize {
        match self {
            LoggedBody::Omitted => 0,
            LoggedBody::Text { text, .. } => text.len(),
        }
    }
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

use pingora_proxy::Session;

use crate::ctx::RequestCtx;
use crate::pricing::Pricing;
use crate::usage::Usage;

/// A finished record with what metrics need.
pub struct Built {
    pub record: Record,
    pub usage: Usage,
    pub cost: Option<f64>,
    /// Bounded model label: the registry's model name, or `other` / `none`.
    pub model_label: String,
}

fn header(session: &Session, name: &str) -> Option<String> {
    session
        .req_header()
        .headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn is_true(v: Option<String>) -> bool {
    v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Builds the record of a finished request (called once, from `logging`).
pub fn build(
    session: &Session,
    ctx: &mut RequestCtx,
    pricing: &Pricing,
    status: u16,
    error: Option<String>,
    body_cap: usize,
) -> Built {
    let req = session.req_header();
    let omit_request = is_true(header(session, "helicone-omit-request"));
    let omit_response = is_true(header(session, "helicone-omit-response"));
    let mut properties = std::collections::BTreeMap::new();
    for (name, value) in req.headers.iter() {
        if let Some(p) = name.as_str().strip_prefix("helicone-property-") {
            properties.insert(
                p.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            );
        }
    }
    // the request's own JSON: requested model and `user`
    let (model_requested, body_user) = if ctx.body.bytes.first() == Some(&b'{') {
        #[derive(serde::Deserialize)]
        struct Head {
            model: Option<String>,
            user: Option<String>,
        }
        serde_json::from_slice::<Head>(&ctx.body.bytes).map_or((None, None), |h| (h.model, h.user))
    } else {
        (None, None)
    };
    let (usage, first_token, stream) = match ctx.tap.as_mut() {
        Some(t) => (t.finish(), t.first_token, t.is_sse()),
        None => (Usage::default(), None, false),
    };
    let provider = ctx
        .route()
        .and_then(|r| r.provider.as_ref())
        .map(|p| p.name.clone());
    let model = usage.model.clone().or_else(|| model_requested.clone());
    let (cost, model_label) = match &model {
        Some(m) => (
            pricing.cost(provider.as_deref(), m, &usage),
            pricing
                .find(provider.as_deref(), m)
                .map_or_else(|| "other".to_string(), |p| p.model.clone()),
        ),
        None => (None, "none".to_string()),
    };
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let response_body = if omit_response {
        Some(LoggedBody::Omitted)
    } else if ctx.response_total == 0 {
        None
    } else {
        Some(LoggedBody::Text {
            text: String::from_utf8_lossy(&ctx.response_capture).into_owned(),
            truncated: ctx.response_capture.len() < ctx.response_total,
            bytes: ctx.response_total,
        })
    };
    let record = Record {
        id: ctx.id.clone(),
        start_time: chrono::DateTime::<chrono::Utc>::from(ctx.started_at)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        key_id: ctx.key_id.as_deref().map(str::to_string),
        method: req.method.to_string(),
        path: req.uri.path().to_string(),
        target: ctx.target().map(|t| t.origin.clone()),
        provider,
        model_requested,
        model_responded: usage.model.clone(),
        status,
        attempts: ctx.attempts.clone(),
        fallback_index: (ctx.fallback_mode && !ctx.attempts.is_empty()).then_some(ctx.cursor.index),
        retries: ctx.cursor.total_retries,
        latency_ms: ms(ctx.start.elapsed()),
        ttfb_ms: ctx.ttfb.map(ms),
        ttft_ms: first_token.map(|t| ms(t.saturating_duration_since(ctx.start))),
        stream,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        cached_tokens: usage.cached_tokens,
        cache_write_tokens: usage.cache_write_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        cost_usd: cost,
        cache: None,
        rate_limit: None,
        rejection: ctx.rejection.map(|r| r.label().to_string()),
        user_id: header(session, "helicone-user-id").or(body_user),
        session_id: header(session, "helicone-session-id"),
        session_path: header(session, "helicone-session-path"),
        session_name: header(session, "helicone-session-name"),
        properties,
        request_body: LoggedBody::capture(&ctx.body.bytes, omit_request, body_cap),
        response_body,
        request_bytes: ctx.body.bytes.len() as u64,
        response_bytes: session.body_bytes_sent() as u64,
        error,
    };
    Built {
        record,
        usage,
        cost,
        model_label,
    }
}
