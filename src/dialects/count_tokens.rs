//! Local token counts for `POST /v1/messages/count_tokens` on a model that is not Anthropic's: the model's own tokenizer where tiktoken-rs has it (OpenAI's encodings), otherwise a documented estimate.

use serde_json::{Map, Value};

/// How a count was made (the `Helicone-Token-Count` response header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// With the model's tokenizer (`o200k_base`, `cl100k_base`, ...).
    Tokenizer(&'static str),
    /// No tokenizer is known for the model: about four characters a token.
    Estimate,
}

impl Method {
    pub fn header_value(&self) -> String {
        match self {
            Method::Tokenizer(name) => format!("tokenizer={name}"),
            Method::Estimate => "estimate=chars/4".into(),
        }
    }
}

/// Tokens OpenAI's chat format adds per message (its token-counting guide for the gpt-4o and
/// gpt-4 families: 3 per message, 3 priming the reply).
const PER_MESSAGE: usize = 3;
const REPLY_PRIMING: usize = 3;
/// An image counted as a low-detail image ("85 tokens", OpenAI's vision guide): the real cost
/// depends on its size and detail, which a count does not know.
const IMAGE_TOKENS: usize = 85;

/// The text a model reads of a Messages body: system, every message's text blocks, tool
/// calls and results, and the tool definitions (as JSON). Images are counted separately.
fn texts(body: &Map<String, Value>) -> (Vec<String>, usize, usize) {
    let mut out = Vec::new();
    let mut images = 0;
    let mut messages = 0;
    let block = |b: &Value, out: &mut Vec<String>, images: &mut usize| match b
        .get("type")
        .and_then(Value::as_str)
    {
        Some("text") => out.push(b.get("text").and_then(Value::as_str).unwrap_or("").into()),
        Some("image") => *images += 1,
        Some("tool_use") => {
            out.push(b.get("name").and_then(Value::as_str).unwrap_or("").into());
            out.push(b.get("input").map(Value::to_string).unwrap_or_default());
        }
        Some("tool_result") => match b.get("content") {
            Some(Value::String(s)) => out.push(s.clone()),
            Some(Value::Array(parts)) => {
                for p in parts {
                    match p.get("type").and_then(Value::as_str) {
                        Some("image") => *images += 1,
                        _ => out.push(p.get("text").and_then(Value::as_str).unwrap_or("").into()),
                    }
                }
            }
            _ => {}
        },
        Some("thinking") => out.push(
            b.get("thinking")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
        ),
        _ => out.push(b.to_string()),
    };
    match body.get("system") {
        Some(Value::String(s)) => {
            messages += 1;
            out.push(s.clone());
        }
        Some(Value::Array(blocks)) => {
            messages += 1;
            for b in blocks {
                block(b, &mut out, &mut images);
            }
        }
        _ => {}
    }
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        messages += 1;
        match m.get("content") {
            Some(Value::String(s)) => out.push(s.clone()),
            Some(Value::Array(blocks)) => {
                for b in blocks {
                    block(b, &mut out, &mut images);
                }
            }
            _ => {}
        }
    }
    if let Some(tools) = body.get("tools") {
        out.push(tools.to_string());
    }
    (out, images, messages)
}

/// The input tokens of a Messages body for a model whose provider id is `model_id`.
pub fn count(body: &Map<String, Value>, model_id: &str) -> (u64, Method) {
    let (texts, images, messages) = texts(body);
    let overhead = messages * PER_MESSAGE + REPLY_PRIMING + images * IMAGE_TOKENS;
    let encoding = tiktoken_rs::tokenizer::get_tokenizer(model_id);
    let bpe = encoding.and_then(|t| {
        let name = match t {
            tiktoken_rs::tokenizer::Tokenizer::O200kHarmony => "o200k_harmony",
            tiktoken_rs::tokenizer::Tokenizer::O200kBase => "o200k_base",
            tiktoken_rs::tokenizer::Tokenizer::Cl100kBase => "cl100k_base",
            tiktoken_rs::tokenizer::Tokenizer::P50kBase => "p50k_base",
            tiktoken_rs::tokenizer::Tokenizer::R50kBase => "r50k_base",
            tiktoken_rs::tokenizer::Tokenizer::P50kEdit => "p50k_edit",
            tiktoken_rs::tokenizer::Tokenizer::Gpt2 => "gpt2",
        };
        tiktoken_rs::bpe_for_tokenizer(t).ok().map(|b| (b, name))
    });
    match bpe {
        Some((bpe, name)) => {
            let n: usize = texts
                .iter()
                .map(|t| bpe.encode_with_special_tokens(t).len())
                .sum();
            ((n + overhead) as u64, Method::Tokenizer(name))
        }
        None => {
            let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
            ((chars.div_ceil(4) + overhead) as u64, Method::Estimate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn an_openai_model_is_counted_with_its_tokenizer() {
        let b = body(json!({"model": "gpt-4o-mini", "system": "You are terse.",
            "messages": [{"role": "user", "content": "Hello, world"}]}));
        let (n, m) = count(&b, "gpt-4o-mini-2024-07-18");
        assert_eq!(m, Method::Tokenizer("o200k_base"));
        // "You are terse." is 4 tokens and "Hello, world" 3 in o200k_base; 2 messages x 3 + 3
        assert_eq!(n, 4 + 3 + 2 * 3 + 3);
    }

    #[test]
    fn a_model_without_a_known_tokenizer_is_estimated_and_says_so() {
        let b = body(
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "abcdefgh"}, {"type": "image", "source": {}}]}]}),
        );
        let (n, m) = count(&b, "llama-3.3-70b-versatile");
        assert_eq!(m, Method::Estimate);
        assert_eq!(n, 2 + 3 + 3 + 85);
        assert_eq!(m.header_value(), "estimate=chars/4");
    }
}
