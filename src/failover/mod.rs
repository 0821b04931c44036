//! Fallbacks and retries: parsing `Helicone-Fallbacks` / `Helicone-Retry-*`, the per-request attempt machine ([`attempts`]) and provider health ([`health`]).

pub mod attempts;
pub mod health;

pub use attempts::{Attempts, Verdict};

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::error::GatewayError;
use crate::headers;
use crate::routing::Origin;

/// At most this many `Helicone-Fallbacks` entries.
pub const MAX_FALLBACKS: usize = 10;
/// At most this many retries per entry (`Helicone-Retry-Num`).
pub const MAX_RETRIES: u32 = 10;

/// `onCodes`: numbers and inclusive `{from, to}` ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeSet(Vec<(u16, u16)>);

impl CodeSet {
    /// Every status but 2xx: the unified API moves on after any of them.
    pub fn non_success() -> CodeSet {
        CodeSet(vec![(100, 199), (300, 599)])
    }

    pub fn matches(&self, status: u16) -> bool {
        self.0.iter().any(|(a, b)| *a <= status && status <= *b)
    }
}

/// One parsed `Helicone-Fallbacks` entry.
#[derive(Debug, Clone)]
pub struct FallbackEntry {
    pub origin: Origin,
    /// Replaces the client's headers for this attempt.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub on_codes: CodeSet,
    pub body_override: Option<Value>,
}

fn bad(msg: String) -> GatewayError {
    GatewayError::BadRequest(format!(
        "Helicone-Fallbacks: {msg}; expected a JSON array of {{\"target-url\": \"https://...\", \"headers\": {{...}}, \"onCodes\": [429, {{\"from\": 500, \"to\": 599}}], \"bodyKeyOverride\"?: {{...}}}}"
    ))
}

/// Parses the `Helicone-Fallbacks` header; an empty array means "no fallbacks".
pub fn parse_fallbacks(raw: &[u8]) -> Result<Vec<FallbackEntry>, GatewayError> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let Value::Array(items) = v else {
        return Err(bad("the value must be a JSON array".into()));
    };
    if items.len() > MAX_FALLBACKS {
        return Err(bad(format!(
            "{} entries; at most {MAX_FALLBACKS} are allowed",
            items.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(mut obj) = item else {
            return Err(bad(format!("entry {i} is not an object")));
        };
        let url = match obj.remove("target-url") {
            Some(Value::String(s)) => s,
            Some(_) => return Err(bad(format!("entry {i}: \"target-url\" must be a string"))),
            None => return Err(bad(format!("entry {i}: \"target-url\" is missing"))),
        };
        let (origin, _path) = Origin::parse(&url)
            .map_err(|why| bad(format!("entry {i}: target-url '{url}' is invalid: {why}")))?;
        let headers = match obj.remove("headers") {
            Some(Value::Object(h)) => {
                let mut hs = Vec::with_capacity(h.len());
                for (k, v) in h {
                    let Value::String(v) = v else {
                        return Err(bad(format!(
                            "entry {i}: header \"{k}\" must have a string value"
                        )));
                    };
                    let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(
                        |_| bad(format!("entry {i}: \"{k}\" is not a valid header name")),
                    )?;
                    let value = HeaderValue::from_str(&v).map_err(|_| {
                        bad(format!("entry {i}: header \"{k}\" has an invalid value"))
                    })?;
                    hs.push((name, value));
                }
                hs
            }
            Some(_) => {
                return Err(bad(format!(
                    "entry {i}: \"headers\" must be an object of strings"
                )))
            }
            None => {
                return Err(bad(format!(
                    "entry {i}: \"headers\" is missing (use {{}} for none)"
                )))
            }
        };
        let on_codes = match obj.remove("onCodes") {
            Some(Value::Array(codes)) => {
                let mut set = Vec::with_capacity(codes.len());
                for c in codes {
                    let status = |v: &Value| {
                        v.as_u64()
                            .filter(|n| (100..=599).contains(n))
                            .map(|n| n as u16)
                    };
                    match &c {
                        Value::Number(_) => {
                            let s = status(&c).ok_or_else(|| {
                                bad(format!(
                                    "entry {i}: onCodes value {c} is not an HTTP status"
                                ))
                            })?;
                            set.push((s, s));
                        }
                        Value::Object(r) => {
                            let (Some(from), Some(to)) =
                                (r.get("from").and_then(status), r.get("to").and_then(status))
                            else {
                                return Err(bad(format!("entry {i}: onCodes range {c} needs numeric \"from\" and \"to\" statuses")));
                            };
                            if from > to {
                                return Err(bad(format!(
                                    "entry {i}: onCodes range {c} has from > to"
                                )));
                            }
                            set.push((from, to));
                        }
                        _ => {
                            return Err(bad(format!(
                            "entry {i}: onCodes value {c} must be a status or {{\"from\", \"to\"}}"
                        )))
                        }
                    }
                }
                CodeSet(set)
            }
            Some(_) => return Err(bad(format!("entry {i}: \"onCodes\" must be an array"))),
            None => return Err(bad(format!("entry {i}: \"onCodes\" is missing"))),
        };
        let body_override = match obj.remove("bodyKeyOverride") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v),
            Some(_) => {
                return Err(bad(format!(
                    "entry {i}: \"bodyKeyOverride\" must be an object"
                )))
            }
        };
        if let Some(k) = obj.keys().next() {
            return Err(bad(format!("entry {i}: unknown field \"{k}\"")));
        }
        out.push(FallbackEntry {
            origin,
            headers,
            on_codes,
            body_override,
        });
    }
    Ok(out)
}

