//! Exact sliding-window counters: per scope, a log of `(time, units)` entries in the last window. `quota` N admits exactly N units per window, at any instant (no fixed-window edge burst and no sketch over-counting). Admission reserves its units; a reservation can be settled later to the real amount (cents: the estimate at admission, the real cost once the request finished). Calendar budgets (a UTC day, a month) need no log: a plain counter per period does, kept until the period ends. The store is bounded in scopes and bytes: over its bound it forgets the least recently used scope (as nginx's `limit_req_zone` does), so no client can grow it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use lru::LruCache;

const SHARDS: usize = 16;
/// Every this many admissions a shard drops its scopes with no entry left.
const SWEEP_EVERY: u64 = 4096;
/// What one scope costs besides its key and its log's entries: the LRU node (key, value, links),
/// the hash table's slot and the allocator's rounding, about.
const SCOPE_OVERHEAD: usize = 160;

/// The scopes a client names (`Helicone-RateLimit-Policy`'s, one per user or property value it
/// sends) start with this; only they are evicted. The others, a gateway key's own limits and
/// budgets, are as many as the config has keys: a flood of new users cannot make the gateway
/// forget what a key has spent today.
pub const CLIENT_SCOPE_PREFIX: &str = "p|";

/// `limits.max_scopes`: counters the in-memory store holds at most.
pub const DEFAULT_MAX_SCOPES: usize = 1_000_000;
/// `limits.max_memory_bytes`: about how many bytes the in-memory store holds at most.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// The in-memory store's bound; each of its shards holds at most a shard's share of it, and the
/// least recently used scope of a shard is evicted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub scopes: usize,
    pub bytes: usize,
}

impl Default for Bound {
    fn default() -> Self {
        Bound {
            scopes: DEFAULT_MAX_SCOPES,
            bytes: DEFAULT_MAX_MEMORY_BYTES,
        }
    }
}

impl Bound {
    /// The smallest bound that gives every shard room for one scope.
    pub const MIN_SCOPES: usize = SHARDS;
    /// The smallest byte bound: 4 KiB per shard.
    pub const MIN_BYTES: usize = SHARDS * 4096;
}

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
#[derive(Default)]
struct Counter {
    used: u64,
    expires_ms: u64,
}

/// What one scope counts in: a sliding log, or a period counter (a scope's name says which:
/// each is used by one kind of check only).
#[derive(Default)]
struct Counts {
    log: Log,
    counter: Counter,
}

impl Counts {
    /// Nothing left to count: every log entry has left its window, and no period is running.
    fn expired(&mut self, now_ms: u64) -> bool {
        self.log.prune(now_ms, self.log.window_ms);
        self.log.entries.is_empty() && self.counter.expires_ms <= now_ms
    }
}

/// About the bytes a scope holds: its key, its node and its log's entries.
fn cost(key: &str, counts: &Counts) -> usize {
    SCOPE_OVERHEAD + key.len() + counts.log.entries.capacity() * std::mem::size_of::<Entry>()
}

struct Shard {
    /// Most recently used first; a scope is a log or a period counter.
    scopes: LruCache<String, Counts>,
    /// The sum of `cost` over `scopes`.
    bytes: usize,
}

pub struct Windows {
    shards: Vec<Mutex<Shard>>,
    next_id: AtomicU64,
    /// A shard's share of the bound.
    shard_scopes: usize,
    shard_bytes: usize,
    /// Scopes forgotten to stay within the bound.
    evicted: AtomicU64,
    /// `switchyard_rate_limit_evictions_total`, when the store is the gateway's.
    evictions: Option<prometheus::IntCounter>,
}

