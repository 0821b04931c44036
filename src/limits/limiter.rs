//! One interface over the two counter stores (exact in memory, or shared in Redis), with the operator's choice when Redis does not answer: admit (fail-open, the default) or refuse.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

pub use super::redis_window::Ask;
use super::redis_window::{RedisReservation, RedisWindows};
use super::window::{Decision, Reservation, Span, Windows};
use crate::error::GatewayError;

/// What happens when the shared store cannot be reached.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Admit the request (counted and logged): an outage of Redis is not an outage of the API.
    #[default]
    Open,
    /// Refuse with 503: limits must hold even then.
    Closed,
}

/// Units held for an admitted request, in whichever store counted them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    Local(Reservation),
    Redis(Box<RedisReservation>),
    /// Admitted without counting (the store failed open).
    Uncounted,
}

/// The outcome of admitting several checks at once.
#[derive(Debug)]
pub struct AllAdmission {
    /// Each check's decision, up to the first refusal.
    pub decisions: Vec<Decision>,
    /// One per check when every check admitted.
    pub held: Option<Vec<Held>>,
    /// The shared store failed and the request was admitted anyway.
    pub failed_open: bool,
}

pub enum Store {
    Local(Windows),
    Redis(Box<RedisWindows>),
}

pub struct Limiter {
    store: Store,
    on_error: OnStoreError,
    /// Counts the shared store's failures.
    errors: prometheus::IntCounter,
    /// Last error log line (errors are logged at most every 10 s).
    last_log: std::sync::Mutex<Option<std::time::Instant>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Limiter {
    pub fn new(store: Store, on_error: OnStoreError, errors: prometheus::IntCounter) -> Limiter {
        Limiter {
            store,
            on_error,
            errors,
            last_log: std::sync::Mutex::new(None),
        }
    }

    /// Counts a failure of the shared store and logs it (at most every 10 s).
    fn failed(&self, what: &str) {
        self.errors.inc();
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(std::time::Instant::now());
            log::warn!("rate limits: Redis {what}");
        }
    }

