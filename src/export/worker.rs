//! One sink's delivery loop: sends the batches the batcher hands it with retries, spools them when the sink stays down, and replays the spool in order once it answers again. Each sink has its own worker, so a slow or failing sink never holds up the others. A batch the sink refuses for good (see `sink_error`) goes to the dead-letter directory instead, fresh or replayed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::dead_letter::DeadLetter;
use super::sink_error::SinkError;
use super::sinks::Sink;
use super::spool::{Next, Spool};
use super::{Batch, ExportMetrics, PartGuard};

/// Tries per batch before it is spooled.
const TRIES: u32 = 3;
/// First retry delay; tripled after each failed try.
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// Replays of a failing sink back off from this ...
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// ... up to this (a refused connection costs little, and a recovered sink is noticed soon).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the batcher and the worker of one sink share.
pub(super) struct SinkShared {
    pub sink: Arc<dyn Sink>,
    pub spool: Spool,
    pub dead_letter: DeadLetter,
    pub metrics: Arc<ExportMetrics>,
}

impl SinkShared {
    pub fn count(&self, outcome: &str) {
        self.metrics
            .batches
            .with_label_values(&[self.sink.name(), outcome])
            .inc();
    }

    fn delivered(&self, records: usize) {
        self.metrics
            .records
            .with_label_values(&[self.sink.name()])
            .inc_by(records as u64);
    }

    fn spool_gauge(&self) {
        self.metrics
            .spool_bytes
            .with_label_values(&[self.sink.name()])
            .set(self.spool.bytes() as i64);
    }

    /// Keeps a batch on disk for later; when the spool is full the records are lost, and that
    /// is counted and logged.
    pub fn spool(&self, key: &str, payload: &[u8], records: usize) {
        match self.spool.push(key, payload) {
            Ok(true) => self.count("spooled"),
            Ok(false) => {
                self.metrics.dropped.inc_by(records as u64);
                log::error!(
                    "{} spool is full ({} bytes, export.spool_max_bytes): {records} log records dropped",
                    self.sink.name(),
                    self.spool.bytes()
                );
            }
            Err(e) => {
                self.metrics.dropped.inc_by(records as u64);
                log::error!(
                    "{} spool write failed ({e}): {records} log records dropped",
                    self.sink.name()
                );
            }
        }
        self.spool_gauge();
    }

    /// Moves a batch the sink refused for good to the dead-letter directory, so that it never
    /// blocks the batches after it; `records` when known (else read from the payload).
    fn dead_letter(&self, key: &str, payload: &[u8], records: Option<usize>, err: &SinkError) {
        let records = records.or_else(|| self.sink.records_in(payload));
        self.dead_letter
            .keep(self.sink.name(), &self.metrics, key, payload, records, err);
    }

    /// Encodes `b` for this sink into `out` (cleared first).
    pub fn encode(&self, b: &Batch, out: &mut Vec<u8>) {
        out.clear();
        self.sink.encode(&b.records, &b.id, out);
    }

    /// Last chance at exit (no runtime to wait on): a local sink that is not behind its spool
    /// takes the batch now; anything else is spooled for the next start.
    pub fn deliver_now(&self, key: &str, payload: &[u8], records: usize) {
        if self.spool.is_empty() {
            if let Some(Ok(())) = self.sink.write_now(payload) {
                self.count("sent");
                self.delivered(records);
                return;
            }
        }
        self.spool(key, payload, records);
    }
}

/// The batch in `Worker::buf`.
struct Encoded {
    key: String,
    records: usize,
}

pub(super) struct Worker {
    shared: Arc<SinkShared>,
    rx: mpsc::Receiver<Batch>,
    /// Encoding buffer, reused from batch to batch.
    buf: Vec<u8>,
    /// The batch in `buf` while it is being sent: if the runtime stops mid-send, `Drop` keeps it.
    current: Option<Encoded>,
    next_replay: Instant,
    backoff: Duration,
    _part: PartGuard,
}

impl Worker {
    pub fn new(shared: Arc<SinkShared>, rx: mpsc::Receiver<Batch>, part: PartGuard) -> Worker {
        shared.spool_gauge();
        // the sink's dead-letter series exist from the start, at 0, so that `increase()` sees
        // the first one
        let name = [shared.sink.name()];
        shared.metrics.dead_letter_batches.with_label_values(&name);
        shared.metrics.dead_letter_records.with_label_values(&name);
        Worker {
            shared,
            rx,
            buf: Vec::new(),
            current: None,
            next_replay: Instant::now(),
            backoff: MIN_BACKOFF,
            _part: part,
        }
    }

