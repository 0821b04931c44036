//! The response store behind pingora-cache: in memory, bounded in bytes by TinyUFO, with streaming partial writes (a concurrent identical request reads the answer as it arrives), and an optional Redis tier shared by several gateways. The partial-write design follows pingora-cache's `MemCache` (Apache-2.0).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::eviction::CacheEntryKey;
use pingora_cache::key::CacheHashKey;
use pingora_cache::storage::streaming_write::U64WriteId;
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::{Error, ErrorType, Result};
use tokio::sync::watch;

use super::entry::BinaryMeta;
pub use super::entry::{decode, encode, Entry};
use super::redis_tier::RedisTier;
use super::CacheMetrics;

/// TinyUFO weighs entries in these units (its weight is a u16).
const WEIGHT_UNIT: usize = 1024;

#[derive(Clone, Copy)]
enum Written {
    Partial(usize),
    Complete(usize),
}

/// An answer being written.
struct Temp {
    meta: BinaryMeta,
    body: Arc<RwLock<Vec<u8>>>,
    written: Arc<watch::Sender<Written>>,
}

type TempMap = RwLock<HashMap<String, HashMap<u64, Temp>>>;

pub struct Store {
    /// The answers. TinyUFO only decides which keys stay: its lock-free buckets are reclaimed
    /// late (epoch-based), so the bodies themselves live here and are freed on eviction.
    entries: RwLock<HashMap<String, Arc<Entry>>>,
    admission: tinyufo::TinyUfo<String, Arc<str>>,
    bytes: AtomicUsize,
    max_bytes: usize,
    max_entry_bytes: usize,
    temp: Arc<TempMap>,
    next_write: AtomicU64,
    redis: Option<RedisTier>,
    metrics: CacheMetrics,
}

/// The store's name for a key: the key text the proxy built (already a BLAKE3 digest plus the
/// bucket), so no second hash is needed.
fn name(key: &CacheKey) -> String {
    key.primary_key_str()
        .map_or_else(|| key.combined(), str::to_string)
}

fn lock_err<T>(_: T) -> Box<Error> {
    Error::explain(ErrorType::InternalError, "cache store lock poisoned")
}

impl Store {
    pub fn new(
        max_bytes: usize,
        max_entry_bytes: usize,
        redis: Option<RedisTier>,
        metrics: CacheMetrics,
    ) -> Store {
        let units = (max_bytes / WEIGHT_UNIT).max(1);
        Store {
            entries: RwLock::new(HashMap::new()),
            // the estimate sizes TinyUFO's frequency sketch: assume 8 KiB answers
            admission: tinyufo::TinyUfo::new(units, (max_bytes / 8192).max(64)),
            bytes: AtomicUsize::new(0),
            max_bytes,
            max_entry_bytes,
            temp: Arc::new(RwLock::new(HashMap::new())),
            next_write: AtomicU64::new(0),
            redis,
            metrics,
        }
    }

    /// Bytes held by complete entries.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let e = self.entries.read().ok()?.get(key).cloned()?;
        // counts the access for TinyUFO's frequency estimate
        self.admission.get(&e.key);
        Some(e)
    }

    /// Whether a fresh answer is stored under `key` (memory, then Redis): buckets are chosen by it.
    pub async fn contains(&self, key: &str) -> bool {
        if let Some(e) = self.get(key) {
            if e.fresh_until > SystemTime::now() {
                return true;
            }
        }
        match &self.redis {
            Some(r) => r.exists(key).await,
            None => false,
        }
    }

    /// Puts a complete entry, keeping the byte count in step with TinyUFO's evictions.
    fn put(&self, entry: Arc<Entry>) -> usize {
        let size = entry.size();
        if size > self.max_entry_bytes {
            self.metrics.too_large.inc();
            return size;
        }
        let key = entry.key.clone();
        self.remove(&key);
        let weight = size.div_ceil(WEIGHT_UNIT).clamp(1, u16::MAX as usize) as u16;
        let Ok(mut entries) = self.entries.write() else {
            return size;
        };
        entries.insert(key.clone(), entry);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        let name: Arc<str> = Arc::from(key.as_str());
        for evicted in self.admission.force_put(key, name, weight) {
            if let Some(e) = entries.remove(&*evicted.data) {
                self.bytes.fetch_sub(e.size(), Ordering::Relaxed);
                self.metrics.evictions.inc();
            }
        }
        self.metrics.bytes.set(self.bytes() as i64);
        size
    }

    fn remove(&self, key: &str) -> bool {
        self.admission.remove(&key.to_string());
        let removed = self.entries.write().ok().and_then(|mut m| m.remove(key));
        match removed {
            Some(e) => {
                self.bytes.fetch_sub(e.size(), Ordering::Relaxed);
                self.metrics.bytes.set(self.bytes() as i64);
                true
            }
            None => false,
        }
    }
}

