//! A small HTTP POST client for the exporter's sinks, on Pingora's connector (pooled, TLS
//! verified against the system roots).

use std::time::Duration;

use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;

use crate::routing::{Host, Origin, Scheme};

pub struct Poster {
    connector: Connector,
    origin: Origin,
    timeout: Duration,
}

impl Poster {
    pub fn new(origin: Origin, timeout: Duration) -> Poster {
        Poster {
            connector: Connector::new(None),
            origin,
            timeout,
        }
    }

    fn peer(&self) -> HttpPeer {
        let addr = format!(
            "{}:{}",
            self.origin.host.as_authority_host(),
            self.origin.port
        );
        let sni = match &self.origin.host {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        let mut p = HttpPeer::new(addr, self.origin.scheme == Scheme::Https, sni);
        p.options.connection_timeout = Some(self.timeout);
        p.options.read_timeout = Some(self.timeout);
        p.options.write_timeout = Some(self.timeout);
        p.options.idle_timeout = Some(Duration::from_secs(60));
        p
    }

    /// POSTs `body`; `Err` unless the answer is 2xx.
    pub async fn post(
        &self,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(), String> {
        let peer = self.peer();
        let (mut s, _) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(self.timeout));
        s.set_write_timeout(Some(self.timeout));
        let mut req = RequestHeader::build("POST", path_and_query.as_bytes(), None)
            .map_err(|e| e.to_string())?;
        let mut set = |k: &str, v: String| {
            req.insert_header(k.to_string(), v)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        set("host", self.origin.host_header())?;
        set("content-length", body.len().to_string())?;
        for (k, v) in headers {
            set(k, v.clone())?;
        }
        let exchange = async {
            s.write_request_header(Box::new(req)).await?;
            s.write_request_body(body, true).await?;
            s.finish_request_body().await?;
            s.read_response_header().await?;
            let mut answer = Vec::new();
            while let Some(chunk) = s.read_response_body().await? {
                if answer.len() < 4096 {
                    answer.extend_from_slice(&chunk);
                }
            }
            Ok::<_, Box<pingora_error::Error>>(answer)
        };
        let answer = exchange.await.map_err(|e| e.to_string())?;
        let status = s.response_header().map_or(0, |h| h.status.as_u16());
        if (200..300).contains(&status) {
            self.connector
                .release_http_session(s, &peer, Some(Duration::from_secs(60)))
                .await;
            Ok(())
        } else {
            Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&answer).trim()
            ))
        }
    }
}
