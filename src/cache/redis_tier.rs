//! The shared Redis tier of the response cache: entries several gateways read and write. Redis being down never fails a request: the cache is bypassed, and each error is counted and logged.

use std::time::{Duration, Instant};

use redis::AsyncCommands;

use super::entry::{decode, encode, Entry};
use super::CacheMetrics;
use crate::shared_redis::Link;

pub struct RedisTier {
    link: Link,
    prefix: String,
    metrics: CacheMetrics,
    /// Last error log line (errors are logged at most every 10 s).
    last_log: std::sync::Mutex<Option<Instant>>,
}

impl RedisTier {
    pub fn new(
        url: &str,
        prefix: String,
        timeout: Duration,
        metrics: CacheMetrics,
    ) -> Result<RedisTier, String> {
        Ok(RedisTier {
            link: Link::new(url, timeout)?,
            prefix,
            metrics,
            last_log: std::sync::Mutex::new(None),
        })
    }

    fn failed(&self, e: impl std::fmt::Display) {
        self.metrics.redis_errors.inc();
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            log::warn!("cache: Redis {e}; the shared tier is bypassed");
        }
    }

    /// The connection (made on first use; it reconnects by itself afterwards).
    async fn conn(&self) -> Option<redis::aio::ConnectionManager> {
        self.link.conn().await.map_err(|e| self.failed(e)).ok()
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// One Redis command under the timeout; a failure is counted, logged and `None`.
    async fn call<T>(
        &self,
        what: &str,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        self.link
            .call(what, command)
            .await
            .map_err(|e| self.failed(e))
            .ok()
    }

    pub async fn get(&self, key: &str) -> Option<Entry> {
        let mut c = self.conn().await?;
        let b = self
            .call("GET", c.get::<_, Option<Vec<u8>>>(self.key(key)))
            .await??;
        self.metrics.redis_hits.inc();
        decode(key, &b)
    }

    pub async fn exists(&self, key: &str) -> bool {
        let Some(mut c) = self.conn().await else {
            return false;
        };
        self.call("EXISTS", c.exists::<_, bool>(self.key(key)))
            .await
            .unwrap_or(false)
    }

    pub async fn set(&self, e: &Entry, ttl: Duration) {
        let secs = ttl.as_secs();
        if secs == 0 {
            return;
        }
        let Some(mut c) = self.conn().await else {
            return;
        };
        let (key, value) = (self.key(e.key()), encode(e));
        let _: Option<()> = self.call("SET", c.set_ex(key, value, secs)).await;
    }
}