    pub fn sink_name(&self) -> &'static str {
        self.shared.sink.name()
    }

    /// Encodes `b` into `buf`.
    fn encode(&mut self, b: &Batch) -> Encoded {
        self.shared.encode(b, &mut self.buf);
        // a huge batch once should not pin its memory for good
        if self.buf.capacity() > 4 * self.buf.len().max(1 << 20) {
            self.buf.shrink_to(self.buf.len());
        }
        Encoded {
            key: b.key.clone(),
            records: b.records.len(),
        }
    }

    /// Runs until the batcher is gone, then makes one last attempt at the spool.
    pub async fn run(mut self) {
        loop {
            let spooled = !self.shared.spool.is_empty();
            // with nothing spooled, look again now and then: the other process of a graceful
            // upgrade may have left batches in the shared spool
            let replay_at = tokio::time::Instant::from_std(if spooled {
                self.next_replay
            } else {
                Instant::now() + MAX_BACKOFF
            });
            tokio::select! {
                b = self.rx.recv() => match b {
                    Some(b) => self.take(b).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(replay_at) => if spooled { self.replay().await },
            }
        }
        self.next_replay = Instant::now();
        self.replay().await;
    }

    async fn take(&mut self, b: Batch) {
        let e = self.encode(&b);
        if !self.shared.spool.is_empty() {
            // behind the spool: queue up after it (with whatever else is waiting), keeping order
            self.shared.spool(&e.key, &self.buf, e.records);
            while let Ok(b) = self.rx.try_recv() {
                let e = self.encode(&b);
                self.shared.spool(&e.key, &self.buf, e.records);
            }
            self.replay().await;
            return;
        }
        let records = e.records;
        self.current = Some(e);
        let mut delay = RETRY_DELAY;
        for attempt in 1..=TRIES {
            match self.shared.sink.send(&self.buf).await {
                Ok(()) => {
                    self.current = None;
                    self.shared.count("sent");
                    self.shared.delivered(records);
                    return;
                }
                Err(err) if err.is_rejected() => {
                    self.shared.count("failed");
                    if let Some(e) = self.current.take() {
                        self.shared
                            .dead_letter(&e.key, &self.buf, Some(e.records), &err);
                    }
                    return;
                }
                Err(err) => {
                    self.shared.count("failed");
                    log::warn!(
                        "{} batch of {records} records failed (try {attempt} of {TRIES}): {err}",
                        self.shared.sink.name()
                    );
                    if attempt < TRIES {
                        tokio::time::sleep(delay).await;
                        delay *= 3;
                    }
                }
            }
        }
        if let Some(e) = self.current.take() {
            self.shared.spool(&e.key, &self.buf, e.records);
        }
        self.backoff = MIN_BACKOFF;
        self.next_replay = Instant::now() + self.backoff;
    }

    /// Replays spooled batches oldest first; stops at the first failure and backs off.
    async fn replay(&mut self) {
        if Instant::now() < self.next_replay {
            return;
        }
        let name = self.shared.sink.name();
        loop {
            let taken = match self.shared.spool.oldest() {
                Next::Batch(t) => t,
                Next::Empty => {
                    self.shared.spool_gauge();
                    return;
                }
                Next::Busy => {
                    // the other process of a graceful upgrade is writing or sending the rest
                    self.next_replay = Instant::now() + MIN_BACKOFF;
                    self.shared.spool_gauge();
                    return;
                }
                Next::Unreadable(e) => {
                    // files are there but cannot be read: back off rather than spin
                    self.backoff = MAX_BACKOFF;
                    self.next_replay = Instant::now() + self.backoff;
                    log::error!(
                        "{name} spool has batches that cannot be read ({e}); next try in {:?}",
                        self.backoff
                    );
                    self.shared.spool_gauge();
                    return;
                }
            };
            match self.shared.sink.send(&taken.data).await {
                Ok(()) => {
                    let path = taken.path.clone();
                    if let Err(e) = self.shared.spool.remove(taken) {
                        // delivered, but it would be delivered again: stop and say so
                        self.backoff = MAX_BACKOFF;
                        self.next_replay = Instant::now() + self.backoff;
                        log::error!(
                            "{name}: delivered spooled batch {} cannot be removed ({e}); fix the spool directory's permissions",
                            path.display()
                        );
                        return;
                    }
                    self.shared.spool_gauge();
                    self.shared.count("replayed");
                    self.backoff = MIN_BACKOFF;
                    if self.shared.spool.is_empty() {
                        log::info!("{name} is back: the spool is replayed");
                    }
                }
                Err(e) if e.is_rejected() => {
                    // refused for good: out of the way, and on with the next one
                    self.shared.count("failed");
                    let path = taken.path.clone();
                    self.shared
                        .dead_letter(&key_of(&path), &taken.data, None, &e);
                    if let Err(err) = self.shared.spool.remove(taken) {
                        self.backoff = MAX_BACKOFF;
                        self.next_replay = Instant::now() + self.backoff;
                        log::error!(
                            "{name}: dead-lettered spooled batch {} cannot be removed ({err}); fix the spool directory's permissions",
                            path.display()
                        );
                        return;
                    }
                    self.shared.spool_gauge();
                }
                Err(e) => {
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    self.next_replay = Instant::now() + self.backoff;
                    log::warn!(
                        "{name} still failing ({e}); {} bytes spooled, next try in {:?}",
                        self.shared.spool.bytes(),
                        self.backoff
                    );
                    return;
                }
            }
        }
    }
}

/// The batch key a spool file is named by (`<key>.batch`).
fn key_of(path: &std::path::Path) -> String {
    path.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(e) = self.current.take() {
            // possibly delivered already: ids in the records let ClickHouse and webhook
            // consumers drop the duplicate
            self.shared.deliver_now(&e.key, &self.buf, e.records);
        }
        while let Ok(b) = self.rx.try_recv() {
            let e = self.encode(&b);
            self.shared.deliver_now(&e.key, &self.buf, e.records);
        }
    }
}
