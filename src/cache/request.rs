//! The response cache's part of one request: its lookup state, its key and bucket, what a hit or miss tells the client, and what its answer is stored with.

use std::time::{Duration, SystemTime};

use pingora_cache::{CacheMeta, CachePhase, HttpCache, NoCacheReason, RespCacheable};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use super::{base_key, bucket_key, stored, KeyParts, Policy, ResponseCache};
use crate::headers;
use crate::unified::Op;

/// A cached request's state (`Helicone-Cache-Enabled: true`).
pub struct CacheState {
    pub policy: Policy,
    /// The key of the chosen bucket (set once the body is read).
    pub key: String,
    pub bucket: u8,
    /// `hit` or `miss`, once known.
    pub status: Option<&'static str>,
    /// On a hit: the id of the request whose answer was served.
    pub reference: Option<String>,
}

impl CacheState {
    pub fn new(policy: Policy) -> Self {
        CacheState {
            policy,
            key: String::new(),
            bucket: 0,
            status: None,
            reference: None,
        }
    }

    pub fn hit(&self) -> bool {
        self.status == Some("hit")
    }
}

/// Where a request goes, as its key sees it.
pub enum Keyed<'a> {
    /// A unified-API call: its operation and the client's dialect (the model is in the body;
    /// an answer is cached in the shape its client got).
    Unified(Op, &'static str),
    /// Passthrough: the first target's origin and upstream path.
    Passthrough { origin: &'a str, path: &'a str },
}

/// Sets the key and bucket of a request that asked for the cache (after its body is read and
/// its targets are planned).
pub async fn make_key(
    rc: &ResponseCache,
    state: &mut CacheState,
    req: &RequestHeader,
    target: Keyed<'_>,
    body: &[u8],
    tenant: Option<&str>,
) {
    let (target, passthrough) = match target {
        // the OpenAI dialect keeps the key it always had
        Keyed::Unified(op, "openai") => (format!("unified:{op:?}"), false),
        Keyed::Unified(op, dialect) => (format!("unified:{dialect}:{op:?}"), false),
        Keyed::Passthrough { origin, path } => (format!("{origin}{path}"), true),
    };
    // the client's own provider credentials (passthrough) keep tenants apart too
    let mut creds: Vec<&[u8]> = Vec::new();
    if passthrough {
        for name in headers::PROVIDER_CREDENTIALS
            .into_iter()
            .chain([headers::FALLBACKS])
        {
            for v in req.headers.get_all(name) {
                creds.push(v.as_bytes());
            }
        }
    }
    let base = base_key(
        &state.policy,
        &KeyParts {
            method: req.method.as_str(),
            target: &target,
            body,
            tenant,
            credentials: &creds,
        },
    );
    state.bucket = rc.choose_bucket(&base, state.policy.buckets).await;
    state.key = bucket_key(&base, state.bucket);
}

/// `Helicone-Cache` and, on a hit, what the cached answer recorded of its original request:
/// the request id (logged as the reference), its latency and, for the unified API, the
/// provider and model that answered (returned: the orchestrator points the attempts at it,
/// so the right translation replays it).
pub fn outcome(
    rc: &ResponseCache,
    cache: &HttpCache,
    resp: &mut ResponseHeader,
    state: &mut CacheState,
) -> Result<Option<(String, Option<String>)>> {
    if state.key.is_empty() {
        return Ok(None);
    }
    let hit = matches!(cache.phase(), CachePhase::Hit);
    if cache.lock_duration().is_some() {
        rc.metrics.lock_waits.inc();
    }
    let label = if hit { "hit" } else { "miss" };
    rc.metrics.lookups.with_label_values(&[label]).inc();
    state.status = Some(label);
    let get = |n: &str| {
        resp.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (reference, latency, provider, model) = (
        get(stored::REQUEST_ID),
        get(stored::LATENCY_MS),
        get(stored::PROVIDER),
        get(stored::MODEL),
    );
    for n in stored::ALL {
        resp.remove_header(n);
    }
    resp.insert_header(headers::CACHE.clone(), if hit { "HIT" } else { "MISS" })?;
    if !hit {
        return Ok(None);
    }
    resp.insert_header(headers::CACHE_BUCKET_IDX.clone(), state.bucket.to_string())?;
    if let Some(l) = latency {
        resp.insert_header(headers::CACHE_LATENCY.clone(), l)?;
    }
    state.reference = reference;
    Ok(provider.map(|p| (p, model)))
}

/// Whether an upstream answer is stored, and with what a later hit needs to know of this
/// request: its id, its latency and, for the unified API, the provider and model that answered.
pub fn cacheable(
    resp: &ResponseHeader,
    policy: &Policy,
    id: &str,
    latency: Duration,
    answered: Option<(&str, &str)>,
) -> Result<RespCacheable> {
    if !(200..300).contains(&resp.status.as_u16()) {
        return Ok(RespCacheable::Uncacheable(NoCacheReason::Custom(
            "only 2xx answers are cached",
        )));
    }
    let mut h = resp.clone();
    h.insert_header(stored::REQUEST_ID, id)?;
    h.insert_header(stored::LATENCY_MS, latency.as_millis().to_string())?;
    if let Some((provider, model)) = answered {
        h.insert_header(stored::PROVIDER, provider)?;
        h.insert_header(stored::MODEL, model)?;
    }
    let now = SystemTime::now();
    Ok(RespCacheable::Cacheable(CacheMeta::new(
        now + policy.ttl,
        now,
        0,
        0,
        h,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            ttl: Duration::from_secs(60),
            seed: None,
            buckets: 1,
            ignore_keys: Vec::new(),
        }
    }

    #[test]
    fn only_2xx_answers_are_stored_with_what_a_hit_needs() {
        let bad = ResponseHeader::build(500, None).unwrap();
        let r = cacheable(&bad, &policy(), "id", Duration::ZERO, None).unwrap();
        assert!(matches!(r, RespCacheable::Uncacheable(_)));
        let ok = ResponseHeader::build(200, None).unwrap();
        let answered = Some(("anthropic", "claude-x"));
        let r = cacheable(&ok, &policy(), "id-1", Duration::from_millis(42), answered).unwrap();
        let RespCacheable::Cacheable(meta) = r else {
            panic!("a 2xx answer is cacheable");
        };
        let h = &meta.response_header().headers;
        assert_eq!(h[stored::REQUEST_ID], "id-1");
        assert_eq!(h[stored::LATENCY_MS], "42");
        assert_eq!(h[stored::PROVIDER], "anthropic");
        assert_eq!(h[stored::MODEL], "claude-x");
    }

    #[test]
    fn a_new_state_is_neither_keyed_nor_a_hit() {
        let s = CacheState::new(policy());
        assert!(s.key.is_empty() && !s.hit() && s.reference.is_none());
    }
}
