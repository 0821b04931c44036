//! JSONL file sink: one record per line, files rotated by UTC day and by size, torn last lines repaired.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use prometheus::IntCounter;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Written to the OS after every batch; survives a crash of the gateway, not of the machine.
    #[default]
    Batch,
    /// fsync after every batch; survives a power loss too, at the cost of a disk flush per batch.
    Fsync,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlConf {
    pub dir: PathBuf,
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    #[serde(default)]
    pub durability: Durability,
}

fn default_max_file_bytes() -> u64 {
    256 * 1024 * 1024
}

/// Files whose torn last line was cut off (and saved aside) when this process first opened them.
static REPAIRS: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    let c = IntCounter::new(
        "switchyard_export_jsonl_repairs_total",
        "JSONL files found ending in a torn line (a crash mid-write); the fragment was cut off and saved to <file>.torn",
    )
    .ok()?;
    if let Err(e) = prometheus::register(Box::new(c.clone())) {
        log::warn!("metric switchyard_export_jsonl_repairs_total not registered: {e}");
    }
    Some(c)
});

/// The file being appended to.
struct Current {
    day: String,
    n: u32,
    path: PathBuf,
    file: File,
    /// Its last line has not been checked yet (first open by this process).
    unchecked: bool,
}

/// Holds the exclusive advisory lock on a JSONL file; released when dropped, error or not.
struct Locked<'a>(&'a File);

impl<'a> Locked<'a> {
    fn new(f: &'a File) -> std::io::Result<Locked<'a>> {
        f.lock()?;
        Ok(Locked(f))
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Appends records to `switchyard-DAY.jsonl`, then `switchyard-DAY.1.jsonl`, ... always to the
/// newest file of the day. The old and new process of a graceful upgrade append to the same file:
/// each batch is one write under an exclusive advisory lock (`flock`), and so is the check of a
/// file's last line, so that a batch being written by the other process is never taken for a
/// torn one.
pub struct JsonlSink {
    conf: JsonlConf,
    file: Option<Current>,
}

/// Where the torn fragments cut from `path` are kept, one per line.
pub fn torn_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".torn");
    path.with_file_name(name)
}

/// Bytes read at a time when looking back for the last newline or copying a fragment.
const CHUNK: u64 = 64 * 1024;

impl JsonlSink {
    pub fn new(conf: JsonlConf) -> std::io::Result<JsonlSink> {
        std::fs::create_dir_all(&conf.dir)?;
        LazyLock::force(&REPAIRS);
        Ok(JsonlSink { conf, file: None })
    }

    fn path(&self, day: &str, n: u32) -> PathBuf {
        let name = if n == 0 {
            format!("switchyard-{day}.jsonl")
        } else {
            format!("switchyard-{day}.{n}.jsonl")
        };
        self.conf.dir.join(name)
    }

    /// The highest `n` of the day's files (0 when there is none yet).
    fn newest(dir: &Path, day: &str) -> std::io::Result<u32> {
        let first = format!("switchyard-{day}.jsonl");
        let prefix = format!("switchyard-{day}.");
        let mut newest = 0;
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == first {
                continue;
            }
            let n = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(n) = n {
                newest = newest.max(n);
            }
        }
        Ok(newest)
    }

    fn open(&mut self, day: &str, n: u32) -> std::io::Result<()> {
        // (an error then names the folder, not the previous file)
        self.file = None;
        let path = self.path(day, n);
        // read too: the check of the last line reads it back
        let file = OpenOptions::new()
            .read(true)
            .create(true)
            .append(true)
            .open(&path)?;
        self.file = Some(Current {
            day: day.to_string(),
            n,
            path,
            file,
            unchecked: true,
        });
        Ok(())
    }

