//! A small HTTP client for the exporter's sinks (POST) and the registry refresh (GET), on Pingora's connector (pooled, TLS verified against the system roots), resolving names without blocking the runtime.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;

use super::sink_error::SinkError;
use crate::origin::{Host, Origin, Scheme};

/// How long a resolved address is used before the name is looked up again.
const DNS_TTL: Duration = Duration::from_secs(30);
/// Bytes of an answer's body kept (error messages, small query results).
const ANSWER_MAX_BYTES: usize = 4096;
/// The header in which newer ClickHouse servers send their exception code.
pub const CLICKHOUSE_EXCEPTION_CODE: &str = "x-clickhouse-exception-code";

/// What the endpoint answered, whatever the status.
pub struct Answer {
    pub status: u16,
    /// `X-ClickHouse-Exception-Code`, when present.
    pub exception_code: Option<String>,
    /// The start of the body (at most [`ANSWER_MAX_BYTES`]).
    pub body: String,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

pub struct Poster {
    connector: Connector,
    origin: Origin,
    timeout: Duration,
    /// The last address the origin's name resolved to, and when.
    resolved: Mutex<Option<(SocketAddr, Instant)>>,
}

impl Poster {
    pub fn new(origin: Origin, timeout: Duration) -> Poster {
        Poster {
            connector: Connector::new(None),
            origin,
            timeout,
            resolved: Mutex::new(None),
        }
    }

    /// The origin's address: an IP literal as it is, a name looked up asynchronously (cached
    /// for [`DNS_TTL`]). A name that does not resolve is a retryable failure.
    async fn address(&self) -> Result<SocketAddr, SinkError> {
        let port = self.origin.port;
        let name = match &self.origin.host {
            Host::Ip(ip) => return Ok(SocketAddr::new(*ip, port)),
            Host::Name(n) => n,
        };
        if let Some((addr, at)) = *self.resolved.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < DNS_TTL {
                return Ok(addr);
            }
        }
        let found =
            tokio::time::timeout(self.timeout, tokio::net::lookup_host((name.as_str(), port)))
                .await
                .map_err(|_| {
                    SinkError::retryable(format!(
                        "DNS lookup of {name} timed out after {:?}",
                        self.timeout
                    ))
                })?
                .map_err(|e| SinkError::retryable(format!("DNS lookup of {name} failed: {e}")))?
                .next()
                .ok_or_else(|| {
                    SinkError::retryable(format!("DNS lookup of {name} found no address"))
                })?;
        *self.resolved.lock().unwrap_or_else(|p| p.into_inner()) = Some((found, Instant::now()));
        Ok(found)
    }

    /// Forgets the resolved address (after a failed connection: the name may have moved).
    fn forget_address(&self) {
        *self.resolved.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let sni = match &self.origin.host {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        // a `SocketAddr` needs no lookup: `HttpPeer::new` would resolve a `host:port` string
        // with a blocking `getaddrinfo` and panic when it fails
        let mut p = HttpPeer::new(addr, self.origin.scheme == Scheme::Https, sni);
        p.options.connection_timeout = Some(self.timeout);
        p.options.read_timeout = Some(self.timeout);
        p.options.write_timeout = Some(self.timeout);
        p.options.idle_timeout = Some(Duration::from_secs(60));
        p
    }

    /// POSTs `body` and returns the answer, whatever its status; `Err` (retryable) when there is
    /// no answer: the name does not resolve, the connection fails, or the exchange times out.
    pub async fn post(
        &self,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Answer, SinkError> {
        self.exchange("POST", path_and_query, headers, body, ANSWER_MAX_BYTES)
            .await
    }

    /// GETs `path_and_query`; the answer's body is kept whole up to `max_bytes` (an answer
    /// longer than that is an error, not a truncated file).
    pub async fn get(&self, path_and_query: &str, max_bytes: usize) -> Result<Answer, SinkError> {
        self.exchange("GET", path_and_query, &[], Bytes::new(), max_bytes)
            .await
    }

    async fn exchange(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Bytes,
        max_bytes: usize,
    ) -> Result<Answer, SinkError> {
        let peer = self.peer(self.address().await?);
        let (mut s, _) = match self.connector.get_http_session(&peer).await {
            Ok(s) => s,
            Err(e) => {
                self.forget_address();
                return Err(SinkError::retryable(e.to_string()));
            }
        };
        s.set_read_timeout(Some(self.timeout));
        s.set_write_timeout(Some(self.timeout));
        let bad_request =
            |e: Box<pingora_error::Error>| SinkError::retryable(format!("request not built: {e}"));
        let mut req =
            RequestHeader::build(method, path_and_query.as_bytes(), None).map_err(bad_request)?;
        req.insert_header("host", self.origin.host_header())
            .map_err(bad_request)?;
        if method != "GET" {
            req.insert_header("content-length", body.len().to_string())
                .map_err(bad_request)?;
        }
        for (k, v) in headers {
            req.insert_header(k.to_string(), v.clone())
                .map_err(bad_request)?;
        }
        let mut too_long = false;
        let exchange = async {
            s.write_request_header(Box::new(req)).await?;
            if method != "GET" {
                s.write_request_body(body, true).await?;
            }
            s.finish_request_body().await?;
            s.read_response_header().await?;
            let mut answer = Vec::new();
            while let Some(chunk) = s.read_response_body().await? {
                let room = max_bytes.saturating_sub(answer.len());
                answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
                too_long |= chunk.len() > room;
            }
            Ok::<_, Box<pingora_error::Error>>(answer)
        };
        let answer = exchange
            .await
            .map_err(|e| SinkError::retryable(e.to_string()))?;
        if too_long && method == "GET" {
            return Err(SinkError::retryable(format!(
                "the answer is longer than {max_bytes} bytes"
            )));
        }
        let (status, exception_code) = s.response_header().map_or((0, None), |h| {
            (
                h.status.as_u16(),
                h.headers
                    .get(CLICKHOUSE_EXCEPTION_CODE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            )
        });
        let answer = Answer {
            status,
            exception_code,
            body: String::from_utf8_lossy(&answer).into_owned(),
        };
        if answer.is_success() {
            self.connector
                .release_http_session(s, &peer, Some(Duration::from_secs(60)))
                .await;
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_a_retryable_error_not_a_panic() {
        let (origin, _) = Origin::parse("http://nonexistent.invalid:9/").unwrap();
        let p = Poster::new(origin, Duration::from_secs(2));
        let e = p
            .post("/", &[], Bytes::from_static(b"{}"))
            .await
            .err()
            .unwrap();
        assert!(!e.is_rejected());
        assert_eq!(e.status, None);
        assert!(e.message.contains("nonexistent.invalid"), "{e}");
    }
}
