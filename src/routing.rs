//! Target resolution: which upstream origin and path a passthrough request goes to.

use std::sync::Arc;

use crate::config::catalogue::{Catalogue, Provider};
use crate::error::GatewayError;
pub use crate::origin::{host_without_port, Host, HostPattern, Origin, Scheme};

/// How a request reached its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    TargetHeader,
    /// An entry of `Helicone-Fallbacks`.
    Fallback,
    PathPrefix,
    HostAlias,
    /// An attempt of the unified API.
    Unified,
}

/// Where a passthrough request goes.
#[derive(Debug, Clone)]
pub struct Route {
    pub origin: Origin,
    /// Path and query sent upstream, verbatim from the client (minus a provider prefix).
    pub upstream_path: String,
    pub provider: Option<Arc<Provider>>,
    /// The origin is a catalogue provider marked approved (never decided by a client header).
    pub approved: bool,
    pub kind: RouteKind,
}

impl Route {
    /// The provider name for logs and metrics (bounded: catalogue names or `unknown`).
    pub fn provider_label(&self) -> &str {
        self.provider
            .as_ref()
            .map_or("unknown", |p| p.name.as_str())
    }
}

/// The parts of the request that routing looks at.
pub struct RequestMeta<'a> {
    pub target_url: Option<&'a [u8]>,
    pub target_provider: Option<&'a [u8]>,
    pub host: Option<&'a str>,
    /// Path and query as the client sent them.
    pub path_and_query: &'a str,
}

/// Parsed `Helicone-Target-Url` values: clients send the same few origins over and over, and
/// WHATWG parsing (IDNA, IPv4 forms) is the costliest step of routing. Bounded; cleared when full.
#[derive(Default)]
pub struct OriginCache {
    map: std::sync::RwLock<std::collections::HashMap<Box<[u8]>, Origin>>,
}

const ORIGIN_CACHE_ENTRIES: usize = 1024;

impl OriginCache {
    fn get_or_parse(&self, raw: &[u8]) -> Result<Origin, GatewayError> {
        if let Some(o) = self.map.read().ok().and_then(|m| m.get(raw).cloned()) {
            return Ok(o);
        }
        let value = std::str::from_utf8(raw).map_err(|_| {
            GatewayError::BadRequest(
                "Helicone-Target-Url is not valid UTF-8; send an origin such as https://api.openai.com".into(),
            )
        })?;
        let (origin, ignored_path) = Origin::parse(value).map_err(|why| {
            GatewayError::BadRequest(format!(
                "Helicone-Target-Url '{value}' is invalid: {why}; send an origin such as https://api.openai.com"
            ))
        })?;
        if ignored_path != "/" && !ignored_path.is_empty() {
            log::debug!(
                "Helicone-Target-Url path '{ignored_path}' ignored; the client path is used"
            );
        }
        if let Ok(mut m) = self.map.write() {
            if m.len() >= ORIGIN_CACHE_ENTRIES {
                m.clear();
            }
            m.insert(raw.into(), origin.clone());
        }
        Ok(origin)
    }
}