/// Deep-merges `over` into `base`: objects merge, everything else is replaced.
pub fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => deep_merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// The body for an attempt with `bodyKeyOverride`: the original JSON body, merged.
pub fn override_body(body: &Bytes, over: &Value, index: usize) -> Result<Bytes, GatewayError> {
    let mut v: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::BadRequest(format!(
            "Helicone-Fallbacks entry {index} has bodyKeyOverride but the request body is not JSON ({e})"
        ))
    })?;
    deep_merge(&mut v, over);
    Ok(Bytes::from(v.to_string()))
}

/// `Helicone-Retry-*` (spec section 6).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt, per fallback entry.
    pub retries: u32,
    pub factor: f64,
    pub min: Duration,
    pub max: Duration,
}

/// Reads the retry headers; `Ok(None)` unless `Helicone-Retry-Enabled: true`.
pub fn parse_retry(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<RetryPolicy>, GatewayError> {
    let enabled = match get(headers::RETRY_ENABLED) {
        None => return Ok(None),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(GatewayError::BadRequest(format!(
                    "Helicone-Retry-Enabled must be true or false, got '{v}'"
                )))
            }
        },
    };
    if !enabled {
        return Ok(None);
    }
    fn num<T: std::str::FromStr>(
        get: &impl Fn(&str) -> Option<String>,
        name: &str,
        header: &str,
    ) -> Result<Option<T>, GatewayError> {
        match get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<T>().map(Some).map_err(|_| {
                GatewayError::BadRequest(format!("{header} must be a number, got '{v}'"))
            }),
        }
    }
    let retries: u32 = num(&get, headers::RETRY_NUM, "Helicone-Retry-Num")?.unwrap_or(5);
    let factor: f64 = num(&get, headers::RETRY_FACTOR, "Helicone-Retry-Factor")?.unwrap_or(2.0);
    let min_ms: u64 = num(
        &get,
        headers::RETRY_MIN_TIMEOUT,
        "Helicone-Retry-Min-Timeout",
    )?
    .unwrap_or(1000);
    let max_ms: u64 = num(
        &get,
        headers::RETRY_MAX_TIMEOUT,
        "Helicone-Retry-Max-Timeout",
    )?
    .unwrap_or(10_000);
    if retries > MAX_RETRIES {
        return Err(GatewayError::BadRequest(format!(
            "Helicone-Retry-Num is {retries}; at most {MAX_RETRIES} retries are allowed"
        )));
    }
    if !(1.0..=10.0).contains(&factor) {
        return Err(GatewayError::BadRequest(format!(
            "Helicone-Retry-Factor must be between 1 and 10, got {factor}"
        )));
    }
    if max_ms > 300_000 || min_ms > max_ms {
        return Err(GatewayError::BadRequest(format!(
            "Helicone-Retry-Min-Timeout ({min_ms} ms) must not exceed Helicone-Retry-Max-Timeout ({max_ms} ms), which is at most 300000"
        )));
    }
    Ok(Some(RetryPolicy {
        retries,
        factor,
        min: Duration::from_millis(min_ms),
        max: Duration::from_millis(max_ms),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_helicone_fallback_shape() {
        let raw = br#"[{"target-url":"https://api.openai.com/v1","headers":{"Authorization":"Bearer a"},"onCodes":[429,{"from":500,"to":599}]},
                      {"target-url":"https://api.groq.com","headers":{},"onCodes":[],"bodyKeyOverride":{"model":"llama"}}]"#;
        let f = parse_fallbacks(raw).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].origin.to_string(), "https://api.openai.com");
        assert_eq!(f[0].headers[0].0.as_str(), "authorization");
        assert!(
            f[0].on_codes.matches(429) && f[0].on_codes.matches(503) && !f[0].on_codes.matches(404)
        );
        assert!(f[1].body_override.is_some());
    }

    #[test]
    fn malformed_fallbacks_are_400_naming_the_problem() {
        for (raw, want) in [
            (&b"not json"[..], "not valid JSON"),
            (b"{}", "must be a JSON array"),
            (b"[1]", "entry 0 is not an object"),
            (br#"[{"headers":{},"onCodes":[]}]"#, "\"target-url\" is missing"),
            (br#"[{"target-url":5,"headers":{},"onCodes":[]}]"#, "must be a string"),
            (br#"[{"target-url":"ftp://x","headers":{},"onCodes":[]}]"#, "scheme 'ftp'"),
            (br#"[{"target-url":"https://x.com","onCodes":[]}]"#, "\"headers\" is missing"),
            (br#"[{"target-url":"https://x.com","headers":{"a":1},"onCodes":[]}]"#, "string value"),
            (br#"[{"target-url":"https://x.com","headers":{},"onCodes":"500"}]"#, "must be an array"),
            (br#"[{"target-url":"https://x.com","headers":{},"onCodes":[99]}]"#, "not an HTTP status"),
            (br#"[{"target-url":"https://x.com","headers":{},"onCodes":[{"from":599,"to":500}]}]"#, "from > to"),
            (br#"[{"target-url":"https://x.com","headers":{},"onCodes":[],"bodyKeyOverride":[1]}]"#, "must be an object"),
            (br#"[{"target-url":"https://x.com","headers":{},"onCodes":[],"extra":1}]"#, "unknown field"),
        ] {
            let e = parse_fallbacks(raw).unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(e.to_string().contains(want) && e.to_string().contains("Helicone-Fallbacks"), "{e}");
        }
    }

    #[test]
    fn deep_merge_replaces_scalars_and_merges_objects() {
        let mut base: Value = serde_json::json!({"model":"a","opts":{"x":1,"y":2},"messages":[1]});
        deep_merge(
            &mut base,
            &serde_json::json!({"model":"b","opts":{"y":3},"messages":[2,3]}),
        );
        assert_eq!(
            base,
            serde_json::json!({"model":"b","opts":{"x":1,"y":3},"messages":[2,3]})
        );
    }

    use crate::headers::from_pairs as headers;

    #[test]
    fn retry_headers() {
        assert_eq!(parse_retry(headers(&[])).unwrap(), None);
        assert_eq!(
            parse_retry(headers(&[("helicone-retry-enabled", "false")])).unwrap(),
            None
        );
        let p = parse_retry(headers(&[("helicone-retry-enabled", "true")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.retries, p.factor, p.min.as_millis(), p.max.as_millis()),
            (5, 2.0, 1000, 10_000)
        );
        for (h, v) in [
            ("helicone-retry-enabled", "yes"),
            ("helicone-retry-num", "three"),
            ("helicone-retry-factor", "x"),
            ("helicone-retry-min-timeout", "-1"),
            ("helicone-retry-num", "99"),
        ] {
            let pairs: &'static [(&str, &str)] =
                Box::leak(vec![("helicone-retry-enabled", "true"), (h, v)].into_boxed_slice());
            let pairs: &'static [(&str, &str)] = if h == "helicone-retry-enabled" {
                &pairs[1..]
            } else {
                pairs
            };
            let e = parse_retry(headers(pairs)).unwrap_err();
            assert_eq!(e.status(), 400, "{h}: {v}");
        }
    }
}
