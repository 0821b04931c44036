//! The sliding-window counter of `window`, kept in Redis so that several gateways enforce one
//! combined limit: each admission is one atomic Lua script on a sorted set, timed by the Redis
//! server's clock (the gateways' clocks may differ).

use std::time::Duration;

use super::window::{Decision, Span};
use crate::shared_redis::Link;

/// KEYS[1] the scope's sorted set (member `<id>:<units>`, score = admission time in ms),
/// KEYS[2] the sum of its units (kept with it, so an admission costs the entries that left the
/// window, not every entry in it); ARGV window_ms, quota, units, id.
/// Returns {admitted, remaining, reset_ms}.
const ADMIT: &str = r#"
local key, sumk = KEYS[1], KEYS[2]
local win = tonumber(ARGV[1])
local quota = tonumber(ARGV[2])
local units = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function units_of(member) return tonumber(string.match(member, ':(%d+)$')) end
local used = 0
if redis.call('EXISTS', key) == 1 then
  used = tonumber(redis.call('GET', sumk) or '0')
  local gone = redis.call('ZRANGEBYSCORE', key, '-inf', now - win)
  if #gone > 0 then
    for i = 1, #gone do used = used - units_of(gone[i]) end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
    if used < 0 then used = 0 end
  end
end
if used + units <= quota then
  redis.call('ZADD', key, now, ARGV[4] .. ':' .. units)
  used = used + units
  redis.call('PEXPIRE', key, win)
  redis.call('SET', sumk, used, 'PX', win)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {1, quota - used, tonumber(oldest[2]) + win - now}
end
if redis.call('EXISTS', key) == 1 then
  redis.call('SET', sumk, used, 'KEEPTTL')
end
-- room again once enough of the oldest entries have left
local need = used + units - quota
local freed, at, from = 0, now, 0
while freed < need do
  local e = redis.call('ZRANGE', key, from, from + 63, 'WITHSCORES')
  if #e == 0 then break end
  for i = 1, #e, 2 do
    freed = freed + units_of(e[i])
    at = tonumber(e[i + 1]) + win
    if freed >= need then break end
  end
  from = from + 64
end
local remaining = quota - used
if remaining < 0 then remaining = 0 end
return {0, remaining, at - now}
"#;

/// KEYS[1] the scope, KEYS[2] its sum; ARGV id, old units, new units: replaces a reservation's
/// units.
const SETTLE: &str = r#"
local old = ARGV[1] .. ':' .. ARGV[2]
local score = redis.call('ZSCORE', KEYS[1], old)
if not score then return 0 end
redis.call('ZREM', KEYS[1], old)
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[1], score, ARGV[1] .. ':' .. ARGV[3])
end
redis.call('INCRBY', KEYS[2], tonumber(ARGV[3]) - tonumber(ARGV[2]))
return 1
"#;

/// A calendar period's counter: KEYS[1]; ARGV ms left in the period, quota, units.
/// Returns {admitted, remaining, reset_ms}.
const ADMIT_PERIOD: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local quota, units = tonumber(ARGV[2]), tonumber(ARGV[3])
if used + units <= quota then
  used = redis.call('INCRBY', KEYS[1], units)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return {1, quota - used, tonumber(ARGV[1])}
end
local remaining = quota - used
if remaining < 0 then remaining = 0 end
return {0, remaining, tonumber(ARGV[1])}
"#;

/// KEYS[1] a period counter; ARGV old units, new units (a period that ended stays ended).
const SETTLE_PERIOD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local v = redis.call('INCRBY', KEYS[1], tonumber(ARGV[2]) - tonumber(ARGV[1]))
if v < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
return 1
"#;

/// An admitted request's units in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisReservation {
    key: String,
    /// `None` for a period counter.
    id: Option<String>,
    units: u64,
}

pub struct RedisWindows {
    link: Link,
    prefix: String,
    admit: redis::Script,
    settle: redis::Script,
    admit_period: redis::Script,
    settle_period: redis::Script,
}

impl RedisWindows {
    pub fn new(link: Link, prefix: String) -> RedisWindows {
        RedisWindows {
            link,
            prefix,
            admit: redis::Script::new(ADMIT),
            settle: redis::Script::new(SETTLE),
            admit_period: redis::Script::new(ADMIT_PERIOD),
            settle_period: redis::Script::new(SETTLE_PERIOD),
        }
    }

    /// Admits `units` in `scope`; `Err` when Redis did not answer in time (the caller applies
    /// its fail-open or fail-closed choice).
    pub async fn admit(
        &self,
        scope: &str,
        span: Span,
        quota: u64,
        units: u64,
    ) -> Result<(Decision, Option<RedisReservation>), String> {
        // one hash tag: both keys land on the same Redis Cluster slot
        let key = format!("{}{{{scope}}}", self.prefix);
        let mut conn = self.link.conn().await?;
        let (inv, id) = match span {
            Span::Sliding(window) => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let mut inv = self.admit.key(&key);
                inv.key(format!("{key}:sum"))
                    .arg(window.as_millis() as u64)
                    .arg(quota)
                    .arg(units)
                    .arg(&id);
                (inv, Some(id))
            }
            Span::Period(left) => {
                let mut inv = self.admit_period.key(&key);
                inv.arg(left.as_millis().max(1) as u64)
                    .arg(quota)
                    .arg(units);
                (inv, None)
            }
        };
        let out: (u8, u64, i64) = self
            .link
            .call("admission script", inv.invoke_async(&mut conn))
            .await?;
        let decision = Decision {
            admitted: out.0 == 1,
            remaining: out.1,
            reset: Duration::from_millis(out.2.max(0) as u64),
        };
        let reservation = decision
            .admitted
            .then_some(RedisReservation { key, id, units });
        Ok((decision, reservation))
    }

    /// Replaces a reservation's units by the real amount (0 releases it).
    pub async fn settle(&self, r: &RedisReservation, units: u64) -> Result<(), String> {
        let mut conn = self.link.conn().await?;
        let inv = match &r.id {
            Some(id) => {
                let mut inv = self.settle.key(&r.key);
                inv.key(format!("{}:sum", r.key))
                    .arg(id)
                    .arg(r.units)
                    .arg(units);
                inv
            }
            None => {
                let mut inv = self.settle_period.key(&r.key);
                inv.arg(r.units).arg(units);
                inv
            }
        };
        let _: i64 = self
            .link
            .call("settlement script", inv.invoke_async(&mut conn))
            .await?;
        Ok(())
    }
}

