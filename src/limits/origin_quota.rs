//! Unapproved-origin quotas: per-second bursts (pingora-limits) and exact per-UTC-day counters persisted in the state directory, merged under a file lock so restarts and upgrades keep them.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_limits::rate::Rate;
use serde::{Deserialize, Serialize};

use crate::config::UnapprovedConf;
use crate::error::GatewayError;

const STATE_FILE: &str = "origin-quota.json";
const LOCK_FILE: &str = "origin-quota.lock";
/// Distinct unapproved origins tracked per day; beyond it new origins are refused (memory bound).
pub const MAX_TRACKED_ORIGINS: usize = 100_000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    /// UTC day number (days since 1970-01-01).
    day: i64,
    counts: HashMap<String, u64>,
}

#[derive(Debug, Default)]
struct Day {
    day: i64,
    /// Totals as last read from / written to the state file (all processes).
    persisted: HashMap<String, u64>,
    /// Admitted here since the last flush.
    pending: HashMap<String, u64>,
}

pub struct OriginQuota {
    conf: UnapprovedConf,
    per_second: Rate,
    day: Mutex<Day>,
    dir: PathBuf,
}

/// The 429 of an unapproved origin over its per-second quota.
pub fn per_second_refusal(origin: &str, per_second: u32) -> GatewayError {
    GatewayError::TooManyRequests {
        message: format!(
            "origin {origin} is not an approved provider and is limited to {per_second} request(s) per second; \
             to lift the limit, approve it in the gateway config (origins: - url: {origin}, approved: true)"
        ),
        retry_after_secs: 1,
    }
}

/// The 429 of an unapproved origin that has used today's quota.
pub fn per_day_refusal(origin: &str, per_day: u64, secs_left: u64) -> GatewayError {
    GatewayError::TooManyRequests {
        message: format!(
            "origin {origin} is not an approved provider and has used its {per_day} requests for today (UTC); \
             to lift the limit, approve it in the gateway config (origins: - url: {origin}, approved: true)"
        ),
        retry_after_secs: secs_left,
    }
}

pub fn utc_day_and_secs_left() -> (i64, u64) {
    let now = chrono::Utc::now().timestamp();
    (
        now.div_euclid(86_400),
        (86_400 - now.rem_euclid(86_400)) as u64,
    )
}

impl OriginQuota {
    /// Loads today's counters from `dir` (created if missing).
    pub fn open(conf: UnapprovedConf, dir: &Path) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let q = OriginQuota {
            conf,
            per_second: Rate::new_with_estimator_config(Duration::from_secs(1), 4, 4096),
            day: Mutex::new(Day::default()),
            dir: dir.to_path_buf(),
        };
        q.flush()?;
        Ok(Arc::new(q))
    }

    fn lock_day(&self) -> MutexGuard<'_, Day> {
        // a panic while holding the lock cannot leave the maps inconsistent: keep serving
        self.day.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one request to `origin`, or refuses it with 429 and `Retry-After`.
    pub fn admit(&self, origin: &str) -> Result<(), GatewayError> {
        let (today, secs_left) = utc_day_and_secs_left();
        if self.per_second.observe(&origin, 1) > self.conf.per_second as isize {
            return Err(per_second_refusal(origin, self.conf.per_second));
        }
        let mut d = self.lock_day();
        if d.day != today {
            *d = Day {
                day: today,
                ..Day::default()
            };
        }
        let used = d.persisted.get(origin).copied().unwrap_or(0)
            + d.pending.get(origin).copied().unwrap_or(0);
        if used >= self.conf.per_day {
            return Err(per_day_refusal(origin, self.conf.per_day, secs_left));
        }
        if used == 0 && d.persisted.len() + d.pending.len() >= MAX_TRACKED_ORIGINS {
            return Err(GatewayError::TooManyRequests {
                message: format!(
                    "more than {MAX_TRACKED_ORIGINS} different unapproved origins were used today; \
                     approve {origin} in the gateway config to use it"
                ),
                retry_after_secs: secs_left,
            });
        }
        *d.pending.entry(origin.to_string()).or_insert(0) += 1;
        Ok(())
    }

    /// Requests counted today for `origin` (all processes, as of the last flush, plus ours).
    pub fn used_today(&self, origin: &str) -> u64 {
        let d = self.lock_day();
        d.persisted.get(origin).copied().unwrap_or(0) + d.pending.get(origin).copied().unwrap_or(0)
    }

    /// Merges our pending counts into the state file under an exclusive lock and reloads the
    /// totals other processes wrote. Blocking file I/O: call from a blocking context.
    pub fn flush(&self) -> std::io::Result<()> {
        let (today, _) = utc_day_and_secs_left();
        let (day, pending) = {
            let mut d = self.lock_day();
            if d.day != today {
                *d = Day {
                    day: today,
                    ..Day::default()
                };
            }
            (d.day, std::mem::take(&mut d.pending))
        };
        match self.merge_into_file(day, &pending) {
            Ok(totals) => {
                let mut d = self.lock_day();
                if d.day == day {
                    d.persisted = totals;
                }
                Ok(())
            }
            Err(e) => {
                // keep the counts: they are retried at the next flush
                let mut d = self.lock_day();
                if d.day == day {
                    for (k, v) in pending {
                        *d.pending.entry(k).or_insert(0) += v;
                    }
                }
                Err(e)
            }
        }
    }

    fn merge_into_file(
        &self,
        day: i64,
        pending: &HashMap<String, u64>,
    ) -> std::io::Result<HashMap<String, u64>> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK_FILE))?;
        lock.lock()?;
        let path = self.dir.join(STATE_FILE);
        let mut state = match File::open(&path) {
            Ok(mut f) => {
                let mut text = String::new();
                f.read_to_string(&mut text)?;
                serde_json::from_str::<StateFile>(&text).unwrap_or_else(|e| {
                    log::error!(
                        "{} is unreadable ({e}); starting today's quota counters from zero",
                        path.display()
                    );
                    StateFile::default()
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(e) => return Err(e),
        };
        if state.day != day {
            state = StateFile {
                day,
                counts: HashMap::new(),
            };
        }
        if !pending.is_empty() {
            for (k, v) in pending {
                *state.counts.entry(k.clone()).or_insert(0) += v;
            }
            let tmp = self
                .dir
                .join(format!("{STATE_FILE}.{}.tmp", std::process::id()));
            let mut f = File::create(&tmp)?;
            f.write_all(
                serde_json::to_string(&state)
                    .map_err(std::io::Error::other)?
                    .as_bytes(),
            )?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
        }
        lock.unlock()?;
        Ok(state.counts)
    }
}

/// Background service that persists the day counters every second, through the grace period,
/// and once more when the runtime drops it at exit.
pub struct QuotaPersister {
    pub quota: Arc<OriginQuota>,
}

struct FlushOnDrop(Arc<OriginQuota>);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        if let Err(e) = self.0.flush() {
            log::error!("final flush of origin quota counters failed: {e}");
        }
    }
}