    /// Appends a batch of newline-terminated records (blocking file I/O); an error names the
    /// file (or the folder) it happened on.
    pub fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.append(lines).map_err(|e| {
            let at = self.file.as_ref().map_or(&self.conf.dir, |c| &c.path);
            std::io::Error::new(e.kind(), format!("JSONL {}: {e}", at.display()))
        })
    }

    fn append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        if self.file.as_ref().is_none_or(|c| c.day != day) {
            // after a restart too: the newest file, where a shipper tailing the day's files looks
            let n = Self::newest(&self.conf.dir, &day)?;
            self.open(&day, n)?;
        }
        let len = lines.len() as u64;
        loop {
            let Some(cur) = self.file.as_mut() else {
                return Err(std::io::Error::other("no JSONL file open"));
            };
            let lock = Locked::new(&cur.file)?;
            // the file's real size: the other process of an upgrade appends to it too
            let mut size = cur.file.metadata()?.len();
            if cur.unchecked {
                size = repair(&cur.path, &cur.file, size)?;
                cur.unchecked = false;
            }
            if size > 0 && size.saturating_add(len) > self.conf.max_file_bytes {
                let next = cur
                    .n
                    .saturating_add(1)
                    .max(Self::newest(&self.conf.dir, &day)?);
                // (the day's last possible file takes everything beyond its size)
                if next != cur.n {
                    drop(lock);
                    self.open(&day, next)?;
                    continue;
                }
            }
            // one write per batch, under the lock: batches of two processes never interleave
            (&cur.file).write_all(lines)?;
            if self.conf.durability == Durability::Fsync {
                cur.file.sync_data()?;
            }
            drop(lock);
            return Ok(());
        }
    }
}