/// These run against the Redis on 127.0.0.1:6379 (`.ci/run` starts it).
#[cfg(test)]
mod tests {
    use super::*;

    async fn windows(prefix: &str) -> RedisWindows {
        let link = Link::new("redis://127.0.0.1:6379/0", Duration::from_secs(2)).unwrap();
        link.conn().await.expect("Redis on 127.0.0.1:6379");
        RedisWindows::new(link, prefix.to_string())
    }

    fn prefix() -> String {
        format!("switchyard-test-rl-{}:", uuid::Uuid::new_v4().simple())
    }

    #[tokio::test]
    async fn exactly_n_across_two_gateways_and_the_window_slides() {
        let p = prefix();
        let (a, b) = (windows(&p).await, windows(&p).await);
        let w = Duration::from_millis(800);
        let mut admitted = 0;
        for i in 0..10 {
            let g = if i % 2 == 0 { &a } else { &b };
            if g.admit("k", Span::Sliding(w), 3, 1)
                .await
                .unwrap()
                .0
                .admitted
            {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 3, "one combined limit");
        let (d, _) = a.admit("k", Span::Sliding(w), 3, 1).await.unwrap();
        assert!(!d.admitted && d.reset <= w, "{d:?}");
        tokio::time::sleep(w + Duration::from_millis(50)).await;
        assert!(
            b.admit("k", Span::Sliding(w), 3, 1)
                .await
                .unwrap()
                .0
                .admitted,
            "the window slid"
        );
    }

    #[tokio::test]
    async fn fifty_concurrent_admissions_let_exactly_the_quota_through() {
        let p = prefix();
        let g = std::sync::Arc::new(windows(&p).await);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let g = g.clone();
                tokio::spawn(async move {
                    g.admit("hot", Span::Sliding(Duration::from_secs(60)), 10, 1)
                        .await
                        .unwrap()
                        .0
                        .admitted
                })
            })
            .collect();
        let mut n = 0;
        for t in tasks {
            n += usize::from(t.await.unwrap());
        }
        assert_eq!(n, 10);
    }

    #[tokio::test]
    async fn a_refusal_names_when_enough_entries_have_left_even_past_the_first_page() {
        let p = prefix();
        let g = windows(&p).await;
        let w = Duration::from_secs(60);
        for _ in 0..100 {
            assert!(
                g.admit("many", Span::Sliding(w), 100, 1)
                    .await
                    .unwrap()
                    .0
                    .admitted
            );
        }
        // 70 units need the 70 oldest entries to leave: more than one page of the walk
        let (d, r) = g.admit("many", Span::Sliding(w), 100, 70).await.unwrap();
        assert!(!d.admitted && r.is_none() && d.remaining == 0, "{d:?}");
        assert!(d.reset > Duration::from_secs(59) && d.reset <= w, "{d:?}");
        // the kept sum agrees with the entries
        let (d, _) = g.admit("other", Span::Sliding(w), 5, 5).await.unwrap();
        assert!(d.admitted && d.remaining == 0);
    }

    #[tokio::test]
    async fn period_counters_reserve_and_settle_in_redis_and_a_released_slot_is_gone() {
        let p = prefix();
        let g = windows(&p).await;
        let day = Span::Period(Duration::from_secs(30));
        let (d, r) = g.admit("day", day, 100, 60).await.unwrap();
        assert!(d.admitted && d.remaining == 40 && d.reset == Duration::from_secs(30));
        assert!(!g.admit("day", day, 100, 50).await.unwrap().0.admitted);
        g.settle(&r.unwrap(), 10).await.unwrap();
        let (d, _) = g.admit("day", day, 100, 50).await.unwrap();
        assert!(d.admitted && d.remaining == 40, "{d:?}");
        // a slot settled to 0 leaves the sorted set
        let lease = Span::Sliding(Duration::from_secs(60));
        let (_, slot) = g.admit("slot", lease, 1, 1).await.unwrap();
        assert!(!g.admit("slot", lease, 1, 1).await.unwrap().0.admitted);
        g.settle(&slot.unwrap(), 0).await.unwrap();
        let mut conn = g.link.conn().await.unwrap();
        let n: u64 = redis::cmd("ZCARD")
            .arg(format!("{p}{{slot}}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 0);
        assert!(g.admit("slot", lease, 1, 1).await.unwrap().0.admitted);
    }

    #[tokio::test]
    async fn reservations_settle_in_redis() {
        let p = prefix();
        let g = windows(&p).await;
        let w = Duration::from_secs(60);
        let (d, r) = g.admit("c", Span::Sliding(w), 100, 60).await.unwrap();
        assert!(d.admitted && d.remaining == 40);
        assert!(
            !g.admit("c", Span::Sliding(w), 100, 50)
                .await
                .unwrap()
                .0
                .admitted
        );
        g.settle(&r.unwrap(), 10).await.unwrap();
        let (d, _) = g.admit("c", Span::Sliding(w), 100, 50).await.unwrap();
        assert!(d.admitted && d.remaining == 40, "{d:?}");
    }
}