/// Reads a complete entry at once.
struct CompleteHit {
    body: Bytes,
    done: bool,
}

/// Reads an answer that is still being written, as it grows.
struct PartialHit {
    body: Arc<RwLock<Vec<u8>>>,
    written: watch::Receiver<Written>,
    read: usize,
}

impl PartialHit {
    async fn next(&mut self) -> Result<Option<Bytes>> {
        loop {
            let end = match *self.written.borrow_and_update() {
                Written::Partial(n) => n,
                Written::Complete(n) if n == self.read => return Ok(None),
                Written::Complete(n) => n,
            };
            if end > self.read {
                let chunk = {
                    let body = self.body.read().map_err(lock_err)?;
                    Bytes::copy_from_slice(&body[self.read..end])
                };
                self.read = end;
                return Ok(Some(chunk));
            }
            if self.written.changed().await.is_err() {
                // the writer went away before the end: the reader must not see a cut answer
                return Error::e_explain(
                    ErrorType::InternalError,
                    "the cached answer being written was abandoned",
                );
            }
        }
    }
}

enum Hit {
    Complete(CompleteHit),
    Partial(PartialHit),
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            Hit::Complete(c) if c.done => Ok(None),
            Hit::Complete(c) => {
                c.done = true;
                Ok(Some(c.body.clone()))
            }
            Hit::Partial(p) => p.next().await,
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        match self {
            Hit::Complete(c) => c.body.len(),
            Hit::Partial(_) => 0,
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

struct Miss {
    store: &'static Store,
    key: String,
    id: U64WriteId,
    body: Arc<RwLock<Vec<u8>>>,
    written: Arc<watch::Sender<Written>>,
    ttl: Duration,
    /// An event stream: watched for an in-band error event.
    sse: bool,
    /// The stream carried an error event (a 200 that failed midway): never stored.
    failed: bool,
}

/// How an event stream says it failed after its 200: Anthropic's `event: error` (with its
/// `{"type":"error"` data), an OpenAI-style `data: {"error"`.
/// Field names count at the start of a line only (a model may write "event: error" in its text,
/// which arrives inside a JSON string); quotes inside a JSON string are escaped, so the JSON
/// markers cannot come from generated text.
const SSE_ERRORS: [&[u8]; 5] = [
    b"\nevent: error",
    b"\nevent:error",
    b"\ndata: {\"error\"",
    b"\ndata:{\"error\"",
    b"{\"type\":\"error\"",
];

/// Whether `window` holds an error event (`at_start`: the window begins the stream).
fn has_sse_error(window: &[u8], at_start: bool) -> bool {
    SSE_ERRORS.iter().any(|m| {
        memchr::memmem::find(window, m).is_some()
            || (at_start && m.first() == Some(&b'\n') && window.starts_with(&m[1..]))
    })
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        let len = {
            let mut body = self.body.write().map_err(lock_err)?;
            // the bytes before this chunk too: a marker may straddle two chunks
            let from = body.len().saturating_sub(32);
            body.extend_from_slice(&data);
            if self.sse && !self.failed && has_sse_error(&body[from..], from == 0) {
                self.failed = true;
            }
            body.len()
        };
        self.written.send_replace(if eof {
            Written::Complete(len)
        } else {
            Written::Partial(len)
        });
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        // pingora may finish without a last `eof` write: readers learn the end here
        let len = self.body.read().map_err(lock_err)?.len();
        self.written.send_replace(Written::Complete(len));
        if self.failed {
            // an error here would cut the client's own response short: finish, store nothing
            log::info!(
                "cache: answer {} not stored: the stream carried an error event",
                self.key
            );
            return Ok(MissFinishType::Created(0));
        }
        let entry = {
            let temp = self.store.temp.read().map_err(lock_err)?;
            let Some(t) = temp.get(&self.key).and_then(|m| m.get(&u64::from(self.id))) else {
                return Error::e_explain(ErrorType::InternalError, "cache write state is gone");
            };
            let body = Bytes::from(t.body.read().map_err(lock_err)?.clone());
            Arc::new(Entry::new(self.key.clone(), t.meta.clone(), body))
        };
        let size = self.store.put(entry.clone());
        if let Some(r) = &self.store.redis {
            r.set(&entry, self.ttl).await;
        }
        Ok(MissFinishType::Created(size))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(self.id.as_bytes())
    }
}

impl Drop for Miss {
    fn drop(&mut self) {
        if let Ok(mut temp) = self.store.temp.write() {
            if let Some(m) = temp.get_mut(&self.key) {
                m.remove(&u64::from(self.id));
                if m.is_empty() {
                    temp.remove(&self.key);
                }
            }
        }
    }
}

fn partial(t: &Temp) -> Result<Option<(CacheMeta, HitHandler)>> {
    let meta = CacheMeta::deserialize(&t.meta.0, &t.meta.1)?;
    Ok(Some((
        meta,
        Box::new(Hit::Partial(PartialHit {
            body: t.body.clone(),
            written: t.written.subscribe(),
            read: 0,
        })),
    )))
}

fn complete(e: &Entry) -> Result<Option<(CacheMeta, HitHandler)>> {
    let meta = e.cache_meta()?;
    Ok(Some((
        meta,
        Box::new(Hit::Complete(CompleteHit {
            body: e.body.clone(),
            done: false,
        })),
    )))
}

#[async_trait]
impl Storage for Store {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = name(key);
        {
            // an answer being written is preferred: it is the newest
            let temp = self.temp.read().map_err(lock_err)?;
            if let Some(t) = temp.get(&hash).and_then(|m| m.values().next()) {
                self.metrics.inflight_hits.inc();
                return partial(t);
            }
        }
        if let Some(e) = self.get(&hash) {
            return complete(&e);
        }
        if let Some(r) = &self.redis {
            if let Some(e) = r.get(&hash).await {
                let e = Arc::new(e);
                self.put(e.clone());
                return complete(&e);
            }
        }
        Ok(None)
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(id) = tag.and_then(|t| U64WriteId::try_from(t).ok()) else {
            return self.lookup(key, trace).await;
        };
        let hash = name(key);
        let temp = self.temp.read().map_err(lock_err)?;
        match temp.get(&hash).and_then(|m| m.get(&u64::from(id))) {
            Some(t) => partial(t),
            None => Ok(None),
        }
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let hash = name(key);
        let ttl = meta
            .fresh_until()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let (tx, _rx) = watch::channel(Written::Partial(0));
        let temp = Temp {
            meta: meta.serialize()?,
            body: Arc::new(RwLock::new(Vec::new())),
            written: Arc::new(tx),
        };
        let id = self.next_write.fetch_add(1, Ordering::Relaxed);
        let miss = Miss {
            store: self,
            key: hash.clone(),
            id: id.into(),
            body: temp.body.clone(),
            written: temp.written.clone(),
            ttl,
            sse: meta
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream")),
            failed: false,
        };
        self.temp
            .write()
            .map_err(lock_err)?
            .entry(hash)
            .or_default()
            .insert(id, temp);
        Ok(Box::new(miss))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        if matches!(target, PurgeTarget::Exact(CacheEntryKey::Identified { .. })) {
            return Ok(PurgeOutcome::NotFound);
        }
        // a purge names the key by its hash only; entries stored under that hash are removed
        // (the proxy never purges: entries leave by TTL or eviction)
        let hash = target.key().combined();
        let temp = self.temp.write().map_err(lock_err)?.remove(&hash).is_some();
        if self.remove(&hash) || temp {
            Ok(PurgeOutcome::Purged(None))
        } else {
            Ok(PurgeOutcome::NotFound)
        }
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = name(key);
        let Some(e) = self.get(&hash) else {
            return Ok(false);
        };
        self.put(Arc::new(Entry::new(
            hash,
            meta.serialize()?,
            e.body.clone(),
        )));
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::trace::Span;
    use pingora_http::ResponseHeader;

