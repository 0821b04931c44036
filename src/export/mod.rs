//! Request log export: `logging` hands each record to a queue bounded in records and bytes with `try_send` (the request path never waits); a Pingora background service cuts batches by count, bytes and delay and hands them to one worker per sink, keeps flushing through the grace period, and drains the queue when the process exits.

pub mod dead_letter;
pub mod http;
pub mod jsonl;
pub mod record;
pub mod sink_error;
pub mod sinks;
pub mod spool;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use serde::Deserialize;
use tokio::sync::mpsc;

use dead_letter::DeadLetter;
use jsonl::{JsonlConf, JsonlSink};
use record::Record;
use sinks::{ClickHouse, ClickHouseConf, Jsonl, Sink, Webhook, WebhookConf};
use spool::Spool;
use worker::{SinkShared, Worker};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConf {
    /// Records waiting for the exporter; when full, new records are dropped and counted.
    pub queue_capacity: usize,
    /// Bytes (bodies included) of the records waiting; beyond it new records are dropped and
    /// counted, so a stalled exporter cannot take the machine's memory.
    pub queue_max_bytes: usize,
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
    /// Batches a sink refused for good (default: `<state_dir>/dead-letter`), one folder per
    /// sink, each bounded by `spool_max_bytes`.
    pub dead_letter_dir: Option<PathBuf>,
}

impl Default for ExportConf {
    fn default() -> Self {
        ExportConf {
            queue_capacity: 65_536,
            queue_max_bytes: 256 * 1024 * 1024,
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
            dead_letter_dir: None,
        }
    }
}

pub(crate) struct ExportMetrics {
    queue: IntGauge,
    dropped: IntCounter,
    batches: IntCounterVec,
    records: IntCounterVec,
    spool_bytes: IntGaugeVec,
    dead_letter_batches: IntCounterVec,
    dead_letter_records: IntCounterVec,
}

impl ExportMetrics {
    fn register() -> Result<Self, prometheus::Error> {
        Ok(ExportMetrics {
            queue: register_int_gauge!(
                "switchyard_export_queue_depth",
                "Log records waiting for the exporter"
            )?,
            dropped: register_int_counter!(
                "switchyard_export_records_dropped_total",
                "Log records lost: export queue full, or a sink's spool full"
            )?,
            batches: register_int_counter_vec!(
                "switchyard_export_batches_total",
                "Batches by sink and outcome (sent, failed = one failed try, spooled, replayed)",
                &["sink", "outcome"]
            )?,
            records: register_int_counter_vec!(
                "switchyard_export_records_total",
                "Log records delivered, by sink (replays from the spool not included)",
                &["sink"]
            )?,
            spool_bytes: register_int_gauge_vec!(
                "switchyard_export_spool_bytes",
                "Bytes of batches waiting in a sink's disk spool",
                &["sink"]
            )?,
            dead_letter_batches: register_int_counter_vec!(
                "switchyard_export_dead_letter_batches_total",
                "Batches a sink refused for good (bad rows, schema mismatch), moved to its dead-letter directory",
                &["sink"]
            )?,
            dead_letter_records: register_int_counter_vec!(
                "switchyard_export_dead_letter_records_total",
                "Log records in dead-lettered batches",
                &["sink"]
            )?,
        })
    }
}

/// Counts the exporter's parts (batcher, sink workers) still alive. A runtime stopped without a
/// timeout (SIGINT, or the end of `graceful_shutdown_timeout_seconds`) drops its tasks, and so
/// runs their last-chance flush, on its own threads while `main` is already returning: `main`
/// waits here before the process exits.
#[derive(Default)]
pub struct Drained {
    left: Mutex<usize>,
    cv: std::sync::Condvar,
    /// Asked to finish now (the gateway is idle at shutdown): the batcher cuts its last batch
    /// and stops, and the workers deliver or spool what they hold and stop.
    finish: AtomicBool,
    finish_now: tokio::sync::Notify,
}

impl Drained {
    /// Asks the exporter to flush everything and stop (no record can come any more).
    pub fn finish(&self) {
        self.finish.store(true, Ordering::Release);
        self.finish_now.notify_one();
    }

    fn finishing(&self) -> bool {
        self.finish.load(Ordering::Acquire)
    }

    /// Waits until every part has flushed and gone; `false` after `timeout`.
    pub fn wait(&self, timeout: Duration) -> bool {
        let left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        let (left, _) = self
            .cv
            .wait_timeout_while(left, timeout, |n| *n > 0)
            .unwrap_or_else(|p| p.into_inner());
        *left == 0
    }

    fn part(self: &Arc<Self>) -> PartGuard {
        *self.left.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        PartGuard(self.clone())
    }
}

/// Held by a part; dropped after the part's own `Drop` has flushed.
pub(crate) struct PartGuard(Arc<Drained>);

impl Drop for PartGuard {
    fn drop(&mut self) {
        let mut n = self.0.left.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.0.cv.notify_all();
    }
}

/// A cut batch, shared by every sink's worker.
#[derive(Clone)]
pub(crate) struct Batch {
    /// UUID sent with the batch (webhook consumers deduplicate on it).
    id: String,
    /// Creation order (nanoseconds, sequence): names the batch in a spool so replays keep order.
    key: String,
    records: Arc<Vec<Record>>,
}

