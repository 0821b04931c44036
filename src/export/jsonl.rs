//! JSONL file sink: one record per line, files rotated by UTC day and by size.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

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

pub struct JsonlSink {
    conf: JsonlConf,
    file: Option<(String, u32, File, u64)>,
}

impl JsonlSink {
    pub fn new(conf: JsonlConf) -> std::io::Result<JsonlSink> {
        std::fs::create_dir_all(&conf.dir)?;
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

    /// Appends a batch of newline-terminated records (blocking file I/O).
    pub fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let rotate = match &self.file {
            Some((d, _, _, size)) => {
                *d != day || size + lines.len() as u64 > self.conf.max_file_bytes && *size > 0
            }
            None => true,
        };
        if rotate {
            let mut n = match &self.file {
                Some((d, n, _, _)) if *d == day => n + 1,
                _ => 0,
            };
            // skip files already full (e.g. after a restart)
            loop {
                let size = std::fs::metadata(self.path(&day, n))
                    .map(|m| m.len())
                    .unwrap_or(0);
                if size == 0 || size + lines.len() as u64 <= self.conf.max_file_bytes {
                    let f = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.path(&day, n))?;
                    self.file = Some((day.clone(), n, f, size));
                    break;
                }
                n += 1;
            }
        }
        if let Some((_, _, f, size)) = self.file.as_mut() {
            // one write per batch: O_APPEND keeps concurrent writers (graceful upgrade) whole
            f.write_all(lines)?;
            if self.conf.durability == Durability::Fsync {
                f.sync_data()?;
            }
            *size += lines.len() as u64;
        }
        Ok(())
    }
}
