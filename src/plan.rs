//! Where a request may go: its upstream targets, planned and checked (origin policy, unapproved-origin denial, SSRF) before anything is sent; for passthrough from its route or `Helicone-Fallbacks` entries, for the unified API from the registry's candidates.

use pingora_http::RequestHeader;
use serde_json::Value;

use crate::config::catalogue::Catalogue;
use crate::config::{Config, UnapprovedPolicy};
use crate::error::GatewayError;
use crate::failover::attempts::Target;
use crate::failover::{health::Health, Attempts, CodeSet, FallbackEntry};
use crate::headers;
use crate::routing::{self, OriginCache, RequestMeta, Route, RouteKind};
use crate::ssrf::Guard;
use crate::unified::request::{self as unified_request, UnifiedRequest};
use crate::unified::Registry;

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers.get(name).map(|v| v.as_bytes())
}

/// A passthrough route, with the `Helicone-Fallbacks` entry it came from.
pub type Planned = (Route, Option<FallbackEntry>);

/// The passthrough routes of a request: one per fallback entry (`entries`, in order), else the
/// one its target headers, host alias or provider path prefix name.
pub fn passthrough_routes(
    req: &RequestHeader,
    entries: Vec<FallbackEntry>,
    catalogue: &Catalogue,
    origins: &OriginCache,
) -> Result<Vec<Planned>, GatewayError> {
    let path_and_query = req.uri.path_and_query().map_or("/", |p| p.as_str());
    if entries.is_empty() {
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.host());
        let meta = RequestMeta {
            target_url: header(req, headers::TARGET_URL),
            target_provider: header(req, headers::TARGET_PROVIDER),
            host,
            path_and_query,
        };
        let route = routing::resolve(&meta, catalogue, origins)?.ok_or_else(|| {
            GatewayError::NotFound(format!(
                "no route for {} {}: send 'Helicone-Target-Url: <provider origin>' or use a provider prefix such as /openai/v1/chat/completions",
                req.method,
                req.uri.path()
            ))
        })?;
        return Ok(vec![(route, None)]);
    }
    let mut plan = Vec::with_capacity(entries.len());
    for e in entries {
        let provider = catalogue.for_origin(&e.origin);
        let route = Route {
            origin: e.origin.clone(),
            upstream_path: path_and_query.to_string(),
            approved: provider.as_ref().is_some_and(|p| p.approved),
            provider,
            kind: RouteKind::Fallback,
        };
        plan.push((route, Some(e)));
    }
    Ok(plan)
}

/// Checks each route in order and adds it to `attempts` as a target: every target passes the
/// same checks before anything is sent anywhere. An unapproved origin where the gateway denies
/// them, or an address the SSRF guard refuses, ends the plan with that error (the targets
/// already added stay). Returns each target's body override (`bodyKeyOverride`), by index.
pub async fn passthrough(
    routes: Vec<Planned>,
    cfg: &Config,
    guard: &Guard,
    attempts: &mut Attempts,
) -> Result<Vec<Option<Value>>, GatewayError> {
    let mut overrides = Vec::with_capacity(routes.len());
    for (route, entry) in routes {
        let policy = cfg
            .origin_policy(&route.origin)
            .cloned()
            .unwrap_or_default();
        let approved = route.approved || policy.approved;
        if !approved && cfg.unapproved.policy == UnapprovedPolicy::Deny {
            return Err(GatewayError::OriginDenied(format!(
                "origin {} is not an approved provider and this gateway refuses unapproved origins; approve it under `origins:` in the gateway config",
                route.origin
            )));
        }
        let addr = guard.resolve(&route.origin, policy.allow_private).await?;
        let (headers, on_codes, over) = match entry {
            Some(e) => (Some(e.headers), Some(e.on_codes), e.body_override),
            None => (None, None, None),
        };
        overrides.push(over);
        attempts.push(Target {
            origin: route.origin.to_string(),
            route,
            addr,
            policy,
            approved,
            headers,
            body: None,
            on_codes,
            unified: None,
            dropped: Vec::new(),
        });
    }
    Ok(overrides)
}

