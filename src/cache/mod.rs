//! Response cache (spec section 7): the `Helicone-Cache-*` request policy, the cache key, the pingora-cache storage (`store`) with its Redis tier, the cache's metrics, and one request's lookup (`request`).

pub mod entry;
pub mod redis_tier;
pub mod request;
pub mod store;

use std::time::Duration;

use prometheus::{register_int_counter, register_int_counter_vec, register_int_gauge};
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use serde::Deserialize;
use serde_json::Value;

use crate::error::GatewayError;
use crate::headers;

/// Default TTL when the request's `Cache-Control` sets none: 7 days.
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest TTL: 365 days.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// `Helicone-Cache-Bucket-Max-Size` range.
pub const MAX_BUCKETS: u8 = 20;

/// `cache:` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConf {
    /// `false` ignores `Helicone-Cache-Enabled` (nothing is cached).
    pub enabled: bool,
    /// Memory for cached answers (entries, headers and keys).
    pub max_bytes: usize,
    /// Answers larger than this are not stored.
    pub max_entry_bytes: usize,
    /// How long identical requests wait for the first one's answer before going upstream
    /// themselves; sized for long generations (streams are shared while they are written).
    pub lock_timeout_secs: u64,
    /// The shared tier: `{url: redis://127.0.0.1:6379/0, timeout_ms: 250, prefix: "switchyard:cache:"}`.
    pub redis: Option<crate::shared_redis::RedisConf>,
}

impl Default for CacheConf {
    fn default() -> Self {
        CacheConf {
            enabled: true,
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 16 * 1024 * 1024,
            lock_timeout_secs: 600,
            redis: None,
        }
    }
}

/// Keys of the shared tier start with this unless `cache.redis.prefix` says otherwise.
pub const DEFAULT_REDIS_PREFIX: &str = "switchyard:cache:";

/// The cache's Prometheus metrics.
#[derive(Clone)]
pub struct CacheMetrics {
    /// `result`: hit, miss.
    pub lookups: IntCounterVec,
    pub bytes: IntGauge,
    pub evictions: IntCounter,
    pub too_large: IntCounter,
    pub lock_waits: IntCounter,
    pub inflight_hits: IntCounter,
    pub redis_errors: IntCounter,
    pub redis_hits: IntCounter,
}

static REGISTERED: std::sync::Mutex<Option<CacheMetrics>> = std::sync::Mutex::new(None);

impl CacheMetrics {
    /// The cache metrics, registered once per process in the default registry.
    pub fn register() -> Result<CacheMetrics, prometheus::Error> {
        let mut slot = REGISTERED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let m = Self::build()?;
        *slot = Some(m.clone());
        Ok(m)
    }

    fn build() -> Result<CacheMetrics, prometheus::Error> {
        Ok(CacheMetrics {
            lookups: register_int_counter_vec!(
                "switchyard_cache_lookups_total",
                "Cache lookups of requests with Helicone-Cache-Enabled, by result (hit, miss)",
                &["result"]
            )?,
            bytes: register_int_gauge!(
                "switchyard_cache_bytes",
                "Bytes held by the in-memory response cache"
            )?,
            evictions: register_int_counter!(
                "switchyard_cache_evictions_total",
                "Answers evicted from the in-memory cache to stay within cache.max_bytes"
            )?,
            too_large: register_int_counter!(
                "switchyard_cache_too_large_total",
                "Answers not kept in memory because they exceed cache.max_entry_bytes"
            )?,
            lock_waits: register_int_counter!(
                "switchyard_cache_lock_waits_total",
                "Requests that waited for an identical request's answer instead of going upstream"
            )?,
            inflight_hits: register_int_counter!(
                "switchyard_cache_inflight_hits_total",
                "Hits that read an answer still being written (identical requests sharing one upstream call)"
            )?,
            redis_errors: register_int_counter!(
                "switchyard_cache_redis_errors_total",
                "Failed Redis operations (the shared tier was bypassed)"
            )?,
            redis_hits: register_int_counter!(
                "switchyard_cache_redis_hits_total",
                "Answers found in Redis (stored by this or another gateway)"
            )?,
        })
    }
}

