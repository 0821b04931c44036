//! The exporter's sinks: JSONL files, ClickHouse over HTTP (gzip JSONEachRow), HTTP webhook.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::http::{Answer, Poster};
use super::jsonl::JsonlSink;
use super::record::{LoggedBody, Record};
use super::sink_error::SinkError;
use crate::origin::Origin;

/// Where a batch goes. `encode` runs once per batch, into a buffer the caller reuses (no fresh
/// pages per batch); what it writes is what gets sent, retried and spooled.
#[async_trait]
pub trait Sink: Send + Sync {
    fn name(&self) -> &'static str;
    fn encode(&self, records: &[Record], batch_id: &str, out: &mut Vec<u8>);
    /// Delivers an encoded batch; the error says whether trying again can help.
    async fn send(&self, payload: &[u8]) -> Result<(), SinkError>;
    /// Local sinks write synchronously at exit (remote ones spool instead).
    fn write_now(&self, _payload: &[u8]) -> Option<Result<(), String>> {
        None
    }
    /// Records in an encoded batch (for the dead-letter count of a batch read back from the
    /// spool); `None` when the payload cannot be read.
    fn records_in(&self, payload: &[u8]) -> Option<usize>;
}

/// Lines in newline-terminated JSON rows.
fn count_lines(rows: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', rows).count()
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
    async fn send(&self, payload: &[u8]) -> Result<(), SinkError> {
        // a local append of one batch: short blocking I/O on the exporter's own runtime
        self.write_now(payload)
            .unwrap_or(Ok(()))
            .map_err(SinkError::retryable)
    }
    fn records_in(&self, payload: &[u8]) -> Option<usize> {
        Some(count_lines(payload))
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

/// Columns added since the first DDL: (name, type). Added at the end of an older table
/// (inserts name their columns, and unknown ones are skipped, so a table that cannot take
/// them still takes the records).
const ADDED_COLUMNS: [(&str, &str); 2] = [
    ("dialect", "Nullable(String)"),
    ("dropped_fields", "String"),
];

pub const CLICKHOUSE_DDL: &str = include_str!("../../conf/clickhouse.sql");

/// One ClickHouse row: nested values as JSON strings (ClickHouse 18.16 has no JSON columns).
#[derive(Serialize)]
struct Row<'a> {
    event_date: String,
    id: &'a str,
    record_id: &'a str,
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
    cost_status: Option<&'static str>,
    deprecated: u8,
    dialect: Option<&'static str>,
    dropped_fields: String,
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

    /// Runs `sql` (in the body); the answer's body on a 2xx.
    async fn query(&self, sql: &str) -> Result<String, SinkError> {
        let a = self
            .poster
            .post(
                &Self::query_path(""),
                &self.headers(&[]),
                Bytes::from(sql.to_string()),
            )
            .await?;
        if a.is_success() {
            Ok(a.body)
        } else {
            Err(clickhouse_error(&a))
        }
    }

    /// Creates the database and table (when `create_table`), migrates a table made by an older
    /// DDL, and warns when the table still deduplicates on `id` alone. Whatever fails here is
    /// the server's state, never the batch's: retryable.
    async fn ensure_table(&self) -> Result<(), SinkError> {
        if self.ready.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let prepare = async {
            if self.conf.create_table {
                let db = &self.conf.database;
                self.query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
                    .await?;
                self.query(&table_ddl(db, &self.conf.table)).await?;
                self.add_record_id().await?;
                self.add_columns().await?;
            }
            Ok::<_, SinkError>(())
        };
        prepare.await.map_err(|e| SinkError::retryable(e.message))?;
        self.check_sorting_key().await;
        self.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        log::info!(
            "ClickHouse table {}.{} is ready",
            self.conf.database,
            self.conf.table
        );
        Ok(())
    }

    /// `{db}.{table}` as a string literal's content.
    fn quoted_names(&self) -> (String, String) {
        (
            self.conf
                .database
                .replace('\\', "\\\\")
                .replace('\'', "\\'"),
            self.conf.table.replace('\\', "\\\\").replace('\'', "\\'"),
        )
    }

    /// A table made before records had a `record_id` gets the column, and (when ClickHouse
    /// can change its sorting key: not for tables of the old `MergeTree(date, key, 8192)`
    /// syntax) the sorting key `(id, record_id)`, in one `ALTER` (18.16 only lets a sorting
    /// key take a column added in the same statement, and has no `ADD COLUMN IF NOT EXISTS`).
    async fn add_record_id(&self) -> Result<(), SinkError> {
        let (qdb, qtable) = self.quoted_names();
        let has = self
            .query(&format!(
                "SELECT count() FROM system.columns WHERE database = '{qdb}' AND table = '{qtable}' AND name = '{RECORD_ID_COLUMN}'"
            ))
            .await?;
        if has.trim() != "0" {
            return Ok(());
        }
        let target = format!("{}.{}", self.conf.database, self.conf.table);
        let add = format!("ADD COLUMN {RECORD_ID_COLUMN} String AFTER id");
        match self
            .query(&format!(
                "ALTER TABLE {target} {add}, MODIFY ORDER BY {SORTING_KEY}"
            ))
            .await
        {
            Ok(_) => {
                log::info!(
                    "ClickHouse table {target} migrated: column {RECORD_ID_COLUMN} added, rows now deduplicated on {SORTING_KEY}"
                );
                Ok(())
            }
            Err(e) => {
                log::warn!("ClickHouse table {target}: the sorting key cannot be changed ({e}); adding the column only");
                self.query(&format!("ALTER TABLE {target} {add}")).await?;
                Ok(())
            }
        }
    }

    /// Columns later records carry, added to a table made by an older DDL; a table that
    /// refuses one is warned about and still takes the records (without that column).
    async fn add_columns(&self) -> Result<(), SinkError> {
        let (qdb, qtable) = self.quoted_names();
        let target = format!("{}.{}", self.conf.database, self.conf.table);
        for (name, kind) in ADDED_COLUMNS {
            let has = self
                .query(&format!(
                    "SELECT count() FROM system.columns WHERE database = '{qdb}' AND table = '{qtable}' AND name = '{name}'"
                ))
                .await?;
            if has.trim() != "0" {
                continue;
            }
            match self
                .query(&format!("ALTER TABLE {target} ADD COLUMN {name} {kind}"))
                .await
            {
                Ok(_) => log::info!("ClickHouse table {target} migrated: column {name} added"),
                Err(e) => log::warn!(
                    "ClickHouse table {target}: column {name} could not be added ({e}); records are stored without it"
                ),
            }
        }
        Ok(())
    }

    /// Warns (at start-up, once) when the table still deduplicates on `id` alone: a client
    /// that reuses a `Helicone-Request-Id` then erases the earlier record under `FINAL`.
    async fn check_sorting_key(&self) {
        let (qdb, qtable) = self.quoted_names();
        let target = format!("{}.{}", self.conf.database, self.conf.table);
        match self
            .query(&format!(
                "SELECT sorting_key FROM system.tables WHERE database = '{qdb}' AND name = '{qtable}'"
            ))
            .await
        {
            Ok(key) if key.split(',').any(|c| c.trim() == RECORD_ID_COLUMN) => {}
            Ok(key) => log::warn!(
                "ClickHouse table {target} is ordered by ({}), not {SORTING_KEY}: records that share an id (a client can reuse Helicone-Request-Id) replace each other under FINAL. \
                 Migrate it: create the table of conf/clickhouse.sql as {target}_new, INSERT INTO {target}_new SELECT * FROM {target} (columns in the same order), \
                 then RENAME TABLE {target} TO {target}_old, {target}_new TO {target} (see README, \"Request logs\")",
                key.trim()
            ),
            Err(e) => log::warn!("ClickHouse table {target}: its sorting key cannot be read ({e})"),
        }
    }
}

/// The column that tells records apart (a gateway-made UUID per record).
const RECORD_ID_COLUMN: &str = "record_id";
/// The sorting key, and so the deduplication key, of the table.
const SORTING_KEY: &str = "(id, record_id)";

/// The DDL of conf/clickhouse.sql for `db.table`, comments dropped.
fn table_ddl(db: &str, table: &str) -> String {
    CLICKHOUSE_DDL
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("{db}", db)
        .replace("{table}", table)
}

/// A non-2xx answer of ClickHouse, classified by its exception code.
fn clickhouse_error(a: &Answer) -> SinkError {
    SinkError::from_clickhouse(a.status, a.exception_code.as_deref(), &a.body)
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
                record_id: &r.record_id,
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
                cost_status: r.cost_status,
                deprecated: r.deprecated as u8,
                dialect: r.dialect,
                dropped_fields: r.dropped_fields.join(", "),
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

    fn records_in(&self, payload: &[u8]) -> Option<usize> {
        use std::io::Read;
        let mut rows = Vec::new();
        flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut rows)
            .ok()?;
        Some(count_lines(&rows))
    }

    async fn send(&self, payload: &[u8]) -> Result<(), SinkError> {
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
        let a = self
            .poster
            .post(&path, &headers, Bytes::copy_from_slice(payload))
            .await?;
        if a.is_success() {
            Ok(())
        } else {
            Err(clickhouse_error(&a))
        }
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
    fn records_in(&self, payload: &[u8]) -> Option<usize> {
        #[derive(Deserialize)]
        struct Records {
            records: Vec<serde::de::IgnoredAny>,
        }
        serde_json::from_slice::<Records>(payload)
            .ok()
            .map(|b| b.records.len())
    }
    async fn send(&self, payload: &[u8]) -> Result<(), SinkError> {
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(t) = &self.token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        let a = self
            .poster
            .post(&self.path, &headers, Bytes::copy_from_slice(payload))
            .await?;
        if a.is_success() {
            Ok(())
        } else {
            Err(SinkError::from_http(a.status, &a.body))
        }
    }
}
