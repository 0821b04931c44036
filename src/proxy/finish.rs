//! The end of a request (`logging`): its metrics observed, its rate limits settled with what it really cost, its record handed to the exporter.

use std::time::{Duration, Instant};

use pingora_error::Error;
use pingora_proxy::Session;

use super::{log_record, Gateway};
use crate::ctx::RequestCtx;
use crate::metrics::Observation;

impl Gateway {
    /// Everything `logging` does once the request is over (`e`: how it failed, if it did).
    pub(super) async fn finish(
        &self,
        session: &mut Session,
        e: Option<&Error>,
        ctx: &mut RequestCtx,
    ) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let now = Instant::now();
        self.metrics.observe(&Observation {
            provider: ctx.provider_label(),
            status,
            duration: now - ctx.facts.start,
            upstream: ctx.response.upstream_start.map(|s| now - s),
            ttfb: ctx.response.ttfb,
            bytes_in: ctx.facts.body.bytes.len() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            rejection: ctx.outcome.rejection,
        });
        if ctx.outcome.in_flight {
            self.metrics.in_flight.dec();
        }
        if !ctx.facts.health_probe {
            let summary = log_record::summarize(session, ctx, &self.registry.pricing());
            // the counters learn what the request really cost
            let answered = ctx
                .attempts
                .log()
                .iter()
                .any(|a| (200..300).contains(&a.status));
            self.rate_limits
                .settle(&mut ctx.limits.counted, summary.cost, answered)
                .await;
            let ttft = summary.ttft_ms.map(Duration::from_millis);
            self.metrics.usage(
                summary.provider.as_deref().unwrap_or("none"),
                &summary.model_label,
                &summary.usage,
                summary.cost,
                ttft,
            );
            // the record (bodies, attempts, headers) only when a sink takes it
            let max_body = self.cfg.export.max_body_bytes;
            if let Some(record) = log_record::when_exported(self.exporter.enabled(), || {
                let error = e.map(|e| e.to_string());
                log_record::record(session, ctx, summary, status, error, max_body)
            }) {
                self.exporter.submit(record);
            }
        }
        if let Some(e) = e {
            log::debug!("request {} ended with error: {e}", ctx.facts.id);
        }
        if ctx.attempts.log().len() > 1 {
            log::debug!(
                "request {} attempts: {}",
                ctx.facts.id,
                serde_json::to_string(ctx.attempts.log()).unwrap_or_default()
            );
        }
    }
}