/// The response cache as the proxy uses it: the store and the lock that makes identical
/// requests share one upstream call.
pub struct ResponseCache {
    pub store: &'static store::Store,
    pub lock: &'static pingora_cache::lock::CacheKeyLockImpl,
    pub metrics: CacheMetrics,
}

impl ResponseCache {
    /// Built once per process (pingora-cache wants `'static` storage).
    pub fn build(conf: &CacheConf) -> Result<ResponseCache, String> {
        let metrics = CacheMetrics::register().map_err(|e| e.to_string())?;
        let redis = match &conf.redis {
            None => None,
            Some(r) => Some(redis_tier::RedisTier::new(
                &r.url,
                r.prefix
                    .clone()
                    .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_string()),
                r.timeout(),
                metrics.clone(),
            )?),
        };
        let store: &'static store::Store = Box::leak(Box::new(store::Store::new(
            conf.max_bytes,
            conf.max_entry_bytes,
            redis,
            metrics.clone(),
        )));
        let lock: &'static pingora_cache::lock::CacheLock = Box::leak(
            pingora_cache::lock::CacheLock::new_boxed(Duration::from_secs(conf.lock_timeout_secs)),
        );
        Ok(ResponseCache {
            store,
            lock,
            metrics,
        })
    }

    /// The bucket this request reads or fills: the first empty one, or a random one when all
    /// `buckets` hold an answer (spec section 7).
    pub async fn choose_bucket(&self, base: &str, buckets: u8) -> u8 {
        if buckets <= 1 {
            // one bucket: nothing to choose (and no lookup to spend)
            return 0;
        }
        for i in 0..buckets {
            if !self.store.contains(&bucket_key(base, i)).await {
                return i;
            }
        }
        (uuid::Uuid::new_v4().as_u128() % u128::from(buckets)) as u8
    }
}

/// What the request's cache headers ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub ttl: Duration,
    pub seed: Option<String>,
    pub buckets: u8,
    pub ignore_keys: Vec<String>,
}

fn bad(msg: String) -> GatewayError {
    GatewayError::BadRequest(msg)
}

/// `s-maxage`, else `max-age`, from a `Cache-Control` value; capped at 365 days.
pub fn ttl_from(cache_control: Option<&str>) -> Result<Duration, GatewayError> {
    let Some(cc) = cache_control else {
        return Ok(DEFAULT_TTL);
    };
    let mut max_age = None;
    let mut s_maxage = None;
    for d in cc.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (name, value) = match d.split_once('=') {
            Some((n, v)) => (
                n.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"')),
            ),
            None => (d.to_ascii_lowercase(), None),
        };
        let slot = match name.as_str() {
            "max-age" => &mut max_age,
            "s-maxage" => &mut s_maxage,
            _ => continue,
        };
        let secs = value.and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| {
            bad(format!(
                "Cache-Control: {name} needs a number of seconds (e.g. {name}=3600), got '{d}'"
            ))
        })?;
        *slot = Some(secs);
    }
    Ok(s_maxage
        .or(max_age)
        .map_or(DEFAULT_TTL, Duration::from_secs)
        .min(MAX_TTL))
}

/// `Helicone-Cache-Ignore-Keys`: `a,b` or `"a","b"` (Helicone's JSON form), or a JSON array.
pub fn ignore_keys(v: &str) -> Result<Vec<String>, GatewayError> {
    let t = v.trim();
    let keys: Vec<String> = if t.starts_with('"') || t.starts_with('[') {
        let list = if t.starts_with('[') {
            t.to_string()
        } else {
            format!("[{t}]")
        };
        serde_json::from_str::<Vec<String>>(&list).map_err(|e| {
            bad(format!(
                "Helicone-Cache-Ignore-Keys: '{v}' is not a list of keys ({e}); write a,b or \"a\",\"b\""
            ))
        })?
    } else {
        t.split(',').map(|k| k.trim().to_string()).collect()
    };
    if keys.iter().any(String::is_empty) {
        return Err(bad(format!(
            "Helicone-Cache-Ignore-Keys: '{v}' has an empty key; write a,b or \"a\",\"b\""
        )));
    }
    Ok(keys)
}

