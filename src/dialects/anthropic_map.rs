//! Anthropic -> OpenAI mappings shared by the whole-answer and the stream translations: stop reasons and usage.

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
