//! The manual exchange: a request body Pingora cannot replay (chunked over 64 KiB) is sent by the gateway itself (`forward`), with the same attempts, retries and fallbacks.

use pingora_proxy::Session;

use super::{respond, Admitted, Gateway};
use crate::ctx::RequestCtx;
use crate::error::GatewayError;
use crate::upstream;

impl Gateway {
    /// The manual exchange, with the same retries and fallbacks; its failures are answered
    /// here: they are not rejections.
    pub(super) async fn forward_manually(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Admitted {
        if let Err(e) = self.exchange_manually(session, ctx).await {
            respond::error(session, ctx, &e).await;
        }
        Admitted::Done
    }

    async fn exchange_manually(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        loop {
            self.next_attempt(ctx).await?;
            let peer = self.peer(ctx)?;
            let Some(t) = ctx.target() else {
                return Err(GatewayError::Internal("no upstream target".into()));
            };
            let mut req = session.req_header().clone();
            let body = ctx.body_bytes().clone();
            upstream::prepare_request(&mut req, &t.route, Some(body.len()), t.headers.as_deref())?;
            match self
                .forwarder
                .send(req, body, &peer, &self.cfg.upstream)
                .await
            {
                Err(e) => {
                    if self.judge_connect(ctx, &e).again() {
                        continue;
                    }
                    let g = GatewayError::from_proxy_error(&e)
                        .unwrap_or_else(|| GatewayError::BadGateway(e.to_string()));
                    return Err(g);
                }
                Ok(up) => {
                    let Some(resp) = up.response_header() else {
                        return Err(GatewayError::BadGateway(
                            "upstream sent no response header".into(),
                        ));
                    };
                    if self.judge_response(ctx, resp).again() {
                        continue;
                    }
                    let mut resp = Box::new(resp.clone());
                    ctx.response.ttfb = Some(ctx.facts.start.elapsed());
                    self.shape_response(&mut resp, ctx)
                        .map_err(|e| GatewayError::Internal(e.to_string()))?;
                    let cap = self.capture_cap();
                    self.forwarder
                        .relay(
                            session,
                            up,
                            resp,
                            &peer,
                            &self.cfg.upstream,
                            &mut |body, end| ctx.response.filter_body(body, end, cap),
                        )
                        .await;
                    return Ok(());
                }
            }
        }
    }
}