/// Reads the cache headers; `Ok(None)` unless `Helicone-Cache-Enabled: true`.
pub fn policy(get: impl Fn(&str) -> Option<String>) -> Result<Option<Policy>, GatewayError> {
    match get(headers::CACHE_ENABLED)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("false") => return Ok(None),
        Some("true") => {}
        Some(other) => {
            return Err(bad(format!(
                "Helicone-Cache-Enabled must be true or false, got '{other}'"
            )))
        }
    }
    let ttl = ttl_from(get("cache-control").as_deref())?;
    let buckets = match get(headers::CACHE_BUCKET_MAX_SIZE) {
        None => 1,
        Some(v) => match v.trim().parse::<u8>() {
            Ok(n) if (1..=MAX_BUCKETS).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "Helicone-Cache-Bucket-Max-Size must be a number from 1 to {MAX_BUCKETS}, got '{v}'"
                )))
            }
        },
    };
    let ignore = match get(headers::CACHE_IGNORE_KEYS) {
        None => Vec::new(),
        Some(v) => ignore_keys(&v)?,
    };
    Ok(Some(Policy {
        ttl,
        seed: get(headers::CACHE_SEED),
        buckets,
        ignore_keys: ignore,
    }))
}

/// The parts of a request that its cached answer depends on.
pub struct KeyParts<'a> {
    pub method: &'a str,
    /// Where the request goes: the upstream URL (passthrough) or the unified endpoint and model.
    pub target: &'a str,
    pub body: &'a [u8],
    /// The gateway key's id, so tenants never share entries.
    pub tenant: Option<&'a str>,
    /// The client's provider credentials (passthrough), hashed into the key.
    pub credentials: &'a [&'a [u8]],
}

/// The base key (without the bucket): BLAKE3 (collision-resistant, so no tenant can craft
/// another's key) over every part, length-prefixed.
pub fn base_key(p: &Policy, parts: &KeyParts) -> String {
    let mut h = blake3::Hasher::new();
    let mut put = |b: &[u8]| {
        h.update(&(b.len() as u64).to_be_bytes());
        h.update(b);
    };
    put(b"switchyard-cache-v1");
    put(p.seed.as_deref().unwrap_or("").as_bytes());
    put(parts.method.as_bytes());
    put(parts.target.as_bytes());
    put(parts.tenant.unwrap_or("").as_bytes());
    for c in parts.credentials {
        put(c);
    }
    // the body as sent; with ignored keys, a JSON object without them, re-serialized with
    // sorted keys (so that their order does not matter either)
    if p.ignore_keys.is_empty() {
        put(parts.body);
    } else {
        match serde_json::from_slice::<Value>(parts.body) {
            Ok(Value::Object(mut o)) => {
                for k in &p.ignore_keys {
                    o.remove(k);
                }
                let sorted: std::collections::BTreeMap<_, _> = o.into_iter().collect();
                put(&serde_json::to_vec(&sorted).unwrap_or_default());
            }
            _ => put(parts.body),
        }
    }
    h.finalize().to_hex().to_string()
}

/// The key of bucket `i`.
pub fn bucket_key(base: &str, i: u8) -> String {
    format!("{base}:{i}")
}

/// Private headers kept with a cached answer (never sent to the client).
pub mod stored {
    /// `Helicone-Id` of the request whose answer was cached.
    pub const REQUEST_ID: &str = "x-switchyard-cache-request-id";
    /// How long the original took, in ms.
    pub const LATENCY_MS: &str = "x-switchyard-cache-latency-ms";
    /// Unified API: the provider that answered, and its model id.
    pub const PROVIDER: &str = "x-switchyard-cache-provider";
    pub const MODEL: &str = "x-switchyard-cache-model";
    pub const ALL: [&str; 4] = [REQUEST_ID, LATENCY_MS, PROVIDER, MODEL];
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::headers::from_pairs as hdrs;

