//! Bounded on-disk spool of batches a sink could not take, replayed oldest first.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Batches waiting for one sink, one file each, named by the batch's creation key so that replay
/// follows the order the batches were cut in, whoever spooled them and when.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
    files: AtomicU64,
}

impl Spool {
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        // a `.tmp` left by a crash mid-write is incomplete: drop it
        for e in std::fs::read_dir(dir)?.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let files = Self::files(dir)?;
        let used = files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            used: AtomicU64::new(used),
            files: AtomicU64::new(files.len() as u64),
        })
    }

    fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "batch"))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Stores a batch under its ordering key; `Ok(false)` when the spool is full (the batch is
    /// not kept). The file appears whole or not at all (written aside, then renamed).
    pub fn push(&self, key: &str, payload: &[u8]) -> std::io::Result<bool> {
        if self.used.load(Ordering::Relaxed) + payload.len() as u64 > self.max_bytes {
            return Ok(false);
        }
        let name = format!("{key}.batch");
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, payload)?;
        std::fs::rename(&tmp, self.dir.join(name))?;
        self.used.fetch_add(payload.len() as u64, Ordering::Relaxed);
        self.files.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// The oldest stored batch.
    pub fn oldest(&self) -> Option<(PathBuf, Vec<u8>)> {
        let path = Self::files(&self.dir).ok()?.into_iter().next()?;
        let data = std::fs::read(&path).ok()?;
        Some((path, data))
    }

    /// Drops a delivered batch; `Err` when the file cannot be removed (it would be sent again).
    pub fn remove(&self, path: &Path, len: usize) -> std::io::Result<()> {
        std::fs::remove_file(path)?;
        self.used.fetch_sub(len as u64, Ordering::Relaxed);
        self.files.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// Re-reads the counters from the directory (after a file vanished or could not be read).
    pub fn resync(&self) {
        let files = Self::files(&self.dir).unwrap_or_default();
        let used = files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        self.used.store(used, Ordering::Relaxed);
        self.files.store(files.len() as u64, Ordering::Relaxed);
    }

    pub fn is_empty(&self) -> bool {
        self.files.load(Ordering::Relaxed) == 0
    }

    pub fn bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_survives_reopen_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 10).unwrap();
        assert!(s.is_empty());
        // spooled out of order: replay follows the keys
        assert!(s.push("0002", b"two").unwrap());
        assert!(s.push("0001", b"one").unwrap());
        assert!(!s.push("0003", b"three-too-big").unwrap(), "over the bound");
        std::fs::write(dir.path().join("0000.batch.tmp"), b"half").unwrap();
        let s = Spool::open(dir.path(), 10).unwrap();
        assert_eq!(s.bytes(), 6);
        assert!(
            !dir.path().join("0000.batch.tmp").exists(),
            "partial write dropped"
        );
        let (p, d) = s.oldest().unwrap();
        assert_eq!(d, b"one");
        s.remove(&p, d.len()).unwrap();
        let (p, d) = s.oldest().unwrap();
        assert_eq!(d, b"two");
        s.remove(&p, d.len()).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
        // a file removed behind the spool's back: the counters follow the directory again
        assert!(s.push("0004", b"four").unwrap());
        std::fs::remove_file(dir.path().join("0004.batch")).unwrap();
        assert!(!s.is_empty());
        assert!(s.oldest().is_none());
        s.resync();
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }
}
