//! Batches a sink refused for good (a bad row, a schema mismatch), kept on disk with the reason, so that they never block the spool and an operator can inspect and replay them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::sink_error::SinkError;
use super::ExportMetrics;

/// One sink's dead-letter directory: `<key>.batch` holds the payload exactly as the sink was
/// sent it (so it can be moved back into the spool to replay it), `<key>.reason.json` why.
pub struct DeadLetter {
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
}

/// What `<key>.reason.json` holds.
#[derive(Serialize)]
pub struct Reason<'a> {
    pub sink: &'a str,
    /// The sink's HTTP status, when it answered.
    pub status: Option<u16>,
    pub message: &'a str,
    /// RFC 3339, UTC.
    pub time: String,
    /// Records in the batch, when known.
    pub records: Option<usize>,
    /// The payload's file name, beside this one.
    pub batch: String,
}

const BATCH_EXT: &str = "batch";
const REASON_SUFFIX: &str = ".reason.json";

impl DeadLetter {
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<DeadLetter> {
        std::fs::create_dir_all(dir)?;
        let used = std::fs::read_dir(dir)?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == BATCH_EXT))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        Ok(DeadLetter {
            dir: dir.to_path_buf(),
            max_bytes,
            used: AtomicU64::new(used),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps a refused batch and its reason; `Ok(None)` when the directory already holds
    /// `max_bytes` of batches (the batch is not kept). Each file appears whole or not at all.
    pub fn put(
        &self,
        key: &str,
        payload: &[u8],
        reason: &Reason<'_>,
    ) -> std::io::Result<Option<PathBuf>> {
        if self.used.load(Ordering::Relaxed) + payload.len() as u64 > self.max_bytes {
            return Ok(None);
        }
        let batch = self.dir.join(format!("{key}.{BATCH_EXT}"));
        write_whole(&batch, payload)?;
        let text = serde_json::to_vec_pretty(reason).map_err(std::io::Error::other)?;
        write_whole(&self.dir.join(format!("{key}{REASON_SUFFIX}")), &text)?;
        self.used.fetch_add(payload.len() as u64, Ordering::Relaxed);
        Ok(Some(batch))
    }
}

impl DeadLetter {
    /// Keeps a batch `sink` refused with `err`, counts it and logs it at ERROR; when it cannot
    /// be kept (directory full, or a write error) its records are counted as dropped.
    pub(super) fn keep(
        &self,
        sink: &str,
        metrics: &ExportMetrics,
        key: &str,
        payload: &[u8],
        records: Option<usize>,
        err: &SinkError,
    ) {
        let n = records.map_or_else(|| "?".to_string(), |n| n.to_string());
        let reason = Reason {
            sink,
            status: err.status,
            message: &err.message,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            records,
            batch: format!("{key}.{BATCH_EXT}"),
        };
        let lost = match self.put(key, payload, &reason) {
            Ok(Some(path)) => {
                metrics.dead_letter_batches.with_label_values(&[sink]).inc();
                metrics
                    .dead_letter_records
                    .with_label_values(&[sink])
                    .inc_by(records.unwrap_or(0) as u64);
                log::error!(
                    "{sink} rejected a batch of {n} log records ({err}): not retried, kept in {} with its reason; fix the cause, then replay it (README, \"Dead letters\")",
                    path.display()
                );
                return;
            }
            Ok(None) => "its dead-letter directory is full (export.spool_max_bytes)".to_string(),
            Err(e) => format!("it cannot be written to its dead-letter directory ({e})"),
        };
        metrics.dropped.inc_by(records.unwrap_or(0) as u64);
        log::error!(
            "{sink} rejected a batch of {n} log records ({err}), and {lost}: {}: the records are dropped",
            self.dir.display()
        );
    }
}

/// Writes aside, then renames into place.
fn write_whole(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_payload_and_the_reason_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let d = DeadLetter::open(&dir.path().join("webhook"), 10).unwrap();
        let reason = Reason {
            sink: "webhook",
            status: Some(400),
            message: "HTTP 400: bad row",
            time: "2026-12-06T00:00:00Z".into(),
            records: Some(2),
            batch: "k1.batch".into(),
        };
        let p = d.put("k1", b"payload", &reason).unwrap().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"payload");
        let r: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("webhook/k1.reason.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(r["status"], 400);
        assert_eq!(r["records"], 2);
        assert_eq!(r["message"], "HTTP 400: bad row");
        assert!(
            d.put("k2", b"more", &reason).unwrap().is_none(),
            "over the bound"
        );
        // the bound counts what is there after a restart
        let d = DeadLetter::open(&dir.path().join("webhook"), 10).unwrap();
        assert!(d.put("k3", b"1234", &reason).unwrap().is_none());
        assert!(d.put("k3", b"123", &reason).unwrap().is_some());
    }
}