    #[test]
    fn policy_from_the_helicone_headers() {
        assert_eq!(policy(hdrs(&[])).unwrap(), None);
        assert_eq!(
            policy(hdrs(&[("helicone-cache-enabled", "false")])).unwrap(),
            None
        );
        let p = policy(hdrs(&[("helicone-cache-enabled", "TRUE")]))
            .unwrap()
            .unwrap();
        assert_eq!((p.ttl, p.buckets, p.seed.clone()), (DEFAULT_TTL, 1, None));
        let p = policy(hdrs(&[
            ("helicone-cache-enabled", "true"),
            ("cache-control", "public, max-age=60, s-maxage=120"),
            ("helicone-cache-bucket-max-size", "3"),
            ("helicone-cache-seed", "s1"),
            ("helicone-cache-ignore-keys", "\"user\",\"metadata\""),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(p.ttl, Duration::from_secs(120), "s-maxage wins");
        assert_eq!(p.buckets, 3);
        assert_eq!(p.seed.as_deref(), Some("s1"));
        assert_eq!(p.ignore_keys, ["user", "metadata"]);
        assert_eq!(ttl_from(Some("max-age=99999999999")).unwrap(), MAX_TTL);
        assert_eq!(ttl_from(Some("no-cache")).unwrap(), DEFAULT_TTL);
        assert_eq!(ignore_keys("a, b").unwrap(), ["a", "b"]);
        assert_eq!(ignore_keys("[\"a\"]").unwrap(), ["a"]);
    }

    #[test]
    fn bad_cache_headers_are_400_naming_the_header() {
        for (h, v, want) in [
            ("helicone-cache-enabled", "yes", "Helicone-Cache-Enabled"),
            (
                "helicone-cache-bucket-max-size",
                "21",
                "Helicone-Cache-Bucket-Max-Size",
            ),
            (
                "helicone-cache-bucket-max-size",
                "0",
                "Helicone-Cache-Bucket-Max-Size",
            ),
            (
                "helicone-cache-bucket-max-size",
                "x",
                "Helicone-Cache-Bucket-Max-Size",
            ),
            ("cache-control", "max-age=soon", "Cache-Control: max-age"),
            (
                "helicone-cache-ignore-keys",
                "\"a\",",
                "Helicone-Cache-Ignore-Keys",
            ),
            (
                "helicone-cache-ignore-keys",
                "a,,b",
                "Helicone-Cache-Ignore-Keys",
            ),
        ] {
            let pairs: &'static [(&str, &str)] = Box::leak(
                if h == "helicone-cache-enabled" {
                    vec![(h, v)]
                } else {
                    vec![("helicone-cache-enabled", "true"), (h, v)]
                }
                .into_boxed_slice(),
            );
            let e = policy(hdrs(pairs)).unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(e.to_string().contains(want), "{h}: {e}");
        }
    }

    #[test]
    fn the_key_depends_on_what_changes_the_answer_and_nothing_else() {
        let p = policy(hdrs(&[
            ("helicone-cache-enabled", "true"),
            ("helicone-cache-ignore-keys", "user"),
        ]))
        .unwrap()
        .unwrap();
        let k = |body: &str, tenant: Option<&str>, cred: &[u8], seed: Option<&str>| {
            let mut p = p.clone();
            p.seed = seed.map(String::from);
            base_key(
                &p,
                &KeyParts {
                    method: "POST",
                    target: "https://api.openai.com/v1/chat/completions",
                    body: body.as_bytes(),
                    tenant,
                    credentials: &[cred],
                },
            )
        };
        let base = k(
            r#"{"model":"m","messages":[1],"user":"a"}"#,
            Some("t"),
            b"Bearer sk-1",
            None,
        );
        assert_eq!(
            base,
            k(
                r#"{"messages":[1],"user":"b","model":"m"}"#,
                Some("t"),
                b"Bearer sk-1",
                None
            ),
            "ignored key and key order"
        );
        assert_ne!(
            base,
            k(
                r#"{"model":"m","messages":[2]}"#,
                Some("t"),
                b"Bearer sk-1",
                None
            )
        );
        assert_ne!(
            base,
            k(
                r#"{"model":"m","messages":[1]}"#,
                Some("u"),
                b"Bearer sk-1",
                None
            ),
            "tenant"
        );
        assert_ne!(
            base,
            k(
                r#"{"model":"m","messages":[1]}"#,
                Some("t"),
                b"Bearer sk-2",
                None
            ),
            "provider key"
        );
        assert_ne!(
            base,
            k(
                r#"{"model":"m","messages":[1]}"#,
                Some("t"),
                b"Bearer sk-1",
                Some("s")
            ),
            "seed"
        );
        assert_ne!(bucket_key(&base, 0), bucket_key(&base, 1));
    }
}
