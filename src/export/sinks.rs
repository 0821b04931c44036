//! The exporter's sinks: JSONL files, ClickHouse over HTTP (gzip JSONEachRow), HTTP webhook.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::http::Poster;
use super::jsonl::JsonlSink;
use super::record::{LoggedBody, Record};
use crate::routing::Origin;

/// Where a batch goes. `encode` runs once per batch, into a buffer the caller reuses (no fresh
/// pages per batch); what it writes is what gets sent, retried and spooled.
#[async_trait]
pub trait Sink: Send + Sync {
    fn name(&self) -> &'static str;
    fn encode(&self, records: &[Record], batch_id: &str, out: &mut Vec<u8>);
    async fn send(&self, payload: &[u8]) -> Result<(), String>;
    /// Local sinks write synchronously at exit (remote ones spool instead).
    fn write_now(&self, _payload: &[u8]) -> Option<Result<(), String>> {
        None
    }
}

fn jsonl_lines(records: &[Record], out: &mut Vec<u8>) {
    for r in records {
        let mark = out.len();
        if serde_json::to_writer(&mut *out, r).is_ok() {
            out.push(b'\n');
        } else {
            out.truncate(mark);
        }
    }
}

pub struct Jsonl(pub Mutex<JsonlSink>);

#[async_trait]
impl Sink for Jsonl {
    fn name(&self) -> &'static str {
        "jsonl"
    }
    fn encode(&self, records: &[Record], _batch_id: &str, out: &mut Vec<u8>) {
        jsonl_lines(records, out)
    }
    async fn send(&self, payload: &[u8]) -> Result<(), String> {
        // a local append of one batch: short blocking I/O on the exporter's own runtime
        self.write_now(payload).unwrap_or(Ok(()))
    }
    fn write_now(&self, payload: &[u8]) -> Option<Result<(), String>> {
        let mut sink = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Some(sink.write(payload).map_err(|e| e.to_string()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConf {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    #[serde(default = "default_db")]
    pub database: String,
    #[serde(default = "default_table")]
    pub table: String,
    #[serde(default)]
    pub user: Option<String>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Create the database and table (conf/clickhouse.sql) when missing.
    #[serde(default = "yes")]
    pub create_table: bool,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_db() -> String {
    "switchyard".into()
}
fn default_table() -> String {
    "requests".into()
}
fn yes() -> bool {
    true
}
fn default_timeout() -> u64 {
    10
}

pub const CLICKHOUSE_DDL: &str = include_str!("../../conf/clickhouse.sql");

/// One ClickHouse row: nested values as JSON strings (ClickHouse 18.16 has no JSON columns).
#[derive(Serialize)]
struct Row<'a> {
    event_date: String,
    id: &'a str,
    start_time: &'a str,
    key_id: &'a Option<String>,
    method: &'a str,
    path: &'a str,
    target: &'a Option<String>,
    provider: &'a Option<String>,
    model_requested: &'a Option<String>,
    model_responded: &'a Option<String>,
    status: u16,
    attempts: String,
    fallback_index: Option<usize>,
    retries: u32,
    latency_ms: u64,
    ttfb_ms: Option<u64>,
    ttft_ms: Option<u64>,
    stream: u8,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    cost_usd: Option<f64>,
    cache: &'a Option<String>,
    cache_reference_id: &'a Option<String>,
    rate_limit: &'a Option<String>,
    rejection: &'a Option<String>,
    prompt_id: &'a Option<String>,
    prompt_version: Option<u32>,
    model_override: &'a Option<String>,
    target_provider: &'a Option<String>,
    user_id: &'a Option<String>,
    session_id: &'a Option<String>,
    session_path: &'a Option<String>,
    session_name: &'a Option<String>,
    properties: String,
    request_body: String,
    response_body: String,
    request_bytes: u64,
    response_bytes: u64,
    error: &'a Option<String>,
    batch_id: &'a str,
}

fn body_text(b: &Option<LoggedBody>) -> String {
    match b {
        None => String::new(),
        Some(LoggedBody::Omitted) => "[omitted]".into(),
        Some(LoggedBody::Text {
            text,
            truncated,
            bytes,
        }) => {
            if *truncated {
                format!("{}[truncated: {bytes} bytes in all]", text.to_str_lossy())
            } else {
                text.to_str_lossy().into_owned()
            }
        }
    }
}

pub struct ClickHouse {
    conf: ClickHouseConf,
    password: Option<String>,
    poster: Poster,
    ready: std::sync::atomic::AtomicBool,
    /// Uncompressed rows of the batch being encoded (reused).
    raw: Mutex<Vec<u8>>,
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl ClickHouse {
    pub fn new(conf: ClickHouseConf) -> Result<ClickHouse, String> {
        let (origin, _) = Origin::parse(&conf.url)?;
        let password = match &conf.password_env {
            Some(v) => {
                Some(std::env::var(v).map_err(|_| format!("environment variable {v} is not set"))?)
            }
            None => None,
        };
        let poster = Poster::new(origin, Duration::from_secs(conf.timeout_secs.max(1)));
        Ok(ClickHouse {
            conf,
            password,
            poster,
            ready: std::sync::atomic::AtomicBool::new(false),
            raw: Mutex::new(Vec::new()),
        })
    }

    fn query_path(query: &str) -> String {
        format!("/?query={}", urlencode(query))
    }

    /// Credentials go in an `Authorization: Basic` header, never in the URL (URLs end up in
    /// access logs and error messages).
    fn headers(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        use base64::Engine;
        let mut h: Vec<(&'static str, String)> =
            extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
        if self.conf.user.is_some() || self.password.is_some() {
            let user = self.conf.user.as_deref().unwrap_or("default");
            let pw = self.password.as_deref().unwrap_or("");
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
            h.push(("authorization", format!("Basic {token}")));
        }
        h
    }

    async fn ensure_table(&self) -> Result<(), String> {
        if !self.conf.create_table || self.ready.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let db = &self.conf.database;
        self.poster
            .post(
                &Self::query_path(&format!("CREATE DATABASE IF NOT EXISTS {db}")),
                &self.headers(&[]),
                Bytes::new(),
            )
            .await?;
        let ddl: String = CLICKHOUSE_DDL
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("{db}", db)
            .replace("{table}", &self.conf.table);
        self.poster
            .post(&Self::query_path(""), &self.headers(&[]), Bytes::from(ddl))
            .await?;
        self.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        log::info!("ClickHouse table {db}.{} is ready", self.conf.table);
        Ok(())
    }
}

#[async_trait]
impl Sink for ClickHouse {
    fn name(&self) -> &'static str {
        "clickhouse"
    }

    fn encode(&self, records: &[Record], batch_id: &str, out: &mut Vec<u8>) {
        let mut raw = self.raw.lock().unwrap_or_else(|p| p.into_inner());
        raw.clear();
        for r in records {
            let row = Row {
                event_date: r.start_time.get(..10).unwrap_or("1970-01-01").to_string(),
                id: &r.id,
                start_time: &r.start_time,
                key_id: &r.key_id,
                method: &r.method,
                path: &r.path,
                target: &r.target,
                provider: &r.provider,
                model_requested: &r.model_requested,
                model_responded: &r.model_responded,
                status: r.status,
                attempts: serde_json::to_string(&r.attempts).unwrap_or_default(),
                fallback_index: r.fallback_index,
                retries: r.retries,
                latency_ms: r.latency_ms,
                ttfb_ms: r.ttfb_ms,
                ttft_ms: r.ttft_ms,
                stream: r.stream as u8,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                cached_tokens: r.cached_tokens,
                cache_write_tokens: r.cache_write_tokens,
                reasoning_tokens: r.reasoning_tokens,
                cost_usd: r.cost_usd,
                cache: &r.cache,
                cache_reference_id: &r.cache_reference_id,
                rate_limit: &r.rate_limit,
                rejection: &r.rejection,
                prompt_id: &r.prompt_id,
                prompt_version: r.prompt_version,
                model_override: &r.model_override,
                target_provider: &r.target_provider,
                user_id: &r.user_id,
                session_id: &r.session_id,
                session_path: &r.session_path,
                session_name: &r.session_name,
                properties: serde_json::to_string(&r.properties).unwrap_or_default(),
                request_body: body_text(&r.request_body),
                response_body: body_text(&r.response_body),
                request_bytes: r.request_bytes,
                response_bytes: r.response_bytes,
                error: &r.error,
                batch_id,
            };
            let mark = raw.len();
            if serde_json::to_writer(&mut *raw, &row).is_ok() {
                raw.push(b'\n');
            } else {
                raw.truncate(mark);
            }
        }
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        if let Err(e) = gz.write_all(&raw).and_then(|_| gz.try_finish()) {
            log::error!("ClickHouse batch not encoded: {e}");
        }
    }

    async fn send(&self, payload: &[u8]) -> Result<(), String> {
        self.ensure_table().await?;
        let insert = format!(
            "INSERT INTO {}.{} FORMAT JSONEachRow",
            self.conf.database, self.conf.table
        );
        let path = format!(
            "{}&input_format_skip_unknown_fields=1",
            Self::query_path(&insert)
        );
        let headers = self.headers(&[
            ("content-encoding", "gzip"),
            ("content-type", "application/x-ndjson"),
        ]);
        self.poster
            .post(&path, &headers, Bytes::copy_from_slice(payload))
            .await
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConf {
    pub url: String,
    /// Environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

pub struct Webhook {
    path: String,
    token: Option<String>,
    poster: Poster,
}

impl Webhook {
    pub fn new(conf: WebhookConf) -> Result<Webhook, String> {
        let (origin, path) = Origin::parse(&conf.url)?;
        let token = match &conf.token_env {
            Some(v) => {
                Some(std::env::var(v).map_err(|_| format!("environment variable {v} is not set"))?)
            }
            None => None,
        };
        let path = if path.is_empty() { "/".into() } else { path };
        Ok(Webhook {
            path,
            token,
            poster: Poster::new(origin, Duration::from_secs(conf.timeout_secs.max(1))),
        })
    }
}

#[derive(Serialize)]
struct WebhookBatch<'a> {
    batch_id: &'a str,
    records: &'a [Record],
}

#[async_trait]
impl Sink for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }
    fn encode(&self, records: &[Record], batch_id: &str, out: &mut Vec<u8>) {
        if let Err(e) = serde_json::to_writer(&mut *out, &WebhookBatch { batch_id, records }) {
            log::error!("webhook batch not encoded: {e}");
        }
    }
    async fn send(&self, payload: &[u8]) -> Result<(), String> {
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(t) = &self.token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        self.poster
            .post(&self.path, &headers, Bytes::copy_from_slice(payload))
            .await
    }
}