/// The handle `logging` uses.
pub struct Exporter {
    tx: mpsc::Sender<Record>,
    /// Wakes the exporter early when a whole batch is waiting (otherwise it drains on its timer:
    /// no cross-thread wake-up per request).
    full_batch: Arc<tokio::sync::Notify>,
    batch_records: usize,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    metrics: Arc<ExportMetrics>,
    last_drop_log: AtomicU64,
    sinks: usize,
}

impl Exporter {
    /// `false` when no sink is configured: records are then not kept at all.
    pub fn enabled(&self) -> bool {
        self.sinks > 0
    }

    /// Queues a record without waiting; a full queue drops it (counted, logged at most once a second).
    pub fn submit(&self, rec: Record) {
        let size = rec.approx_bytes();
        let queued = self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if queued + size > self.max_bytes {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            return self.dropped("holds export.queue_max_bytes already");
        }
        match self.tx.try_send(rec) {
            Ok(()) => {
                self.metrics.queue.inc();
                if self.tx.max_capacity() - self.tx.capacity() >= self.batch_records {
                    self.full_batch.notify_one();
                }
            }
            Err(e) => {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                self.dropped(match e {
                    mpsc::error::TrySendError::Full(_) => "is full (export.queue_capacity)",
                    mpsc::error::TrySendError::Closed(_) => "is closed",
                });
            }
        }
    }

    fn dropped(&self, why: &str) {
        self.metrics.dropped.inc();
        let now = chrono::Utc::now().timestamp() as u64;
        if self.last_drop_log.swap(now, Ordering::Relaxed) != now {
            log::error!("log record dropped: the export queue {why}; raise it or check the sinks");
        }
    }
}

/// Takes records off the queue and cuts batches; dropping it (runtime shutdown at exit) drains
/// the queue and writes the rest (local sinks directly, remote sinks into their spool).
struct Batcher {
    rx: mpsc::Receiver<Record>,
    records: Vec<Record>,
    bytes: usize,
    queued_bytes: Arc<AtomicUsize>,
    sinks: Vec<(Arc<SinkShared>, mpsc::Sender<Batch>)>,
    metrics: Arc<ExportMetrics>,
    seq: u64,
    part: PartGuard,
}

/// Batches a sink's worker may have waiting before the batcher spools for it instead.
const SINK_QUEUE: usize = 8;

impl Batcher {
    fn push(&mut self, rec: Record) {
        let size = rec.approx_bytes();
        self.metrics.queue.dec();
        self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
        self.bytes += size;
        self.records.push(rec);
    }

    fn cut(&mut self) -> Option<Batch> {
        if self.records.is_empty() {
            return None;
        }
        self.bytes = 0;
        self.seq += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Some(Batch {
            id: uuid::Uuid::new_v4().to_string(),
            key: format!("{nanos:024}-{:010}", self.seq),
            records: Arc::new(std::mem::take(&mut self.records)),
        })
    }

    /// Hands the pending batch to every sink's worker; a worker that is behind gets it spooled.
    fn dispatch(&mut self) {
        let Some(batch) = self.cut() else { return };
        for (shared, tx) in &self.sinks {
            if let Err(e) = tx.try_send(batch.clone()) {
                let (b, why) = match e {
                    mpsc::error::TrySendError::Full(b) => {
                        (b, format!("is {SINK_QUEUE} batches behind"))
                    }
                    mpsc::error::TrySendError::Closed(b) => {
                        (b, "has no delivery worker left (it stopped)".to_string())
                    }
                };
                log::warn!(
                    "{} {why}: spooling a batch of {} records",
                    shared.sink.name(),
                    b.records.len()
                );
                let mut payload = Vec::new();
                shared.encode(&b, &mut payload);
                shared.spool(&b.key, &payload, b.records.len());
            }
        }
    }

    /// Takes everything queued, cutting a batch whenever one fills; `false` once the queue is
    /// closed (the proxy service is gone).
    fn drain(&mut self, max_records: usize, max_bytes: usize) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(rec) => {
                    self.push(rec);
                    if self.records.len() >= max_records || self.bytes >= max_bytes {
                        self.dispatch();
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
    }

    async fn run(
        &mut self,
        conf: &ExportConf,
        wake: &tokio::sync::Notify,
        mut shutdown: ShutdownWatch,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(conf.batch_max_delay_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let drained = self.part.0.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = wake.notified() => {}
                _ = drained.finish_now.notified() => {}
                // SIGTERM / SIGQUIT: in-flight requests still log during the grace period, so
                // keep running (and flush now rather than after the delay)
                r = shutdown.changed(), if !*shutdown.borrow() => {
                    if r.is_err() { break; }
                }
            }
            let open = self.drain(conf.batch_max_records, conf.batch_max_bytes);
            self.dispatch();
            if !open || drained.finishing() {
                break;
            }
        }
        self.drain(conf.batch_max_records, conf.batch_max_bytes);
        self.dispatch();
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        while let Ok(rec) = self.rx.try_recv() {
            self.push(rec);
        }
        let Some(b) = self.cut() else { return };
        let mut payload = Vec::new();
        for (shared, _) in &self.sinks {
            shared.encode(&b, &mut payload);
            shared.deliver_now(&b.key, &payload, b.records.len());
        }
    }
}

