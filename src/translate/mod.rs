//! Translation between provider dialects (pure code, no Pingora types): the SSE frame decoder
//! and the Anthropic Messages -> OpenAI chat-completion stream translator. The unified API
//! (issue 5) builds on these.

pub mod anthropic_stream;
pub mod sse;