    /// Admits every check, or none: a refusal gives back what the checks before it took.
    /// Redis decides them all in one atomic script (one round trip).
    pub async fn admit_all(&self, checks: &[Ask<'_>]) -> Result<AllAdmission, GatewayError> {
        match &self.store {
            Store::Local(w) => {
                let now = now_ms();
                let mut decisions = Vec::with_capacity(checks.len());
                let mut held = Vec::with_capacity(checks.len());
                for c in checks {
                    let (d, r) = match c.span {
                        Span::Sliding(window) => w.admit(c.scope, window, c.quota, c.units, now),
                        Span::Period(left) => w.admit_fixed(c.scope, left, c.quota, c.units, now),
                    };
                    decisions.push(d);
                    match r {
                        Some(r) => held.push(r),
                        None => {
                            for r in &held {
                                w.settle(r, 0);
                            }
                            return Ok(AllAdmission {
                                decisions,
                                held: None,
                                failed_open: false,
                            });
                        }
                    }
                }
                Ok(AllAdmission {
                    decisions,
                    held: Some(held.into_iter().map(Held::Local).collect()),
                    failed_open: false,
                })
            }
            Store::Redis(r) => match r.admit_all(checks).await {
                Ok(o) => Ok(AllAdmission {
                    decisions: o.decisions,
                    held: o
                        .held
                        .map(|h| h.into_iter().map(|r| Held::Redis(Box::new(r))).collect()),
                    failed_open: false,
                }),
                Err(e) => match self.on_error {
                    OnStoreError::Open => {
                        self.failed(&format!("{e}; admitting without counting (fail-open)"));
                        Ok(AllAdmission {
                            decisions: checks
                                .iter()
                                .map(|c| Decision {
                                    admitted: true,
                                    remaining: c.quota.saturating_sub(c.units),
                                    reset: match c.span {
                                        Span::Sliding(d) | Span::Period(d) => d,
                                    },
                                })
                                .collect(),
                            held: Some(checks.iter().map(|_| Held::Uncounted).collect()),
                            failed_open: true,
                        })
                    }
                    OnStoreError::Closed => {
                        self.failed(&format!("{e}; refusing (limits.on_store_error: closed)"));
                        Err(GatewayError::Unavailable(format!(
                            "rate limits cannot be checked ({e}) and this gateway refuses requests it cannot count (limits.on_store_error: closed); try again shortly"
                        )))
                    }
                },
            },
        }
    }

    /// Every check's room now, taking none (`None`: the shared store did not answer; counted
    /// and logged like any of its failures).
    pub async fn peek_all(&self, checks: &[Ask<'_>]) -> Option<Vec<Decision>> {
        match &self.store {
            Store::Local(w) => {
                let now = now_ms();
                Some(
                    checks
                        .iter()
                        .map(|c| w.peek(c.scope, c.span, c.quota, now))
                        .collect(),
                )
            }
            Store::Redis(r) => match r.peek_all(checks).await {
                Ok(d) => Some(d),
                Err(e) => {
                    self.failed(&format!("{e} (reading limits for a request not counted)"));
                    None
                }
            },
        }
    }

    /// Settles several holdings at once (one round trip to Redis).
    pub async fn settle_all(&self, items: &[(&Held, u64)]) {
        match &self.store {
            Store::Local(w) => {
                for (h, units) in items {
                    if let Held::Local(r) = h {
                        w.settle(r, *units);
                    }
                }
            }
            Store::Redis(s) => {
                let redis: Vec<(&RedisReservation, u64)> = items
                    .iter()
                    .filter_map(|(h, u)| match h {
                        Held::Redis(r) => Some((&**r, *u)),
                        _ => None,
                    })
                    .collect();
                if let Err(e) = s.settle_all(&redis).await {
                    self.failed(&format!("{e} (settling reservations)"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One check's outcome (the limiter itself admits a request's checks together).
    #[derive(Debug)]
    struct Admission {
        decision: Decision,
        held: Option<Held>,
        failed_open: bool,
    }

    impl Limiter {
        /// Admits `units` in `scope` under `quota` per `span`.
        async fn admit(
            &self,
            scope: &str,
            span: Span,
            quota: u64,
            units: u64,
        ) -> Result<Admission, GatewayError> {
            let mut all = self
                .admit_all(&[Ask {
                    scope,
                    span,
                    quota,
                    units,
                }])
                .await?;
            let decision = all.decisions.pop().ok_or_else(|| {
                GatewayError::Internal("rate limits: an admission decided nothing".into())
            })?;
            Ok(Admission {
                decision,
                held: all.held.and_then(|mut h| h.pop()),
                failed_open: all.failed_open,
            })
        }

        async fn settle(&self, held: &Held, units: u64) {
            self.settle_all(&[(held, units)]).await
        }
    }

    pub(crate) fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("t", "t").unwrap()
    }

    /// A store whose Redis is a closed local port: every command fails.
    fn unreachable_redis() -> RedisWindows {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let link = crate::shared_redis::Link::new(
            &format!("redis://127.0.0.1:{port}/0"),
            Duration::from_millis(200),
        )
        .unwrap();
        RedisWindows::new(link, "x:".into())
    }

    #[tokio::test]
    async fn the_local_store_counts_exactly_and_settles() {
        let l = Limiter::new(
            Store::Local(Windows::default()),
            OnStoreError::Open,
            counter(),
        );
        let w = Span::Sliding(Duration::from_secs(60));
        for _ in 0..3 {
            assert!(l.admit("s", w, 3, 1).await.unwrap().decision.admitted);
        }
        let a = l.admit("s", w, 3, 1).await.unwrap();
        assert!(!a.decision.admitted && a.held.is_none());
        let a = l.admit("c", w, 100, 90).await.unwrap();
        l.settle(a.held.as_ref().unwrap(), 5).await;
        assert!(l.admit("c", w, 100, 90).await.unwrap().decision.admitted);
    }

    #[tokio::test]
    async fn redis_down_fails_open_by_default_and_closed_when_asked() {
        let w = Span::Sliding(Duration::from_secs(60));
        let open = Limiter::new(
            Store::Redis(Box::new(unreachable_redis())),
            OnStoreError::Open,
            counter(),
        );
        let a = open.admit("s", w, 3, 1).await.unwrap();
        assert!(a.decision.admitted && a.failed_open && a.held == Some(Held::Uncounted));
        let closed = Limiter::new(
            Store::Redis(Box::new(unreachable_redis())),
            OnStoreError::Closed,
            counter(),
        );
        let e = closed.admit("s", w, 3, 1).await.unwrap_err();
        assert_eq!(e.status(), 503);
        assert!(e.to_string().contains("on_store_error"), "{e}");
    }
}
