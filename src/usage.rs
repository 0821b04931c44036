//! Token usage as a provider reported it (read by the answering dialect's `Reader`, see `dialects`).

use serde::Serialize;

/// Tokens as the provider reported them; `None` = unknown (never guessed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// All input tokens, cached ones included.
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Input tokens read from the provider's prompt cache (a subset of `prompt_tokens`).
    pub cached_tokens: Option<u64>,
    /// Input tokens written to the provider's prompt cache (Anthropic; a subset of `prompt_tokens`).
    pub cache_write_tokens: Option<u64>,
    /// Reasoning tokens (a subset of `completion_tokens`).
    pub reasoning_tokens: Option<u64>,
    /// The model the provider says answered.
    pub model: Option<String>,
}

impl Usage {
    pub fn is_known(&self) -> bool {
        self.prompt_tokens.is_some() || self.completion_tokens.is_some()
    }
}
