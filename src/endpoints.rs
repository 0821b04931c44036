//! The gateway's own endpoints, answered without going upstream: health and readiness probes, and the unified API's local routes (`/v1/models`, `/v1/prompts`, a wrong method).

use pingora_http::RequestHeader;

use crate::config::Config;
use crate::dialects::Client;
use crate::error::GatewayError;
use crate::headers;
use crate::prompts::Store;
use crate::unified::{self, Op, Registry};

/// The answer to a health probe (`/healthz`, `/healthcheck`, `/readyz`) if `path` is one;
/// `ready` is false once shutdown has started (`/readyz` then answers 503).
pub fn probe(path: &str, ready: bool) -> Option<(u16, &'static str)> {
    let ok = match path {
        "/healthz" | "/healthcheck" => true,
        "/readyz" => ready,
        _ => return None,
    };
    Some(if ok {
        (200, r#"{"status":"ok"}"#)
    } else {
        (503, r#"{"status":"shutting down"}"#)
    })
}

/// What a request without a target header on a unified-API path is.
#[derive(Debug, PartialEq)]
pub enum UnifiedRoute {
    /// A call that goes to a provider, in the client's dialect.
    Call(Op, Client),
    /// `POST /v1/messages/count_tokens`: Anthropic's models count upstream, others here.
    CountTokens,
    /// Answered here.
    Local(Local),
}

/// A unified-API route the gateway answers itself.
#[derive(Debug, PartialEq)]
pub enum Local {
    /// `GET /v1/models` (`None`) or `GET /v1/models/{id}`, in the shape of the client's
    /// dialect (Anthropic's when the request carries `anthropic-version`).
    Models(Option<String>, Client),
    /// `GET /v1/prompts`.
    Prompts,
    WrongMethod(&'static str),
}

/// The unified-API endpoint of `req`, if it is one (a host alias wins: it is the drop-in for
/// Helicone's provider subdomains).
pub fn unified_route(req: &RequestHeader, cfg: &Config) -> Option<UnifiedRoute> {
    let path = req.uri.path();
    let path = path
        .strip_prefix("/v1")
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    let (want, route) = match path {
        "/chat/completions" => ("POST", UnifiedRoute::Call(Op::Chat, Client::OpenAi)),
        "/embeddings" => ("POST", UnifiedRoute::Call(Op::Embeddings, Client::OpenAi)),
        "/completions" => ("POST", UnifiedRoute::Call(Op::Completions, Client::OpenAi)),
        // Claude Code calls `/v1/messages?beta=true`
        "/messages" => ("POST", UnifiedRoute::Call(Op::Chat, Client::Anthropic)),
        "/messages/count_tokens" => ("POST", UnifiedRoute::CountTokens),
        "/models" => (
            "GET",
            UnifiedRoute::Local(Local::Models(None, models_shape(req))),
        ),
        "/prompts" => ("GET", UnifiedRoute::Local(Local::Prompts)),
        p => match p.strip_prefix("/models/") {
            Some(id) if !id.is_empty() => (
                "GET",
                UnifiedRoute::Local(Local::Models(Some(id.to_string()), models_shape(req))),
            ),
            _ => return None,
        },
    };
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.host());
    if host.is_some_and(|h| cfg.catalogue.by_host_alias(h).is_some()) {
        return None;
    }
    if req.method.as_str() != want {
        return Some(UnifiedRoute::Local(Local::WrongMethod(want)));
    }
    Some(route)
}

/// The anthropic SDK and Claude Code send `anthropic-version` with every request.
fn models_shape(req: &RequestHeader) -> Client {
    if req.headers.contains_key(headers::ANTHROPIC_VERSION) {
        Client::Anthropic
    } else {
        Client::OpenAi
    }
}

impl UnifiedRoute {
    /// The dialect the client speaks on this route.
    pub fn client(&self) -> Client {
        match self {
            UnifiedRoute::Call(_, c) => *c,
            UnifiedRoute::CountTokens => Client::Anthropic,
            UnifiedRoute::Local(Local::Models(_, c)) => *c,
            UnifiedRoute::Local(_) => Client::OpenAi,
        }
    }
}

impl Local {
    /// What the answer is about (for the log line of a failed write).
    pub fn what(&self) -> &'static str {
        match self {
            Local::Models(..) => "models",
            Local::Prompts => "prompts",
            Local::WrongMethod(_) => "method",
        }
    }

    /// The local answer (status, JSON body), or the error it is.
    pub fn answer(
        self,
        req: &RequestHeader,
        registry: &Registry,
        prompts: Option<&Store>,
    ) -> Result<(u16, Vec<u8>), GatewayError> {
        match self {
            Local::WrongMethod(allow) => Err(GatewayError::MethodNotAllowed {
                message: format!(
                    "{} {} is not served: this endpoint of the unified API takes {allow}",
                    req.method,
                    req.uri.path()
                ),
                allow,
            }),
            Local::Models(id, Client::Anthropic) => {
                Ok(unified::models_json_anthropic(registry, id.as_deref()))
            }
            Local::Models(id, _) => Ok(unified::models_json(registry, id.as_deref())),
            Local::Prompts => match prompts {
                Some(store) => Ok((200, store.list_json())),
                None => Err(GatewayError::NotFound(
                    "this gateway serves no prompts: set `prompts: {dir: <folder of <id>.yaml files>}` in its config".into(),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        if let Some(h) = host {
            r.insert_header(http::header::HOST, h).unwrap();
        }
        r
    }

    #[test]
    fn probes_answer_ok_until_shutdown_makes_readyz_503() {
        assert_eq!(probe("/healthz", false), Some((200, r#"{"status":"ok"}"#)));
        assert_eq!(probe("/healthcheck", true).map(|p| p.0), Some(200));
        assert_eq!(probe("/readyz", true).map(|p| p.0), Some(200));
        assert_eq!(
            probe("/readyz", false),
            Some((503, r#"{"status":"shutting down"}"#))
        );
        assert_eq!(probe("/v1/models", true), None);
    }

    #[test]
    fn unified_paths_with_or_without_v1_and_the_wrong_method() {
        let cfg = crate::config::embedded().unwrap();
        let route = |m, p| unified_route(&req(m, p, None), &cfg);
        assert_eq!(
            route("POST", "/v1/chat/completions"),
            Some(UnifiedRoute::Call(Op::Chat, Client::OpenAi))
        );
        assert_eq!(
            route("POST", "/v1/messages"),
            Some(UnifiedRoute::Call(Op::Chat, Client::Anthropic))
        );
        assert_eq!(
            route("POST", "/v1/messages/count_tokens"),
            Some(UnifiedRoute::CountTokens)
        );
        assert_eq!(
            route("POST", "/embeddings"),
            Some(UnifiedRoute::Call(Op::Embeddings, Client::OpenAi))
        );
        assert_eq!(
            route("GET", "/v1/models/gpt-4o"),
            Some(UnifiedRoute::Local(Local::Models(
                Some("gpt-4o".into()),
                Client::OpenAi
            )))
        );
        assert_eq!(
            route("GET", "/v1/chat/completions"),
            Some(UnifiedRoute::Local(Local::WrongMethod("POST")))
        );
        assert_eq!(route("GET", "/v1/models/"), None);
        assert_eq!(route("POST", "/openai/v1/chat/completions"), None);
        // a provider's host alias is passthrough, whatever the path
        let aliased = req("POST", "/v1/chat/completions", Some("oai.example.com"));
        assert_eq!(unified_route(&aliased, &cfg), None);
    }

    #[test]
    fn prompts_without_a_store_are_not_found() {
        let reg = crate::unified::Registry::default();
        let r = req("GET", "/v1/prompts", None);
        let e = Local::Prompts.answer(&r, &reg, None).unwrap_err();
        assert_eq!(e.status(), 404);
        let e = Local::WrongMethod("GET")
            .answer(&req("POST", "/v1/models", None), &reg, None)
            .unwrap_err();
        assert_eq!(e.status(), 405);
    }
}
