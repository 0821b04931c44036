//! Manual upstream exchange for requests Pingora cannot replay (chunked uploads over 64 KiB): `send` makes one attempt up to the response header, `relay` streams the chosen answer back.

use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::config::UpstreamConf;

pub struct Forwarder {
    connector: Connector,
}

impl Forwarder {
    pub fn new(conf: &ServerConf) -> Self {
        Forwarder {
            connector: Connector::new(Some(ConnectorOptions::from_server_conf(conf))),
        }
    }

    /// Connects, sends the request and reads the response header.
    pub async fn send(
        &self,
        req: RequestHeader,
        body: Bytes,
        peer: &HttpPeer,
        conf: &UpstreamConf,
    ) -> Result<HttpSession, Box<pingora_error::Error>> {
        let (mut up, _reused) = self
            .connector
            .get_http_session(peer)
            .await
            .map_err(|e| e.into_up())?;
        // the connector does not apply the peer's read/write timeouts itself
        up.set_read_timeout(Some(conf.read_timeout()));
        up.set_write_timeout(Some(conf.write_timeout()));
        let sent = async {
            up.write_request_header(Box::new(req)).await?;
            up.write_request_body(body, true).await?;
            up.finish_request_body().await?;
            up.read_response_header().await
        }
        .await;
        sent.map_err(|e| e.into_up())?;
        Ok(up)
    }

    /// Streams the upstream answer to the client as it arrives; a client that leaves stops it
    /// (dropping the upstream session closes that connection).
    pub async fn relay(
        &self,
        session: &mut Session,
        mut up: HttpSession,
        resp: Box<ResponseHeader>,
        peer: &HttpPeer,
        conf: &UpstreamConf,
        // each chunk (and `None` at the end, with `true`) may be rewritten before it is written
        on_chunk: &mut (dyn FnMut(&mut Option<Bytes>, bool) + Send),
    ) {
        crate::lifecycle::close_if_draining(session);
        if let Err(e) = session.write_response_header(resp, false).await {
            log::debug!("client left before the response header: {e}");
            return;
        }
        loop {
            match up.read_response_body().await {
                Ok(Some(chunk)) => {
                    let mut body = Some(chunk);
                    on_chunk(&mut body, false);
                    if let Some(b) = body.filter(|b| !b.is_empty()) {
                        if let Err(e) = session.write_response_body(Some(b), false).await {
                            log::debug!("client left mid-response: {e}");
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    log::warn!("upstream failed mid-response: {e}");
                    return;
                }
            }
        }
        let mut last = None;
        on_chunk(&mut last, true);
        if let Err(e) = session
            .write_response_body(last.filter(|b| !b.is_empty()), true)
            .await
        {
            log::debug!("client left at the end of the response: {e}");
            return;
        }
        if up.response_done() {
            self.connector
                .release_http_session(up, peer, Some(conf.idle_timeout()))
                .await;
        }
    }
}
