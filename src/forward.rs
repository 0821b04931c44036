//! Manual upstream exchange for requests Pingora cannot replay (chunked uploads over 64 KiB):
//! the same peer, header rewrite and timeouts as the proxy path, streamed back as it arrives.

use std::time::Instant;

use pingora_core::connectors::http::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::Session;

use crate::config::UpstreamConf;
use crate::ctx::RequestCtx;
use crate::error::GatewayError;
use crate::headers;
use crate::upstream;

pub struct Forwarder {
    connector: Connector,
}

/// How a manual exchange ended.
pub enum Outcome {
    /// The response was relayed (or the client left mid-way; logged by the caller).
    Relayed,
    /// Nothing was sent to the client yet: answer with this error.
    Failed(GatewayError),
}

impl Forwarder {
    pub fn new(conf: &ServerConf) -> Self {
        Forwarder {
            connector: Connector::new(Some(ConnectorOptions::from_server_conf(conf))),
        }
    }

    pub async fn forward(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        peer: HttpPeer,
        conf: &UpstreamConf,
    ) -> Outcome {
        let Some(route) = ctx.route.as_ref() else {
            return Outcome::Failed(GatewayError::Internal(
                "no route for manual forwarding".into(),
            ));
        };
        let mut req = session.req_header().clone();
        if let Err(e) = upstream::prepare_request(&mut req, route, Some(ctx.body.bytes.len())) {
            return Outcome::Failed(e);
        }
        ctx.attempt += 1;
        ctx.upstream_start = Some(Instant::now());
        let up_err = |e: Box<pingora_error::Error>| {
            let e = e.into_up();
            GatewayError::from_proxy_error(&e)
                .unwrap_or_else(|| GatewayError::BadGateway(e.to_string()))
        };
        let (mut up, _reused) = match self.connector.get_http_session(&peer).await {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(up_err(e)),
        };
        // the connector does not apply the peer's read/write timeouts itself
        up.set_read_timeout(Some(conf.read_timeout()));
        up.set_write_timeout(Some(conf.write_timeout()));
        let sent = async {
            up.write_request_header(Box::new(req)).await?;
            up.write_request_body(ctx.body.bytes.clone(), true).await?;
            up.finish_request_body().await?;
            up.read_response_header().await
        }
        .await;
        if let Err(e) = sent {
            return Outcome::Failed(up_err(e));
        }
        ctx.ttfb = Some(ctx.start.elapsed());
        let Some(resp) = up.response_header() else {
            return Outcome::Failed(GatewayError::BadGateway(
                "upstream sent no response header".into(),
            ));
        };
        let mut resp = Box::new(resp.clone());
        if resp
            .insert_header(headers::HELICONE_ID.clone(), ctx.id.as_str())
            .is_err()
        {
            log::warn!("cannot set Helicone-Id on a manually forwarded response");
        }
        if let Err(e) = session.write_response_header(resp, false).await {
            log::debug!("client left before the response header: {e}");
            return Outcome::Relayed;
        }
        loop {
            match up.read_response_body().await {
                Ok(Some(chunk)) => {
                    if let Err(e) = session.write_response_body(Some(chunk), false).await {
                        // dropping `up` closes the upstream connection: generation stops
                        log::debug!("client left mid-response: {e}");
                        return Outcome::Relayed;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    log::warn!("upstream failed mid-response: {e}");
                    return Outcome::Relayed;
                }
            }
        }
        if let Err(e) = session.write_response_body(None, true).await {
            log::debug!("client left at the end of the response: {e}");
            return Outcome::Relayed;
        }
        if up.response_done() {
            self.connector
                .release_http_session(up, &peer, Some(conf.idle_timeout()))
                .await;
        }
        Outcome::Relayed
    }
}
