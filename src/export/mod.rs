//! Request log export: `logging` hands each record to a bounded queue with `try_send` (the
//! request path never waits); a Pingora background service batches records by count, bytes and
//! delay into the configured sinks, keeps flushing through the grace period, and drains the
//! queue when the process exits.

pub mod http;
pub mod jsonl;
pub mod record;
pub mod sinks;
pub mod spool;

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

use bytes::Bytes;
use jsonl::{JsonlConf, JsonlSink};
use record::Record;
use sinks::{ClickHouse, ClickHouseConf, Jsonl, Sink, Webhook, WebhookConf};
use spool::Spool;

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
    /// ClickHouse over HTTP (JSONEachRow, gzip).
    pub clickhouse: Option<ClickHouseConf>,
    /// JSON batches POSTed to a URL.
    pub webhook: Option<WebhookConf>,
    /// Batches a sink could not take wait here (default: `<state_dir>/spool`), replayed in order.
    pub spool_dir: Option<PathBuf>,
    /// Spool size per sink; beyond it batches are dropped (counted and logged).
    pub spool_max_bytes: u64,
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
            clickhouse: None,
            webhook: None,
            spool_dir: None,
            spool_max_bytes: 1024 * 1024 * 1024,
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

/// One sink and its spool.
struct Slot {
    sink: Box<dyn Sink>,
    spool: Spool,
    /// Earliest time to try replaying the spool again, and the current backoff.
    next_replay: std::time::Instant,
    backoff: Duration,
}

/// Everything the exporter task owns; dropping it (runtime shutdown at exit) drains the queue
/// and writes the rest (local sinks directly, remote sinks into their spool).
struct State {
    rx: mpsc::Receiver<Record>,
    records: Vec<Record>,
    bytes: usize,
    slots: Vec<Slot>,
    metrics: std::sync::Arc<ExportMetrics>,
}

/// Replays of a failing sink back off up to this (a refused connection costs little).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl State {
    fn push(&mut self, rec: Record) {
        self.metrics.queue.dec();
        self.bytes += 512 + rec.request_bytes.min(64 * 1024) as usize;
        self.records.push(rec);
    }

    fn count(&self, slot: &Slot, outcome: &str) {
        self.metrics
            .batches
            .with_label_values(&[slot.sink.name(), outcome])
            .inc();
    }

    fn spool(&self, slot: &Slot, payload: &[u8], records: usize) {
        match slot.spool.push(payload) {
            Ok(true) => self.count(slot, "spooled"),
            Ok(false) => {
                self.metrics.dropped.inc_by(records as u64);
                log::error!(
                    "{} spool is full ({} bytes): {records} log records dropped",
                    slot.sink.name(),
                    slot.spool.bytes()
                );
            }
            Err(e) => {
                self.metrics.dropped.inc_by(records as u64);
                log::error!(
                    "{} spool write failed ({e}): {records} log records dropped",
                    slot.sink.name()
                );
            }
        }
    }

    /// Replays spooled batches oldest first; stops at the first failure (and backs off).
    async fn replay(&mut self, i: usize) {
        let now = std::time::Instant::now();
        if self.slots[i].spool.is_empty() || now < self.slots[i].next_replay {
            return;
        }
        while let Some((path, data)) = self.slots[i].spool.oldest() {
            let len = data.len();
            match self.slots[i].sink.send(Bytes::from(data)).await {
                Ok(()) => {
                    self.slots[i].spool.remove(&path, len);
                    self.count(&self.slots[i], "replayed");
                    self.slots[i].backoff = Duration::from_millis(500);
                }
                Err(e) => {
                    let slot = &mut self.slots[i];
                    slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
                    slot.next_replay = std::time::Instant::now() + slot.backoff;
                    log::warn!(
                        "{} still failing ({e}); {} bytes spooled, next try in {:?}",
                        slot.sink.name(),
                        slot.spool.bytes(),
                        slot.backoff
                    );
                    return;
                }
            }
        }
    }

    /// Sends the pending batch to every sink: in order behind anything spooled, retried twice
    /// with backoff, then spooled.
    async fn flush(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.records);
        self.bytes = 0;
        let batch_id = uuid::Uuid::new_v4().to_string();
        for i in 0..self.slots.len() {
            self.replay(i).await;
            let payload = Bytes::from(self.slots[i].sink.encode(&records, &batch_id));
            if !self.slots[i].spool.is_empty() {
                self.spool(&self.slots[i], &payload, records.len());
                continue;
            }
            let mut delay = Duration::from_millis(100);
            let mut sent = false;
            for attempt in 0..3 {
                match self.slots[i].sink.send(payload.clone()).await {
                    Ok(()) => {
                        sent = true;
                        break;
                    }
                    Err(e) => {
                        self.count(&self.slots[i], "failed");
                        log::warn!(
                            "{} batch of {} records failed (try {}): {e}",
                            self.slots[i].sink.name(),
                            records.len(),
                            attempt + 1
                        );
                        if attempt < 2 {
                            tokio::time::sleep(delay).await;
                            delay *= 3;
                        }
                    }
                }
            }
            if sent {
                self.count(&self.slots[i], "sent");
                self.metrics
                    .records
                    .with_label_values(&[self.slots[i].sink.name()])
                    .inc_by(records.len() as u64);
            } else {
                let slot = &mut self.slots[i];
                slot.backoff = Duration::from_secs(1);
                slot.next_replay = std::time::Instant::now() + slot.backoff;
                self.spool(&self.slots[i], &payload, records.len());
            }
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        while let Ok(rec) = self.rx.try_recv() {
            self.push(rec);
        }
        if self.records.is_empty() {
            return;
        }
        let batch_id = uuid::Uuid::new_v4().to_string();
        for slot in &self.slots {
            let payload = slot.sink.encode(&self.records, &batch_id);
            // local sinks take it now (unless they are behind their spool); remote ones spool
            match (slot.spool.is_empty(), slot.sink.write_now(&payload)) {
                (true, Some(Ok(()))) => {}
                _ => self.spool(slot, &payload, self.records.len()),
            }
        }
    }
}

