//! Bounded on-disk spool of batches a sink could not take, replayed oldest first, shared safely by the old and new process of a graceful upgrade.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How long the counters may go without a look at the directory (another process, the other
/// half of a graceful upgrade, may have added or replayed batches meanwhile).
const RESYNC_EVERY_MS: u64 = 1000;

/// Batches waiting for one sink, one file each, named by the batch's creation key and the pid of
/// the process that spooled it, so that replay follows the order the batches were cut in,
/// whoever spooled them and when, and two processes never pick the same name.
///
/// During a graceful upgrade the old and the new process use the same directory. Every file is
/// written and taken under an exclusive advisory lock (`flock`): a `.tmp` is locked while it is
/// written, and a batch is locked from before it is sent until it is removed. A batch is taken
/// only when its path still names the file that was locked, so a batch the other process has
/// just delivered and removed is never sent again. The counters are a cache of the directory:
/// they are read from it again before a batch is refused for want of room, whenever a replay
/// finds the directory empty, and at least once a second otherwise; they never wrap.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    pid: u32,
    used: AtomicU64,
    files: AtomicU64,
    born: Instant,
    /// Milliseconds after `born` of the last look at the directory.
    synced_ms: AtomicU64,
}

/// What [`Spool::oldest`] found.
pub enum Next {
    /// The oldest batch nobody else holds, locked until it is removed or dropped.
    Batch(Taken),
    /// Nothing spooled.
    Empty,
    /// Batches are there, but the other process holds every one of them (it is writing or
    /// sending them): look again soon.
    Busy,
    /// Batches are there but none could be read; the first error, naming the file.
    Unreadable(String),
}

/// A spooled batch, locked by this process: no other process sends it while this value lives.
/// Dropping it (the send failed) releases it; [`Spool::remove`] deletes it once delivered.
pub struct Taken {
    pub path: PathBuf,
    pub data: Vec<u8>,
    file: File,
}

fn add(c: &AtomicU64, n: u64) {
    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_add(n))
    });
}

