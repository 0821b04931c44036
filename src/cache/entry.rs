//! A complete cached answer (`Entry`) and its byte form for the Redis tier: what the in-memory store and the Redis tier both hold, so neither imports the other for it.

use std::time::SystemTime;

use bytes::Bytes;
use pingora_cache::CacheMeta;
use pingora_error::Result;

/// pingora-cache's serialized `CacheMeta` (its two parts).
pub(super) type BinaryMeta = (Vec<u8>, Vec<u8>);

/// A complete stored answer.
pub struct Entry {
    /// The whole key (TinyUFO keeps only a 64-bit hash of it).
    pub(super) key: String,
    pub meta: BinaryMeta,
    pub body: Bytes,
    /// From `meta`, decoded once: hits rebuild their `CacheMeta` from these instead of decoding
    /// (and decompressing) the stored header every time.
    pub(super) fresh_until: SystemTime,
    created: SystemTime,
    header: Option<pingora_http::ResponseHeader>,
}

impl Entry {
    pub fn key(&self) -> &str {
        &self.key
    }

    pub(super) fn size(&self) -> usize {
        self.key.len() + self.meta.0.len() + self.meta.1.len() + self.body.len()
    }

    pub fn new(key: String, meta: BinaryMeta, body: Bytes) -> Entry {
        // undecodable meta: never fresh, and decoded (to fail) when asked for
        let (fresh_until, created, header) = match CacheMeta::deserialize(&meta.0, &meta.1) {
            Ok(m) => (
                m.fresh_until(),
                m.created(),
                Some(m.response_header().clone()),
            ),
            Err(_) => (SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH, None),
        };
        Entry {
            key,
            meta,
            body,
            fresh_until,
            created,
            header,
        }
    }

    pub(super) fn cache_meta(&self) -> Result<CacheMeta> {
        match &self.header {
            Some(h) => Ok(CacheMeta::new(
                self.fresh_until,
                self.created,
                0,
                0,
                h.clone(),
            )),
            None => CacheMeta::deserialize(&self.meta.0, &self.meta.1),
        }
    }
}

/// An entry as bytes (for Redis): meta lengths, meta, body.
pub fn encode(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + e.meta.0.len() + e.meta.1.len() + e.body.len());
    out.extend_from_slice(&(e.meta.0.len() as u32).to_be_bytes());
    out.extend_from_slice(&(e.meta.1.len() as u32).to_be_bytes());
    out.extend_from_slice(&e.meta.0);
    out.extend_from_slice(&e.meta.1);
    out.extend_from_slice(&e.body);
    out
}

pub fn decode(key: &str, b: &[u8]) -> Option<Entry> {
    let n = |i: usize| -> Option<usize> {
        Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let (a, m) = (n(0)?, n(4)?);
    let meta0 = b.get(8..8 + a)?.to_vec();
    let meta1 = b.get(8 + a..8 + a + m)?.to_vec();
    let body = Bytes::copy_from_slice(b.get(8 + a + m..)?);
    let e = Entry::new(key.to_string(), (meta0, meta1), body);
    (e.fresh_until > SystemTime::now()).then_some(e)
}
