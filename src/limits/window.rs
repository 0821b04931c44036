//! Exact sliding-window counters: per scope, a log of `(time, units)` entries in the last window.
//! `quota` N admits exactly N units per window, at any instant (no fixed-window edge burst and no
//! sketch over-counting). Admission reserves its units; a reservation can be settled later to
//! the real amount (cents: the estimate at admission, the real cost once the request finished).
//! Calendar budgets (a UTC day, a month) need no log: a plain counter per period does, kept until
//! the period ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const SHARDS: usize = 16;
/// Every this many admissions a shard drops its scopes with no entry left.
const SWEEP_EVERY: u64 = 4096;

struct Entry {
    at_ms: u64,
    id: u64,
    units: u64,
}

#[derive(Default)]
struct Log {
    entries: VecDeque<Entry>,
    used: u64,
    /// The window of the last admission (a sweep prunes each scope by its own window).
    window_ms: u64,
}

impl Log {
    fn prune(&mut self, now_ms: u64, window_ms: u64) {
        while let Some(e) = self.entries.front() {
            if e.at_ms + window_ms > now_ms {
                break;
            }
            self.used -= e.units;
            self.entries.pop_front();
        }
    }
}

/// What one admission decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    /// Units left in the window after this decision.
    pub remaining: u64,
    /// When the window has room again for this request's units (admitted: when its oldest
    /// entry leaves the window).
    pub reset: Duration,
}

/// What a counter spans: a sliding window, or the time left in a calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Sliding(Duration),
    Period(Duration),
}

/// Units held for an admitted request, to be settled to its real amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    scope: String,
    slot: Slot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// An entry of a sliding log, by id.
    Entry(u64),
    /// Units added to a period counter.
    Counter(u64),
}

/// A calendar period's counter.
struct Counter {
    used: u64,
    expires_ms: u64,
}

#[derive(Default)]
struct Shard {
    logs: HashMap<String, Log>,
    counters: HashMap<String, Counter>,
}

pub struct Windows {
    shards: Vec<Mutex<Shard>>,
    next_id: AtomicU64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            next_id: AtomicU64::new(1),
        }
    }
}

