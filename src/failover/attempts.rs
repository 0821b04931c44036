//! The attempt state machine: one request's targets, cursor, retry schedule, attempt log and the verdict on each outcome.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::health::Health;
use super::{CodeSet, RetryPolicy};
use crate::config::OriginPolicy;
use crate::error::GatewayError;
use crate::routing::Route;
use crate::unified::response::Report;
use crate::unified::Candidate;

/// One upstream the request may go to: the primary, or a `Helicone-Fallbacks` entry.
pub struct Target {
    pub route: Route,
    /// The SSRF-checked address the upstream connection goes to.
    pub addr: SocketAddr,
    pub policy: OriginPolicy,
    pub approved: bool,
    /// `scheme://host[:port]`, for quotas, health and logs.
    pub origin: String,
    /// Replaces the client's headers for this target (fallback entries).
    pub headers: Option<Vec<(HeaderName, HeaderValue)>>,
    /// This target's body when it differs from the client's (`bodyKeyOverride`).
    pub body: Option<Bytes>,
    /// Statuses that move on to the next target (fallback entries, unified attempts).
    pub on_codes: Option<CodeSet>,
    /// The provider and model of a unified-API attempt.
    pub unified: Option<Candidate>,
    /// What this attempt's dialect or model could not take, dropped or clamped on the way.
    pub dropped: Vec<String>,
}

/// One upstream attempt, for the request's log record (the record's own type).
pub use crate::export::record::Attempt;

/// What follows an attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Hand this answer (or error) to the client.
    Accept,
    /// Try the same target again after the delay.
    Retry(Duration),
    /// Move on to the next target.
    Fallback,
}

impl Verdict {
    /// Another attempt follows.
    pub fn again(self) -> bool {
        !matches!(self, Verdict::Accept)
    }
}

/// What to do before the next attempt may start (see [`Attempts::next_step`]).
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Wait this long (the backoff), then ask again.
    Wait(Duration),
    /// Charge this unapproved origin's quota, then tell [`Attempts::charged`] or
    /// [`Attempts::on_quota_refused`].
    Charge(String),
    /// The attempt has started on [`Attempts::target`].
    Go,
}

/// How an error during an exchange (after the connection was made) ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Recovery {
    /// Another attempt follows (a retry or the next target).
    Again,
    /// The same attempt once more on a fresh connection (a stale pooled one failed).
    Reconnect,
    /// The error is final.
    GiveUp,
}

/// An error during an exchange, as far as the attempt machine cares.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeError<'a> {
    /// The upstream side failed (not the client).
    pub upstream: bool,
    /// A final response header already reached the client.
    pub answered: bool,
    /// The request body can be sent again.
    pub replayable: bool,
    /// The connection came from the pool.
    pub reused: bool,
    pub timed_out: bool,
    pub message: &'a str,
}

/// Where the attempts' outcomes are counted (the metrics).
pub trait Observer {
    /// An attempt ended with `status` (0: no response), or its target was `skipped`.
    fn attempt(&self, provider: &str, status: u16, skipped: bool);
    fn retry(&self, provider: &str);
}

impl Observer for crate::metrics::Metrics {
    fn attempt(&self, provider: &str, status: u16, skipped: bool) {
        crate::metrics::Metrics::attempt(self, provider, status, skipped)
    }
    fn retry(&self, provider: &str) {
        crate::metrics::Metrics::retry(self, provider)
    }
}