/// Resolves a request to a route; `Ok(None)` means no passthrough route matched.
pub fn resolve(
    meta: &RequestMeta,
    catalogue: &Catalogue,
    cache: &OriginCache,
) -> Result<Option<Route>, GatewayError> {
    if let Some(raw) = meta.target_url {
        let origin = cache.get_or_parse(raw)?;
        let by_origin = catalogue.for_origin(&origin);
        let approved = by_origin.as_ref().is_some_and(|p| p.approved);
        // the header only names the provider for logs; it never approves an origin
        let provider = meta
            .target_provider
            .and_then(|name| catalogue.by_name(&String::from_utf8_lossy(name).to_ascii_lowercase()))
            .or(by_origin);
        return Ok(Some(Route {
            origin,
            upstream_path: meta.path_and_query.to_string(),
            provider,
            approved,
            kind: RouteKind::TargetHeader,
        }));
    }
    if let Some((provider, rest)) = catalogue.by_path_prefix(meta.path_and_query) {
        if let Some(origin) = &provider.origin {
            return Ok(Some(Route {
                origin: origin.clone(),
                upstream_path: rest.to_string(),
                provider: Some(provider.clone()),
                approved: provider.approved,
                kind: RouteKind::PathPrefix,
            }));
        }
    }
    if let Some(host) = meta.host {
        if let Some(provider) = catalogue.by_host_alias(host) {
            if let Some(origin) = &provider.origin {
                return Ok(Some(Route {
                    origin: origin.clone(),
                    upstream_path: meta.path_and_query.to_string(),
                    provider: Some(provider.clone()),
                    approved: provider.approved,
                    kind: RouteKind::HostAlias,
                }));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_parsing_normalises_ipv4_forms() {
        for form in [
            "http://127.1:9000",
            "http://2130706433:9000",
            "http://0x7f000001:9000",
            "http://0177.0.0.1:9000",
            "http://127.0.0.1:9000/ignored/path",
        ] {
            let (o, _) = Origin::parse(form).unwrap();
            assert_eq!(o.to_string(), "http://127.0.0.1:9000", "{form}");
        }
        let (o, _) = Origin::parse("http://[::ffff:127.0.0.1]:81").unwrap();
        assert_eq!(o.host, Host::Ip("::ffff:127.0.0.1".parse().unwrap()));
        let (o, rest) = Origin::parse("HTTPS://API.Groq.com/openai/v1?x=1").unwrap();
        assert_eq!(o.to_string(), "https://api.groq.com");
        assert_eq!(rest, "/openai/v1?x=1");
        assert_eq!(o.host_header(), "api.groq.com");
    }

    #[test]
    fn origin_parsing_rejects_bad_values() {
        for bad in [
            "",
            "api.openai.com",
            "ftp://x.com",
            "http://",
            "http://user:pw@x.com",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_patterns() {
        let p = HostPattern::parse("*.openai.azure.com", false).unwrap();
        assert!(p.matches("myres.openai.azure.com"));
        assert!(!p.matches("openai.azure.com"));
        assert!(!p.matches("a.b.openai.azure.com"));
        assert!(!p.matches("myres.openai.azure.com.evil.tld"));
        let p = HostPattern::parse("bedrock-runtime.*.amazonaws.com", false).unwrap();
        assert!(p.matches("bedrock-runtime.us-east-1.amazonaws.com"));
        assert!(!p.matches("bedrock-runtime.amazonaws.com"));
        let p = HostPattern::parse("*-aiplatform.googleapis.com", false).unwrap();
        assert!(p.matches("us-central1-aiplatform.googleapis.com"));
        assert!(!p.matches("-aiplatform.googleapis.com"));
        assert!(!p.matches("aiplatform.googleapis.com"));
        let p = HostPattern::parse("api.openai.com", false).unwrap();
        assert!(p.matches("API.OPENAI.COM"));
        assert!(!p.matches("api.openai.com.evil.tld"));
        assert!(!p.matches("xapi.openai.com"));
        assert!(HostPattern::parse("api.openai.*", false).is_err());
        let alias = HostPattern::parse("oai.*", true).unwrap();
        assert!(alias.matches("oai.gw.example.com"));
        assert!(alias.matches("oai.localhost"));
        assert!(!alias.matches("oai"));
        assert!(!alias.matches("xoai.example.com"));
        assert!(HostPattern::parse("*", true).is_err());
        assert!(HostPattern::parse("a..b", true).is_err());
    }

    #[test]
    fn host_header_port_is_stripped() {
        assert_eq!(host_without_port("oai.example.com:8080"), "oai.example.com");
        assert_eq!(host_without_port("oai.example.com"), "oai.example.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
    }
}