fn shard_of(scope: &str) -> usize {
    // FNV-1a: stable and cheap; only spreads scopes over the shards
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in scope.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

impl Windows {
    /// Admits `units` in `scope` if the last `window` holds at most `quota - units`; the
    /// reservation comes with an admission.
    pub fn admit(
        &self,
        scope: &str,
        window: Duration,
        quota: u64,
        units: u64,
        now_ms: u64,
    ) -> (Decision, Option<Reservation>) {
        let window_ms = window.as_millis() as u64;
        let mut shard = self.lock(scope, now_ms);
        // taken under the shard's lock: ids grow along each log, which settling searches by id
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let log = shard.logs.entry(scope.to_string()).or_default();
        log.window_ms = window_ms;
        log.prune(now_ms, window_ms);
        if log.used + units <= quota {
            log.used += units;
            log.entries.push_back(Entry {
                at_ms: now_ms,
                id,
                units,
            });
            let oldest = log.entries.front().map_or(now_ms, |e| e.at_ms);
            let decision = Decision {
                admitted: true,
                remaining: quota - log.used,
                reset: Duration::from_millis(oldest + window_ms - now_ms),
            };
            return (
                decision,
                Some(Reservation {
                    scope: scope.to_string(),
                    slot: Slot::Entry(id),
                }),
            );
        }
        // room again once enough of the oldest entries have left
        let need = (log.used + units).saturating_sub(quota);
        let mut freed = 0;
        let mut at = now_ms;
        for e in &log.entries {
            freed += e.units;
            at = e.at_ms + window_ms;
            if freed >= need {
                break;
            }
        }
        let decision = Decision {
            admitted: false,
            remaining: quota.saturating_sub(log.used),
            reset: Duration::from_millis(at.saturating_sub(now_ms)),
        };
        (decision, None)
    }

    /// The scope's shard, locked; every `SWEEP_EVERY` calls it first drops what has expired.
    fn lock(&self, scope: &str, now_ms: u64) -> std::sync::MutexGuard<'_, Shard> {
        let mut shard = self.shards[shard_of(scope)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self
            .next_id
            .load(Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            shard.logs.retain(|_, log| {
                log.prune(now_ms, log.window_ms);
                !log.entries.is_empty()
            });
            shard.counters.retain(|_, c| c.expires_ms > now_ms);
        }
        shard
    }

    /// Admits `units` in the period counter `scope` (which ends `left` from now) if it holds at
    /// most `quota - units`.
    pub fn admit_fixed(
        &self,
        scope: &str,
        left: Duration,
        quota: u64,
        units: u64,
        now_ms: u64,
    ) -> (Decision, Option<Reservation>) {
        let mut shard = self.lock(scope, now_ms);
        self.next_id.fetch_add(1, Ordering::Relaxed);
        let expires_ms = now_ms + left.as_millis() as u64;
        let c = shard.counters.entry(scope.to_string()).or_insert(Counter {
            used: 0,
            expires_ms,
        });
        if c.expires_ms <= now_ms {
            *c = Counter {
                used: 0,
                expires_ms,
            };
        }
        let admitted = c.used + units <= quota;
        if admitted {
            c.used += units;
        }
        let decision = Decision {
            admitted,
            remaining: quota.saturating_sub(c.used),
            reset: Duration::from_millis(c.expires_ms.saturating_sub(now_ms)),
        };
        let r = admitted.then(|| Reservation {
            scope: scope.to_string(),
            slot: Slot::Counter(units),
        });
        (decision, r)
    }

    /// The room `scope` has now, taking nothing (what a request that is not counted is shown).
    pub fn peek(&self, scope: &str, span: Span, quota: u64, now_ms: u64) -> Decision {
        let mut shard = self.lock(scope, now_ms);
        let (used, reset_ms) = match span {
            Span::Sliding(window) => {
                let window_ms = window.as_millis() as u64;
                match shard.logs.get_mut(scope) {
                    Some(log) => {
                        log.prune(now_ms, window_ms);
                        let oldest = log.entries.front().map(|e| e.at_ms + window_ms);
                        (log.used, oldest.map_or(0, |at| at.saturating_sub(now_ms)))
                    }
                    None => (0, 0),
                }
            }
            Span::Period(left) => match shard.counters.get(scope) {
                Some(c) if c.expires_ms > now_ms => (c.used, c.expires_ms - now_ms),
                _ => (0, left.as_millis() as u64),
            },
        };
        Decision {
            admitted: used <= quota,
            remaining: quota.saturating_sub(used),
            reset: Duration::from_millis(reset_ms),
        }
    }

    /// Replaces a reservation's units by the real amount (0 releases it).
    pub fn settle(&self, r: &Reservation, units: u64) {
        let mut shard = self.shards[shard_of(&r.scope)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match r.slot {
            Slot::Entry(id) => {
                if let Some(log) = shard.logs.get_mut(&r.scope) {
                    if let Ok(i) = log.entries.binary_search_by_key(&id, |e| e.id) {
                        let e = &mut log.entries[i];
                        log.used = log.used - e.units + units;
                        e.units = units;
                        if units == 0 {
                            // a released slot leaves the log at once
                            log.entries.remove(i);
                        }
                    }
                }
            }
            Slot::Counter(held) => {
                if let Some(c) = shard.counters.get_mut(&r.scope) {
                    c.used = (c.used + units).saturating_sub(held);
                }
            }
        }
    }

    /// Units counted in `scope` over the last `window`.
    pub fn used(&self, scope: &str, window: Duration, now_ms: u64) -> u64 {
        let mut shard = self.shards[shard_of(scope)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shard.logs.get_mut(scope).map_or(0, |log| {
            log.prune(now_ms, window.as_millis() as u64);
            log.used
        })
    }

    /// Scopes held (for tests and metrics).
    pub fn scopes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).logs.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    #[test]
    fn a_quota_of_n_admits_exactly_n_and_the_window_slides() {
        let w = Windows::default();
        let mut admitted = 0;
        for i in 0..5 {
            let (d, r) = w.admit("k", W, 3, 1, 1_000 + i * 10);
            if d.admitted {
                admitted += 1;
                assert!(r.is_some());
            } else {
                assert_eq!(d.remaining, 0);
                // the first entry (t=1000) leaves at 61000
                assert_eq!(d.reset, Duration::from_millis(61_000 - (1_000 + i * 10)));
            }
        }
        assert_eq!(admitted, 3, "exactly the quota (Helicone admits N-1)");
        // just before the first entry leaves: still full; just after: one slot
        assert!(!w.admit("k", W, 3, 1, 60_999).0.admitted);
        let (d, _) = w.admit("k", W, 3, 1, 61_000);
        assert!(d.admitted && d.remaining == 0, "{d:?}");
        // another scope is not affected
        assert!(w.admit("other", W, 3, 1, 61_000).0.admitted);
    }

    #[test]
    fn a_peek_shows_the_room_and_takes_none() {
        let w = Windows::default();
        let fresh = w.peek("k", Span::Sliding(W), 3, 1_000);
        assert_eq!((fresh.remaining, fresh.reset), (3, Duration::ZERO));
        w.admit("k", W, 3, 1, 1_000);
        for _ in 0..5 {
            let d = w.peek("k", Span::Sliding(W), 3, 11_000);
            assert_eq!((d.remaining, d.reset), (2, Duration::from_millis(50_000)));
        }
        assert_eq!(w.used("k", W, 11_000), 1, "peeks took nothing");
        // the entry has left by 61000
        assert_eq!(w.peek("k", Span::Sliding(W), 3, 61_000).remaining, 3);
        // period counters
        let left = Duration::from_secs(100);
        assert_eq!(w.peek("d", Span::Period(left), 10, 0).reset, left);
        w.admit_fixed("d", left, 10, 4, 0);
        let d = w.peek("d", Span::Period(left), 10, 40_000);
        assert_eq!((d.remaining, d.reset), (6, Duration::from_secs(60)));
        assert_eq!(w.peek("d", Span::Period(left), 10, 100_000).remaining, 10);
    }

    #[test]
    fn reservations_settle_to_the_real_amount() {
        let w = Windows::default();
        // 100 cents; an estimate of 60 is reserved, the request really cost 10
        let (d, r) = w.admit("c", W, 100, 60, 0);
        assert!(d.admitted && d.remaining == 40);
        assert!(
            !w.admit("c", W, 100, 50, 1).0.admitted,
            "the reservation holds"
        );
        w.settle(&r.unwrap(), 10);
        assert_eq!(w.used("c", W, 2), 10);
        let (d, _) = w.admit("c", W, 100, 50, 3);
        assert!(d.admitted && d.remaining == 40, "{d:?}");
    }

    #[test]
    fn concurrent_admissions_never_exceed_the_quota() {
        let w = std::sync::Arc::new(Windows::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| w.admit("hot", W, 250, 1, 5).0.admitted)
                        .count()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 250);
    }

    #[test]
    fn a_sweep_prunes_each_scope_by_its_own_window() {
        let w = Windows::default();
        let day = Duration::from_secs(86_400);
        assert!(w.admit("day", day, 10, 4, 0).0.admitted);
        // enough short-window admissions later to sweep every shard
        for i in 0..SWEEP_EVERY * 2 {
            w.admit(
                &format!("s{i}"),
                Duration::from_millis(10),
                1,
                1,
                60_000 + i,
            );
        }
        assert_eq!(w.used("day", day, 70_000), 4, "the day's count survives");
    }

    #[test]
    fn period_counters_reserve_settle_and_start_again_with_the_next_period() {
        let w = Windows::default();
        let day = Duration::from_secs(10);
        let (d, r) = w.admit_fixed("k|day|1", day, 100, 60, 0);
        assert!(d.admitted && d.remaining == 40 && d.reset == day);
        assert!(!w.admit_fixed("k|day|1", day, 100, 50, 1).0.admitted);
        w.settle(&r.unwrap(), 10);
        let (d, _) = w.admit_fixed("k|day|1", day, 100, 50, 2);
        assert!(d.admitted && d.remaining == 40, "{d:?}");
        // once the period is over its counter starts from zero
        let (d, _) = w.admit_fixed("k|day|1", day, 100, 100, 10_001);
        assert!(d.admitted && d.remaining == 0, "{d:?}");
    }

    #[test]
    fn a_released_slot_leaves_the_log_and_settling_finds_entries_by_id() {
        let w = Windows::default();
        let lease = Duration::from_secs(900);
        let held: Vec<_> = (0..100)
            .map(|i| w.admit("slots", lease, 1000, 1, i).1.unwrap())
            .collect();
        for r in held.iter().step_by(2) {
            w.settle(r, 0);
        }
        assert_eq!(w.used("slots", lease, 200), 50);
        // the remaining ones are still found after the removals
        for r in held.iter().skip(1).step_by(2) {
            w.settle(r, 0);
        }
        assert_eq!(w.used("slots", lease, 200), 0);
    }

    #[test]
    fn idle_scopes_are_swept() {
        let w = Windows::default();
        for i in 0..SWEEP_EVERY * 2 {
            w.admit(&format!("user-{i}"), Duration::from_millis(10), 1, 1, i);
        }
        assert!(w.scopes() < (SWEEP_EVERY * 2) as usize, "{}", w.scopes());
    }
}
