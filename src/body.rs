//! The one place that owns request-body pre-read (before the upstream is chosen) and replay.
//!
//! Pingora 0.9.1 only replays a body that `request_filter` consumed when the session's retry
//! buffer (capped at 64 KiB) holds it. With a Content-Length we arm the buffer for the last
//! <= 64 KiB only ("tail trick"), so `request_body_filter` runs once per upstream attempt and
//! swaps that tail for the whole body. A chunked upload above 64 KiB cannot be replayed that
//! way and is forwarded by `forward.rs` instead. See shared/design/pingora-notes.md section 2.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;

use crate::error::GatewayError;
use crate::limits::rules::BodyHead;

/// Pingora's retry-buffer capacity (`BODY_BUF_LIMIT`).
const RETRY_BUFFER_LIMIT: usize = 64 * 1024;

/// How many request-body bytes all requests together may hold in memory at once
/// (`limits.max_inflight_body_bytes`): a few clients sending large bodies cannot take the
/// machine's memory. A request that would go over it is refused with 503 and `Retry-After`.
#[derive(Debug)]
pub struct BodyBudget {
    used: AtomicUsize,
    max: usize,
    /// The most held at once since [`BodyBudget::take_peak`] last looked.
    peak: AtomicUsize,
}

impl BodyBudget {
    pub fn new(max: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            used: AtomicUsize::new(0),
            max,
            peak: AtomicUsize::new(0),
        })
    }

    /// The most bytes held at once since the last call.
    pub fn take_peak(&self) -> usize {
        self.peak.swap(self.used(), Ordering::AcqRel)
    }

    /// Bytes held by requests now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub fn hold_for_test(self: &Arc<Self>, bytes: usize) -> Option<BodyLease> {
        let mut lease = None;
        self.grow(&mut lease, bytes).ok()?;
        lease
    }

    /// Takes `bytes` more for `lease`, or refuses (nothing taken) when that would pass the budget.
    fn grow(
        self: &Arc<Self>,
        lease: &mut Option<BodyLease>,
        bytes: usize,
    ) -> Result<(), GatewayError> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(bytes);
            if next > self.max {
                return Err(GatewayError::Overloaded {
                    message: format!(
                        "the gateway is holding as many request bodies as it may ({} of {} bytes, limits.max_inflight_body_bytes); retry shortly",
                        cur, self.max
                    ),
                    retry_after_secs: 1,
                });
            }
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::AcqRel);
                    break;
                }
                Err(now) => cur = now,
            }
        }
        match lease {
            Some(l) => l.bytes += bytes,
            None => {
                *lease = Some(BodyLease {
                    budget: self.clone(),
                    bytes,
                })
            }
        }
        Ok(())
    }
}

/// Bytes of the [`BodyBudget`] held by one request's body; given back when dropped (with the
/// request context, after the log record is built).
#[derive(Debug)]
pub struct BodyLease {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Drop for BodyLease {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The whole request body, read before routing.
#[derive(Debug, Default)]
pub struct RequestBody {
    /// This body's share of the in-flight body budget.
    pub lease: Option<BodyLease>,
    pub bytes: Bytes,
    /// The request carries a body (even an empty chunked one).
    pub present: bool,
    /// Pingora will call `request_body_filter` for it on every attempt.
    pub replayable: bool,
    /// What limits and the log record read of it, parsed once (on first use; an edit forgets it).
    facts: OnceLock<BodyFacts>,
}

/// What several modules read of a JSON request body, parsed once: the rate limits' `head`
/// (user, model, completion cap) and the log record's requested model and `user`.
#[derive(Debug, Default)]
pub struct BodyFacts {
    /// What limits read (empty unless model, user and the completion caps are all well typed).
    pub head: BodyHead,
    /// Set when `head` parsed: the body is a JSON object with well-typed `model` and `user`.
    strict: bool,
    /// `model` and `user` alone, when `head` did not parse but they are well typed.
    loose: Option<Named>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Named {
    model: Option<String>,
    user: Option<String>,
}

impl BodyFacts {
    /// The facts of `body` (all empty when it is not a JSON object).
    pub fn parse(body: &[u8]) -> BodyFacts {
        if body.first() != Some(&b'{') {
            return BodyFacts::default();
        }
        match serde_json::from_slice::<BodyHead>(body) {
            Ok(head) => BodyFacts {
                head,
                strict: true,
                loose: None,
            },
            // rare (a mistyped completion cap): the log record still reads model and user
            Err(_) => BodyFacts {
                head: BodyHead::default(),
                strict: false,
                loose: serde_json::from_slice::<Named>(body).ok(),
            },
        }
    }

