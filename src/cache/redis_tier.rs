//! The shared Redis tier of the response cache: entries several gateways read and write. Redis
//! being down never fails a request: the cache is bypassed, and each error is counted and logged.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio::sync::OnceCell;

use super::store::{decode, encode, Entry};
use super::CacheMetrics;

pub struct RedisTier {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
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
        let client =
            redis::Client::open(url).map_err(|e| format!("'{url}' is not a Redis URL ({e})"))?;
        Ok(RedisTier {
            client,
            conn: OnceCell::new(),
            prefix,
            timeout,
            metrics,
            last_log: std::sync::Mutex::new(None),
        })
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) {
        self.metrics.redis_errors.inc();
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            log::warn!("cache: Redis {what} failed, the shared tier is bypassed: {e}");
        }
    }

    /// The connection (made on first use; it reconnects by itself afterwards).
    async fn conn(&self) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.get() {
            return Some(c.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let made = tokio::time::timeout(
            self.timeout * 2,
            self.conn.get_or_try_init(|| {
                ConnectionManager::new_with_config(self.client.clone(), config)
            }),
        )
        .await;
        match made {
            Ok(Ok(c)) => Some(c.clone()),
            Ok(Err(e)) => {
                self.failed("connect", e);
                None
            }
            Err(_) => {
                self.failed("connect", "timed out");
                None
            }
        }
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
        match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(what, e);
                None
            }
            Err(_) => {
                self.failed(what, "timed out");
                None
            }
        }
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