/// Cuts a torn last line (a crash mid-write) off `f` (`size` bytes, locked by the caller), saving
/// it to `<path>.torn` first; returns the size the file has then.
fn repair(path: &Path, f: &File, size: u64) -> std::io::Result<u64> {
    if size == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, size - 1)?;
    if last[0] == b'\n' {
        return Ok(size);
    }
    // the last newline: everything after it is the torn line
    let mut cut = 0;
    let mut end = size;
    let mut buf = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        buf.resize((end - start) as usize, 0);
        f.read_exact_at(&mut buf, start)?;
        if let Some(i) = buf.iter().rposition(|b| *b == b'\n') {
            cut = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    // saved (and on disk) before it is cut, so that a crash in between loses nothing
    let torn = torn_path(path);
    let mut out = OpenOptions::new().create(true).append(true).open(&torn)?;
    let mut at = cut;
    while at < size {
        buf.resize((size - at).min(CHUNK) as usize, 0);
        f.read_exact_at(&mut buf, at)?;
        out.write_all(&buf)?;
        at += buf.len() as u64;
    }
    out.write_all(b"\n")?;
    out.sync_data()?;
    f.set_len(cut)?;
    if let Some(c) = REPAIRS.as_ref() {
        c.inc();
    }
    log::warn!(
        "JSONL file {} ended in a torn line (a crash mid-write): its last {} bytes were cut off and saved to {}",
        path.display(),
        size - cut,
        torn.display()
    );
    Ok(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(dir: &Path, max_file_bytes: u64) -> JsonlSink {
        JsonlSink::new(JsonlConf {
            dir: dir.to_path_buf(),
            max_file_bytes,
            durability: Durability::Batch,
        })
        .unwrap()
    }

    fn today() -> String {
        chrono::Utc::now().format("%Y-%m-%d").to_string()
    }

    fn file(dir: &Path, n: u32) -> PathBuf {
        match n {
            0 => dir.join(format!("switchyard-{}.jsonl", today())),
            n => dir.join(format!("switchyard-{}.{n}.jsonl", today())),
        }
    }

    /// Every line of `path` is a JSON document; the documents.
    fn lines(path: &Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "torn: {text:?}");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_saved_and_the_next_record_starts_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), 0);
        let torn = format!(r#"{{"id":"b","body":"{}"#, "x".repeat(100_000));
        std::fs::write(&path, format!("{{\"id\":\"a\"}}\n{torn}")).unwrap();
        let mut s = sink(dir.path(), 1 << 30);
        s.write(b"{\"id\":\"c\"}\n").unwrap();
        s.write(b"{\"id\":\"d\"}\n").unwrap();
        let ids: Vec<_> = lines(&path).iter().map(|v| v["id"].clone()).collect();
        assert_eq!(ids, ["a", "c", "d"]);
        // nothing vanishes: the fragment is kept next to the file, one per line
        let saved = std::fs::read_to_string(torn_path(&path)).unwrap();
        assert_eq!(saved, format!("{torn}\n"));
    }

    #[test]
    fn a_file_without_any_newline_is_cut_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), 0);
        std::fs::write(&path, "{\"id\":").unwrap();
        let mut s = sink(dir.path(), 1 << 30);
        s.write(b"{\"id\":\"c\"}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"id\":\"c\"}\n");
        assert_eq!(
            std::fs::read_to_string(torn_path(&path)).unwrap(),
            "{\"id\":\n"
        );
    }

    #[test]
    fn a_whole_last_line_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), 0);
        std::fs::write(&path, "{\"id\":\"a\"}\n").unwrap();
        let mut s = sink(dir.path(), 1 << 30);
        s.write(b"{\"id\":\"b\"}\n").unwrap();
        assert_eq!(lines(&path).len(), 2);
        assert!(!torn_path(&path).exists());
    }

    /// A shipper tails the newest file of the day: after a restart records go there, not into
    /// an older file that still has room.
    #[test]
    fn after_a_restart_records_go_to_the_newest_file_of_the_day() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(file(dir.path(), 0), "{\"id\":\"a\"}\n").unwrap();
        std::fs::write(file(dir.path(), 1), "{\"id\":\"b\"}\n").unwrap();
        let mut s = sink(dir.path(), 100);
        s.write(b"{\"id\":\"c\"}\n").unwrap();
        assert_eq!(
            lines(&file(dir.path(), 0)).len(),
            1,
            "went to the older file"
        );
        assert_eq!(lines(&file(dir.path(), 1)).len(), 2);
        // the newest full: the next file
        s.write(format!("{{\"id\":\"{}\"}}\n", "d".repeat(80)).as_bytes())
            .unwrap();
        assert_eq!(lines(&file(dir.path(), 2)).len(), 1);
        assert_eq!(lines(&file(dir.path(), 1)).len(), 2);
    }

    /// The other process of an upgrade is in the middle of a batch (it holds the lock): the check
    /// of the last line waits for it and does not cut its batch.
    #[test]
    fn a_batch_being_written_by_another_process_is_not_taken_for_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), 0);
        let other = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        other.lock().unwrap();
        (&other).write_all(b"{\"id\":\"a\",\"half\":").unwrap();
        let writer = std::thread::spawn({
            let dir = dir.path().to_path_buf();
            move || sink(&dir, 1 << 30).write(b"{\"id\":\"b\"}\n").unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!writer.is_finished(), "wrote past the other process's lock");
        (&other).write_all(b"true}\n").unwrap();
        other.unlock().unwrap();
        writer.join().unwrap();
        let ids: Vec<_> = lines(&path).iter().map(|v| v["id"].clone()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(!torn_path(&path).exists());
    }

    /// Two writers (the two processes of an upgrade) on one file: every line whole.
    #[test]
    fn two_writers_on_one_file_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|scope| {
            for w in 0..2 {
                let dir = dir.path();
                scope.spawn(move || {
                    let mut s = sink(dir, 1 << 30);
                    for i in 0..200 {
                        let batch: String = (0..5)
                            .map(|j| {
                                format!(
                                    "{{\"w\":{w},\"i\":{i},\"j\":{j},\"pad\":\"{}\"}}\n",
                                    "p".repeat(3000)
                                )
                            })
                            .collect();
                        s.write(batch.as_bytes()).unwrap();
                    }
                });
            }
        });
        assert_eq!(lines(&file(dir.path(), 0)).len(), 2000);
    }
}
