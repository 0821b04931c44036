//! `prompts:` in the gateway config, as written: plain data the prompt store is built from.

use std::path::PathBuf;

use serde::Deserialize;

/// `prompts:` in the gateway config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsConf {
    /// The folder of `<prompt id>.yaml` files (relative to the config file's folder).
    pub dir: PathBuf,
    /// How often the folder is checked for changed, new and removed files.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_poll_ms() -> u64 {
    1000
}
