//! Request body rewrites before a request goes anywhere: a unified body's own extras taken out (Helicone metadata, a prompt template rendered in), and usage asked for on a passthrough stream.

use crate::body::RequestBody;
use crate::dialects::Client;
use crate::error::GatewayError;
use crate::metadata::{self, BodyMeta};
use crate::prompts::{Store, Used};
use crate::unified::{request as unified_request, Op};

/// What a unified body carried for the gateway.
#[derive(Debug, Default)]
pub struct Extras {
    /// Helicone metadata (`helicone`: session, properties, user).
    pub meta: Option<BodyMeta>,
    /// The prompt template a chat body's `prompt_id` was rendered from.
    pub prompt: Option<Used>,
}

/// A unified body's own extras, taken out before it goes anywhere: Helicone metadata
/// (`helicone`: session, properties, user) and, for chat, a `prompt_id` rendered into the
/// request (which is then routed, cached, limited and logged like any other).
pub fn unified_extras(
    body: &mut RequestBody,
    op: Op,
    client: Client,
    prompts: Option<&Store>,
) -> Result<Extras, GatewayError> {
    // prompt templates are chat messages: the chat-completions endpoint renders them
    let renders = op == Op::Chat && client == Client::OpenAi;
    let has = |needle: &[u8]| memchr::memmem::find(&body.bytes, needle).is_some();
    if !(has(b"\"helicone\"") || renders && has(b"\"prompt_id\"")) {
        return Ok(Extras::default());
    }
    let (mut meta, mut prompt) = (None, None);
    body.edit_json(|body| {
        meta = metadata::take(body)?;
        if renders && body.contains_key("prompt_id") {
            let Some(store) = prompts else {
                return Err(GatewayError::BadRequest(
                    "this gateway serves no prompts, so `prompt_id` cannot be used: set `prompts: {dir: ...}` in its config, or send `messages`".into(),
                ));
            };
            prompt = store.apply(body)?;
        }
        Ok(meta.is_some() || prompt.is_some())
    })?;
    Ok(Extras { meta, prompt })
}

/// `Helicone-Stream-Usage` (`header`) on a passthrough request: with `true`, a stream's body
/// gets `stream_options.include_usage` so that the provider reports usage (the unified API
/// always asks for it).
pub fn stream_usage(header: Option<&[u8]>, body: &mut RequestBody) -> Result<(), GatewayError> {
    let Some(v) = header else {
        return Ok(());
    };
    match v.trim_ascii() {
        v if v.eq_ignore_ascii_case(b"true") => {}
        v if v.eq_ignore_ascii_case(b"false") => return Ok(()),
        _ => {
            return Err(GatewayError::BadRequest(
                "Helicone-Stream-Usage must be true or false".into(),
            ))
        }
    }
    body.edit_json(|body| {
        if body.get("stream") != Some(&serde_json::Value::Bool(true)) {
            return Ok(false);
        }
        unified_request::ask_for_stream_usage(body)
            .ok_or_else(|| GatewayError::BadRequest("stream_options must be an object".into()))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> RequestBody {
        let mut b = RequestBody::default();
        b.bytes = bytes::Bytes::copy_from_slice(json.as_bytes());
        b.present = true;
        b
    }

    #[test]
    fn stream_usage_is_added_to_streams_only_and_checks_its_header() {
        let mut b = body(r#"{"stream":true}"#);
        stream_usage(Some(b" TRUE "), &mut b).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b.bytes).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        let mut b = body(r#"{"stream":false}"#);
        stream_usage(Some(b"true"), &mut b).unwrap();
        assert_eq!(&b.bytes[..], br#"{"stream":false}"#);
        let mut b = body(r#"{"stream":true}"#);
        stream_usage(Some(b"false"), &mut b).unwrap();
        stream_usage(None, &mut b).unwrap();
        assert_eq!(&b.bytes[..], br#"{"stream":true}"#);
        let e = stream_usage(Some(b"yes"), &mut b).unwrap_err();
        assert_eq!(e.status(), 400);
        let mut b = body(r#"{"stream":true,"stream_options":3}"#);
        assert!(stream_usage(Some(b"true"), &mut b).is_err());
    }

    #[test]
    fn unified_extras_take_the_metadata_and_refuse_a_prompt_without_a_store() {
        let mut b = body(r#"{"model":"m","messages":[]}"#);
        let x = unified_extras(&mut b, Op::Chat, Client::OpenAi, None).unwrap();
        assert!(x.meta.is_none() && x.prompt.is_none());
        let mut b = body(r#"{"model":"m","messages":[],"helicone":{"user_id":"u1"}}"#);
        let x = unified_extras(&mut b, Op::Chat, Client::OpenAi, None).unwrap();
        assert_eq!(x.meta.and_then(|m| m.user_id).as_deref(), Some("u1"));
        assert!(memchr::memmem::find(&b.bytes, b"helicone").is_none());
        let mut b = body(r#"{"model":"m","prompt_id":"p"}"#);
        let e = unified_extras(&mut b, Op::Chat, Client::OpenAi, None).unwrap_err();
        assert_eq!(e.status(), 400);
        // only chat renders prompts
        let mut b = body(r#"{"model":"m","input":"x","prompt_id":"p"}"#);
        assert!(unified_extras(&mut b, Op::Embeddings, Client::OpenAi, None).is_ok());
    }
}