    /// The requested `model` and `user` as the log record reads them, and whether the body is a
    /// JSON object where both are well typed (else none of them).
    pub fn named(&self) -> (Option<&str>, Option<&str>, bool) {
        match (&self.loose, self.strict) {
            (_, true) => (self.head.model.as_deref(), self.head.user.as_deref(), true),
            (Some(n), false) => (n.model.as_deref(), n.user.as_deref(), true),
            (None, false) => (None, None, false),
        }
    }
}

impl RequestBody {
    /// What limits and the log record read of the body, parsed on first use.
    pub fn facts(&self) -> &BodyFacts {
        self.facts.get_or_init(|| BodyFacts::parse(&self.bytes))
    }

    /// Edits the body as a JSON object: `edit` says whether it changed anything, and a changed
    /// object replaces the bytes. A body that is not a JSON object is left alone (`Ok(false)`,
    /// `edit` not called): whoever parses it next explains.
    pub fn edit_json(
        &mut self,
        edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>) -> Result<bool, GatewayError>,
    ) -> Result<bool, GatewayError> {
        let Ok(serde_json::Value::Object(mut obj)) =
            serde_json::from_slice::<serde_json::Value>(&self.bytes)
        else {
            return Ok(false);
        };
        if !edit(&mut obj)? {
            return Ok(false);
        }
        let bytes = serde_json::to_vec(&obj)
            .map_err(|e| GatewayError::Internal(format!("rewriting the request body: {e}")))?;
        self.bytes = Bytes::from(bytes);
        self.facts = OnceLock::new();
        Ok(true)
    }
}

fn header_str<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

/// Reads the whole body (answering `Expect: 100-continue`), enforcing `cap` bytes for this body
/// and `budget` for all bodies held at once (a known length is taken before anything is read).
pub async fn read(
    session: &mut Session,
    cap: usize,
    budget: &Arc<BodyBudget>,
) -> Result<RequestBody, GatewayError> {
    let chunked = header_str(session, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let content_length =
        if chunked {
            None
        } else {
            match header_str(session, "content-length") {
                None => Some(0),
                Some(v) => Some(v.trim().parse::<usize>().map_err(|_| {
                    GatewayError::BadRequest(format!("invalid Content-Length '{v}'"))
                })?),
            }
        };
    if content_length == Some(0) {
        return Ok(RequestBody {
            lease: None,
            bytes: Bytes::new(),
            present: false,
            replayable: true,
            facts: OnceLock::new(),
        });
    }
    let mut lease = None;
    if let Some(cl) = content_length {
        if cl > cap {
            return Err(GatewayError::PayloadTooLarge { limit: cap });
        }
        if let Err(e) = budget.grow(&mut lease, cl) {
            return Err(discard(session, e).await);
        }
    }
    let expects_continue =
        header_str(session, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue {
        session
            .as_downstream_mut()
            .write_continue_response()
            .await
            .map_err(|e| {
                GatewayError::BadRequest(format!("cannot answer Expect: 100-continue: {e}"))
            })?;
    }

    // a body that arrives in one piece is kept as is (no copy); more pieces are concatenated
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    let mut armed = false;
    loop {
        let tail = match content_length {
            Some(cl) => cl.saturating_sub(total) <= RETRY_BUFFER_LIMIT,
            None => true, // chunked: only a body that fits the buffer whole is replayable
        };
        if tail && !armed {
            session.as_downstream_mut().enable_retry_buffering();
            armed = true;
        }
        let chunk = session
            .as_downstream_mut()
            .read_request_body()
            .await
            .map_err(|e| GatewayError::BadRequest(format!("cannot read the request body: {e}")))?;
        let Some(c) = chunk else { break };
        total += c.len();
        if total > cap {
            return Err(GatewayError::PayloadTooLarge { limit: cap });
        }
        if content_length.is_none() {
            if let Err(e) = budget.grow(&mut lease, c.len()) {
                drop(lease);
                return Err(discard(session, e).await);
            }
        }
        match (&mut joined, first.take()) {
            (Some(buf), _) => buf.extend_from_slice(&c),
            (None, None) => first = Some(c),
            (None, Some(f)) => {
                let mut buf = BytesMut::with_capacity(content_length.unwrap_or(f.len() + c.len()));
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&c);
                joined = Some(buf);
            }
        }
    }
    let buf = match joined {
        Some(b) => b.freeze(),
        None => first.unwrap_or_default(),
    };
    if let Some(cl) = content_length {
        if buf.len() != cl {
            return Err(GatewayError::BadRequest(format!(
                "request body ended after {} of {cl} bytes announced by Content-Length",
                buf.len()
            )));
        }
    }
    let downstream = session.as_downstream();
    let replayable = buf.is_empty()
        || (!downstream.retry_buffer_truncated() && downstream.get_retry_buffer().is_some());
    Ok(RequestBody {
        lease,
        bytes: buf,
        present: true,
        replayable,
        facts: OnceLock::new(),
    })
}

/// How long a refused body is read and thrown away, so that its client, still sending, reads
/// the refusal instead of a reset connection.
const DISCARD_TIME: Duration = Duration::from_secs(30);

/// Reads the rest of a body that will not be kept, chunk by chunk (nothing is held), then
/// hands back the refusal `e`. Without it the gateway would answer and close while the client
/// is still sending: the client sees a broken pipe or a reset, not the 503.
async fn discard(session: &mut Session, e: GatewayError) -> GatewayError {
    let drained = tokio::time::timeout(DISCARD_TIME, async {
        while let Ok(Some(_)) = session.as_downstream_mut().read_request_body().await {}
    })
    .await;
    if drained.is_err() {
        session.as_downstream_mut().set_keepalive(None);
    }
    e
}

/// Per-attempt replay state, used by `request_body_filter`.
#[derive(Debug, Default)]
pub struct Replay {
    sent_for_attempt: Option<u32>,
}

impl Replay {
    /// Replaces what Pingora replays with the attempt's whole body, once per upstream attempt.
    pub fn filter(
        &mut self,
        attempt: u32,
        present: bool,
        bytes: &Bytes,
        chunk: &mut Option<Bytes>,
        end_of_stream: bool,
    ) {
        if !present {
            return;
        }
        if self.sent_for_attempt != Some(attempt) {
            self.sent_for_attempt = Some(attempt);
            *chunk = Some(bytes.clone());
        } else {
            *chunk = if end_of_stream {
                None
            } else {
                Some(Bytes::new())
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_facts_read_as_the_limits_and_the_log_record_did() {
        let f = BodyFacts::parse(br#"{"model":"m","user":"u","max_tokens":7,"messages":[]}"#);
        assert_eq!(f.named(), (Some("m"), Some("u"), true));
        assert_eq!(f.head.user.as_deref(), Some("u"));
        assert_eq!(f.head.completion_cap(), Some(7));
        // a mistyped cap empties the limits' head; the log record still reads model and user
        let f = BodyFacts::parse(br#"{"model":"m","user":"u","max_tokens":"x"}"#);
        assert_eq!(f.named(), (Some("m"), Some("u"), true));
        assert!(f.head.user.is_none() && f.head.completion_cap().is_none());
        // a mistyped user: neither reads anything
        let f = BodyFacts::parse(br#"{"model":"m","user":3}"#);
        assert_eq!(f.named(), (None, None, false));
        assert!(f.head.model.is_none());
        for body in [&b""[..], b"[1]", b"{not json"] {
            assert_eq!(BodyFacts::parse(body).named(), (None, None, false));
        }
    }

    #[test]
    fn an_edited_body_is_parsed_again() {
        let mut body = RequestBody {
            bytes: Bytes::from_static(br#"{"model":"a"}"#),
            ..RequestBody::default()
        };
        assert_eq!(body.facts().named().0, Some("a"));
        body.edit_json(|o| {
            o.insert("model".into(), "b".into());
            Ok(true)
        })
        .unwrap();
        assert_eq!(body.facts().named().0, Some("b"));
    }

    #[test]
    fn the_budget_refuses_past_its_bound_and_gets_bytes_back_on_drop() {
        let b = BodyBudget::new(100);
        let mut first = None;
        b.grow(&mut first, 60).unwrap();
        b.grow(&mut first, 30).unwrap();
        assert_eq!(b.used(), 90);
        let mut second = None;
        let e = b.grow(&mut second, 20).unwrap_err();
        assert_eq!(e.status(), 503);
        assert!(
            e.to_string().contains("limits.max_inflight_body_bytes"),
            "{e}"
        );
        assert!(second.is_none(), "a refusal takes nothing");
        assert_eq!(b.used(), 90);
        drop(first);
        assert_eq!(b.used(), 0);
        b.grow(&mut second, 100).unwrap();
        assert_eq!(b.used(), 100);
        drop(second);
        assert_eq!(b.used(), 0);
    }
}