/// Statuses worth another try: 429 and 5xx (connection errors count as 502, timeouts as 504).
pub fn retryable(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// The status a failed connection or exchange counts as: 504 for a timeout, else 502.
pub fn error_status(timed_out: bool) -> u16 {
    if timed_out {
        504
    } else {
        502
    }
}

/// `Retry-After: <seconds>` (HTTP dates are not honoured).
pub fn parse_retry_after(v: Option<&[u8]>) -> Option<Duration> {
    let s = std::str::from_utf8(v?).ok()?;
    s.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl RetryPolicy {
    /// Delay before retry `k` (0-based): min(min * factor^k * jitter[1,2), max); an upstream
    /// `Retry-After` within `max` wins.
    pub fn delay(&self, k: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        if let Some(ra) = retry_after.filter(|ra| *ra <= self.max) {
            return ra;
        }
        let ms = self.min.as_millis() as f64 * self.factor.powi(k as i32) * jitter.clamp(1.0, 2.0);
        Duration::from_millis(ms.min(self.max.as_millis() as f64) as u64)
    }
}

/// Uniform in [1, 2): the backoff jitter.
fn jitter() -> f64 {
    1.0 + (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Choosing the next attempt (before the first, or after a verdict).
    Choosing,
    /// The current target passed the circuit check; its quota is being charged.
    Charging,
    /// An attempt is in flight without a verdict.
    Running,
    /// The attempt in flight has its verdict.
    Judged(Verdict),
}

/// The failover/retry state of one request.
pub struct Attempts {
    /// Primary target first, then fallbacks (or the unified API's provider attempts).
    targets: Vec<Target>,
    /// Index of the current target.
    index: usize,
    /// Retries done on the current target.
    retries: u32,
    /// Retries done in total.
    total_retries: u32,
    retry: Option<RetryPolicy>,
    /// `Helicone-Fallbacks` drove the plan (adds `Helicone-Fallback-Index`; open circuits are skipped).
    fallbacks: bool,
    log: Vec<Attempt>,
    /// When the running attempt started.
    started: Option<Instant>,
    /// Upstream attempts started so far (a stale pooled connection may cost one more).
    connections: u32,
    /// The first attempt's origin quota is charged when it starts, not at admission.
    first_quota_deferred: bool,
    phase: Phase,
    jitter: fn() -> f64,
}

impl Default for Attempts {
    fn default() -> Self {
        Attempts {
            targets: Vec::new(),
            index: 0,
            retries: 0,
            total_retries: 0,
            retry: None,
            fallbacks: false,
            log: Vec::new(),
            started: None,
            connections: 0,
            first_quota_deferred: false,
            phase: Phase::Choosing,
            jitter,
        }
    }
}

impl Attempts {
    /// `Helicone-Retry-*`, parsed (`None`: no retries).
    pub fn set_retry(&mut self, retry: Option<RetryPolicy>) {
        self.retry = retry;
    }

    /// The targets come from `Helicone-Fallbacks`.
    pub fn use_fallbacks(&mut self) {
        self.fallbacks = true;
    }

    pub fn is_fallbacks(&self) -> bool {
        self.fallbacks
    }

    /// The first attempt's quota is charged when it starts (a cache hit is not charged).
    pub fn defer_first_quota(&mut self, deferred: bool) {
        self.first_quota_deferred = deferred;
    }

    /// The target whose quota admission charges now, if any: the first, unless deferred.
    pub fn charged_at_admission(&self) -> Option<&Target> {
        self.targets
            .first()
            .filter(|t| !self.first_quota_deferred && !t.approved)
    }

    pub fn push(&mut self, t: Target) {
        self.targets.push(t);
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn targets_mut(&mut self) -> &mut [Target] {
        &mut self.targets
    }

    pub fn target(&self) -> Option<&Target> {
        self.targets.get(self.index)
    }

    /// Index of the current target (`Helicone-Fallback-Index`).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Points at target `i` (a cache hit answered by that unified attempt).
    pub fn point_at(&mut self, i: usize) {
        if i < self.targets.len() {
            self.index = i;
        }
    }

    pub fn total_retries(&self) -> u32 {
        self.total_retries
    }

    /// Upstream attempts started so far.
    pub fn connections(&self) -> u32 {
        self.connections
    }

    /// The attempts made, in order.
    pub fn log(&self) -> &[Attempt] {
        &self.log
    }

    /// The fallback index the log record shows: only when fallbacks were tried.
    pub fn fallback_index(&self) -> Option<usize> {
        (self.fallbacks && !self.log.is_empty()).then_some(self.index)
    }

    fn provider_label(&self) -> &str {
        self.target().map_or("none", |t| t.route.provider_label())
    }

    fn is_last(&self) -> bool {
        self.index + 1 >= self.targets.len()
    }

    /// What comes before the next attempt: the backoff, skipping open-circuited fallback
    /// entries, and the origin quota of every attempt after the first.
    pub fn next_step(&mut self, health: &Health, obs: &dyn Observer) -> Result<Step, GatewayError> {
        if let Phase::Judged(Verdict::Retry(d)) = self.phase {
            self.phase = Phase::Choosing;
            return Ok(Step::Wait(d));
        }
        loop {
            let Some(t) = self.target() else {
                return Err(GatewayError::Internal("no upstream target".into()));
            };
            if self.phase != Phase::Charging {
                if self.fallbacks && !self.is_last() && !health.allow(&t.origin) {
                    obs.attempt(self.provider_label(), 0, true);
                    self.started = Some(Instant::now());
                    self.record(0, Some("circuit open: skipped".into()));
                    self.index += 1;
                    self.retries = 0;
                    continue;
                }
                if (self.connections > 0 || self.first_quota_deferred) && !t.approved {
                    let origin = t.origin.clone();
                    self.phase = Phase::Charging;
                    return Ok(Step::Charge(origin));
                }
            }
            self.connections += 1;
            self.phase = Phase::Running;
            self.started = Some(Instant::now());
            return Ok(Step::Go);
        }
    }

    /// The quota asked for by [`Step::Charge`] was charged: the next step starts the attempt.
    pub fn charged(&mut self) {
        debug_assert_eq!(self.phase, Phase::Charging);
    }

    /// The quota asked for by [`Step::Charge`] refused the attempt: it counts as a 429.
    pub fn on_quota_refused(
        &mut self,
        health: &Health,
        obs: &dyn Observer,
        e: &GatewayError,
    ) -> Verdict {
        self.started = Some(Instant::now());
        self.judge(health, obs, 429, None, Some(e.to_string()))
    }

    /// The upstream answered `status` (with this `Retry-After` header).
    pub fn on_response(
        &mut self,
        health: &Health,
        obs: &dyn Observer,
        status: u16,
        retry_after: Option<&[u8]>,
    ) -> Verdict {
        let retry_after = parse_retry_after(retry_after);
        self.judge(health, obs, status, retry_after, None)
    }

    /// No connection was made: refused (502) or timed out (504).
    pub fn on_connect_error(
        &mut self,
        health: &Health,
        obs: &dyn Observer,
        timed_out: bool,
        message: &str,
    ) -> Verdict {
        self.judge(
            health,
            obs,
            error_status(timed_out),
            None,
            Some(message.to_string()),
        )
    }

    /// The exchange failed after the connection was made.
    pub fn on_exchange_error(
        &mut self,
        health: &Health,
        obs: &dyn Observer,
        e: ExchangeError,
    ) -> Recovery {
        match self.phase {
            // the answer was dropped for another try
            Phase::Judged(v) if v.again() => return Recovery::Again,
            // the answer was accepted: what follows is the client's
            Phase::Judged(_) => return Recovery::GiveUp,
            _ => {}
        }
        if !e.upstream || e.answered || !e.replayable {
            // the client is gone, or bytes already reached it
            return Recovery::GiveUp;
        }
        let v = self.judge(
            health,
            obs,
            error_status(e.timed_out),
            None,
            Some(e.message.to_string()),
        );
        if v.again() {
            Recovery::Again
        } else if e.reused {
            Recovery::Reconnect
        } else {
            Recovery::GiveUp
        }
    }

    /// Records the running attempt's outcome, reports it to health and metrics, and decides.
    fn judge(
        &mut self,
        health: &Health,
        obs: &dyn Observer,
        status: u16,
        retry_after: Option<Duration>,
        error: Option<String>,
    ) -> Verdict {
        let failed = status >= 500 || error.is_some();
        if let Some(t) = self.target() {
            health.record(&t.origin, failed);
        }
        obs.attempt(
            self.provider_label(),
            if error.is_some() { 0 } else { status },
            false,
        );
        self.record(status, error);
        let v = self.decide(status, retry_after);
        if let Verdict::Retry(_) = v {
            obs.retry(self.provider_label());
        }
        self.phase = Phase::Judged(v);
        v
    }

    /// Retries (429, 5xx) within the target while the policy allows, then the next target when
    /// its `onCodes` match and one follows; otherwise the answer stands.
    fn decide(&mut self, status: u16, retry_after: Option<Duration>) -> Verdict {
        if let Some(p) = &self.retry {
            if retryable(status) && self.retries < p.retries {
                let d = p.delay(self.retries, retry_after, (self.jitter)());
                self.retries += 1;
                self.total_retries += 1;
                return Verdict::Retry(d);
            }
        }
        let on_codes = self.target().and_then(|t| t.on_codes.as_ref());
        if !self.is_last() && on_codes.is_some_and(|c| c.matches(status)) {
            self.index += 1;
            self.retries = 0;
            return Verdict::Fallback;
        }
        Verdict::Accept
    }

    /// Records the end of the running attempt.
    fn record(&mut self, status: u16, error: Option<String>) {
        let latency_ms = self
            .started
            .take()
            .map_or(0, |s| s.elapsed().as_millis() as u64);
        let target = self.target().map_or_else(String::new, |t| t.origin.clone());
        let unified = self.target().and_then(|t| t.unified.as_ref());
        let provider = unified.map(|c| c.endpoint.name.clone());
        let model = unified.map(|c| c.model_id.clone());
        self.log.push(Attempt {
            target,
            status,
            latency_ms,
            error,
            retry: self.retries,
            provider,
            model,
        });
    }

    /// The unified attempts so far, as the client's error lists them.
    pub fn reports(&self) -> Vec<Report> {
        self.log
            .iter()
            .map(|a| Report {
                provider: a.provider.clone().unwrap_or_default(),
                model: a.model.clone().unwrap_or_default(),
                status: a.status,
                message: a
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("the provider answered {}", a.status)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::health::{HealthConf, State};
    use crate::routing::{Origin, RouteKind};
    use std::cell::RefCell;

    /// The metrics the machine reports, as lines.
    #[derive(Default)]
    struct Seen(RefCell<Vec<String>>);

    impl Observer for Seen {
        fn attempt(&self, provider: &str, status: u16, skipped: bool) {
            let what = if skipped {
                "skipped".into()
            } else {
                status.to_string()
            };
            self.0
                .borrow_mut()
                .push(format!("attempt {provider} {what}"));
        }
        fn retry(&self, provider: &str) {
            self.0.borrow_mut().push(format!("retry {provider}"));
        }
    }

    fn health(threshold: u32, cooldown_secs: u64) -> Health {
        let gauge =
            prometheus::IntGaugeVec::new(prometheus::Opts::new("t", "t"), &["origin"]).unwrap();
        Health::with_gauge(
            HealthConf {
                failure_threshold: threshold,
                cooldown_secs,
            },
            gauge,
        )
    }

    fn target(origin: &str, approved: bool, on_codes: Option<CodeSet>) -> Target {
        let (o, _) = Origin::parse(origin).unwrap();
        Target {
            route: Route {
                origin: o,
                upstream_path: "/".into(),
                provider: None,
                approved,
                kind: RouteKind::Fallback,
            },
            addr: "1.1.1.1:443".parse().unwrap(),
            policy: OriginPolicy::default(),
            approved,
            origin: origin.into(),
            headers: None,
            body: None,
            on_codes,
            unified: None,
            dropped: Vec::new(),
        }
    }

    fn codes(ranges: &[(u16, u16)]) -> Option<CodeSet> {
        Some(CodeSet(ranges.to_vec()))
    }

    fn policy(retries: u32, min_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            retries,
            factor: 2.0,
            min: Duration::from_millis(min_ms),
            max: Duration::from_millis(max_ms),
        }
    }

    /// A request over `targets`, with a fixed jitter of 1.
    fn attempts(targets: Vec<Target>, retry: Option<RetryPolicy>, fallbacks: bool) -> Attempts {
        let mut a = Attempts {
            jitter: || 1.0,
            ..Attempts::default()
        };
        for t in targets {
            a.push(t);
        }
        a.set_retry(retry);
        if fallbacks {
            a.use_fallbacks();
        }
        a
    }

    /// One approved passthrough target (no quota to charge).
    fn single(retry: Option<RetryPolicy>) -> Attempts {
        attempts(vec![target("https://a.example", true, None)], retry, false)
    }

    /// `n` approved fallback entries `https://e<i>.example`, each with these `onCodes`.
    fn chain(n: usize, on: &[(u16, u16)], retry: Option<RetryPolicy>) -> Attempts {
        let ts = (0..n)
            .map(|i| target(&format!("https://e{i}.example"), true, codes(on)))
            .collect();
        attempts(ts, retry, true)
    }

    /// Starts the next attempt, taking every wait; returns the waits.
    fn start(a: &mut Attempts, h: &Health, obs: &Seen) -> Vec<Duration> {
        let mut waits = Vec::new();
        loop {
            match a.next_step(h, obs).unwrap() {
                Step::Wait(d) => waits.push(d),
                Step::Charge(o) => panic!("unexpected charge of {o}"),
                Step::Go => return waits,
            }
        }
    }

    fn respond(a: &mut Attempts, h: &Health, status: u16, retry_after: Option<&str>) -> Verdict {
        let obs = Seen::default();
        start(a, h, &obs);
        a.on_response(h, &obs, status, retry_after.map(str::as_bytes))
    }

    #[test]
    fn without_retry_enabled_nothing_is_retried() {
        let h = health(100, 30);
        for status in [429, 500, 502, 503, 504] {
            let mut a = single(None);
            assert_eq!(
                respond(&mut a, &h, status, None),
                Verdict::Accept,
                "{status}"
            );
            let obs = Seen::default();
            start(&mut a, &h, &obs);
            assert_eq!(
                a.on_connect_error(&h, &obs, false, "refused"),
                Verdict::Accept
            );
        }
    }

    #[test]
    fn with_retry_enabled_429_5xx_refused_and_timeouts_are_retried_nothing_else() {
        let h = health(100, 30);
        let p = Some(policy(5, 10, 1000));
        for status in [429, 500, 502, 503, 504, 599] {
            let mut a = single(p.clone());
            assert!(
                matches!(respond(&mut a, &h, status, None), Verdict::Retry(_)),
                "{status}"
            );
        }
        for status in [200, 201, 301, 400, 401, 403, 404, 418, 499] {
            let mut a = single(p.clone());
            assert_eq!(
                respond(&mut a, &h, status, None),
                Verdict::Accept,
                "{status}"
            );
        }
        for timed_out in [false, true] {
            let mut a = single(p.clone());
            let obs = Seen::default();
            start(&mut a, &h, &obs);
            let v = a.on_connect_error(&h, &obs, timed_out, "boom");
            assert!(matches!(v, Verdict::Retry(_)));
        }
    }

    #[test]
    fn refused_counts_as_502_and_timeout_as_504_in_the_log() {
        let h = health(100, 30);
        let mut a = single(None);
        let obs = Seen::default();
        start(&mut a, &h, &obs);
        a.on_connect_error(&h, &obs, false, "connection refused");
        let mut b = single(None);
        start(&mut b, &h, &obs);
        b.on_connect_error(&h, &obs, true, "timed out");
        assert_eq!(a.log()[0].status, 502);
        assert_eq!(a.log()[0].error.as_deref(), Some("connection refused"));
        assert_eq!(b.log()[0].status, 504);
        assert_eq!(error_status(false), 502);
        assert_eq!(error_status(true), 504);
        // the metrics count an error (0), not the status it stands for
        assert_eq!(obs.0.borrow()[0], "attempt unknown 0");
    }

    #[test]
    fn retry_num_bounds_the_retries_and_the_last_answer_is_returned_as_is() {
        let h = health(100, 30);
        let mut a = single(Some(policy(3, 10, 1000)));
        for _ in 0..3 {
            assert!(matches!(respond(&mut a, &h, 503, None), Verdict::Retry(_)));
        }
        assert_eq!(respond(&mut a, &h, 503, None), Verdict::Accept);
        assert_eq!(a.total_retries(), 3);
        let tries: Vec<u32> = a.log().iter().map(|l| l.retry).collect();
        assert_eq!(
            tries,
            [0, 1, 2, 3],
            "each attempt logs the retries before it"
        );
        assert_eq!(a.connections(), 4);
        // zero retries: the first answer stands
        let mut a = single(Some(policy(0, 10, 1000)));
        assert_eq!(respond(&mut a, &h, 500, None), Verdict::Accept);
    }

    #[test]
    fn backoff_grows_by_the_factor_from_min_and_is_capped_at_max() {
        let h = health(100, 30);
        let mut a = single(Some(policy(5, 100, 1000)));
        let obs = Seen::default();
        let mut waits = Vec::new();
        for _ in 0..5 {
            waits.extend(start(&mut a, &h, &obs));
            assert!(a.on_response(&h, &obs, 500, None).again());
        }
        waits.extend(start(&mut a, &h, &obs));
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000]);
        let retries = obs
            .0
            .borrow()
            .iter()
            .filter(|l| l.starts_with("retry"))
            .count();
        assert_eq!(retries, 5);
    }

    #[test]
    fn backoff_jitter_is_within_one_and_two() {
        let p = policy(5, 100, 10_000);
        assert_eq!(p.delay(2, None, 1.5), Duration::from_millis(600));
        let p3 = RetryPolicy {
            factor: 3.0,
            ..p.clone()
        };
        assert_eq!(
            p3.delay(2, None, 1.0),
            Duration::from_millis(900),
            "min * factor^k"
        );
        assert_eq!(
            p.delay(0, Some(p.max), 1.0),
            p.max,
            "a Retry-After equal to the max is honoured"
        );
        assert_eq!(
            p.delay(0, None, 0.5),
            Duration::from_millis(100),
            "clamped to 1"
        );
        assert_eq!(
            p.delay(0, None, 3.0),
            Duration::from_millis(200),
            "clamped to 2"
        );
        for _ in 0..100 {
            let j = jitter();
            assert!((1.0..2.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn retry_after_is_honoured_within_the_max_only() {
        let h = health(100, 30);
        let mut a = single(Some(policy(5, 100, 2000)));
        assert_eq!(
            respond(&mut a, &h, 429, Some("1")),
            Verdict::Retry(Duration::from_secs(1))
        );
        // beyond the max: the backoff (retry 1: 100 * 2)
        assert_eq!(
            respond(&mut a, &h, 429, Some("60")),
            Verdict::Retry(Duration::from_millis(200))
        );
        // an HTTP date is not honoured
        assert_eq!(
            respond(&mut a, &h, 503, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Verdict::Retry(Duration::from_millis(400))
        );
        assert_eq!(
            parse_retry_after(Some(b" 2 ")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(parse_retry_after(Some(b"-1")), None);
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn fallback_only_when_the_status_matches_on_codes_and_a_later_entry_exists() {
        let h = health(100, 30);
        let mut a = chain(3, &[(429, 429), (500, 599)], None);
        assert_eq!(respond(&mut a, &h, 500, None), Verdict::Fallback);
        assert_eq!(a.index(), 1);
        assert_eq!(
            respond(&mut a, &h, 404, None),
            Verdict::Accept,
            "404 is not in onCodes"
        );
        assert_eq!(a.index(), 1);
        let mut a = chain(3, &[(500, 599)], None);
        assert_eq!(respond(&mut a, &h, 429, None), Verdict::Accept);
        let mut a = chain(2, &[(500, 599)], None);
        assert_eq!(respond(&mut a, &h, 200, None), Verdict::Accept);
        assert_eq!(a.fallback_index(), Some(0));
        assert_eq!(respond(&mut a, &h, 503, None), Verdict::Fallback);
        assert_eq!(
            respond(&mut a, &h, 503, None),
            Verdict::Accept,
            "the last entry's answer is returned whatever it is"
        );
        assert_eq!(a.fallback_index(), Some(1));
        let targets: Vec<&str> = a.log().iter().map(|l| l.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "https://e0.example",
                "https://e0.example",
                "https://e1.example"
            ]
        );
        // an entry without onCodes never falls back
        let mut a = chain(2, &[], None);
        assert_eq!(respond(&mut a, &h, 500, None), Verdict::Accept);
    }

    #[test]
    fn connection_errors_match_on_codes_as_502_and_timeouts_as_504() {
        let h = health(100, 30);
        let obs = Seen::default();
        for (timed_out, on, want) in [
            (false, (502, 502), Verdict::Fallback),
            (false, (504, 504), Verdict::Accept),
            (true, (504, 504), Verdict::Fallback),
            (true, (502, 502), Verdict::Accept),
        ] {
            let mut a = chain(2, &[on], None);
            start(&mut a, &h, &obs);
            assert_eq!(
                a.on_connect_error(&h, &obs, timed_out, "x"),
                want,
                "{timed_out} {on:?}"
            );
        }
    }

    #[test]
    fn retries_run_within_each_entry_before_falling_back() {
        let h = health(100, 30);
        let mut a = chain(2, &[(500, 599)], Some(policy(1, 10, 100)));
        assert!(matches!(respond(&mut a, &h, 500, None), Verdict::Retry(_)));
        assert_eq!(respond(&mut a, &h, 500, None), Verdict::Fallback);
        assert!(
            matches!(respond(&mut a, &h, 503, None), Verdict::Retry(d) if d == Duration::from_millis(10)),
            "the next entry starts its own schedule"
        );
        assert_eq!(respond(&mut a, &h, 503, None), Verdict::Accept);
        assert_eq!(a.total_retries(), 2);
        let tries: Vec<u32> = a.log().iter().map(|l| l.retry).collect();
        assert_eq!(tries, [0, 1, 0, 1]);
    }

    #[test]
    fn unified_attempts_fall_through_on_any_failure() {
        let h = health(100, 30);
        let on = CodeSet::non_success();
        let ts = (0..4)
            .map(|i| target(&format!("https://p{i}.example"), true, Some(on.clone())))
            .collect();
        let mut a = attempts(ts, None, false);
        assert_eq!(respond(&mut a, &h, 401, None), Verdict::Fallback);
        assert_eq!(respond(&mut a, &h, 400, None), Verdict::Fallback);
        let obs = Seen::default();
        start(&mut a, &h, &obs);
        assert_eq!(
            a.on_connect_error(&h, &obs, false, "refused"),
            Verdict::Fallback
        );
        assert_eq!(
            respond(&mut a, &h, 429, None),
            Verdict::Accept,
            "the last answer stands"
        );
        let reports = a.reports();
        assert_eq!(reports.len(), 4);
        assert_eq!(reports[0].message, "the provider answered 401");
        assert_eq!(reports[2].message, "refused");
        assert_eq!(a.fallback_index(), None, "no Helicone-Fallbacks");
        let mut a = attempts(
            vec![
                target("https://p.example", true, Some(on.clone())),
                target("https://q.example", true, Some(on)),
            ],
            None,
            false,
        );
        assert_eq!(respond(&mut a, &h, 200, None), Verdict::Accept);
    }

    #[test]
    fn failing_attempts_are_reported_to_health_and_open_the_circuit() {
        let h = health(2, 3600);
        let mut a = single(Some(policy(5, 1, 1)));
        assert!(respond(&mut a, &h, 503, None).again());
        assert_eq!(
            h.state("https://a.example"),
            Some(State::Closed { failures: 1 })
        );
        assert!(respond(&mut a, &h, 429, None).again(), "429 is retried");
        assert_eq!(
            h.state("https://a.example"),
            Some(State::Closed { failures: 0 }),
            "but a 429 is no failure of the provider (it answered)"
        );
        assert!(respond(&mut a, &h, 500, None).again());
        assert_eq!(respond(&mut a, &h, 200, None), Verdict::Accept);
        assert_eq!(
            h.state("https://a.example"),
            Some(State::Closed { failures: 0 })
        );
        let obs = Seen::default();
        start(&mut a, &h, &obs);
        a.on_connect_error(&h, &obs, false, "refused");
        start(&mut a, &h, &obs);
        a.on_connect_error(&h, &obs, true, "timeout");
        assert!(matches!(
            h.state("https://a.example"),
            Some(State::Open { .. })
        ));
    }

    #[test]
    fn open_circuits_are_skipped_in_fallback_chains_except_the_last_entry() {
        let h = health(1, 3600);
        h.record("https://e0.example", true);
        h.record("https://e1.example", true);
        let obs = Seen::default();
        let mut a = chain(3, &[(500, 599)], None);
        start(&mut a, &h, &obs);
        assert_eq!(a.index(), 2, "e0 and e1 are open");
        let log: Vec<(u16, Option<&str>)> = a
            .log()
            .iter()
            .map(|l| (l.status, l.error.as_deref()))
            .collect();
        assert_eq!(log, [(0, Some("circuit open: skipped")); 2]);
        assert_eq!(obs.0.borrow().as_slice(), ["attempt unknown skipped"; 2]);
        assert_eq!(a.connections(), 1);
        // the last entry is tried even when its circuit is open
        h.record("https://e2.example", true);
        let mut a = chain(3, &[(500, 599)], None);
        start(&mut a, &h, &obs);
        assert_eq!(a.index(), 2);
        // without fallbacks the only target is tried
        let mut a = attempts(vec![target("https://e0.example", true, None)], None, false);
        start(&mut a, &h, &obs);
        assert!(a.log().is_empty());
    }

    #[test]
    fn a_retry_whose_failure_opened_the_circuit_moves_on() {
        let h = health(1, 3600);
        let obs = Seen::default();
        let mut a = chain(2, &[(500, 599)], Some(policy(3, 5, 5)));
        start(&mut a, &h, &obs);
        assert!(matches!(
            a.on_response(&h, &obs, 500, None),
            Verdict::Retry(_)
        ));
        // the backoff is waited, then the open circuit is skipped
        assert_eq!(start(&mut a, &h, &obs), [Duration::from_millis(5)]);
        assert_eq!(a.index(), 1);
        assert_eq!(
            a.log().last().unwrap().error.as_deref(),
            Some("circuit open: skipped")
        );
    }

    #[test]
    fn an_expired_circuit_lets_one_probe_through() {
        let h = health(1, 0);
        h.record("https://e0.example", true);
        let obs = Seen::default();
        let mut a = chain(2, &[(500, 599)], None);
        start(&mut a, &h, &obs);
        assert_eq!(a.index(), 0, "this request is the probe");
        assert_eq!(h.state("https://e0.example"), Some(State::HalfOpen));
        let mut b = chain(2, &[(500, 599)], None);
        start(&mut b, &h, &obs);
        assert_eq!(b.index(), 1, "others keep skipping while it runs");
        a.on_response(&h, &obs, 200, None);
        assert_eq!(
            h.state("https://e0.example"),
            Some(State::Closed { failures: 0 })
        );
    }

    #[test]
    fn quotas_are_charged_after_the_first_attempt_or_when_deferred() {
        let h = health(100, 30);
        let obs = Seen::default();
        let ts = vec![
            target("https://u0.example", false, codes(&[(500, 599)])),
            target("https://u1.example", false, codes(&[(500, 599)])),
        ];
        let mut a = attempts(ts, None, true);
        assert_eq!(
            a.charged_at_admission().map(|t| t.origin.as_str()),
            Some("https://u0.example")
        );
        assert_eq!(
            a.next_step(&h, &obs).unwrap(),
            Step::Go,
            "charged at admission"
        );
        a.on_response(&h, &obs, 500, None);
        assert_eq!(
            a.next_step(&h, &obs).unwrap(),
            Step::Charge("https://u1.example".into())
        );
        a.charged();
        assert_eq!(a.next_step(&h, &obs).unwrap(), Step::Go);
        assert_eq!(a.target().unwrap().origin, "https://u1.example");

        let mut a = attempts(vec![target("https://u0.example", false, None)], None, false);
        a.defer_first_quota(true);
        assert!(a.charged_at_admission().is_none());
        assert_eq!(
            a.next_step(&h, &obs).unwrap(),
            Step::Charge("https://u0.example".into())
        );
        // approved origins have no quota
        let mut a = single(None);
        a.defer_first_quota(true);
        assert!(a.charged_at_admission().is_none());
        assert_eq!(a.next_step(&h, &obs).unwrap(), Step::Go);
    }

    #[test]
    fn a_refused_quota_counts_as_429() {
        let h = health(100, 30);
        let obs = Seen::default();
        let refused = GatewayError::BadRequest("quota".into());
        let ts = vec![
            target("https://u0.example", true, codes(&[(429, 429)])),
            target("https://u1.example", false, codes(&[(429, 429)])),
            target("https://u2.example", true, None),
        ];
        let mut a = attempts(ts, None, true);
        assert_eq!(a.next_step(&h, &obs).unwrap(), Step::Go);
        assert_eq!(a.on_response(&h, &obs, 429, None), Verdict::Fallback);
        assert!(matches!(a.next_step(&h, &obs).unwrap(), Step::Charge(_)));
        assert_eq!(a.on_quota_refused(&h, &obs, &refused), Verdict::Fallback);
        assert_eq!(a.next_step(&h, &obs).unwrap(), Step::Go);
        assert_eq!(a.target().unwrap().origin, "https://u2.example");
        assert_eq!(a.log()[1].status, 429);
        assert_eq!(a.log()[1].target, "https://u1.example");
        // the last target's refusal is the answer
        let mut a = attempts(vec![target("https://u0.example", false, None)], None, false);
        a.defer_first_quota(true);
        assert!(matches!(a.next_step(&h, &obs).unwrap(), Step::Charge(_)));
        assert_eq!(a.on_quota_refused(&h, &obs, &refused), Verdict::Accept);
    }

    fn exchange(message: &str) -> ExchangeError<'_> {
        ExchangeError {
            upstream: true,
            answered: false,
            replayable: true,
            reused: false,
            timed_out: false,
            message,
        }
    }

    #[test]
    fn exchange_errors_before_an_answer_are_judged_like_connect_errors() {
        let h = health(100, 30);
        let obs = Seen::default();
        let mut a = chain(2, &[(502, 502)], None);
        start(&mut a, &h, &obs);
        assert_eq!(
            a.on_exchange_error(&h, &obs, exchange("reset")),
            Recovery::Again
        );
        assert_eq!(a.index(), 1);
        start(&mut a, &h, &obs);
        assert_eq!(
            a.on_exchange_error(&h, &obs, exchange("reset")),
            Recovery::GiveUp
        );
        let mut a = single(None);
        start(&mut a, &h, &obs);
        let e = ExchangeError {
            reused: true,
            ..exchange("stale")
        };
        assert_eq!(a.on_exchange_error(&h, &obs, e), Recovery::Reconnect);
        // the reconnect is a new attempt on the same target
        start(&mut a, &h, &obs);
        assert_eq!(a.connections(), 2);
        let mut a = single(Some(policy(1, 1, 1)));
        start(&mut a, &h, &obs);
        let e = ExchangeError {
            timed_out: true,
            ..exchange("slow")
        };
        assert_eq!(a.on_exchange_error(&h, &obs, e), Recovery::Again);
        assert_eq!(a.log()[0].status, 504);
    }

    #[test]
    fn exchange_errors_that_are_not_retried() {
        let h = health(100, 30);
        let obs = Seen::default();
        let retry = Some(policy(3, 1, 1));
        for e in [
            ExchangeError {
                upstream: false,
                ..exchange("client gone")
            },
            ExchangeError {
                answered: true,
                ..exchange("mid-body")
            },
            ExchangeError {
                replayable: false,
                ..exchange("body gone")
            },
        ] {
            let mut a = single(retry.clone());
            start(&mut a, &h, &obs);
            assert_eq!(
                a.on_exchange_error(&h, &obs, e),
                Recovery::GiveUp,
                "{}",
                e.message
            );
            assert!(a.log().is_empty(), "not judged");
        }
        // an accepted answer that breaks later is the client's
        let mut a = single(retry.clone());
        start(&mut a, &h, &obs);
        assert_eq!(a.on_response(&h, &obs, 200, None), Verdict::Accept);
        assert_eq!(
            a.on_exchange_error(&h, &obs, exchange("late")),
            Recovery::GiveUp
        );
        assert_eq!(a.log().len(), 1);
        // an answer dropped for a retry (Pingora reports it as an error) keeps the retry
        let mut a = single(retry);
        start(&mut a, &h, &obs);
        assert!(a.on_response(&h, &obs, 503, None).again());
        assert_eq!(
            a.on_exchange_error(&h, &obs, exchange("dropped")),
            Recovery::Again
        );
        assert_eq!(a.log().len(), 1, "judged once");
    }

    #[test]
    fn the_log_records_target_status_latency_error_and_retry_number() {
        let h = health(100, 30);
        let mut a = single(Some(policy(1, 1, 1)));
        let obs = Seen::default();
        start(&mut a, &h, &obs);
        a.on_connect_error(&h, &obs, false, "refused");
        start(&mut a, &h, &obs);
        a.on_response(&h, &obs, 200, None);
        let json = serde_json::to_value(a.log()).unwrap();
        assert_eq!(json[0]["target"], "https://a.example");
        assert_eq!(json[0]["status"], 502);
        assert_eq!(json[0]["error"], "refused");
        assert_eq!(json[0]["retry"], 0);
        assert!(json[0]["latency_ms"].is_u64());
        assert_eq!(json[1]["status"], 200);
        assert_eq!(json[1]["retry"], 1);
        assert!(json[1]["error"].is_null());
        assert!(json[1].get("provider").is_none());
        assert_eq!(a.fallback_index(), None);
    }

    #[test]
    fn no_target_is_an_internal_error() {
        let h = health(100, 30);
        let mut a = Attempts::default();
        assert_eq!(a.next_step(&h, &Seen::default()).unwrap_err().status(), 500);
    }
}