/// The unified API's targets for `req`: the registry's candidates for its model (endpoints
/// whose circuit is open left out), each prepared for its provider (path, key, body) and
/// SSRF-checked. A candidate that fails either is left out; when none is left, the error lists
/// why.
pub async fn unified(
    req: &UnifiedRequest,
    registry: &Registry,
    health: &Health,
    client: &RequestHeader,
    cfg: &Config,
    guard: &Guard,
) -> Result<Vec<Target>, GatewayError> {
    let candidates = registry.plan(&req.model, req.op, &|ep| {
        ep.origin
            .as_ref()
            .is_none_or(|o| health.allow(&o.to_string()))
    })?;
    let mut targets = Vec::with_capacity(candidates.len());
    let mut problems: Vec<GatewayError> = Vec::new();
    for c in candidates {
        let Some(origin) = c.endpoint.origin.clone() else {
            continue;
        };
        let prepared = match unified_request::prepare(req, &c, &client.headers) {
            Ok(p) => p,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let policy = cfg.origin_policy(&origin).cloned().unwrap_or_default();
        let addr = match guard.resolve(&origin, policy.allow_private).await {
            Ok(a) => a,
            Err(e) => {
                log::warn!("unified attempt {} left out: {e}", c.label());
                problems.push(e);
                continue;
            }
        };
        targets.push(Target {
            origin: origin.to_string(),
            route: Route {
                origin,
                upstream_path: prepared.path,
                provider: Some(c.endpoint.provider.clone()),
                approved: true,
                kind: RouteKind::Unified,
            },
            addr,
            policy,
            // the operator chose these origins, not the client
            approved: true,
            headers: Some(prepared.headers),
            body: Some(prepared.body),
            on_codes: Some(CodeSet::non_success()),
            unified: Some(c),
            dropped: prepared.dropped,
        });
    }
    if targets.is_empty() {
        return Err(GatewayError::no_attempt(problems));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn cfg(yaml: &str) -> Config {
        let yaml = format!("listeners: [{{address: '127.0.0.1:0'}}]\n{yaml}");
        crate::config::from_str("t.yaml", &yaml, Path::new(".")).unwrap()
    }

    fn req(path: &str, pairs: &[(&'static str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", path.as_bytes(), None).unwrap();
        for (k, v) in pairs {
            r.insert_header(*k, *v).unwrap();
        }
        r
    }

    /// Fallback entries to `urls`, the first with a body override.
    fn fallbacks(urls: &[&str]) -> Vec<FallbackEntry> {
        let entries: Vec<String> = urls
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let over = if i == 0 {
                    r#", "bodyKeyOverride": {"model": "m"}"#
                } else {
                    ""
                };
                format!(r#"{{"target-url": "{u}", "headers": {{}}, "onCodes": [500]{over}}}"#)
            })
            .collect();
        let json = format!("[{}]", entries.join(","));
        crate::failover::parse_fallbacks(json.as_bytes()).unwrap()
    }

    #[test]
    fn fallback_entries_become_routes_in_order_with_the_clients_path() {
        let c = cfg("");
        let entries = fallbacks(&["https://8.8.8.8", "https://api.openai.com"]);
        let r = req("/v1/chat/completions?x=1", &[]);
        let routes =
            passthrough_routes(&r, entries, &c.catalogue, &OriginCache::default()).unwrap();
        assert_eq!(routes.len(), 2);
        assert!(routes.iter().all(|(r, e)| {
            r.kind == RouteKind::Fallback
                && r.upstream_path == "/v1/chat/completions?x=1"
                && e.is_some()
        }));
        assert!(!routes[0].0.approved && routes[0].0.provider.is_none());
        assert!(routes[1].0.approved, "a catalogue provider's origin");
    }

    #[test]
    fn without_fallbacks_the_target_url_routes_and_no_route_is_a_404() {
        let c = cfg("");
        let r = req("/v1/x", &[(headers::TARGET_URL, "https://8.8.8.8")]);
        let routes =
            passthrough_routes(&r, Vec::new(), &c.catalogue, &OriginCache::default()).unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].0.origin.to_string(), "https://8.8.8.8");
        let e = passthrough_routes(
            &req("/x", &[]),
            Vec::new(),
            &c.catalogue,
            &OriginCache::default(),
        )
        .unwrap_err();
        assert_eq!(e.status(), 404);
    }

    #[tokio::test]
    async fn targets_are_checked_in_order_and_a_denied_origin_ends_the_plan() {
        let entries = || fallbacks(&["https://8.8.8.8", "https://8.8.4.4"]);
        let r = req("/v1/x", &[]);
        let guard = Guard::new();
        // quotas (the default): both planned, with the first one's override
        let c = cfg("");
        let routes =
            passthrough_routes(&r, entries(), &c.catalogue, &OriginCache::default()).unwrap();
        let mut attempts = Attempts::default();
        let over = passthrough(routes, &c, &guard, &mut attempts)
            .await
            .unwrap();
        assert_eq!(attempts.targets().len(), 2);
        assert!(over[0].is_some() && over[1].is_none());
        assert_eq!(attempts.targets()[1].addr.to_string(), "8.8.4.4:443");
        // denied: the approved first stays, the second ends the plan with a 403
        let c = cfg(
            "unapproved_origins: {policy: deny}\norigins: [{url: 'https://8.8.8.8', approved: true}]\n",
        );
        let routes =
            passthrough_routes(&r, entries(), &c.catalogue, &OriginCache::default()).unwrap();
        let mut attempts = Attempts::default();
        let e = passthrough(routes, &c, &guard, &mut attempts)
            .await
            .unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(attempts.targets().len(), 1);
        assert!(attempts.targets()[0].approved);
    }

    #[tokio::test]
    async fn a_private_address_is_refused_unless_allowed() {
        let r = req("/v1/x", &[(headers::TARGET_URL, "http://10.0.0.1")]);
        let guard = Guard::new();
        let c = cfg("");
        let routes =
            passthrough_routes(&r, Vec::new(), &c.catalogue, &OriginCache::default()).unwrap();
        let e = passthrough(routes, &c, &guard, &mut Attempts::default())
            .await
            .unwrap_err();
        assert_eq!(e.status(), 403);
        let c = cfg("origins: [{url: 'http://10.0.0.1', allow_private: true}]\n");
        let routes =
            passthrough_routes(&r, Vec::new(), &c.catalogue, &OriginCache::default()).unwrap();
        let mut attempts = Attempts::default();
        passthrough(routes, &c, &guard, &mut attempts)
            .await
            .unwrap();
        assert_eq!(attempts.targets()[0].addr.to_string(), "10.0.0.1:80");
    }
}
