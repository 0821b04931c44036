//! Upstream side of a request: the peer (checked address, TLS, timeouts) and the header we send.

use std::net::SocketAddr;

use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;

use crate::config::{OriginPolicy, UpstreamConf};
use crate::error::GatewayError;
use crate::headers;
use crate::routing::{Host, Route, Scheme};

/// The peer for `route`, connecting to the already-checked `addr`; SNI and certificate
/// verification use the origin's host (name or IP literal).
pub fn peer(
    route: &Route,
    addr: SocketAddr,
    policy: &OriginPolicy,
    conf: &UpstreamConf,
) -> HttpPeer {
    let tls = route.origin.scheme == Scheme::Https;
    // an IP literal is verified against the certificate's IP SANs (rustls fails closed on "")
    let sni = match &route.origin.host {
        Host::Name(n) => n.clone(),
        Host::Ip(ip) => ip.to_string(),
    };
    let mut p = HttpPeer::new(addr, tls, sni);
    let o = &mut p.options;
    o.connection_timeout = Some(conf.connect_timeout());
    o.total_connection_timeout = Some(conf.tls_timeout());
    o.read_timeout = Some(conf.read_timeout());
    o.write_timeout = Some(conf.write_timeout());
    o.idle_timeout = Some(conf.idle_timeout());
    o.ca = policy.ca.clone();
    p
}

/// Rewrites the client's request header into the upstream one: path, `Host`, framing, and
/// no gateway header (`helicone-*`, `x-helicone-*`, the gateway key) ever leaves. Responses
/// are asked for uncompressed (`Accept-Encoding: identity`): the gateway reads usage from them
/// and logs them, and LLM answers are small (streams are never compressed anyway).
pub fn prepare_request(
    req: &mut RequestHeader,
    route: &Route,
    body_len: Option<usize>,
    replace: Option<&[(http::HeaderName, http::HeaderValue)]>,
) -> Result<(), GatewayError> {
    let uri: http::Uri = route
        .upstream_path
        .parse()
        .map_err(|e| GatewayError::BadRequest(format!("request path cannot be forwarded: {e}")))?;
    req.set_uri(uri);
    // a fallback entry's headers replace the client's entirely (no key leaks across providers)
    let drop: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|n| replace.is_some() || headers::is_gateway_header(n.as_str()))
        .cloned()
        .collect();
    for name in drop {
        req.remove_header(&name);
    }
    req.remove_header(&http::header::EXPECT);
    let internal = |e| GatewayError::Internal(format!("cannot build the upstream request: {e}"));
    for (name, value) in replace.unwrap_or_default() {
        if !headers::is_gateway_header(name.as_str()) {
            req.append_header(name.clone(), value.clone())
                .map_err(internal)?;
        }
    }
    req.insert_header(http::header::HOST, route.origin.host_header())
        .map_err(internal)?;
    req.insert_header(http::header::ACCEPT_ENCODING, "identity")
        .map_err(internal)?;
    if let Some(len) = body_len {
        req.remove_header(&http::header::TRANSFER_ENCODING);
        req.insert_header(http::header::CONTENT_LENGTH, len.to_string())
            .map_err(internal)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Origin, RouteKind};

    #[test]
    fn strips_gateway_headers_and_sets_host_path_framing() {
        let mut req =
            RequestHeader::build("POST", b"/openai/v1/chat/completions?x=1", None).unwrap();
        for (k, v) in [
            ("helicone-auth", "Bearer gw"),
            ("Helicone-Target-Url", "https://api.groq.com"),
            ("x-helicone-foo", "1"),
            ("helicone-property-team", "a"),
            ("authorization", "Bearer sk-provider"),
            ("transfer-encoding", "chunked"),
            ("expect", "100-continue"),
            ("host", "gw.local"),
            ("accept-encoding", "gzip, br"),
        ] {
            req.append_header(k.to_string(), v).unwrap();
        }
        let route = Route {
            origin: Origin::parse("https://api.groq.com").unwrap().0,
            upstream_path: "/openai/v1/chat/completions?x=1".into(),
            provider: None,
            approved: true,
            kind: RouteKind::TargetHeader,
        };
        prepare_request(&mut req, &route, Some(5), None).unwrap();
        assert_eq!(req.uri.to_string(), "/openai/v1/chat/completions?x=1");
        assert_eq!(req.headers.get("host").unwrap(), "api.groq.com");
        assert_eq!(
            req.headers.get("authorization").unwrap(),
            "Bearer sk-provider"
        );
        assert_eq!(req.headers.get("content-length").unwrap(), "5");
        // the gateway reads usage from the answer: it must come uncompressed
        assert_eq!(req.headers.get("accept-encoding").unwrap(), "identity");
        for gone in [
            "helicone-auth",
            "helicone-target-url",
            "x-helicone-foo",
            "helicone-property-team",
            "transfer-encoding",
            "expect",
        ] {
            assert!(
                req.headers.get(gone).is_none(),
                "{gone} must not be forwarded"
            );
        }
    }

    #[test]
    fn fallback_headers_replace_the_clients_entirely() {
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        for (k, v) in [
            ("authorization", "Bearer client"),
            ("content-type", "text/plain"),
            ("x-trace", "1"),
            ("helicone-fallbacks", "[]"),
        ] {
            req.append_header(k.to_string(), v).unwrap();
        }
        let route = Route {
            origin: Origin::parse("https://api.groq.com").unwrap().0,
            upstream_path: "/v1/chat/completions".into(),
            provider: None,
            approved: true,
            kind: RouteKind::Fallback,
        };
        let replace = vec![
            (
                http::HeaderName::from_static("authorization"),
                http::HeaderValue::from_static("Bearer entry"),
            ),
            (
                http::HeaderName::from_static("helicone-auth"),
                http::HeaderValue::from_static("Bearer gw"),
            ),
        ];
        prepare_request(&mut req, &route, Some(2), Some(&replace)).unwrap();
        assert_eq!(req.headers.get("authorization").unwrap(), "Bearer entry");
        assert_eq!(req.headers.get("host").unwrap(), "api.groq.com");
        assert_eq!(req.headers.get("content-length").unwrap(), "2");
        for gone in [
            "content-type",
            "x-trace",
            "helicone-fallbacks",
            "helicone-auth",
        ] {
            assert!(req.headers.get(gone).is_none(), "{gone}");
        }
    }
}
