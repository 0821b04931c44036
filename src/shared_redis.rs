//! The connection to the Redis that several gateways share (cache tier, rate-limit counters): its config, made on first use, every command under one timeout.

use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::Deserialize;
use tokio::sync::OnceCell;

/// `{url: redis://127.0.0.1:6379/0, timeout_ms: 250, prefix: ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConf {
    pub url: String,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Prepended to every key (each user has its own default).
    #[serde(default)]
    pub prefix: Option<String>,
}

fn default_timeout() -> u64 {
    250
}

impl RedisConf {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Config problems, each with the field it is about (`at` is the section's path).
    pub fn check(&self, at: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Err(e) = redis::Client::open(self.url.as_str()) {
            out.push((
                format!("{at}.url"),
                format!(
                    "'{}' is not a Redis URL ({e}); write redis://host:port/db",
                    self.url
                ),
            ));
        }
        if self.timeout_ms == 0 {
            out.push((format!("{at}.timeout_ms"), "must be greater than 0".into()));
        }
        out
    }
}

/// A Redis connection made on first use (inside the runtime that serves requests); it
/// reconnects by itself afterwards.
pub struct Link {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
}

impl Link {
    pub fn new(url: &str, timeout: Duration) -> Result<Link, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("'{url}' is not a Redis URL ({e})"))?;
        Ok(Link {
            client,
            conn: OnceCell::new(),
            timeout,
        })
    }

    /// The connection, or why there is none (`connect: ...`).
    pub async fn conn(&self) -> Result<ConnectionManager, String> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
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
            Ok(Ok(c)) => Ok(c.clone()),
            Ok(Err(e)) => Err(format!("connect: {e}")),
            Err(_) => Err("connect: timed out".into()),
        }
    }

    /// One command under the timeout; `Err` says what failed (`<what>: ...`).
    pub async fn call<T>(
        &self,
        what: &str,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => Err(format!("{what}: timed out")),
        }
    }
}
