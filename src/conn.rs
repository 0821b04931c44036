//! Downstream connection guard: a whole-request-head deadline, and the gateway's JSON error for requests Pingora's parser refuses.
//!
//! Pingora bounds each *read* of a request head (60 s), not the whole head, so a client that
//! sends one byte every few seconds holds a connection (and a task) for ever. And when its
//! parser refuses a request (control characters, too many or too large headers) it answers a
//! bare `400` with no `Helicone-Id`, before any gateway phase runs. Both happen below the HTTP
//! layer, so the connection's byte stream is wrapped ([`Guarded`]):
//! - a request head must be complete (`\r\n\r\n`) within `server.header_timeout_secs` of its
//!   first byte (for a connection's first request: of the accept); otherwise the next read
//!   fails with `TimedOut`, Pingora drops the connection, and
//!   `switchyard_header_timeouts_total` counts it. An idle keep-alive connection is not
//!   timed by this (Pingora's keep-alive timeout is), nor is a request body.
//! - Pingora's own bare `400` (it never carries `Helicone-Id`; every answer of the gateway
//!   does) is replaced on the wire by the gateway's JSON error with a fresh `Helicone-Id`,
//!   and counted in `switchyard_malformed_requests_total`.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use pingora_core::protocols::{SocketDigest, TimingDigest};
use prometheus::{register_int_counter, IntCounter};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::error::GatewayError;

/// What the guard counts.
pub struct ConnMetrics {
    header_timeouts: IntCounter,
    malformed: IntCounter,
}

impl ConnMetrics {
    pub fn register() -> Result<Arc<ConnMetrics>, prometheus::Error> {
        Ok(Arc::new(ConnMetrics {
            header_timeouts: register_int_counter!(
                "switchyard_header_timeouts_total",
                "Connections closed because a request head did not arrive whole within server.header_timeout_secs"
            )?,
            malformed: register_int_counter!(
                "switchyard_malformed_requests_total",
                "Requests refused by the HTTP parser (bad characters, too many or too large headers)"
            )?,
        }))
    }
}

/// The settings and counters every guarded connection shares.
pub struct Guard {
    pub header_timeout: Duration,
    pub metrics: Arc<ConnMetrics>,
}

impl Guard {
    /// Wraps a new connection; a connection that is already wrapped (a reused keep-alive
    /// connection coming back from Pingora) is returned as it is.
    pub fn wrap(self: &Arc<Self>, stream: Stream) -> Stream {
        if stream.as_any().is::<Guarded>() {
            return stream;
        }
        Box::new(Guarded {
            inner: stream,
            guard: self.clone(),
            phase: Phase::Head {
                deadline: Box::pin(tokio::time::sleep(self.header_timeout)),
                matched: 0,
            },
            replacement: None,
        })
    }
}

enum Phase {
    /// Reading a request head: it must end before `deadline`. `matched` counts the bytes of
    /// the head terminator seen so far.
    Head {
        deadline: Pin<Box<Sleep>>,
        matched: u8,
    },
    /// The head is in: its body and the answer run untimed by the guard.
    Request,
    /// The answer's head was written: the next byte read starts a new request head.
    Idle,
}

/// A replacement answer being written in place of Pingora's bare 400.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// Length of the original write the replacement stands for.
    original: usize,
}

pub struct Guarded {
    inner: Stream,
    guard: Arc<Guard>,
    phase: Phase,
    replacement: Option<Replacement>,
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .finish()
    }
}

/// Feeds `data` to the head-terminator matcher (`\r\n\r\n`, or a bare `\n\n` as httparse
/// accepts); `true` once the head is complete.
fn head_ends(matched: &mut u8, data: &[u8]) -> bool {
    for &b in data {
        *matched = match (*matched, b) {
            (0, b'\r') | (2, b'\r') => *matched + 1,
            (0, b'\n') => 2, // a bare LF line end
            (1, b'\n') => 2,
            (2, b'\n') | (3, b'\n') => return true,
            (_, b'\r') => 1,
            _ => 0,
        };
    }
    false
}

/// The status of an HTTP/1 response head at the start of `buf`, if it is one.
fn response_status(buf: &[u8]) -> Option<u16> {
    let rest = buf.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Pingora's own refusal of an unparsable request: a 400 head without `Helicone-Id`.
fn is_bare_400(buf: &[u8]) -> bool {
    response_status(buf) == Some(400)
        && memchr::memmem::find(&buf.to_ascii_lowercase(), b"\r\nhelicone-id:").is_none()
}

fn json_400() -> Vec<u8> {
    let id = uuid::Uuid::new_v4().to_string();
    let e = GatewayError::BadRequest(
        "the request could not be parsed as HTTP/1.1 (control characters in the request line or a header, more than 255 headers, or headers over 1 MB); fix the client's request"
            .into(),
    );
    let body = e.to_json();
    let mut out = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nhelicone-id: {id}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Phase::Head { deadline, .. } = &mut this.phase {
            if deadline.as_mut().poll(cx).is_ready() {
                this.guard.metrics.header_timeouts.inc();
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request head not complete within server.header_timeout_secs",
                )));
            }
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                if let Phase::Idle = this.phase {
                    this.phase = Phase::Head {
                        deadline: Box::pin(tokio::time::sleep_until(
                            Instant::now() + this.guard.header_timeout,
                        )),
                        matched: 0,
                    };
                }
                if let Phase::Head { matched, .. } = &mut this.phase {
                    if head_ends(matched, new) {
                        this.phase = Phase::Request;
                    }
                }
            }
        }
        res
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_none() {
            if let Some(status) = response_status(buf) {
                if status >= 200 {
                    this.phase = Phase::Idle;
                }
                if is_bare_400(buf) {
                    this.guard.metrics.malformed.inc();
                    this.replacement = Some(Replacement {
                        bytes: json_400(),
                        written: 0,
                        original: buf.len(),
                    });
                }
            }
        }
        if let Some(r) = this.replacement.as_mut() {
            while r.written < r.bytes.len() {
                match Pin::new(&mut this.inner).poll_write(cx, &r.bytes[r.written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                    }
                    Poll::Ready(Ok(n)) => r.written += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let original = r.original;
            this.replacement = None;
            // the bare 400 stands replaced: report it written
            return Poll::Ready(Ok(original.min(buf.len())));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<pingora_core::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Guarded {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(chunks: &[&[u8]]) -> bool {
        let mut m = 0;
        chunks.iter().any(|c| head_ends(&mut m, c))
    }

    #[test]
    fn finds_the_end_of_a_head_across_reads() {
        assert!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]));
        assert!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n", b"\r", b"\n"]));
        assert!(ends(&[b"GET / HTTP/1.1\nHost: a\n\n"]));
        assert!(!ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n"]));
        assert!(!ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n\rX"]));
        assert!(ends(&[b"\r\r\n\r\n"]));
    }

    #[test]
    fn recognises_pingoras_bare_400_only() {
        assert!(is_bare_400(
            b"HTTP/1.1 400 Bad Request\r\nServer: x\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!is_bare_400(
            b"HTTP/1.1 400 Bad Request\r\nHelicone-Id: 1\r\ncontent-length: 2\r\n\r\n{}"
        ));
        assert!(!is_bare_400(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!is_bare_400(b"data: HTTP/1.1 400\r\n"));
        assert_eq!(response_status(b"HTTP/1.1 100 Continue\r\n\r\n"), Some(100));
        let r = json_400();
        assert!(r.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert!(!is_bare_400(&r), "the replacement carries a Helicone-Id");
        let body = &r[memchr::memmem::find(&r, b"\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["error"]["code"], "bad_request");
    }
}