pub struct ExportService {
    state: Mutex<Option<State>>,
    conf: ExportConf,
}

/// Creates the handle and the background service that drains it.
pub fn build(
    conf: &ExportConf,
    state_dir: &std::path::Path,
) -> Result<(Exporter, ExportService), String> {
    let metrics = std::sync::Arc::new(ExportMetrics::register().map_err(|e| e.to_string())?);
    let (tx, rx) = mpsc::channel(conf.queue_capacity.max(1));
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(j) = &conf.jsonl {
        let sink = JsonlSink::new(j.clone())
            .map_err(|e| format!("export.jsonl.dir {}: {e}", j.dir.display()))?;
        sinks.push(Box::new(Jsonl(Mutex::new(sink))));
    }
    if let Some(c) = &conf.clickhouse {
        sinks.push(Box::new(
            ClickHouse::new(c.clone()).map_err(|e| format!("export.clickhouse: {e}"))?,
        ));
    }
    if let Some(w) = &conf.webhook {
        sinks.push(Box::new(
            Webhook::new(w.clone()).map_err(|e| format!("export.webhook: {e}"))?,
        ));
    }
    let spool_root = conf
        .spool_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("spool"));
    let mut slots = Vec::new();
    for sink in sinks {
        let dir = spool_root.join(sink.name());
        let spool = Spool::open(&dir, conf.spool_max_bytes)
            .map_err(|e| format!("export spool {}: {e}", dir.display()))?;
        if !spool.is_empty() {
            log::info!(
                "{}: {} bytes of spooled log batches will be replayed",
                sink.name(),
                spool.bytes()
            );
        }
        slots.push(Slot {
            sink,
            spool,
            next_replay: std::time::Instant::now(),
            backoff: Duration::from_millis(500),
        });
    }
    let state = State {
        rx,
        records: Vec::new(),
        bytes: 0,
        slots,
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
                        state.push(rec);
                        if state.records.len() >= self.conf.batch_max_records || state.bytes >= self.conf.batch_max_bytes {
                            state.flush().await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    state.flush().await;
                    for i in 0..state.slots.len() {
                        state.replay(i).await;
                    }
                }
                // SIGTERM / SIGQUIT: in-flight requests still log during the grace period, so
                // keep running; flush now so nothing waits for the delay
                r = shutdown.changed(), if !*shutdown.borrow() => {
                    if r.is_err() { break; }
                    state.flush().await;
                }
            }
        }
        // the queue closed (the proxy service is gone): send what is left while the runtime
        // still runs; whatever cannot be sent is spooled by `flush` or by `Drop`
        state.flush().await;
        for i in 0..state.slots.len() {
            state.replay(i).await;
        }
    }
}
