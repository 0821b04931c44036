//! Gateway keys: configured from env vars or SHA-256 hashes, checked on every request.

pub mod conf;

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::issues::Issues;
use crate::error::GatewayError;
use conf::KeyConf;

/// The configured gateway keys, held only as SHA-256 digests.
#[derive(Debug, Default)]
pub struct KeyStore {
    by_hash: HashMap<[u8; 32], Arc<str>>,
}

impl KeyStore {
    pub fn build(keys: &[KeyConf], issues: &mut Issues) -> KeyStore {
        let mut store = KeyStore::default();
        for (i, k) in keys.iter().enumerate() {
            let at = format!("auth.keys[{i}]");
            if k.id.trim().is_empty() {
                issues.push(format!("{at}.id"), "must not be empty".into());
                continue;
            }
            let digest = match (&k.env, &k.sha256) {
                (Some(var), None) => match std::env::var(var) {
                    Ok(v) if !v.is_empty() => Sha256::digest(v.as_bytes()).into(),
                    _ => {
                        issues.push(
                            format!("{at}.env"),
                            format!("environment variable {var} is not set or empty"),
                        );
                        continue;
                    }
                },
                (None, Some(hexed)) => match hex::decode(hexed.trim()) {
                    Ok(b) if b.len() == 32 => {
                        let mut d = [0u8; 32];
                        d.copy_from_slice(&b);
                        d
                    }
                    _ => {
                        issues.push(
                            format!("{at}.sha256"),
                            "must be 64 hex digits (sha256sum of the key)".into(),
                        );
                        continue;
                    }
                },
                _ => {
                    issues.push(at, "set exactly one of `env` (variable holding the key) or `sha256` (its hash)".into());
                    continue;
                }
            };
            if store
                .by_hash
                .insert(digest, Arc::from(k.id.as_str()))
                .is_some()
            {
                issues.push(
                    format!("{at}.id"),
                    "the same key is configured twice".into(),
                );
            }
        }
        store
    }

    /// No keys configured: the gateway runs open.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Checks a `Bearer <key>` value; returns the key's id.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Arc<str>, GatewayError> {
        let Some(raw) = header else {
            return Err(GatewayError::Unauthorized(
                "missing gateway key: send it as 'Helicone-Auth: Bearer <key>' (on the unified API /v1/chat/completions also as 'Authorization: Bearer <key>', the OpenAI SDK's api_key)".into(),
            ));
        };
        let key = bearer_token(raw).ok_or_else(|| {
            GatewayError::Unauthorized(
                "malformed gateway key header: expected 'Bearer <key>'".into(),
            )
        })?;
        self.lookup(key)
    }

    /// The id of a key, by its hash.
    fn lookup(&self, key: &[u8]) -> Result<Arc<str>, GatewayError> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        self.by_hash
            .get(&digest)
            .cloned()
            .ok_or_else(|| GatewayError::Unauthorized("invalid gateway key".into()))
    }

    /// The key id of a bare key header (`x-api-key: <key>`, the anthropic SDK's).
    pub fn authenticate_key(&self, header: Option<&[u8]>) -> Result<Arc<str>, GatewayError> {
        let Some(key) = header.map(<[u8]>::trim_ascii).filter(|k| !k.is_empty()) else {
            return Err(GatewayError::Unauthorized(
                "missing gateway key: send it as 'x-api-key: <key>' (the anthropic SDK's api_key, Claude Code's ANTHROPIC_API_KEY), 'Authorization: Bearer <key>' (ANTHROPIC_AUTH_TOKEN) or 'Helicone-Auth: Bearer <key>'".into(),
            ));
        };
        self.lookup(key)
    }
}

/// `Bearer <token>` (scheme case-insensitive) -> token.
pub fn bearer_token(raw: &[u8]) -> Option<&[u8]> {
    let raw = raw.trim_ascii();
    if raw.len() < 7 || !raw[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = raw[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> KeyStore {
        std::env::set_var("SWITCHYARD_TEST_AUTH_KEY", "sk-gw-one");
        let keys = vec![
            KeyConf {
                id: "one".into(),
                env: Some("SWITCHYARD_TEST_AUTH_KEY".into()),
                sha256: None,
                limits: None,
            },
            KeyConf {
                id: "two".into(),
                env: None,
                sha256: Some(hex::encode(Sha256::digest(b"sk-gw-two"))),
                limits: None,
            },
        ];
        let mut issues = Issues::default();
        let s = KeyStore::build(&keys, &mut issues);
        assert!(issues.is_empty(), "{issues}");
        s
    }

    #[test]
    fn accepts_configured_keys_only() {
        let s = store();
        assert_eq!(&*s.authenticate(Some(b"Bearer sk-gw-one")).unwrap(), "one");
        assert_eq!(
            &*s.authenticate(Some(b"bearer   sk-gw-two ")).unwrap(),
            "two"
        );
        assert_eq!(
            s.authenticate(Some(b"Bearer sk-gw-three"))
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            s.authenticate(Some(b"sk-gw-one")).unwrap_err().status(),
            401
        );
        assert_eq!(s.authenticate(Some(b"Bearer ")).unwrap_err().status(), 401);
        assert_eq!(s.authenticate(None).unwrap_err().status(), 401);
    }
}
