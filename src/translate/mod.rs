//! Translation between provider dialects (pure code, no Pingora types): the SSE decoder, and
//! OpenAI chat completions <-> Anthropic Messages for requests, responses, errors and streams.
//! The unified API (issue 5) builds on these.

pub mod anthropic;
pub mod anthropic_stream;
pub mod sse;
