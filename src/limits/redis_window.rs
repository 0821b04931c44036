//! The counters of `window`, kept in Redis so that several gateways enforce one combined limit: every check of a request is decided in one atomic Lua script (all admitted, or none), timed by the Redis server's clock (the gateways' clocks may differ), and settled in another.

use std::time::Duration;

use super::window::{Decision, Span};
use crate::shared_redis::Link;

/// A script that starts with the Redis server's clock (`now`, in ms), `units_of(member)` (the
/// units of a sliding-window entry `<id>:<units>`) and `live_units(key, sumk, span)`: the units
/// still in a sliding window (its sum less the entries that have left, which stay in the set
/// until a caller removes them) and how many entries have left.
macro_rules! with_clock {
    ($body:literal) => {
        concat!(
            "local t = redis.call('TIME')\n",
            "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n",
            "local function units_of(member) return tonumber(string.match(member, ':(%d+)$')) end\n",
            "local function live_units(key, sumk, span)\n",
            "  local u = tonumber(redis.call('GET', sumk) or '0')\n",
            "  local gone = redis.call('ZRANGEBYSCORE', key, '-inf', now - span)\n",
            "  for i = 1, #gone do u = u - units_of(gone[i]) end\n",
            "  if u < 0 then u = 0 end\n",
            "  return u, #gone\n",
            "end\n",
            $body
        )
    };
}