pub struct ExportService {
    parts: Mutex<Option<(Batcher, Vec<Worker>)>>,
    conf: ExportConf,
    full_batch: Arc<tokio::sync::Notify>,
}

/// Creates the handle and the background service that drains it.
pub fn build(
    conf: &ExportConf,
    state_dir: &std::path::Path,
) -> Result<(Exporter, ExportService, Arc<Drained>), String> {
    let drained = Arc::new(Drained::default());
    let metrics = Arc::new(ExportMetrics::register().map_err(|e| e.to_string())?);
    let (tx, rx) = mpsc::channel(conf.queue_capacity.max(1));
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    if let Some(j) = &conf.jsonl {
        let sink = JsonlSink::new(j.clone())
            .map_err(|e| format!("export.jsonl.dir {}: {e}", j.dir.display()))?;
        sinks.push(Arc::new(Jsonl(Mutex::new(sink))));
    }
    if let Some(c) = &conf.clickhouse {
        sinks.push(Arc::new(
            ClickHouse::new(c.clone()).map_err(|e| format!("export.clickhouse: {e}"))?,
        ));
    }
    if let Some(w) = &conf.webhook {
        sinks.push(Arc::new(
            Webhook::new(w.clone()).map_err(|e| format!("export.webhook: {e}"))?,
        ));
    }
    let spool_root = conf
        .spool_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("spool"));
    let dead_letter_root = conf
        .dead_letter_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("dead-letter"));
    let mut handles = Vec::new();
    let mut workers = Vec::new();
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
        let dir = dead_letter_root.join(sink.name());
        let dead_letter = DeadLetter::open(&dir, conf.spool_max_bytes)
            .map_err(|e| format!("export dead-letter directory {}: {e}", dir.display()))?;
        let shared = Arc::new(SinkShared {
            sink,
            spool,
            dead_letter,
            metrics: metrics.clone(),
        });
        let (btx, brx) = mpsc::channel(SINK_QUEUE);
        workers.push(Worker::new(shared.clone(), brx, drained.part()));
        handles.push((shared, btx));
    }
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let sink_count = handles.len();
    let batcher = Batcher {
        rx,
        records: Vec::new(),
        bytes: 0,
        queued_bytes: queued_bytes.clone(),
        sinks: handles,
        metrics: metrics.clone(),
        seq: 0,
        part: drained.part(),
    };
    let full_batch = Arc::new(tokio::sync::Notify::new());
    Ok((
        Exporter {
            tx,
            full_batch: full_batch.clone(),
            batch_records: conf.batch_max_records.max(1),
            queued_bytes,
            max_bytes: conf.queue_max_bytes.max(1),
            metrics,
            last_drop_log: AtomicU64::new(0),
            sinks: sink_count,
        },
        ExportService {
            parts: Mutex::new(Some((batcher, workers))),
            conf: conf.clone(),
            full_batch,
        },
        drained,
    ))
}

#[async_trait]
impl BackgroundService for ExportService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let Some((batcher, workers)) = self.parts.lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        let batching = async move {
            let mut b = batcher;
            b.run(&self.conf, &self.full_batch, shutdown).await;
            // dropping the batcher closes the workers' queues: they finish what they hold
        };
        // each sink's worker is a task of its own: a panic in one is logged and ends that
        // worker only (the batcher then spools that sink's batches for the next start)
        let delivering = run_contained(
            workers
                .into_iter()
                .map(|w| (w.sink_name(), w.run()))
                .collect(),
        );
        tokio::join!(batching, delivering);
    }
}

/// Runs each `(sink, future)` as a task of its own and waits for them all; a panic ends its own
/// task only, and is logged naming the sink. Returns how many panicked.
async fn run_contained<F>(parts: Vec<(&'static str, F)>) -> usize
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    // each task is watched on its own, so a panic is logged when it happens, not at exit
    let watched = parts.into_iter().map(|(name, f)| {
        let task = tokio::spawn(f);
        async move {
            match task.await {
                Err(e) if e.is_panic() => {
                    let what = e.into_panic();
                    let what = what
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| what.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    log::error!(
                        "the {name} export worker panicked ({what}); its batches are spooled until the gateway restarts, the other sinks go on"
                    );
                    1
                }
                _ => 0,
            }
        }
    });
    futures_util::future::join_all(watched)
        .await
        .into_iter()
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_sink_worker_stops_no_other() {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        let boxed = |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| f;
        let parts = vec![
            (
                "webhook",
                boxed(Box::pin(async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    panic!("sink exploded");
                })),
            ),
            (
                "jsonl",
                boxed(Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    d.store(true, Ordering::SeqCst);
                })),
            ),
        ];
        assert_eq!(run_contained(parts).await, 1);
        assert!(
            done.load(Ordering::SeqCst),
            "the other worker ran to its end"
        );
    }
}
