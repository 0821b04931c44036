//! Gemini's native `generateContent` answers: usage (`usageMetadata`), first token and model, for passthrough.

use serde_json::Value;

use super::{n, Reader};
use crate::usage::Usage;

pub struct Gemini;

/// Gemini `usageMetadata`: thinking tokens are billed as output.
pub fn absorb_usage(usage: &mut Usage, g: &Value) {
    usage.prompt_tokens = n(g, &["promptTokenCount"]).or(usage.prompt_tokens);
    usage.completion_tokens = n(g, &["candidatesTokenCount"])
        .map(|c| c + n(g, &["thoughtsTokenCount"]).unwrap_or(0))
        .or(usage.completion_tokens);
    usage.cached_tokens = n(g, &["cachedContentTokenCount"]).or(usage.cached_tokens);
    usage.reasoning_tokens = n(g, &["thoughtsTokenCount"]).or(usage.reasoning_tokens);
}

impl Reader for Gemini {
    fn absorb(&self, usage: &mut Usage, v: &Value) {
        if let Some(m) = v.get("modelVersion").and_then(Value::as_str) {
            usage.model = Some(m.to_string());
        }
        if let Some(g) = v.get("usageMetadata") {
            absorb_usage(usage, g);
        }
    }

    fn has_content(&self, v: &Value) -> bool {
        v.pointer("/candidates/0/content/parts/0/text")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    }

    fn is_terminal(&self, _event: Option<&str>, _data: &[u8]) -> bool {
        // a Gemini stream has no terminal event: it ends with the body
        false
    }
}