/// Per check, KEYS: the counter and the sum beside it (sliding windows: a sorted set, member
/// `<id>:<units>`, score = admission time in ms, and the sum of its units, so an admission costs
/// the entries that left the window, not every entry in it; periods: a plain counter).
/// ARGV per check: kind (`s` sliding, `p` period), window or time left in ms, quota, units, id.
/// Returns {0, remaining1, reset1, ...} when every check admits (and then counts them all),
/// else {i, remaining, reset_ms} for the first check i (1-based) that refuses.
const ADMIT: &str = with_clock!(
    r#"
local n = #ARGV / 5
local used = {}
for c = 1, n do
  local kind, span = ARGV[5 * c - 4], tonumber(ARGV[5 * c - 3])
  local quota, units = tonumber(ARGV[5 * c - 2]), tonumber(ARGV[5 * c - 1])
  local key, sumk = KEYS[2 * c - 1], KEYS[2 * c]
  local u = 0
  if kind == 'p' then
    u = tonumber(redis.call('GET', key) or '0')
    if u + units > quota then
      local remaining = quota - u
      if remaining < 0 then remaining = 0 end
      return {c, remaining, span}
    end
  else
    if redis.call('EXISTS', key) == 1 then
      local gone
      u, gone = live_units(key, sumk, span)
      if gone > 0 then
        redis.call('ZREMRANGEBYSCORE', key, '-inf', now - span)
        redis.call('SET', sumk, u, 'KEEPTTL')
      end
    end
    if u + units > quota then
      -- room again once enough of the oldest entries have left
      local need = u + units - quota
      local freed, at, from = 0, now, 0
      while freed < need do
        local e = redis.call('ZRANGE', key, from, from + 63, 'WITHSCORES')
        if #e == 0 then break end
        for i = 1, #e, 2 do
          freed = freed + units_of(e[i])
          at = tonumber(e[i + 1]) + span
          if freed >= need then break end
        end
        from = from + 64
      end
      local remaining = quota - u
      if remaining < 0 then remaining = 0 end
      return {c, remaining, at - now}
    end
  end
  used[c] = u
end
local out = {0}
for c = 1, n do
  local kind, span = ARGV[5 * c - 4], tonumber(ARGV[5 * c - 3])
  local quota, units = tonumber(ARGV[5 * c - 2]), tonumber(ARGV[5 * c - 1])
  local key, sumk = KEYS[2 * c - 1], KEYS[2 * c]
  local u = used[c] + units
  if kind == 'p' then
    redis.call('INCRBY', key, units)
    redis.call('PEXPIRE', key, span)
    out[#out + 1] = quota - u
    out[#out + 1] = span
  else
    redis.call('ZADD', key, now, ARGV[5 * c] .. ':' .. units)
    redis.call('PEXPIRE', key, span)
    redis.call('SET', sumk, u, 'PX', span)
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    out[#out + 1] = quota - u
    out[#out + 1] = tonumber(oldest[2]) + span - now
  end
end
return out
"#
);

/// Reads each check's room without taking any. KEYS as for ADMIT; ARGV per check: kind, window
/// or time left in ms, quota. Returns {remaining1, reset1, ...}.
const PEEK: &str = with_clock!(
    r#"
local n = #ARGV / 3
local out = {}
for c = 1, n do
  local kind, span, quota = ARGV[3 * c - 2], tonumber(ARGV[3 * c - 1]), tonumber(ARGV[3 * c])
  local key, sumk = KEYS[2 * c - 1], KEYS[2 * c]
  local u, reset = 0, 0
  if kind == 'p' then
    u = tonumber(redis.call('GET', key) or '0')
    local ttl = redis.call('PTTL', key)
    if ttl > 0 then reset = ttl else reset = span end
  else
    u = live_units(key, sumk, span)
    local first = redis.call('ZRANGEBYSCORE', key, '(' .. (now - span), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #first > 0 then reset = tonumber(first[2]) + span - now end
  end
  local remaining = quota - u
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = remaining
  out[#out + 1] = reset
end
return out
"#
);

/// Per reservation, KEYS: its counter and sum; ARGV: kind, id, units held, real units. A
/// sliding entry gets its real units (0 removes it); a period counter that ended stays ended.
const SETTLE: &str = r#"
local n = #ARGV / 4
for c = 1, n do
  local kind, id = ARGV[4 * c - 3], ARGV[4 * c - 2]
  local old, new = tonumber(ARGV[4 * c - 1]), tonumber(ARGV[4 * c])
  local key, sumk = KEYS[2 * c - 1], KEYS[2 * c]
  if kind == 'p' then
    if redis.call('EXISTS', key) == 1 then
      local v = redis.call('INCRBY', key, new - old)
      if v < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
    end
  else
    local member = id .. ':' .. old
    local score = redis.call('ZSCORE', key, member)
    if score then
      redis.call('ZREM', key, member)
      if new > 0 then redis.call('ZADD', key, score, id .. ':' .. new) end
      redis.call('INCRBY', sumk, new - old)
    end
  end
end
return n
"#;

/// An admitted request's units in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisReservation {
    key: String,
    /// `None` for a period counter.
    id: Option<String>,
    units: u64,
}

/// One check of an admission.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub scope: &'a str,
    pub span: Span,
    pub quota: u64,
    pub units: u64,
}

/// What an admission decided: every check's decision up to the first refusal.
#[derive(Debug)]
pub struct Outcome {
    pub decisions: Vec<Decision>,
    /// One per check when all were admitted.
    pub held: Option<Vec<RedisReservation>>,
}

pub struct RedisWindows {
    link: Link,
    prefix: String,
    admit: redis::Script,
    peek: redis::Script,
    settle: redis::Script,
}

impl RedisWindows {
    pub fn new(link: Link, prefix: String) -> RedisWindows {
        RedisWindows {
            link,
            prefix,
            admit: redis::Script::new(ADMIT),
            peek: redis::Script::new(PEEK),
            settle: redis::Script::new(SETTLE),
        }
    }

    fn key(&self, scope: &str) -> String {
        // one hash tag: a counter and its sum land on the same Redis Cluster slot
        format!("{}{{{scope}}}", self.prefix)
    }

    /// Decides every check in one round trip: all admitted (and counted), or none. `Err` when
    /// Redis did not answer in time (the caller applies its fail-open or fail-closed choice).
    pub async fn admit_all(&self, checks: &[Ask<'_>]) -> Result<Outcome, String> {
        let mut conn = self.link.conn().await?;
        let mut inv = self.admit.prepare_invoke();
        let mut held = Vec::with_capacity(checks.len());
        for c in checks {
            let key = self.key(c.scope);
            let (kind, ms, id) = match c.span {
                Span::Sliding(w) => ("s", w, Some(uuid::Uuid::new_v4().simple().to_string())),
                Span::Period(left) => ("p", left, None),
            };
            inv.key(&key).key(format!("{key}:sum"));
            inv.arg(kind)
                .arg(ms.as_millis().max(1) as u64)
                .arg(c.quota)
                .arg(c.units)
                .arg(id.as_deref().unwrap_or("-"));
            held.push(RedisReservation {
                key,
                id,
                units: c.units,
            });
        }
        let out: Vec<i64> = self
            .link
            .call("admission script", inv.invoke_async(&mut conn))
            .await?;
        let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
        match out.first() {
            Some(0) if out.len() == 1 + 2 * checks.len() => Ok(Outcome {
                decisions: out[1..]
                    .chunks(2)
                    .map(|p| Decision {
                        admitted: true,
                        remaining: p[0].max(0) as u64,
                        reset: ms(p[1]),
                    })
                    .collect(),
                held: Some(held),
            }),
            Some(&i) if i >= 1 && out.len() == 3 => {
                // the checks before the refusing one passed (and counted nothing)
                let mut decisions = vec![
                    Decision {
                        admitted: true,
                        remaining: 0,
                        reset: Duration::ZERO,
                    };
                    i as usize - 1
                ];
                decisions.push(Decision {
                    admitted: false,
                    remaining: out[1].max(0) as u64,
                    reset: ms(out[2]),
                });
                Ok(Outcome {
                    decisions,
                    held: None,
                })
            }
            _ => Err(format!("admission script: unexpected answer {out:?}")),
        }
    }

    /// Every check's room, taking none (one round trip).
    pub async fn peek_all(&self, checks: &[Ask<'_>]) -> Result<Vec<Decision>, String> {
        let mut conn = self.link.conn().await?;
        let mut inv = self.peek.prepare_invoke();
        for c in checks {
            let key = self.key(c.scope);
            let (kind, ms) = match c.span {
                Span::Sliding(w) => ("s", w),
                Span::Period(left) => ("p", left),
            };
            inv.key(&key).key(format!("{key}:sum"));
            inv.arg(kind).arg(ms.as_millis().max(1) as u64).arg(c.quota);
        }
        let out: Vec<i64> = self
            .link
            .call("peek script", inv.invoke_async(&mut conn))
            .await?;
        if out.len() != 2 * checks.len() {
            return Err(format!("peek script: unexpected answer {out:?}"));
        }
        Ok(out
            .chunks(2)
            .map(|p| Decision {
                admitted: true,
                remaining: p[0].max(0) as u64,
                reset: Duration::from_millis(p[1].max(0) as u64),
            })
            .collect())
    }

    /// Replaces each reservation's units by the real amount (0 releases it), in one round trip.
    pub async fn settle_all(&self, items: &[(&RedisReservation, u64)]) -> Result<(), String> {
        if items.is_empty() {
            return Ok(());
        }
        let mut conn = self.link.conn().await?;
        let mut inv = self.settle.prepare_invoke();
        for (r, units) in items {
            inv.key(&r.key).key(format!("{}:sum", r.key));
            inv.arg(if r.id.is_some() { "s" } else { "p" })
                .arg(r.id.as_deref().unwrap_or("-"))
                .arg(r.units)
                .arg(*units);
        }
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

    impl RedisWindows {
        /// One check (see `admit_all`).
        async fn admit(
            &self,
            scope: &str,
            span: Span,
            quota: u64,
            units: u64,
        ) -> Result<(Decision, Option<RedisReservation>), String> {
            let mut o = self
                .admit_all(&[Ask {
                    scope,
                    span,
                    quota,
                    units,
                }])
                .await?;
            let d = o.decisions.pop().ok_or("no decision")?;
            Ok((d, o.held.and_then(|mut h| h.pop())))
        }

        async fn settle(&self, r: &RedisReservation, units: u64) -> Result<(), String> {
            self.settle_all(&[(r, units)]).await
        }
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
    async fn a_peek_shows_the_room_and_takes_none() {
        let p = prefix();
        let g = windows(&p).await;
        let w = Duration::from_millis(800);
        let sliding = |units| Ask {
            scope: "peeked",
            span: Span::Sliding(w),
            quota: 3,
            units,
        };
        let day = |units| Ask {
            scope: "peeked-day",
            span: Span::Period(Duration::from_secs(100)),
            quota: 10,
            units,
        };
        let fresh = g.peek_all(&[sliding(0), day(0)]).await.unwrap();
        assert_eq!((fresh[0].remaining, fresh[0].reset), (3, Duration::ZERO));
        assert_eq!(fresh[1].remaining, 10);
        g.admit_all(&[sliding(1), day(4)]).await.unwrap();
        for _ in 0..5 {
            let d = g.peek_all(&[sliding(0), day(0)]).await.unwrap();
            assert_eq!(d[0].remaining, 2);
            assert!(d[0].reset > Duration::ZERO && d[0].reset <= w, "{d:?}");
            assert_eq!(d[1].remaining, 6);
            assert!(d[1].reset > Duration::from_secs(90), "{d:?}");
        }
        // the peeks took nothing: two more fit, and the entry leaves with its window
        let o = g.admit_all(&[sliding(1)]).await.unwrap();
        assert_eq!(o.decisions[0].remaining, 1);
        tokio::time::sleep(w + Duration::from_millis(50)).await;
        let d = g.peek_all(&[sliding(0)]).await.unwrap();
        assert_eq!(d[0].remaining, 3);
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
    async fn several_checks_are_admitted_all_or_none_in_one_script() {
        let p = prefix();
        let g = windows(&p).await;
        let w = Span::Sliding(Duration::from_secs(60));
        let day = Span::Period(Duration::from_secs(60));
        let ask = |scope, span, quota| Ask {
            scope,
            span,
            quota,
            units: 1,
        };
        let both = [ask("a", w, 5), ask("b", day, 1)];
        let o = g.admit_all(&both).await.unwrap();
        assert_eq!(o.decisions.len(), 2);
        assert_eq!((o.decisions[0].remaining, o.decisions[1].remaining), (4, 0));
        let held = o.held.unwrap();
        // the second check refuses: the first counts nothing
        let o = g.admit_all(&both).await.unwrap();
        assert!(o.held.is_none() && o.decisions.len() == 2 && !o.decisions[1].admitted);
        let (d, _) = g.admit("a", w, 5, 1).await.unwrap();
        assert_eq!(d.remaining, 3, "only the first admission and this one");
        // both settled in one round trip
        g.settle_all(&[(&held[0], 0), (&held[1], 0)]).await.unwrap();
        let o = g.admit_all(&both).await.unwrap();
        assert_eq!((o.decisions[0].remaining, o.decisions[1].remaining), (3, 0));
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
