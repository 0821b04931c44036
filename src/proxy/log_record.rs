//! What a finished request used and cost (`summarize`, called once from `logging`, for metrics, limit settlement and the record) and its log record (`record`, built from the summary only when a sink is configured): here, above both `ctx` and `export::record`, so the record does not import the context.

use bytes::Bytes;
use pingora_proxy::Session;

use crate::ctx::RequestCtx;
use crate::export::record::{LoggedBody, Record};
use crate::headers;
use crate::pricing::Pricing;
use crate::usage::Usage;

/// The hints the answering attempt's dialect dropped (none when it spoke the client's own).
pub(super) fn dropped(ctx: &RequestCtx) -> Vec<String> {
    let (Some(u), Some(t)) = (&ctx.facts.unified, ctx.target()) else {
        return Vec::new();
    };
    let native = t
        .unified
        .as_ref()
        .is_some_and(|c| ctx.facts.client.is_native(c.endpoint.dialect()));
    if native {
        return Vec::new();
    }
    u.dropped.iter().chain(&t.dropped).cloned().collect()
}

/// What a finished request used and cost: computed once, for metrics, limit settlement and
/// (when a sink is configured) the record.
pub struct Summary {
    pub usage: Usage,
    pub cost: Option<f64>,
    pub cost_status: Option<&'static str>,
    /// Bounded model label: the registry's model name, or `other` / `none`.
    pub model_label: String,
    /// The provider that answered, if any.
    pub provider: Option<String>,
    /// Time to first token since the request started, in whole milliseconds.
    pub ttft_ms: Option<u64>,
    // what only the record needs, found on the way
    model_requested: Option<String>,
    body_user: Option<String>,
    request_json: bool,
    stream: bool,
    response_json: bool,
    model_override: Option<String>,
    deprecated: bool,
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

/// The record `build` makes, only when a sink is configured (`enabled`): with none, nothing
/// is built.
pub fn when_exported(enabled: bool, build: impl FnOnce() -> Record) -> Option<Record> {
    if enabled {
        Some(build())
    } else {
        None
    }
}

/// What a finished request used and cost (called once, from `logging`).
pub fn summarize(session: &Session, ctx: &mut RequestCtx, pricing: &Pricing) -> Summary {
    // the request's own JSON: requested model and `user` (the body's facts, parsed once)
    let (model_requested, body_user, request_json) = ctx.facts.body.facts().named();
    let (model_requested, body_user) = (
        model_requested.map(str::to_string),
        body_user.map(str::to_string),
    );
    let (usage, first_token, stream, response_json) = match ctx.response.finish_tap() {
        Some(t) => (t.usage.clone(), t.first_token, t.is_sse(), t.parsed_json()),
        None => (Usage::default(), None, false, false),
    };
    let provider = ctx
        .route()
        .and_then(|r| r.provider.as_ref())
        .map(|p| p.name.clone());
    // `Helicone-Model-Override` names the model for cost and logs
    let model_override = header(session, headers::MODEL_OVERRIDE).filter(|m| !m.trim().is_empty());
    let model = model_override
        .clone()
        .or_else(|| usage.model.clone())
        .or_else(|| model_requested.clone());
    let hit = ctx.cache_hit();
    let found = model
        .as_deref()
        .and_then(|m| pricing.find(provider.as_deref(), m));
    // the one lookup gives the price, the model label and the deprecation flag
    let (cost, model_label) = match &model {
        Some(_) => (
            found.and_then(|p| p.cost(&usage)),
            found.map_or_else(|| "other".to_string(), |p| p.model.clone()),
        ),
        None => (None, "none".to_string()),
    };
    let deprecated = found.is_some_and(|p| p.is_deprecated());
    let cost_status = match (&model, cost) {
        _ if hit => Some("cache_hit"),
        (None, _) => None,
        (Some(_), Some(_)) => Some("priced"),
        (Some(_), None) if usage.is_known() => Some("unpriced"),
        (Some(_), None) => Some("no_usage"),
    };
    // an answer served from cache cost nothing
    let cost = if hit { Some(0.0) } else { cost };
    let ttft_ms =
        first_token.map(|t| t.saturating_duration_since(ctx.facts.start).as_millis() as u64);
    Summary {
        usage,
        cost,
        cost_status,
        model_label,
        provider,
        ttft_ms,
        model_requested,
        body_user,
        request_json,
        stream,
        response_json,
        model_override,
        deprecated,
    }
}

/// The record of a finished request, from its summary (called once, from `logging`, and only
/// when a sink is configured).
pub fn record(
    session: &Session,
    ctx: &mut RequestCtx,
    summary: Summary,
    status: u16,
    error: Option<String>,
    body_cap: usize,
) -> Record {
    let Summary {
        usage,
        cost,
        cost_status,
        provider,
        ttft_ms,
        model_requested,
        body_user,
        request_json,
        stream,
        response_json,
        model_override,
        deprecated,
        ..
    } = summary;
    let req = session.req_header();
    let omit_request = is_true(header(session, headers::OMIT_REQUEST));
    let omit_response = is_true(header(session, headers::OMIT_RESPONSE));
    let meta = ctx.facts.body_meta.take().unwrap_or_default();
    // the body's `helicone` properties, then the headers (a header wins)
    let mut properties = meta.properties;
    for (name, value) in req.headers.iter() {
        if let Some(p) = name.as_str().strip_prefix(headers::PROPERTY_PREFIX) {
            properties.insert(
                p.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            );
        }
    }
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let response_body = LoggedBody::keep(
        Bytes::from(std::mem::take(&mut ctx.response.capture)),
        ctx.response.total,
        omit_response,
        response_json,
    );
    Record {
        id: ctx.facts.id.clone(),
        record_id: uuid::Uuid::new_v4().to_string(),
        start_time: chrono::DateTime::<chrono::Utc>::from(ctx.facts.started_at)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        key_id: ctx.facts.key_id.as_deref().map(str::to_string),
        method: req.method.to_string(),
        path: req.uri.path().to_string(),
        target: ctx.target().map(|t| t.origin.clone()),
        provider,
        model_requested,
        model_responded: usage.model.clone(),
        status,
        attempts: ctx.attempts.log().to_vec(),
        fallback_index: ctx.attempts.fallback_index(),
        retries: ctx.attempts.total_retries(),
        latency_ms: ms(ctx.facts.start.elapsed()),
        ttfb_ms: ctx.response.ttfb.map(ms),
        ttft_ms,
        stream,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        cached_tokens: usage.cached_tokens,
        cache_write_tokens: usage.cache_write_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        cost_usd: cost,
        cost_status,
        deprecated,
        dialect: ctx.facts.unified.as_ref().map(|_| ctx.facts.client.name()),
        dropped_fields: dropped(ctx),
        cache: ctx
            .cache
            .as_ref()
            .and_then(|c| c.status.map(str::to_string)),
        cache_reference_id: ctx.cache.as_ref().and_then(|c| c.reference.clone()),
        rate_limit: ctx.limits.counted.decided_by.clone(),
        rejection: ctx.outcome.rejection.map(|r| r.label().to_string()),
        prompt_id: ctx.facts.prompt.as_ref().map(|p| p.id.clone()),
        prompt_version: ctx.facts.prompt.as_ref().map(|p| p.version),
        user_id: header(session, headers::USER_ID)
            .or(meta.user_id)
            .or(body_user),
        session_id: header(session, headers::SESSION_ID).or(meta.session_id),
        session_path: header(session, headers::SESSION_PATH).or(meta.session_path),
        session_name: header(session, headers::SESSION_NAME).or(meta.session_name),
        model_override,
        target_provider: header(session, headers::TARGET_PROVIDER),
        properties,
        request_body: LoggedBody::capture(
            &ctx.facts.body.bytes,
            omit_request,
            body_cap,
            request_json,
        ),
        response_body,
        request_bytes: ctx.facts.body.bytes.len() as u64,
        response_bytes: session.body_bytes_sent() as u64,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_record_is_built_without_a_sink() {
        let mut built = 0;
        assert!(when_exported(false, || {
            built += 1;
            crate::export::record::sample(0)
        })
        .is_none());
        assert_eq!(built, 0, "a record was built with no sink");
        assert!(when_exported(true, || {
            built += 1;
            crate::export::record::sample(0)
        })
        .is_some());
        assert_eq!(built, 1);
    }
}
