//! Passive provider health: a per-origin circuit breaker that fallback chains consult.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use prometheus::{register_int_gauge_vec, IntGaugeVec};
use serde::Deserialize;

/// Origins tracked at most; beyond that new origins are not tracked (always allowed).
const MAX_TRACKED: usize = 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConf {
    /// Consecutive failures (connection error, timeout, 5xx) that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit is skipped by fallback chains before one probe is let through.
    pub cooldown_secs: u64,
}

impl Default for HealthConf {
    fn default() -> Self {
        HealthConf {
            failure_threshold: 5,
            cooldown_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; others keep skipping.
    HalfOpen,
}

impl State {
    fn gauge(self) -> i64 {
        match self {
            State::Closed { .. } => 0,
            State::Open { .. } => 1,
            State::HalfOpen => 2,
        }
    }
}

pub struct Health {
    conf: HealthConf,
    states: RwLock<HashMap<String, State>>,
    gauge: IntGaugeVec,
}

impl Health {
    pub fn new(conf: HealthConf) -> Result<Health, prometheus::Error> {
        let gauge = register_int_gauge_vec!(
            "switchyard_circuit_state",
            "Circuit state per upstream origin: 0 closed, 1 open (skipped by fallback chains), 2 half-open (probing)",
            &["origin"]
        )?;
        Ok(Self::with_gauge(conf, gauge))
    }

    pub fn with_gauge(conf: HealthConf, gauge: IntGaugeVec) -> Health {
        Health {
            conf,
            states: RwLock::new(HashMap::new()),
            gauge,
        }
    }

    fn set(&self, states: &mut HashMap<String, State>, origin: &str, s: State) {
        let before = states.insert(origin.to_string(), s);
        if before.map(State::gauge) != Some(s.gauge()) {
            self.gauge.with_label_values(&[origin]).set(s.gauge());
            match s {
                State::Open { .. } => log::warn!(
                    "circuit for {origin} opened: skipped by fallback chains for {} s",
                    self.conf.cooldown_secs
                ),
                State::HalfOpen => {
                    log::info!("circuit for {origin} half-open: letting one probe request through")
                }
                State::Closed { .. } => log::info!("circuit for {origin} closed"),
            }
        }
    }

    /// May a fallback chain use `origin` now? An expired open circuit lets exactly one probe through.
    pub fn allow(&self, origin: &str) -> bool {
        if self.healthy(origin) {
            return true;
        }
        let mut states = self.states.write().unwrap_or_else(|p| p.into_inner());
        match states.get(origin).copied() {
            None | Some(State::Closed { .. }) => true,
            Some(State::HalfOpen) => false,
            Some(State::Open { until }) => {
                if Instant::now() >= until {
                    self.set(&mut states, origin, State::HalfOpen);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Records an attempt's outcome: `failed` for connection errors, timeouts and 5xx.
    pub fn record(&self, origin: &str, failed: bool) {
        // the common case, a success on a healthy origin, takes only a shared lock
        if !failed && self.healthy(origin) {
            return;
        }
        let mut states = self.states.write().unwrap_or_else(|p| p.into_inner());
        let current = states.get(origin).copied();
        if current.is_none() && (!failed || states.len() >= MAX_TRACKED) {
            return;
        }
        let next = match (current.unwrap_or(State::Closed { failures: 0 }), failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::HalfOpen, true) | (State::Open { .. }, true) => self.open(),
            (State::Closed { failures }, true) if failures + 1 >= self.conf.failure_threshold => {
                self.open()
            }
            (State::Closed { failures }, true) => State::Closed {
                failures: failures + 1,
            },
        };
        self.set(&mut states, origin, next);
    }

    /// Untracked, or closed with no failure counted.
    fn healthy(&self, origin: &str) -> bool {
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        matches!(
            states.get(origin),
            None | Some(State::Closed { failures: 0 })
        )
    }

    fn open(&self) -> State {
        State::Open {
            until: Instant::now() + Duration::from_secs(self.conf.cooldown_secs),
        }
    }

    pub fn state(&self, origin: &str) -> Option<State> {
        self.states
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(origin)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn health(threshold: u32, cooldown_secs: u64) -> Health {
        let gauge = IntGaugeVec::new(Opts::new("t", "t"), &["origin"]).unwrap();
        Health::with_gauge(
            HealthConf {
                failure_threshold: threshold,
                cooldown_secs,
            },
            gauge,
        )
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_cooldown() {
        let h = health(3, 0);
        let o = "https://a.example";
        h.record(o, true);
        h.record(o, true);
        h.record(o, false);
        assert!(h.allow(o), "a success resets the count");
        h.record(o, true);
        h.record(o, true);
        assert!(h.allow(o));
        h.record(o, true);
        assert!(matches!(h.state(o), Some(State::Open { .. })));
        // cool-down 0: the next caller is the probe, the one after is still skipped
        assert!(h.allow(o));
        assert_eq!(h.state(o), Some(State::HalfOpen));
        assert!(!h.allow(o));
        h.record(o, false);
        assert_eq!(h.state(o), Some(State::Closed { failures: 0 }));
        assert!(h.allow(o));
    }

    #[test]
    fn open_circuit_is_skipped_during_cooldown_and_a_failed_probe_reopens() {
        let h = health(1, 3600);
        let o = "https://b.example";
        h.record(o, true);
        assert!(!h.allow(o));
        let h = health(1, 0);
        h.record(o, true);
        assert!(h.allow(o));
        h.record(o, true);
        assert!(matches!(h.state(o), Some(State::Open { .. })));
    }
}
