//! Request log export: `logging` hands each record to a bounded queue with `try_send` (the
//! request path never waits); a Pingora background service batches records by count, bytes and
//! delay into the configured sinks, keeps flushing through the grace period, and drains the
//! queue when the process exits.

pub mod jsonl;
pub mod record;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec,
    IntGauge,
};
use serde::Deserialize;
use tokio::sync::mpsc;

use jsonl::{JsonlConf, JsonlSink};
use record::Record;

/// Records held in memory when a sink fails, beyond which the oldest are dropped (and counted).
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConf {
    /// Records waiting for the exporter; when full, new records are dropped and counted.
    pub queue_capacity: usize,
    pub batch_max_records: usize,
    pub batch_max_bytes: usize,
    pub batch_max_delay_ms: u64,
    /// Request and response bodies kept in a record are truncated at this size (with a marker).
    pub max_body_bytes: usize,
    /// JSONL files (the default sink); `null` disables them.
    pub jsonl: Option<JsonlConf>,
}

impl Default for ExportConf {
    fn default() -> Self {
        ExportConf {
            queue_capacity: 65_536,
            batch_max_records: 1000,
            batch_max_bytes: 4 * 1024 * 1024,
            batch_max_delay_ms: 200,
            max_body_bytes: 64 * 1024,
            jsonl: Some(JsonlConf {
                dir: PathBuf::from("logs"),
                max_file_bytes: 256 * 1024 * 1024,
                durability: Default::default(),
            }),
        }
    }
}

struct ExportMetrics {
    queue: IntGauge,
    dropped: IntCounter,
    batches: IntCounterVec,
    records: IntCounterVec,
}

impl ExportMetrics {
    fn register() -> Result<Self, prometheus::Error> {
        Ok(ExportMetrics {
            queue: register_int_gauge!("switchyard_export_queue_depth", "Log records waiting for the exporter")?,
            dropped: register_int_counter!(
                "switchyard_export_records_dropped_total",
                "Log records lost: queue full, or a sink failing for longer than the in-memory buffer lasts"
            )?,
            batches: register_int_counter_vec!(
                "switchyard_export_batches_total",
                "Batches written, by sink and outcome (sent, failed)",
                &["sink", "outcome"]
            )?,
            records: register_int_counter_vec!("switchyard_export_records_total", "Log records written, by sink", &["sink"])?,
        })
    }
}

/// The handle `logging` uses.
pub struct Exporter {
    tx: mpsc::Sender<Record>,
    metrics: std::sync::Arc<ExportMetrics>,
    last_drop_log: AtomicU64,
}

impl Exporter {
    /// Queues a record without waiting; a full queue drops it (counted, logged at most once a second).
    pub fn submit(&self, rec: Record) {
        match self.tx.try_send(rec) {
            Ok(()) => self.metrics.queue.inc(),
            Err(e) => {
                self.metrics.dropped.inc();
                let now = chrono::Utc::now().timestamp() as u64;
                if self.last_drop_log.swap(now, Ordering::Relaxed) != now {
                    log::error!(
                        "log record dropped: export queue {}",
                        match e {
                            mpsc::error::TrySendError::Full(_) =>
                                "full (raise export.queue_capacity or check the sinks)",
                            mpsc::error::TrySendError::Closed(_) => "closed",
                        }
                    );
                }
            }
        }
    }
}

/// Everything the exporter task owns; dropping it (runtime shutdown at exit) drains and writes.
struct State {
    rx: mpsc::Receiver<Record>,
    lines: Vec<u8>,
    count: usize,
    jsonl: Option<JsonlSink>,
    metrics: std::sync::Arc<ExportMetrics>,
}

impl State {
    fn push(&mut self, rec: &Record) {
        self.metrics.queue.dec();
        if serde_json::to_writer(&mut self.lines, rec).is_ok() {
            self.lines.push(b'\n');
            self.count += 1;
        }
    }

    /// Writes the pending batch to every sink (blocking file I/O on the exporter's own runtime).
    fn flush(&mut self) {
        if self.count == 0 {
            return;
        }
        if let Some(sink) = self.jsonl.as_mut() {
            match sink.write(&self.lines) {
                Ok(()) => {
                    self.metrics
                        .batches
                        .with_label_values(&["jsonl", "sent"])
                        .inc();
                    self.metrics
                        .records
                        .with_label_values(&["jsonl"])
                        .inc_by(self.count as u64);
                }
                Err(e) => {
                    self.metrics
                        .batches
                        .with_label_values(&["jsonl", "failed"])
                        .inc();
                    log::error!(
                        "writing {} log records to JSONL failed (kept, retried): {e}",
                        self.count
                    );
                    if self.lines.len() > MAX_PENDING_BYTES {
                        self.metrics.dropped.inc_by(self.count as u64);
                        log::error!(
                            "dropping {} log records: the JSONL sink has been failing too long",
                            self.count
                        );
                    } else {
                        return;
                    }
                }
            }
        }
        self.lines.clear();
        self.count = 0;
    }
}

impl Drop for State {
    fn drop(&mut self) {
        while let Ok(rec) = self.rx.try_recv() {
            self.push(&rec);
        }
        self.flush();
    }
}

pub struct ExportService {
    state: Mutex<Option<State>>,
    conf: ExportConf,
}

/// Creates the handle and the background service that drains it.
pub fn build(conf: &ExportConf) -> Result<(Exporter, ExportService), String> {
    let metrics = std::sync::Arc::new(ExportMetrics::register().map_err(|e| e.to_string())?);
    let (tx, rx) = mpsc::channel(conf.queue_capacity.max(1));
    let jsonl = match &conf.jsonl {
        Some(j) => Some(
            JsonlSink::new(j.clone())
                .map_err(|e| format!("export.jsonl.dir {}: {e}", j.dir.display()))?,
        ),
        None => None,
    };
    let state = State {
        rx,
        lines: Vec::new(),
        count: 0,
        jsonl,
        metrics: metrics.clone(),
    };
    Ok((
        Exporter {
            tx,
            metrics,
            last_drop_log: AtomicU64::new(0),
        },
        ExportService {
            state: Mutex::new(Some(state)),
            conf: conf.clone(),
        },
    ))
}

#[async_trait]
impl BackgroundService for ExportService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut state) = self.state.lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.conf.batch_max_delay_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                rec = state.rx.recv() => match rec {
                    Some(rec) => {
                        state.push(&rec);
                        if state.count >= self.conf.batch_max_records || state.lines.len() >= self.conf.batch_max_bytes {
                            state.flush();
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => state.flush(),
                // SIGTERM / SIGQUIT: in-flight requests still log during the grace period, so
                // keep running; flush now so nothing waits for the delay
                r = shutdown.changed(), if !*shutdown.borrow() => {
                    if r.is_err() { break; }
                    state.flush();
                }
            }
        }
        // `state` drops here (or when the runtime drops this task): queue drained and written
    }
}
