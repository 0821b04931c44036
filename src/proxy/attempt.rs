//! Each upstream attempt as the attempt machine (`failover::attempts`) drives it: what comes before it (backoff, origin quota), its peer, and the verdicts on its connection, answer or exchange.

use std::time::Instant;

use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::Gateway;
use crate::ctx::RequestCtx;
use crate::error::GatewayError;
use crate::failover::attempts::{ExchangeError, Recovery, Step};
use crate::failover::{Attempts, Verdict};
use crate::headers;
use crate::upstream;

/// A timeout counts as 504, any other failure as 502.
fn timed_out(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// The error that drops an upstream answer so that Pingora tries again: nothing has reached the
/// client (`error_while_proxy` keeps the retry: the attempt machine knows the answer was
/// dropped).
pub(super) fn dropped(status: u16) -> Box<Error> {
    let mut e = Error::explain(
        ErrorType::HTTPStatus(status),
        format!("upstream answered {status}; trying again"),
    )
    .into_up();
    e.set_retry(true);
    e
}

/// A cache hit answered by a unified attempt (`provider`, `model`): the attempts point at it
/// (its translation replays the cached answer).
pub(super) fn point_at_cached(attempts: &mut Attempts, provider: &str, model: Option<&String>) {
    let answered = attempts.targets().iter().position(|t| {
        t.unified
            .as_ref()
            .is_some_and(|u| u.endpoint.name == provider && Some(&u.model_id) == model)
    });
    if let Some(i) = answered {
        attempts.point_at(i);
    }
}

impl Gateway {
    /// Before each upstream attempt: what the attempt machine asks for (backoff wait, async
    /// with no thread held; the origin quota of every attempt after the first).
    pub(super) async fn next_attempt(&self, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
        loop {
            match ctx.attempts.next_step(&self.health, &*self.metrics)? {
                Step::Wait(d) => tokio::time::sleep(d).await,
                Step::Charge(origin) => {
                    match self.origin_limits.admit(&origin, &self.metrics).await {
                        Ok(()) => ctx.attempts.charged(),
                        Err(e) if self.quota_refused(ctx, &e).again() => {}
                        Err(e) => return Err(e),
                    }
                }
                Step::Go => {
                    ctx.response.upstream_start.get_or_insert_with(Instant::now);
                    return Ok(());
                }
            }
        }
    }

    pub(super) fn peer(&self, ctx: &RequestCtx) -> Result<HttpPeer, GatewayError> {
        match ctx.target() {
            Some(t) => Ok(upstream::peer(
                &t.route,
                t.addr,
                &t.policy,
                &self.cfg.upstream,
            )),
            None => Err(GatewayError::Internal(
                "upstream chosen before routing".into(),
            )),
        }
    }

    /// The attempt machine's verdict on a failed connection (or manual exchange).
    pub(super) fn judge_connect(&self, ctx: &mut RequestCtx, e: &Error) -> Verdict {
        let (health, metrics) = (&self.health, &*self.metrics);
        ctx.attempts
            .on_connect_error(health, metrics, timed_out(e), &e.to_string())
    }

    /// A failed connection (`fail_to_connect`): Pingora tries again when the attempt machine
    /// says so and the body can be replayed.
    pub(super) fn connect_failed(&self, ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
        let again = self.judge_connect(ctx, &e).again();
        e.set_retry(again && ctx.facts.body.replayable);
        e
    }

    /// The attempt machine's verdict on an origin quota that refused the next attempt.
    fn quota_refused(&self, ctx: &mut RequestCtx, e: &GatewayError) -> Verdict {
        ctx.attempts
            .on_quota_refused(&self.health, &*self.metrics, e)
    }

    /// The attempt machine's verdict on an upstream answer.
    pub(super) fn judge_response(&self, ctx: &mut RequestCtx, resp: &ResponseHeader) -> Verdict {
        let retry_after = resp
            .headers
            .get(&headers::RETRY_AFTER)
            .map(|v| v.as_bytes());
        let status = resp.status.as_u16();
        ctx.attempts
            .on_response(&self.health, &*self.metrics, status, retry_after)
    }

    /// The attempt machine's verdict on an exchange that failed after connecting, applied to
    /// Pingora's error (`error_while_proxy`).
    pub(super) fn exchange_failed(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let message = e.to_string();
        let failure = ExchangeError {
            upstream: *e.esource() == ErrorSource::Upstream,
            answered: session
                .response_written()
                .is_some_and(|r| !r.status.is_informational()),
            replayable: ctx.facts.body.replayable,
            reused: client_reused,
            timed_out: timed_out(&e),
            message: &message,
        };
        match ctx
            .attempts
            .on_exchange_error(&self.health, &*self.metrics, failure)
        {
            Recovery::Again => e.set_retry(true),
            // a stale pooled connection: once more on a fresh one
            Recovery::Reconnect => e.retry.decide_reuse(true),
            Recovery::GiveUp => e.set_retry(false),
        }
        e
    }
}
