//! Anthropic <-> OpenAI mappings shared by the whole-answer and the stream translations, both ways: stop reasons, usage and error types.

use serde_json::{json, Value};

/// Anthropic `stop_reason` -> OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new
        _ => "stop",
    }
}

/// The prompt tokens of an Anthropic answer: its `input_tokens` exclude cache reads and writes.
pub fn prompt_tokens(input: u64, cache_read: u64, cache_write: u64) -> u64 {
    input + cache_read + cache_write
}

/// OpenAI `usage` from Anthropic's counts.
pub fn openai_usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Value {
    let prompt = prompt_tokens(input, cache_read, cache_write);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    })
}

/// OpenAI `usage` from an Anthropic `usage` object.
pub fn usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    openai_usage(
        n("input_tokens"),
        n("output_tokens"),
        n("cache_read_input_tokens"),
        n("cache_creation_input_tokens"),
    )
}

/// OpenAI `finish_reason` -> Messages `stop_reason` (chat completions does not say whether a
/// stop sequence or the natural end stopped it: both are `end_turn`).
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Messages `usage` from chat `usage`: Anthropic's `input_tokens` excludes cache reads.
pub fn messages_usage(u: Option<&Value>) -> Value {
    let n = |p: &str| {
        u.and_then(|u| u.pointer(p))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = n("/prompt_tokens_details/cached_tokens");
    json!({
        "input_tokens": n("/prompt_tokens").saturating_sub(cached),
        "output_tokens": n("/completion_tokens"),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    })
}

/// Anthropic's error `type` for a status (its errors reference lists them by status).
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}
