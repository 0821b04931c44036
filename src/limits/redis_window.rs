//! The sliding-window counter of `window`, kept in Redis so that several gateways enforce one
//! combined limit: each admission is one atomic Lua script on a sorted set, timed by the Redis
//! server's clock (the gateways' clocks may differ).

use std::time::Duration;

use super::window::Decision;
use crate::shared_redis::Link;

/// KEYS[1] the scope's sorted set (member `<id>:<units>`, score = admission time in ms);
/// ARGV window_ms, quota, units, id. Returns {admitted, remaining, reset_ms}.
const ADMIT: &str = r#"
local key = KEYS[1]
local win = tonumber(ARGV[1])
local quota = tonumber(ARGV[2])
local units = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local used = 0
for i = 1, #entries, 2 do
  used = used + tonumber(string.match(entries[i], ':(%d+)$'))
end
if used + units <= quota then
  redis.call('ZADD', key, now, ARGV[4] .. ':' .. units)
  redis.call('PEXPIRE', key, win)
  local oldest = now
  if #entries > 0 then oldest = tonumber(entries[2]) end
  return {1, quota - used - units, oldest + win - now}
end
local need = used + units - quota
local freed = 0
local at = now
for i = 1, #entries, 2 do
  freed = freed + tonumber(string.match(entries[i], ':(%d+)$'))
  at = tonumber(entries[i + 1]) + win
  if freed >= need then break end
end
local remaining = quota - used
if remaining < 0 then remaining = 0 end
return {0, remaining, at - now}
"#;

/// KEYS[1] the scope; ARGV id, old units, new units: replaces a reservation's units.
const SETTLE: &str = r#"
local old = ARGV[1] .. ':' .. ARGV[2]
local score = redis.call('ZSCORE', KEYS[1], old)
if not score then return 0 end
redis.call('ZREM', KEYS[1], old)
redis.call('ZADD', KEYS[1], score, ARGV[1] .. ':' .. ARGV[3])
return 1
"#;

/// An admitted request's units in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisReservation {
    key: String,
    id: String,
    units: u64,
}

pub struct RedisWindows {
    link: Link,
    prefix: String,
    admit: redis::Script,
    settle: redis::Script,
}

impl RedisWindows {
    pub fn new(link: Link, prefix: String) -> RedisWindows {
        RedisWindows {
            link,
            prefix,
            admit: redis::Script::new(ADMIT),
            settle: redis::Script::new(SETTLE),
        }
    }

    /// Admits `units` in `scope`; `Err` when Redis did not answer in time (the caller applies
    /// its fail-open or fail-closed choice).
    pub async fn admit(
        &self,
        scope: &str,
        window: Duration,
        quota: u64,
        units: u64,
    ) -> Result<(Decision, Option<RedisReservation>), String> {
        let key = format!("{}{scope}", self.prefix);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut conn = self.link.conn().await?;
        let mut inv = self.admit.key(&key);
        inv.arg(window.as_millis() as u64)
            .arg(quota)
            .arg(units)
            .arg(&id);
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

    /// Replaces a reservation's units by the real amount.
    pub async fn settle(&self, r: &RedisReservation, units: u64) -> Result<(), String> {
        let mut conn = self.link.conn().await?;
        let mut inv = self.settle.key(&r.key);
        inv.arg(&r.id).arg(r.units).arg(units);
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
            if g.admit("k", w, 3, 1).await.unwrap().0.admitted {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 3, "one combined limit");
        let (d, _) = a.admit("k", w, 3, 1).await.unwrap();
        assert!(!d.admitted && d.reset <= w, "{d:?}");
        tokio::time::sleep(w + Duration::from_millis(50)).await;
        assert!(
            b.admit("k", w, 3, 1).await.unwrap().0.admitted,
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
                    g.admit("hot", Duration::from_secs(60), 10, 1)
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
    async fn reservations_settle_in_redis() {
        let p = prefix();
        let g = windows(&p).await;
        let w = Duration::from_secs(60);
        let (d, r) = g.admit("c", w, 100, 60).await.unwrap();
        assert!(d.admitted && d.remaining == 40);
        assert!(!g.admit("c", w, 100, 50).await.unwrap().0.admitted);
        g.settle(&r.unwrap(), 10).await.unwrap();
        let (d, _) = g.admit("c", w, 100, 50).await.unwrap();
        assert!(d.admitted && d.remaining == 40, "{d:?}");
    }
}
