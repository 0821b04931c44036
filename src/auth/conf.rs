//! `auth.keys[]` as the config file gives it; `KeyStore::build` turns it into the key store.

use serde::Deserialize;

use crate::limits::conf::KeyLimits;

/// A gateway key: its value from an environment variable, or only its SHA-256.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConf {
    pub id: String,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    /// What this key may use: requests per window, spend per day and month, concurrency.
    #[serde(default)]
    pub limits: Option<KeyLimits>,
}
