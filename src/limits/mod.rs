//! Request limits enforced in `request_filter`: rate-limit policies and gateway-key limits (`rules`; what one request asks of them, `request`), and the unapproved-origin quotas, counted in this process or in a shared Redis.

pub mod conf;
pub mod limiter;
pub mod origin_quota;
pub mod policy;
pub mod redis_window;
pub mod request;
pub mod rules;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

use crate::config::UnapprovedConf;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use limiter::Limiter;
use origin_quota::OriginQuota;
use window::Span;

/// Keys of the shared limit store start with this unless `limits.redis.prefix` says otherwise.
pub const DEFAULT_REDIS_PREFIX: &str = "switchyard:rl:";

/// The unapproved-origin quotas: in this process (per-day counts persisted in the state
/// directory), or in the shared store so that every gateway counts one quota.
pub enum OriginLimits {
    Local(Arc<OriginQuota>),
    Shared {
        limiter: Arc<Limiter>,
        conf: UnapprovedConf,
    },
}

impl OriginLimits {
    /// Counts one request to `origin`, or refuses it (429 with `Retry-After`; 503 when the
    /// shared store fails closed).
    pub async fn admit(&self, origin: &str, metrics: &Metrics) -> Result<(), GatewayError> {
        let result = match self {
            OriginLimits::Local(q) => q.admit(origin),
            OriginLimits::Shared { limiter, conf } => {
                // both counters in one round trip: admitted by both, or by neither
                let (day, secs_left) = origin_quota::utc_day_and_secs_left();
                let (second, daily) = (format!("o|{origin}|s"), format!("o|{origin}|d{day}"));
                let all = limiter
                    .admit_all(&[
                        limiter::Ask {
                            scope: &second,
                            span: Span::Sliding(Duration::from_secs(1)),
                            quota: u64::from(conf.per_second),
                            units: 1,
                        },
                        limiter::Ask {
                            scope: &daily,
                            span: Span::Period(Duration::from_secs(secs_left.max(1))),
                            quota: conf.per_day,
                            units: 1,
                        },
                    ])
                    .await?;
                match (all.held, all.decisions.len()) {
                    (Some(_), _) => Ok(()),
                    (None, 1) => Err(origin_quota::per_second_refusal(origin, conf.per_second)),
                    (None, _) => Err(origin_quota::per_day_refusal(
                        origin,
                        conf.per_day,
                        secs_left,
                    )),
                }
            }
        };
        metrics.limit_decision(
            "origin",
            if result.is_ok() {
                "admitted"
            } else {
                "refused"
            },
        );
        result
    }
}
