//! What one request asks of the rate limits: its key, policy, user and properties, and the dearest cost any of its targets may run up, read from its headers, body and targets.

use std::sync::Arc;

use http::HeaderMap;

use super::policy::Policy;
use super::rules::{Ask, Plan, RateLimits};
use crate::body::RequestBody;
use crate::error::GatewayError;
use crate::failover::attempts::Target;
use crate::headers;
use crate::metadata::BodyMeta;
use crate::pricing::Pricing;

/// The parts of a request its limits read.
pub struct Request<'a> {
    /// The gateway key that authenticated it.
    pub key_id: Option<&'a str>,
    /// `Helicone-RateLimit-Policy`, parsed.
    pub policy: Option<&'a Policy>,
    pub headers: &'a HeaderMap,
    pub body: &'a RequestBody,
    /// Helicone metadata from a unified body (user, properties).
    pub meta: Option<&'a BodyMeta>,
    /// Every target that may answer.
    pub targets: &'a [Target],
}

/// The limits that apply to the request (`None`: none does, nothing is read). `pricing` is
/// asked only when a money limit needs an estimate; `default_completion` is the completion
/// the estimate assumes when the body sets no cap.
pub fn plan(
    limits: &RateLimits,
    r: &Request,
    pricing: &dyn Fn() -> Arc<Pricing>,
    default_completion: u64,
) -> Result<Option<Plan>, GatewayError> {
    if !limits.applies(r.key_id, r.policy) {
        return Ok(None);
    }
    let head = || &r.body.facts().head;
    let header_user = r
        .headers
        .get(headers::USER_ID)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .or_else(|| r.meta.and_then(|m| m.user_id.as_deref()));
    let user = match header_user {
        Some(u) => Some(u),
        None if RateLimits::needs_user(r.policy) => head().user.as_deref(),
        None => None,
    };
    let property = |name: &str| {
        r.headers
            .get(format!("{}{name}", headers::PROPERTY_PREFIX).as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| r.meta.and_then(|m| m.properties.get(name).cloned()))
    };
    let body_len = r.body.bytes.len();
    let estimate = || {
        let h = head();
        let pricing = pricing();
        // any attempt may answer: the dearest one is reserved
        r.targets
            .iter()
            .filter_map(|t| {
                let provider = t.route.provider.as_ref().map(|p| p.name.as_str());
                let model = match &t.unified {
                    Some(c) => Some(c.model_id.as_str()),
                    None => h.model.as_deref(),
                }?;
                pricing.estimate(
                    provider,
                    model,
                    body_len,
                    h.completion_cap(),
                    default_completion,
                )
            })
            .reduce(f64::max)
    };
    let ask = Ask {
        key_id: r.key_id,
        policy: r.policy,
        user,
        property: &property,
        estimate_usd: &estimate,
    };
    limits.plan(&ask).map(Some)
}