#[async_trait]
impl BackgroundService for QuotaPersister {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let guard = FlushOnDrop(self.quota.clone());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                // in-flight requests keep counting during the grace period: keep flushing
                r = shutdown.changed(), if !*shutdown.borrow() => { if r.is_err() { break; } }
            }
            let q = guard.0.clone();
            match tokio::task::spawn_blocking(move || q.flush()).await {
                Ok(Err(e)) => {
                    log::error!("persisting origin quota counters failed (will retry): {e}")
                }
                Err(e) => log::error!("origin quota flush task failed: {e}"),
                Ok(Ok(())) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(per_second: u32, per_day: u64) -> UnapprovedConf {
        UnapprovedConf {
            policy: crate::config::UnapprovedPolicy::Limit,
            per_second,
            per_day,
        }
    }

    #[test]
    fn per_second_and_per_day_limits() {
        let dir = tempfile::tempdir().unwrap();
        let q = OriginQuota::open(conf(2, 1000), dir.path()).unwrap();
        assert!(q.admit("https://a.example").is_ok());
        assert!(q.admit("https://a.example").is_ok());
        let e = q.admit("https://a.example").unwrap_err();
        assert_eq!(e.status(), 429);
        assert!(e.to_string().contains("per second"), "{e}");
        assert!(
            q.admit("https://b.example").is_ok(),
            "other origins are unaffected"
        );

        let q = OriginQuota::open(conf(1000, 3), dir.path().join("d").as_path()).unwrap();
        for _ in 0..3 {
            q.admit("https://c.example").unwrap();
        }
        let e = q.admit("https://c.example").unwrap_err();
        assert!(e.to_string().contains("3 requests for today"), "{e}");
        match e {
            GatewayError::TooManyRequests {
                retry_after_secs, ..
            } => assert!((1..=86_400).contains(&retry_after_secs)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn day_counters_survive_reopen_and_merge_across_processes() {
        let dir = tempfile::tempdir().unwrap();
        let a = OriginQuota::open(conf(1000, 5), dir.path()).unwrap();
        let b = OriginQuota::open(conf(1000, 5), dir.path()).unwrap();
        a.admit("https://x.example").unwrap();
        a.admit("https://x.example").unwrap();
        b.admit("https://x.example").unwrap();
        a.flush().unwrap();
        b.flush().unwrap();
        a.flush().unwrap();
        assert_eq!(a.used_today("https://x.example"), 3);
        assert_eq!(b.used_today("https://x.example"), 3);
        drop((a, b));
        let c = OriginQuota::open(conf(1000, 5), dir.path()).unwrap();
        assert_eq!(c.used_today("https://x.example"), 3);
        c.admit("https://x.example").unwrap();
        c.admit("https://x.example").unwrap();
        assert_eq!(c.admit("https://x.example").unwrap_err().status(), 429);
    }
}
