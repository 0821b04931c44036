//! Bounded on-disk spool of batches a sink could not take, replayed oldest first.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
    seq: AtomicU64,
}

impl Spool {
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let used = Self::files(dir)?
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            used: AtomicU64::new(used),
            seq: AtomicU64::new(0),
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

    /// Stores a batch; `Ok(false)` when the spool is full (the batch is not kept).
    pub fn push(&self, payload: &[u8]) -> std::io::Result<bool> {
        if self.used.load(Ordering::Relaxed) + payload.len() as u64 > self.max_bytes {
            return Ok(false);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{nanos:024}-{seq:08}.batch");
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, payload)?;
        std::fs::rename(&tmp, self.dir.join(name))?;
        self.used.fetch_add(payload.len() as u64, Ordering::Relaxed);
        Ok(true)
    }

    /// The oldest stored batch.
    pub fn oldest(&self) -> Option<(PathBuf, Vec<u8>)> {
        let path = Self::files(&self.dir).ok()?.into_iter().next()?;
        let data = std::fs::read(&path).ok()?;
        Some((path, data))
    }

    pub fn remove(&self, path: &Path, len: usize) {
        if std::fs::remove_file(path).is_ok() {
            self.used.fetch_sub(len as u64, Ordering::Relaxed);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.used.load(Ordering::Relaxed) == 0
            && Self::files(&self.dir).map_or(true, |f| f.is_empty())
    }

    pub fn bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_survives_reopen_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 10).unwrap();
        assert!(s.is_empty());
        assert!(s.push(b"one").unwrap());
        assert!(s.push(b"two").unwrap());
        assert!(!s.push(b"three-too-big").unwrap(), "over the bound");
        let s = Spool::open(dir.path(), 10).unwrap();
        assert_eq!(s.bytes(), 6);
        let (p, d) = s.oldest().unwrap();
        assert_eq!(d, b"one");
        s.remove(&p, d.len());
        assert_eq!(s.oldest().unwrap().1, b"two");
    }
}