fn sub(c: &AtomicU64, n: u64) {
    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

/// Whether `path` still names the file `f` has open (same device and inode).
fn names(path: &Path, f: &File) -> bool {
    match (std::fs::metadata(path), f.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Spool {
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        // a `.tmp` left by a crash mid-write is incomplete: drop it, unless its writer (the
        // other process of an upgrade) still holds its lock
        for e in std::fs::read_dir(dir)?.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "tmp") {
                continue;
            }
            let Ok(f) = File::open(&path) else { continue };
            match f.try_lock() {
                Ok(()) if names(&path, &f) => {
                    if let Err(e) = std::fs::remove_file(&path) {
                        log::warn!(
                            "spool: partial batch {} cannot be removed: {e}",
                            path.display()
                        );
                    }
                }
                Ok(()) => {} // renamed into place or removed meanwhile
                Err(TryLockError::WouldBlock) => {
                    log::info!(
                        "spool: {} is being written by another process; left alone",
                        path.display()
                    );
                }
                Err(TryLockError::Error(e)) => {
                    log::warn!("spool: cannot lock {}: {e}; left alone", path.display());
                }
            }
        }
        let s = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            pid: std::process::id(),
            used: AtomicU64::new(0),
            files: AtomicU64::new(0),
            born: Instant::now(),
            synced_ms: AtomicU64::new(0),
        };
        // the directory must be readable: a spool that cannot list its batches cannot replay them
        Self::files(dir)?;
        s.resync();
        Ok(s)
    }

    fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "batch"))
            .collect();
        v.sort();
        Ok(v)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Creates `tmp` and locks it. Another process's `Spool::open` may remove an unlocked `.tmp`
    /// in the instant between its creation and the lock: then the file is created again.
    fn create_locked(tmp: &Path) -> std::io::Result<File> {
        for _ in 0..3 {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(tmp)?;
            f.lock()?;
            if names(tmp, &f) {
                return Ok(f);
            }
        }
        Err(std::io::Error::other(format!(
            "{} was removed three times while being created (another process cleaning the spool?)",
            tmp.display()
        )))
    }

    /// Stores a batch under its ordering key; `Ok(false)` when the spool is full (the batch is
    /// not kept). The file appears whole or not at all (written aside under a lock, then renamed).
    pub fn push(&self, key: &str, payload: &[u8]) -> std::io::Result<bool> {
        let len = payload.len() as u64;
        if self.used.load(Ordering::Relaxed).saturating_add(len) > self.max_bytes {
            // the counter may be stale (the other process of an upgrade replayed batches): the
            // directory decides, not this process's idea of it
            self.resync();
            if self.used.load(Ordering::Relaxed).saturating_add(len) > self.max_bytes {
                return Ok(false);
            }
        }
        let name = format!("{key}-{}.batch", self.pid);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut f = Self::create_locked(&tmp)?;
        if let Err(e) = f
            .write_all(payload)
            .and_then(|_| std::fs::rename(&tmp, &path))
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // closing the file releases the lock: the batch may be taken from now on
        drop(f);
        add(&self.used, len);
        add(&self.files, 1);
        Ok(true)
    }

    /// The oldest stored batch that no other process holds, locked for this one.
    pub fn oldest(&self) -> Next {
        let files = match Self::files(&self.dir) {
            Ok(f) => f,
            Err(e) => return Next::Unreadable(format!("{}: {e}", self.dir.display())),
        };
        if files.is_empty() {
            self.used.store(0, Ordering::Relaxed);
            self.files.store(0, Ordering::Relaxed);
            self.synced_ms.store(self.now_ms(), Ordering::Relaxed);
            return Next::Empty;
        }
        self.files.store(files.len() as u64, Ordering::Relaxed);
        let mut busy = false;
        let mut unreadable = None;
        for path in files {
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    unreadable.get_or_insert(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            match f.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    busy = true;
                    continue;
                }
                Err(TryLockError::Error(e)) => {
                    unreadable.get_or_insert(format!("{}: cannot lock: {e}", path.display()));
                    continue;
                }
            }
            if !names(&path, &f) {
                // delivered and removed by the other process between the listing and the lock
                continue;
            }
            let mut data = Vec::new();
            if let Err(e) = f.read_to_end(&mut data) {
                unreadable.get_or_insert(format!("{}: {e}", path.display()));
                continue;
            }
            return Next::Batch(Taken {
                path,
                data,
                file: f,
            });
        }
        if let Some(e) = unreadable {
            Next::Unreadable(e)
        } else if busy {
            Next::Busy
        } else {
            // every file vanished under the listing: follow the directory
            self.resync();
            if self.files.load(Ordering::Relaxed) == 0 {
                Next::Empty
            } else {
                Next::Busy
            }
        }
    }

    /// Drops a delivered batch, then releases its lock; `Err` when the file cannot be removed
    /// (it would be sent again).
    pub fn remove(&self, t: Taken) -> std::io::Result<()> {
        std::fs::remove_file(&t.path)?;
        sub(&self.used, t.data.len() as u64);
        sub(&self.files, 1);
        drop(t.file);
        Ok(())
    }

    /// Re-reads the counters from the directory.
    pub fn resync(&self) {
        let files = Self::files(&self.dir).unwrap_or_default();
        let used = files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .fold(0u64, |n, m| n.saturating_add(m.len()));
        self.used.store(used, Ordering::Relaxed);
        self.files.store(files.len() as u64, Ordering::Relaxed);
        self.synced_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn resync_if_stale(&self) {
        let last = self.synced_ms.load(Ordering::Relaxed);
        if self.now_ms().saturating_sub(last) >= RESYNC_EVERY_MS {
            self.resync();
        }
    }

    /// No batch waiting, as far as the directory said within the last second (batches the
    /// other process of an upgrade left behind are noticed).
    pub fn is_empty(&self) -> bool {
        if self.files.load(Ordering::Relaxed) == 0 {
            self.resync_if_stale();
        }
        self.files.load(Ordering::Relaxed) == 0
    }

    pub fn bytes(&self) -> u64 {
        self.resync_if_stale();
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn take(s: &Spool) -> Taken {
        match s.oldest() {
            Next::Batch(t) => t,
            Next::Empty => panic!("spool empty"),
            Next::Busy => panic!("spool busy"),
            Next::Unreadable(e) => panic!("unreadable: {e}"),
        }
    }

    fn batch_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".batch"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn keeps_key_order_survives_reopen_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 10).unwrap();
        assert!(s.is_empty());
        // spooled out of order: replay follows the keys
        assert!(s.push("0002", b"two").unwrap());
        assert!(s.push("0001", b"one").unwrap());
        assert!(!s.push("0003", b"three-too-big").unwrap(), "over the bound");
        // the writer's pid is in the name: two processes never write the same file
        let pid = std::process::id();
        assert_eq!(
            batch_files(dir.path()),
            [format!("0001-{pid}.batch"), format!("0002-{pid}.batch")]
        );
        std::fs::write(dir.path().join("0000.batch.tmp"), b"half").unwrap();
        let s = Spool::open(dir.path(), 10).unwrap();
        assert_eq!(s.bytes(), 6);
        assert!(
            !dir.path().join("0000.batch.tmp").exists(),
            "partial write dropped"
        );
        let t = take(&s);
        assert_eq!(t.data, b"one");
        s.remove(t).unwrap();
        let t = take(&s);
        assert_eq!(t.data, b"two");
        s.remove(t).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
        assert!(matches!(s.oldest(), Next::Empty));
        // a file removed behind the spool's back: the counters follow the directory again
        assert!(s.push("0004", b"four").unwrap());
        std::fs::remove_file(dir.path().join(format!("0004-{pid}.batch"))).unwrap();
        assert!(!s.is_empty());
        assert!(matches!(s.oldest(), Next::Empty));
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }

    /// The old and the new process of an upgrade replay one directory at the same time: every
    /// batch is delivered exactly once.
    #[test]
    fn two_spools_on_one_directory_take_each_batch_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = Spool::open(dir.path(), 1 << 30).unwrap();
        let b = Spool::open(dir.path(), 1 << 30).unwrap();
        for i in 0..200 {
            let s = if i % 2 == 0 { &a } else { &b };
            assert!(s
                .push(&format!("{i:06}"), format!("batch {i}").as_bytes())
                .unwrap());
        }
        let sent = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for s in [&a, &b] {
                let sent = &sent;
                scope.spawn(move || loop {
                    match s.oldest() {
                        Next::Batch(t) => {
                            sent.lock()
                                .unwrap()
                                .push(String::from_utf8(t.data.clone()).unwrap());
                            // "sending" takes a moment: the other spool must not take it meanwhile
                            // (without the locks, 13 of 200 batches went out twice)
                            std::thread::sleep(std::time::Duration::from_millis(1));
                            s.remove(t).unwrap();
                        }
                        Next::Busy => std::thread::yield_now(),
                        Next::Empty => break,
                        Next::Unreadable(e) => panic!("{e}"),
                    }
                });
            }
        });
        let sent = sent.into_inner().unwrap();
        let mut times: HashMap<&str, usize> = HashMap::new();
        for s in &sent {
            *times.entry(s.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "sent twice: {twice:?}");
        assert_eq!(times.len(), 200, "every batch sent");
        assert!(a.is_empty() && b.is_empty());
        assert_eq!((a.bytes(), b.bytes()), (0, 0));
    }

    /// One process replays batches the other spooled after it had counted the directory: its
    /// counters neither wrap nor call the spool full.
    #[test]
    fn counters_never_wrap_and_a_stale_count_never_refuses_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let new = Spool::open(dir.path(), 20).unwrap();
        let old = Spool::open(dir.path(), 20).unwrap();
        assert!(old.push("0001", b"0123456789").unwrap());
        assert!(old.push("0002", b"0123456789").unwrap());
        // `new` counted nothing, yet removes both
        new.remove(take(&new)).unwrap();
        new.remove(take(&new)).unwrap();
        assert_eq!(new.bytes(), 0, "wrapped");
        assert!(new.is_empty());
        // `old` still counts 20 bytes, but the directory is empty: its next batch is kept
        assert!(old.push("0003", b"0123456789").unwrap(), "refused as full");
        assert!(old.push("0004", b"0123456789").unwrap(), "refused as full");
        assert!(!old.push("0005", b"x").unwrap(), "the bound still holds");
        assert_eq!(old.bytes(), 20);
        // the other spool's batches count against the bound once this one has looked (at
        // least once a second)
        new.resync();
        assert_eq!(new.bytes(), 20);
        assert!(
            !new.push("0006", b"x").unwrap(),
            "the bound is the directory's"
        );
    }

    /// A `.tmp` the other process is writing right now is not an abandoned one.
    #[test]
    fn a_tmp_being_written_survives_open() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("0001-1.batch.tmp");
        let writer = Spool::create_locked(&tmp).unwrap();
        let _s = Spool::open(dir.path(), 100).unwrap();
        assert!(tmp.exists(), "a .tmp held by its writer was removed");
        drop(writer);
        let _s = Spool::open(dir.path(), 100).unwrap();
        assert!(!tmp.exists(), "an abandoned .tmp was left");
    }

    /// A batch held by one process (being sent) is not taken by the other, and once delivered
    /// and removed it is never taken again, even by a process that listed it before.
    #[test]
    fn a_held_batch_is_skipped_and_a_removed_one_never_returns() {
        let dir = tempfile::tempdir().unwrap();
        let a = Spool::open(dir.path(), 100).unwrap();
        let b = Spool::open(dir.path(), 100).unwrap();
        assert!(a.push("0001", b"one").unwrap());
        assert!(a.push("0002", b"two").unwrap());
        let first = take(&a);
        assert_eq!(first.data, b"one");
        let second = take(&b);
        assert_eq!(second.data, b"two", "b skips the batch a holds");
        assert!(matches!(a.oldest(), Next::Busy));
        // b opened "one" before a removed it: the lock is granted, but the path is gone
        let path = first.path.clone();
        let stale = File::open(&path).unwrap();
        a.remove(first).unwrap();
        stale.try_lock().unwrap();
        assert!(
            !names(&path, &stale),
            "a removed batch passes for a spooled one"
        );
        b.remove(second).unwrap();
        assert!(matches!(a.oldest(), Next::Empty));
        assert!(matches!(b.oldest(), Next::Empty));
    }
}
