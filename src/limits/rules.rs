//! What one request is counted against (its `Helicone-RateLimit-Policy`, its gateway key's limits), admitted all or nothing, and settled to its real cost once it has finished.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use serde::Deserialize;

pub use super::conf::KeyLimits;
use super::limiter::{Ask as Count, Held, Limiter};
use super::policy::{Policy, Unit};
use super::window::Span;
use crate::error::GatewayError;
use crate::headers;
use crate::metrics::Metrics;

/// Money counters count millionths of a US dollar: a cheap request costs a few of them, so
/// nothing is rounded away.
pub const MICROS_PER_USD: f64 = 1_000_000.0;
pub const MICROS_PER_CENT: u64 = 10_000;

fn micros(usd: f64) -> u64 {
    (usd.max(0.0) * MICROS_PER_USD).ceil() as u64
}

/// Which limit a check enforces (the `rule` label of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Header,
    KeyRequests,
    KeyUsdDay,
    KeyUsdMonth,
    KeyConcurrency,
}

impl Rule {
    pub fn label(self) -> &'static str {
        match self {
            Rule::Header => "header",
            Rule::KeyRequests => "key_requests",
            Rule::KeyUsdDay => "key_usd_day",
            Rule::KeyUsdMonth => "key_usd_month",
            Rule::KeyConcurrency => "key_concurrency",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Requests,
    /// Micro-dollars: reserved as an estimate, settled to the real cost.
    Money,
    /// A slot held while the request runs, released when it ends.
    Slots,
}

struct Check {
    rule: Rule,
    measure: Measure,
    scope: String,
    window: Duration,
    /// In the measure's units.
    quota: u64,
    /// What `Helicone-RateLimit-Policy` shows for this check.
    policy: String,
    /// Calendar budgets: the time left in the period (the counter's reset).
    period_left: Option<Duration>,
}

/// The `Helicone-RateLimit-*` values of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub limit: u64,
    pub remaining: u64,
    pub policy: String,
    pub reset_secs: u64,
}

impl Shown {
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (headers::RATELIMIT_LIMIT, self.limit.to_string()),
            (headers::RATELIMIT_REMAINING, self.remaining.to_string()),
            (headers::RATELIMIT_POLICY, self.policy.clone()),
            (headers::RATELIMIT_RESET, self.reset_secs.to_string()),
        ]
    }
}

struct HeldCheck {
    rule: Rule,
    measure: Measure,
    held: Held,
}

/// What a request holds in the counters, from admission to its end.
#[derive(Default)]
pub struct Counted {
    held: Vec<HeldCheck>,
    /// The headers the client gets (the header policy's, else the key's).
    pub shown: Option<Shown>,
    /// The check that decided, for the log record: `header 3;w=60`.
    pub decided_by: Option<String>,
    settled: bool,
}

/// What limits read of a JSON request body: the `user` segment, and the model and completion
/// cap a money limit's estimate needs (parsed once, in the body's `crate::body::BodyFacts`;
/// empty when the body is not a JSON object of the expected field types).
#[derive(Debug, Default, Deserialize)]
pub struct BodyHead {
    pub model: Option<String>,
    pub user: Option<String>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
}

impl BodyHead {
    /// The completion cap the request sets, whichever name it uses.
    pub fn completion_cap(&self) -> Option<u64> {
        self.max_completion_tokens
            .or(self.max_tokens)
            .or(self.max_output_tokens)
    }
}

/// The checks one request is counted against.
pub struct Plan {
    checks: Vec<Check>,
    key: String,
    /// Micro-dollars each money check reserves.
    money: u64,
}

impl Plan {
    /// The store's view of each check, taking `units(check)`.
    fn counts(&self, units: impl Fn(&Check) -> u64) -> Vec<Count<'_>> {
        self.checks
            .iter()
            .map(|c| Count {
                scope: &c.scope,
                span: match c.period_left {
                    Some(left) => Span::Period(left),
                    None => Span::Sliding(c.window),
                },
                quota: c.quota,
                units: units(c),
            })
            .collect()
    }
}

impl Check {
    /// The headers of a decision on this check (slots show none).
    fn shown(&self, d: &super::window::Decision) -> Option<Shown> {
        let per = match self.measure {
            Measure::Slots => return None,
            Measure::Money => MICROS_PER_CENT,
            Measure::Requests => 1,
        };
        Some(Shown {
            limit: self.quota / per,
            remaining: d.remaining / per,
            policy: self.policy.clone(),
            reset_secs: secs_ceil(d.reset),
        })
    }
}