impl Default for Windows {
    fn default() -> Self {
        Windows::new(Bound::default(), None)
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
    /// A store that holds at most `bound` (each shard a share of it), counting its evictions in
    /// `evictions`.
    pub fn new(bound: Bound, evictions: Option<prometheus::IntCounter>) -> Windows {
        Windows {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        scopes: LruCache::unbounded(),
                        bytes: 0,
                    })
                })
                .collect(),
            next_id: AtomicU64::new(1),
            shard_scopes: (bound.scopes / SHARDS).max(1),
            shard_bytes: (bound.bytes / SHARDS).max(1),
            evicted: AtomicU64::new(0),
            evictions,
        }
    }

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
        let mut guard = self.lock(scope, now_ms);
        let shard = &mut *guard;
        // taken under the shard's lock: ids grow along each log, which settling searches by id
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut fresh = false;
        let counts = shard.scopes.get_or_insert_mut_ref(scope, || {
            fresh = true;
            Counts::default()
        });
        // a new scope adds all of its cost
        let before = if fresh { 0 } else { cost(scope, counts) };
        let log = &mut counts.log;
        log.window_ms = window_ms;
        log.prune(now_ms, window_ms);
        let (decision, reservation) = if log.used + units <= quota {
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
            (
                decision,
                Some(Reservation {
                    scope: scope.to_string(),
                    slot: Slot::Entry(id),
                }),
            )
        } else {
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
        };
        let after = cost(scope, counts);
        shard.bytes = shard.bytes + after - before;
        self.bound(shard, scope);
        (decision, reservation)
    }

    /// Evicts the shard's least recently used client scopes until it is within its share of the
    /// bound; never `current`, the scope just used (the most recent one).
    fn bound(&self, shard: &mut Shard, current: &str) {
        while shard.scopes.len() > self.shard_scopes || shard.bytes > self.shard_bytes {
            // least recently used first; a key's own scopes are passed over
            let Some(victim) = shard
                .scopes
                .iter()
                .rev()
                .map(|(k, _)| k)
                .find(|k| k.starts_with(CLIENT_SCOPE_PREFIX) && k.as_str() != current)
                .cloned()
            else {
                break;
            };
            if let Some((key, counts)) = shard.scopes.pop_entry(victim.as_str()) {
                shard.bytes -= cost(&key, &counts);
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.evictions {
                m.inc();
            }
        }
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
            shard.scopes.retain(|_, counts| !counts.expired(now_ms));
            // the logs that were pruned hold their capacity; a log much emptier than its
            // capacity gives the rest back
            let mut bytes = 0;
            for (key, counts) in shard.scopes.iter_mut() {
                let entries = &mut counts.log.entries;
                if entries.capacity() > 64 && entries.len() < entries.capacity() / 4 {
                    entries.shrink_to(entries.len() * 2);
                }
                bytes += cost(key, counts);
            }
            shard.bytes = bytes;
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
        let mut guard = self.lock(scope, now_ms);
        let shard = &mut *guard;
        self.next_id.fetch_add(1, Ordering::Relaxed);
        let expires_ms = now_ms + left.as_millis() as u64;
        let mut fresh = false;
        let counts = shard.scopes.get_or_insert_mut_ref(scope, || {
            fresh = true;
            Counts::default()
        });
        // a new scope adds all of its cost
        let before = if fresh { 0 } else { cost(scope, counts) };
        let c = &mut counts.counter;
        if c.expires_ms <= now_ms {
            // a new scope, or a new period: it starts from zero
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
        let after = cost(scope, counts);
        shard.bytes = shard.bytes + after - before;
        self.bound(shard, scope);
        let r = admitted.then(|| Reservation {
            scope: scope.to_string(),
            slot: Slot::Counter(units),
        });
        (decision, r)
    }

    /// The room `scope` has now, taking nothing (what a request that is not counted is shown).
    pub fn peek(&self, scope: &str, span: Span, quota: u64, now_ms: u64) -> Decision {
        let mut shard = self.lock(scope, now_ms);
        let counts = shard.scopes.get_mut(scope);
        let (used, reset_ms) = match span {
            Span::Sliding(window) => {
                let window_ms = window.as_millis() as u64;
                match counts.map(|c| &mut c.log) {
                    Some(log) => {
                        log.prune(now_ms, window_ms);
                        let oldest = log.entries.front().map(|e| e.at_ms + window_ms);
                        (log.used, oldest.map_or(0, |at| at.saturating_sub(now_ms)))
                    }
                    None => (0, 0),
                }
            }
            Span::Period(left) => match counts.map(|c| &c.counter) {
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

    /// Replaces a reservation's units by the real amount (0 releases it). A reservation whose
    /// scope was evicted meanwhile settles nothing.
    pub fn settle(&self, r: &Reservation, units: u64) {
        let mut shard = self.shards[shard_of(&r.scope)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // settling is not a use: it does not keep a scope from being evicted
        let Some(counts) = shard.scopes.peek_mut(r.scope.as_str()) else {
            return;
        };
        match r.slot {
            Slot::Entry(id) => {
                let log = &mut counts.log;
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
            Slot::Counter(held) => {
                let c = &mut counts.counter;
                c.used = (c.used + units).saturating_sub(held);
            }
        }
    }

    /// Units counted in `scope` over the last `window`.
    pub fn used(&self, scope: &str, window: Duration, now_ms: u64) -> u64 {
        let mut shard = self.shards[shard_of(scope)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shard.scopes.peek_mut(scope).map_or(0, |c| {
            c.log.prune(now_ms, window.as_millis() as u64);
            c.log.used
        })
    }

    /// Scopes held (for tests and metrics).
    pub fn scopes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).scopes.len())
            .sum()
    }

    /// About the bytes the scopes hold.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).bytes)
            .sum()
    }

    /// Scopes evicted to stay within the bound.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
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

    /// `n` scope names that fall in shard 0, each `len` bytes long.
    fn in_one_shard(n: usize, len: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("p|{i:0>len$}"))
            .filter(|k| shard_of(k) == 0)
            .take(n)
            .collect()
    }

    #[test]
    fn the_store_stays_within_its_bound_in_scopes_and_bytes_under_many_distinct_scopes() {
        let evictions = prometheus::IntCounter::new("e", "e").unwrap();
        let bound = Bound {
            scopes: 160,
            bytes: 1 << 20,
        };
        let w = Windows::new(bound, Some(evictions.clone()));
        let year = Duration::from_secs(365 * 86_400);
        let mut hot = 0;
        for i in 0..20_000u64 {
            // a year-long window: nothing expires, only the bound removes scopes
            w.admit(&format!("p|-|r31536000|user={i:0>300}"), year, 1000, 1, i);
            if i % 10 == 0 && w.admit("p|hot", year, 1_000_000, 1, i).0.admitted {
                hot += 1;
            }
            assert!(w.scopes() <= 160 && w.bytes() <= 1 << 20, "at {i}");
        }
        assert_eq!(w.scopes(), 160, "every shard full, none over");
        assert!(w.evicted() >= 20_000 - 160, "{}", w.evicted());
        assert_eq!(evictions.get(), w.evicted(), "the metric counts them");
        let recount: usize = w
            .shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                s.scopes.iter().map(|(k, c)| cost(k, c)).sum::<usize>()
            })
            .sum();
        assert_eq!(w.bytes(), recount, "the byte count is kept exactly");
        // the hot scope was used more recently than any other of its shard: its count is whole
        assert_eq!(w.used("p|hot", year, 20_000), hot);
        // a byte bound below the scope bound holds too: 1 KB keys, 8 KiB per shard
        let w = Windows::new(
            Bound {
                scopes: 1_000_000,
                bytes: 16 * 8192,
            },
            None,
        );
        for i in 0..5_000u64 {
            w.admit(&format!("p|{i:0>1000}"), year, 10, 1, i);
        }
        assert!(w.bytes() <= 16 * 8192, "{}", w.bytes());
        assert!(w.scopes() <= 16 * 8, "{}", w.scopes());
        assert!(w.evicted() >= 5_000 - 16 * 8);
    }

    #[test]
    fn the_least_recently_used_scope_is_evicted_first() {
        // 10 scopes per shard
        let w = Windows::new(
            Bound {
                scopes: 160,
                bytes: 1 << 20,
            },
            None,
        );
        let keys = in_one_shard(12, 8);
        for (i, k) in keys[..10].iter().enumerate() {
            assert!(w.admit(k, W, 5, 1, i as u64).0.admitted);
        }
        // keys[0] is used again, a period counter too: keys[1] is now the least recently used
        w.admit(&keys[0], W, 5, 1, 20);
        w.admit(&keys[10], W, 5, 1, 21);
        assert_eq!(w.evicted(), 1);
        assert_eq!(
            w.used(&keys[1], W, 22),
            0,
            "the least recently used is forgotten"
        );
        assert_eq!(w.used(&keys[0], W, 22), 2, "the one used again is kept");
        for k in &keys[2..11] {
            assert_eq!(w.used(k, W, 22), 1, "{k}");
        }
        // a peek is a use; settling is not
        let (_, r) = w.admit(&keys[3], W, 5, 1, 23);
        w.peek(&keys[2], Span::Sliding(W), 5, 24);
        w.settle(&r.unwrap(), 1);
        w.admit(&keys[11], W, 5, 1, 25);
        assert_eq!(w.used(&keys[4], W, 26), 0, "keys[4] was the oldest");
        assert_eq!(w.used(&keys[2], W, 26), 1);
        // a forgotten scope starts again from zero (the documented price of the bound)
        assert_eq!(w.admit(&keys[1], W, 5, 1, 27).0.remaining, 4);
    }

    #[test]
    fn a_gateway_keys_own_scopes_are_never_evicted() {
        let w = Windows::new(
            Bound {
                scopes: 160,
                bytes: 1 << 20,
            },
            None,
        );
        let day = Duration::from_secs(86_400);
        // an idle key's budget and request counts: the least recently used of all
        w.admit_fixed("k|team-a|usd-day|20000", day, 1000, 400, 0);
        w.admit("k|team-a|r60", W, 100, 7, 0);
        for i in 0..10_000u64 {
            w.admit(&format!("p|-|r60|user={i}"), W, 10, 1, 1 + i / 1000);
        }
        assert!(w.evicted() >= 10_000 - 160);
        assert!(w.scopes() <= 162, "{}", w.scopes());
        let d = w.peek("k|team-a|usd-day|20000", Span::Period(day), 1000, 20);
        assert_eq!(d.remaining, 600, "the day's spend is remembered");
        assert_eq!(w.used("k|team-a|r60", W, 20), 7);
    }
}