    fn store(max: usize) -> &'static Store {
        let m = crate::cache::CacheMetrics::register().unwrap();
        Box::leak(Box::new(Store::new(max, max / 2, None, m)))
    }

    fn meta(ttl: Duration) -> CacheMeta {
        let now = SystemTime::now();
        CacheMeta::new(
            now + ttl,
            now,
            0,
            0,
            ResponseHeader::build(200, None).unwrap(),
        )
    }

    async fn write(s: &'static Store, key: &CacheKey, body: &[u8]) {
        let span = Span::inactive().handle();
        let mut miss = s
            .get_miss_handler(key, &meta(Duration::from_secs(60)), &span)
            .await
            .unwrap();
        miss.write_body(Bytes::copy_from_slice(body), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
    }

    async fn read(s: &'static Store, key: &CacheKey) -> Option<Vec<u8>> {
        let span = Span::inactive().handle();
        let (_, mut hit) = s.lookup(key, &span).await.unwrap()?;
        let mut out = Vec::new();
        while let Some(b) = hit.read_body().await.unwrap() {
            out.extend_from_slice(&b);
        }
        Some(out)
    }

    #[tokio::test]
    async fn a_stream_that_fails_after_its_200_is_not_stored() {
        let s = store(1 << 20);
        let span = Span::inactive().handle();
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "text/event-stream")
            .unwrap();
        let now = SystemTime::now();
        let sse = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, h);
        for (name, chunks) in [
            (
                "anthropic",
                vec![
                    &b"event: message_start\ndata: {}\n\nevent: err"[..],
                    b"or\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n",
                ],
            ),
            (
                "openai",
                vec![
                    b"data: {\"choices\":[]}\n\n",
                    b"data: {\"error\":{\"message\":\"x\"}}\n\n",
                ],
            ),
            ("first event", vec![b"event: error\ndata: {}\n\n"]),
        ] {
            let k = CacheKey::new(name, "");
            let mut miss = s.get_miss_handler(&k, &sse, &span).await.unwrap();
            for c in &chunks {
                miss.write_body(Bytes::copy_from_slice(c), false)
                    .await
                    .unwrap();
            }
            miss.finish().await.unwrap();
            assert!(read(s, &k).await.is_none(), "{name} was stored");
        }
        // a model writing "event: error" in its text is not an error event
        let k = CacheKey::new("text", "");
        let mut miss = s.get_miss_handler(&k, &sse, &span).await.unwrap();
        miss.write_body(
            Bytes::from_static(b"data: {\"delta\":{\"text\":\"event: error\"}}\n\n"),
            true,
        )
        .await
        .unwrap();
        miss.finish().await.unwrap();
        assert!(read(s, &k).await.is_some());
    }

    #[tokio::test]
    async fn written_answers_are_read_back_whole() {
        let s = store(1 << 20);
        let k = CacheKey::new("k1", "");
        assert!(read(s, &k).await.is_none());
        write(s, &k, b"hello").await;
        assert_eq!(read(s, &k).await.unwrap(), b"hello");
        assert!(s.contains("k1").await);
        assert!(s.bytes() > 5);
    }

    #[tokio::test]
    async fn a_reader_streams_an_answer_while_it_is_written() {
        let s = store(1 << 20);
        let k = CacheKey::new("k2", "");
        let span = Span::inactive().handle();
        let mut miss = s
            .get_miss_handler(&k, &meta(Duration::from_secs(60)), &span)
            .await
            .unwrap();
        miss.write_body(Bytes::from_static(b"data: 1\n\n"), false)
            .await
            .unwrap();
        let (_, mut hit) = s.lookup(&k, &span).await.unwrap().unwrap();
        assert_eq!(hit.read_body().await.unwrap().unwrap(), "data: 1\n\n");
        let reader = tokio::spawn(async move {
            let mut rest = Vec::new();
            while let Some(b) = hit.read_body().await.unwrap() {
                rest.extend_from_slice(&b);
            }
            rest
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        miss.write_body(Bytes::from_static(b"data: 2\n\n"), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
        assert_eq!(reader.await.unwrap(), b"data: 2\n\n");
        // an abandoned write is not served as if it were complete
        let k3 = CacheKey::new("k3", "");
        let mut miss = s
            .get_miss_handler(&k3, &meta(Duration::from_secs(60)), &span)
            .await
            .unwrap();
        miss.write_body(Bytes::from_static(b"part"), false)
            .await
            .unwrap();
        let (_, mut hit) = s.lookup(&k3, &span).await.unwrap().unwrap();
        assert_eq!(hit.read_body().await.unwrap().unwrap(), "part");
        drop(miss);
        assert!(hit.read_body().await.is_err());
        assert!(s.lookup(&k3, &span).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn memory_stays_within_its_byte_bound_under_a_flood() {
        let s = store(2 << 20);
        let body = vec![b'x'; 100 * 1024];
        for i in 0..200 {
            write(s, &CacheKey::new(format!("flood-{i}"), ""), &body).await;
            assert!(
                s.bytes() <= s.max_bytes() + body.len() + 4096,
                "{} bytes after {i}",
                s.bytes()
            );
        }
        assert!(s.bytes() <= 2 << 20, "{}", s.bytes());
        // answers over max_entry_bytes are not kept
        write(s, &CacheKey::new("huge", ""), &vec![0u8; 2 << 20]).await;
        assert!(read(s, &CacheKey::new("huge", "")).await.is_none());
    }

    #[test]
    fn entries_round_trip_through_their_redis_encoding() {
        let m = meta(Duration::from_secs(60)).serialize().unwrap();
        let e = Entry::new("k".into(), m.clone(), Bytes::from_static(b"body"));
        let d = decode("k", &encode(&e)).unwrap();
        assert_eq!((d.meta, d.body), (m, Bytes::from_static(b"body")));
        assert!(decode("k", b"\0\0").is_none());
        let stale = Entry::new(
            "k".into(),
            meta(Duration::ZERO).serialize().unwrap(),
            Bytes::new(),
        );
        assert!(
            decode("k", &encode(&stale)).is_none(),
            "stale entries count as absent"
        );
    }
}