/// What a request brings to the checks.
pub struct Ask<'a> {
    pub key_id: Option<&'a str>,
    pub policy: Option<&'a Policy>,
    /// `Helicone-User-Id`, else the body's `user`.
    pub user: Option<&'a str>,
    /// The value of `Helicone-Property-<name>`.
    pub property: &'a dyn Fn(&str) -> Option<String>,
    /// An upper estimate of the request's cost in USD (`None`: unpriced); asked only when a
    /// money limit applies.
    pub estimate_usd: &'a dyn Fn() -> Option<f64>,
}

pub struct RateLimits {
    limiter: Arc<Limiter>,
    keys: HashMap<String, KeyLimits>,
    lease: Duration,
    metrics: Arc<Metrics>,
}

fn secs_ceil(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// (UTC day number, time left in it), and (month id, its length, time left in it).
fn periods() -> ((i64, Duration), (String, Duration, Duration)) {
    let now = Utc::now();
    let ts = now.timestamp_millis();
    let (day, secs_left) = super::origin_quota::utc_day_and_secs_left();
    let day = (day, Duration::from_secs(secs_left));
    let (y, m) = (now.year(), now.month());
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let start = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single();
    let next = Utc.with_ymd_and_hms(ny, nm, 1, 0, 0, 0).single();
    let (len, left) = match (start, next) {
        (Some(s), Some(n)) => (
            Duration::from_millis((n - s).num_milliseconds().max(0) as u64),
            Duration::from_millis((n.timestamp_millis() - ts).max(0) as u64),
        ),
        _ => (
            Duration::from_secs(31 * 86_400),
            Duration::from_secs(86_400),
        ),
    };
    (day, (format!("{y:04}-{m:02}"), len, left))
}

impl RateLimits {
    pub fn new(
        limiter: Arc<Limiter>,
        keys: HashMap<String, KeyLimits>,
        lease: Duration,
        metrics: Arc<Metrics>,
    ) -> RateLimits {
        RateLimits {
            limiter,
            keys,
            lease,
            metrics,
        }
    }

    /// Whether any limit applies (nothing is counted, parsed or estimated otherwise).
    pub fn applies(&self, key_id: Option<&str>, policy: Option<&Policy>) -> bool {
        policy.is_some() || key_id.is_some_and(|k| self.keys.contains_key(k))
    }

    /// Whether the policy needs the request's `user` (from the body when no header names it).
    pub fn needs_user(policy: Option<&Policy>) -> bool {
        policy.is_some_and(|p| p.segment == super::policy::Segment::User)
    }

    fn checks(&self, ask: &Ask) -> Result<Vec<Check>, GatewayError> {
        let mut out = Vec::with_capacity(5);
        if let Some(p) = ask.policy {
            let scope = p.scope(ask.key_id, ask.user, ask.property)?;
            let (measure, quota) = match p.unit {
                Unit::Request => (Measure::Requests, p.quota),
                Unit::Cents => (Measure::Money, p.quota.saturating_mul(MICROS_PER_CENT)),
            };
            out.push(Check {
                rule: Rule::Header,
                measure,
                scope: format!("{}{scope}", super::window::CLIENT_SCOPE_PREFIX),
                window: p.window,
                quota,
                policy: p.raw.clone(),
                period_left: None,
            });
        }
        let Some((id, l)) = ask
            .key_id
            .and_then(|k| self.keys.get_key_value(k))
            .map(|(k, v)| (k.as_str(), v))
        else {
            return Ok(out);
        };
        if let Some(n) = l.requests {
            out.push(Check {
                rule: Rule::KeyRequests,
                measure: Measure::Requests,
                scope: format!("k|{id}|r{}", l.window_secs),
                window: Duration::from_secs(l.window_secs),
                quota: n,
                policy: format!("{n};w={}", l.window_secs),
                period_left: None,
            });
        }
        if l.usd_per_day.is_some() || l.usd_per_month.is_some() {
            let ((day, day_left), (month, month_len, month_left)) = periods();
            if let Some(usd) = l.usd_per_day {
                out.push(Check {
                    rule: Rule::KeyUsdDay,
                    measure: Measure::Money,
                    scope: format!("k|{id}|usd-day|{day}"),
                    window: Duration::from_secs(86_400),
                    quota: micros(usd),
                    policy: format!("{};w=86400;u=cents", micros(usd) / MICROS_PER_CENT),
                    period_left: Some(day_left),
                });
            }
            if let Some(usd) = l.usd_per_month {
                out.push(Check {
                    rule: Rule::KeyUsdMonth,
                    measure: Measure::Money,
                    scope: format!("k|{id}|usd-month|{month}"),
                    window: month_len,
                    quota: micros(usd),
                    policy: format!(
                        "{};w={};u=cents",
                        micros(usd) / MICROS_PER_CENT,
                        month_len.as_secs()
                    ),
                    period_left: Some(month_left),
                });
            }
        }
        if let Some(n) = l.max_concurrent {
            out.push(Check {
                rule: Rule::KeyConcurrency,
                measure: Measure::Slots,
                scope: format!("k|{id}|inflight"),
                window: self.lease,
                quota: n,
                policy: format!("{n} concurrent"),
                period_left: None,
            });
        }
        Ok(out)
    }

    /// The checks that apply to a request, with what it reserves of each (synchronous: the
    /// request's own details are read here, nothing is held across the store's round trips).
    pub fn plan(&self, ask: &Ask) -> Result<Plan, GatewayError> {
        let checks = self.checks(ask)?;
        // at least one micro-dollar, so that a spent budget refuses unpriced requests too
        let money = if checks.iter().any(|c| c.measure == Measure::Money) {
            (ask.estimate_usd)().map_or(1, micros).max(1)
        } else {
            0
        };
        Ok(Plan {
            checks,
            key: ask.key_id.unwrap_or("-").to_string(),
            money,
        })
    }

    /// Counts the request against every check of its plan; all must pass, or none counts (one
    /// round trip to Redis). A refusal leaves the refusing check's headers in `out`.
    pub async fn admit(&self, plan: Plan, out: &mut Counted) -> Result<(), GatewayError> {
        let units = |c: &Check| match c.measure {
            Measure::Requests | Measure::Slots => 1,
            Measure::Money => plan.money,
        };
        let asks = plan.counts(units);
        let all = match self.limiter.admit_all(&asks).await {
            Ok(a) => a,
            Err(e) => {
                if let Some(c) = plan.checks.first() {
                    self.metrics.limit_decision(c.rule.label(), "refused");
                }
                return Err(e);
            }
        };
        let mut held = all.held.map(Vec::into_iter);
        for (c, d) in plan.checks.iter().zip(all.decisions) {
            let mut d = d;
            if let Some(left) = c.period_left {
                d.reset = left;
            }
            let shown = c.shown(&d);
            if !d.admitted {
                self.metrics.limit_decision(c.rule.label(), "refused");
                out.shown = shown;
                out.decided_by = Some(format!("{} {} refused", c.rule.label(), c.policy));
                return Err(refusal(c, &plan.key, &d, units(c)));
            }
            let Some(h) = held.as_mut().and_then(Iterator::next) else {
                continue;
            };
            let result = if all.failed_open {
                "uncounted"
            } else {
                "admitted"
            };
            self.metrics.limit_decision(c.rule.label(), result);
            if out.shown.is_none() && shown.is_some() {
                out.shown = shown;
                out.decided_by = Some(format!("{} {}", c.rule.label(), c.policy));
            }
            out.held.push(HeldCheck {
                rule: c.rule,
                measure: c.measure,
                held: h,
            });
        }
        Ok(())
    }

    /// A request that is not counted (a cache hit) is shown the room its limits have, as
    /// `admit` would show it, and takes none. Nothing is shown when Redis does not answer.
    pub async fn peek(&self, plan: Plan, out: &mut Counted) {
        let asks = plan.counts(|_| 0);
        let Some(decisions) = self.limiter.peek_all(&asks).await else {
            return;
        };
        for (c, mut d) in plan.checks.iter().zip(decisions) {
            if let Some(left) = c.period_left {
                d.reset = left;
            }
            if let Some(shown) = c.shown(&d) {
                out.shown = Some(shown);
                out.decided_by = Some(format!(
                    "{} {} not counted (cache hit)",
                    c.rule.label(),
                    c.policy
                ));
                return;
            }
        }
    }

    /// The request ended: its slots are freed and its money reservations become its real cost.
    /// An unknown cost keeps the estimate when a provider answered (a stream without usage must
    /// not be free), and is nothing when none did.
    pub async fn settle(&self, c: &mut Counted, cost_usd: Option<f64>, answered: bool) {
        if std::mem::replace(&mut c.settled, true) {
            return;
        }
        let mut items = Vec::with_capacity(c.held.len());
        for h in &c.held {
            let units = match (h.measure, cost_usd) {
                (Measure::Requests, _) => continue,
                (Measure::Slots, _) => 0,
                (Measure::Money, Some(usd)) => micros(usd),
                (Measure::Money, None) if !answered => 0,
                (Measure::Money, None) => {
                    log::debug!(
                        "{}: cost unknown, the reserved estimate stays charged",
                        h.rule.label()
                    );
                    continue;
                }
            };
            items.push((&h.held, units));
        }
        if !items.is_empty() {
            self.limiter.settle_all(&items).await;
        }
    }
}

/// The 429 for a refused check: which limit, how much, when to retry.
fn refusal(c: &Check, key: &str, d: &super::window::Decision, units: u64) -> GatewayError {
    let secs = secs_ceil(d.reset).max(1);
    let usd = |m: u64| m as f64 / MICROS_PER_USD;
    let message = match c.rule {
        Rule::Header => {
            let (what, unit) = match c.measure {
                Measure::Money => (c.quota / MICROS_PER_CENT, "cents"),
                _ => (c.quota, "requests"),
            };
            let scope = c.scope.rsplit('|').next().unwrap_or("global");
            format!(
                "rate limit policy '{}' reached for {scope}: at most {what} {unit} per {} s; retry in {secs} s (Retry-After)",
                c.policy,
                c.window.as_secs()
            )
        }
        Rule::KeyRequests => format!(
            "gateway key '{key}' reached its limit of {} requests per {} s (auth.keys[].limits.requests); retry in {secs} s (Retry-After)",
            c.quota,
            c.window.as_secs()
        ),
        Rule::KeyUsdDay | Rule::KeyUsdMonth => {
            let (field, period) = if c.rule == Rule::KeyUsdDay {
                ("usd_per_day", "today (UTC)")
            } else {
                ("usd_per_month", "this month (UTC)")
            };
            let used = c.quota.saturating_sub(d.remaining);
            format!(
                "gateway key '{key}' has used ${:.4} of its ${:.2} budget for {period} (auth.keys[].limits.{field}); this request would reserve up to ${:.4}; the budget resets in {secs} s (Retry-After)",
                usd(used),
                usd(c.quota),
                usd(units)
            )
        }
        Rule::KeyConcurrency => format!(
            "gateway key '{key}' already has {} requests in flight (auth.keys[].limits.max_concurrent); retry when one has finished",
            c.quota
        ),
    };
    GatewayError::RateLimited {
        message,
        retry_after_secs: if c.rule == Rule::KeyConcurrency {
            1
        } else {
            secs
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::limiter::{OnStoreError, Store};
    use crate::limits::policy::parse;
    use crate::limits::window::Windows;
    use crate::metrics::Rejection;

    fn limits(keys: &[(&str, KeyLimits)]) -> RateLimits {
        static METRICS: std::sync::OnceLock<Arc<Metrics>> = std::sync::OnceLock::new();
        let metrics = METRICS
            .get_or_init(|| Arc::new(Metrics::register().unwrap()))
            .clone();
        let limiter = Limiter::new(
            Store::Local(Windows::default()),
            OnStoreError::Open,
            prometheus::IntCounter::new("t", "t").unwrap(),
        );
        RateLimits::new(
            Arc::new(limiter),
            keys.iter()
                .map(|(k, l)| (k.to_string(), l.clone()))
                .collect(),
            Duration::from_secs(900),
            metrics,
        )
    }

    fn key(
        requests: Option<u64>,
        usd_per_day: Option<f64>,
        max_concurrent: Option<u64>,
    ) -> KeyLimits {
        KeyLimits {
            requests,
            window_secs: 60,
            usd_per_day,
            usd_per_month: None,
            max_concurrent,
        }
    }

    async fn run(
        rl: &RateLimits,
        key_id: &str,
        policy: Option<&Policy>,
        usd: f64,
    ) -> (Counted, Result<(), GatewayError>) {
        let none = |_: &str| None;
        let estimate = move || Some(usd);
        let ask = Ask {
            key_id: Some(key_id),
            policy,
            user: None,
            property: &none,
            estimate_usd: &estimate,
        };
        let mut out = Counted::default();
        let plan = match rl.plan(&ask) {
            Ok(p) => p,
            Err(e) => return (out, Err(e)),
        };
        let r = rl.admit(plan, &mut out).await;
        (out, r)
    }

    #[tokio::test]
    async fn an_unknown_cost_keeps_the_estimate_when_a_provider_answered_and_is_free_otherwise() {
        let rl = limits(&[("k", key(None, Some(0.03), None))]);
        // 1 cent reserved each; the budget is 3 cents
        let (mut a, r) = run(&rl, "k", None, 0.01).await;
        r.unwrap();
        rl.settle(&mut a, None, true).await; // a stream without usage: 1 cent stays
        let (mut b, r) = run(&rl, "k", None, 0.01).await;
        r.unwrap();
        rl.settle(&mut b, None, false).await; // no provider answered: nothing
        let (mut c, r) = run(&rl, "k", None, 0.01).await;
        r.unwrap();
        rl.settle(&mut c, Some(0.005), true).await; // half a cent really
        assert_eq!(
            c.shown.as_ref().unwrap().remaining,
            1,
            "cents left at admission"
        );
        // 1.5 cents used: one more estimate of 1 cent fits, two do not
        let (_held, r) = run(&rl, "k", None, 0.01).await;
        r.unwrap();
        let (refused, r) = run(&rl, "k", None, 0.01).await;
        let e = r.unwrap_err();
        assert_eq!(e.rejection(), Some(Rejection::RateLimit));
        assert_eq!(e.status(), 429);
        assert!(e.to_string().contains("$0.0250 of its $0.03 budget"), "{e}");
        assert_eq!(
            refused.decided_by.as_deref(),
            Some("key_usd_day 3;w=86400;u=cents refused")
        );
    }

    #[tokio::test]
    async fn a_refusal_gives_back_what_earlier_checks_reserved() {
        let rl = limits(&[("k", key(None, Some(1.0), Some(1)))]);
        // the first request holds the one slot and 10 cents
        let (mut first, r) = run(&rl, "k", None, 0.10).await;
        r.unwrap();
        // the second passes the budget check, then the slot check refuses: its 10 cents go back
        let (second, r) = run(&rl, "k", None, 0.10).await;
        assert!(r.unwrap_err().to_string().contains("max_concurrent"));
        assert!(second.held.is_empty());
        rl.settle(&mut first, Some(0.10), true).await;
        let (third, r) = run(&rl, "k", None, 0.10).await;
        r.unwrap();
        assert_eq!(
            third.shown.as_ref().unwrap().remaining,
            80,
            "100 cents - 10 spent - 10 reserved: the refused one holds nothing"
        );
    }

    #[tokio::test]
    async fn the_header_policy_is_shown_first_and_keys_without_limits_count_nothing() {
        let rl = limits(&[("k", key(Some(5), None, None))]);
        let p = parse("3;w=60").unwrap();
        assert!(!rl.applies(Some("other"), None));
        assert!(rl.applies(Some("other"), Some(&p)));
        let (c, r) = run(&rl, "k", Some(&p), 0.0).await;
        r.unwrap();
        let s = c.shown.unwrap();
        assert_eq!((s.limit, s.remaining, s.policy.as_str()), (3, 2, "3;w=60"));
        let h = Shown {
            limit: 3,
            remaining: 0,
            policy: "3;w=60;s=user".into(),
            reset_secs: 13,
        }
        .headers();
        assert_eq!(
            h[2],
            (headers::RATELIMIT_POLICY, "3;w=60;s=user".to_string())
        );
        assert_eq!(h[3], (headers::RATELIMIT_RESET, "13".to_string()));
    }

    #[test]
    fn key_limits_are_checked_field_by_field() {
        let bad = KeyLimits {
            requests: Some(0),
            window_secs: 0,
            usd_per_day: Some(-1.0),
            usd_per_month: Some(f64::NAN),
            max_concurrent: Some(0),
        };
        let fields: Vec<String> = bad
            .check("auth.keys[0].limits")
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "auth.keys[0].limits.requests",
                "auth.keys[0].limits.window_secs",
                "auth.keys[0].limits.usd_per_day",
                "auth.keys[0].limits.usd_per_month",
                "auth.keys[0].limits.max_concurrent",
            ]
        );
        let empty = key(None, None, None);
        assert!(empty.check("x")[0].1.contains("sets no limit"));
        assert!(key(Some(1), None, None).check("x").is_empty());
    }
}
