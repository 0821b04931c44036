//! Prometheus metrics: one struct registered once in the default registry (served by pingora-prometheus).

use std::time::Duration;

use prometheus::{
    register_counter_vec, register_histogram_vec, register_int_counter_vec, register_int_gauge,
    CounterVec, HistogramVec, IntCounterVec, IntGauge,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Rejection reasons (the `reason` label of `switchyard_rejections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Auth,
    Ssrf,
    Quota,
    Size,
    BadRequest,
    NoRoute,
    Denied,
    /// A rate-limit policy or a gateway key's limit refused the request (429).
    RateLimit,
    /// The shared limit store did not answer and `limits.on_store_error` is `closed` (503).
    LimitStore,
    /// The in-flight request bodies already take `limits.max_inflight_body_bytes` (503).
    Overload,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Auth => "auth",
            Rejection::Ssrf => "ssrf",
            Rejection::Quota => "quota",
            Rejection::Size => "size",
            Rejection::BadRequest => "bad_request",
            Rejection::NoRoute => "no_route",
            Rejection::Denied => "origin_denied",
            Rejection::RateLimit => "rate_limit",
            Rejection::LimitStore => "limit_store",
            Rejection::Overload => "overload",
        }
    }
}

pub struct Metrics {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    ttfb: HistogramVec,
    pub in_flight: IntGauge,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    rejections: IntCounterVec,
    attempts: IntCounterVec,
    retries: IntCounterVec,
    fallbacks: IntCounterVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    unpriced: IntCounterVec,
    ttft: HistogramVec,
    limit_decisions: IntCounterVec,
    /// `metrics.spend_alert_usd_per_hour` (absent when not configured).
    pub spend_alert: prometheus::Gauge,
    /// Failed operations on the shared limit store (Redis).
    pub limit_store_errors: prometheus::IntCounter,
    /// Scopes the in-memory limit store forgot to stay within its bound.
    pub limit_evictions: prometheus::IntCounter,
}

/// What one finished request contributes.
pub struct Observation<'a> {
    pub provider: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub upstream: Option<Duration>,
    pub ttfb: Option<Duration>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub rejection: Option<Rejection>,
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

impl Metrics {
    pub fn register() -> Result<Metrics, prometheus::Error> {
        Ok(Metrics {
            requests: register_int_counter_vec!(
                "switchyard_requests_total",
                "Requests answered, by provider and status class (none: the client left before a response)",
                &["provider", "status_class"]
            )?,
            request_duration: register_histogram_vec!(
                "switchyard_request_duration_seconds",
                "Time from request start to the end of the response",
                &["provider"],
                LATENCY_BUCKETS.to_vec()
            )?,
            upstream_duration: register_histogram_vec!(
                "switchyard_upstream_duration_seconds",
                "Time from choosing the upstream to the end of its response",
                &["provider"],
                LATENCY_BUCKETS.to_vec()
            )?,
            ttfb: register_histogram_vec!(
                "switchyard_time_to_first_byte_seconds",
                "Time from request start to the upstream's response header",
                &["provider"],
                LATENCY_BUCKETS.to_vec()
            )?,
            in_flight: register_int_gauge!("switchyard_requests_in_flight", "Requests being served now")?,
            bytes_in: register_int_counter_vec!(
                "switchyard_request_body_bytes_total",
                "Request body bytes received from clients",
                &["provider"]
            )?,
            bytes_out: register_int_counter_vec!(
                "switchyard_response_body_bytes_total",
                "Response body bytes sent to clients",
                &["provider"]
            )?,
            rejections: register_int_counter_vec!(
                "switchyard_rejections_total",
                "Requests refused by the gateway, by reason (auth, ssrf, quota, size, bad_request, no_route, origin_denied)",
                &["reason"]
            )?,
            attempts: register_int_counter_vec!(
                "switchyard_upstream_attempts_total",
                "Upstream attempts by provider and outcome (status class, error, skipped)",
                &["provider", "outcome"]
            )?,
            retries: register_int_counter_vec!(
                "switchyard_retries_total",
                "Retries made under Helicone-Retry-* (backoff then the same target again)",
                &["provider"]
            )?,
            tokens: register_int_counter_vec!(
                "switchyard_tokens_total",
                "Tokens reported by providers, by provider, model (registry models; others are `other`) and type (prompt, completion, cached, cache_write, reasoning)",
                &["provider", "model", "type"]
            )?,
            cost: register_counter_vec!(
                "switchyard_cost_usd_total",
                "Cost in USD computed from the pricing registry",
                &["provider", "model"]
            )?,
            unpriced: register_int_counter_vec!(
                "switchyard_unpriced_requests_total",
                "Requests with known tokens whose model has no price in the registry (cost_usd null, cost_status unpriced); model is the registry name or `other`",
                &["provider", "model"]
            )?,
            ttft: register_histogram_vec!(
                "switchyard_time_to_first_token_seconds",
                "Streams: request start to the first generated content",
                &["provider"],
                LATENCY_BUCKETS.to_vec()
            )?,
            fallbacks: register_int_counter_vec!(
                "switchyard_fallback_responses_total",
                "Responses of Helicone-Fallbacks requests by the 0-based index of the entry that answered",
                &["index"]
            )?,
            limit_decisions: register_int_counter_vec!(
                "switchyard_rate_limit_decisions_total",
                "Rate-limit checks by rule (header, key_requests, key_usd_day, key_usd_month, key_concurrency, origin_second, origin_day) and result (admitted, refused, uncounted: the store failed open)",
                &["rule", "result"]
            )?,
            spend_alert: prometheus::Gauge::new(
                "switchyard_spend_alert_usd_per_hour",
                "The spend per hour above which the shipped alert rule fires (metrics.spend_alert_usd_per_hour)",
            )?,
            limit_store_errors: prometheus::register_int_counter!(
                "switchyard_rate_limit_store_errors_total",
                "Failed operations on the shared limit store (Redis): admissions then follow limits.on_store_error"
            )?,
            limit_evictions: prometheus::register_int_counter!(
                "switchyard_rate_limit_evictions_total",
                "Rate-limit scopes the in-memory store forgot (least recently used first) to stay within limits.max_scopes and limits.max_memory_bytes; an evicted scope's count starts again from zero"
            )?,
        })
    }

    /// One rate-limit check decided.
    pub fn limit_decision(&self, rule: &str, result: &str) {
        self.limit_decisions
            .with_label_values(&[rule, result])
            .inc();
    }

    /// One upstream attempt ended: `status` 0 with `skipped` for an open circuit, 0 for an error.
    pub fn attempt(&self, provider: &str, status: u16, skipped: bool) {
        let outcome = if skipped {
            "skipped"
        } else if status == 0 {
            "error"
        } else {
            status_class(status)
        };
        self.attempts.with_label_values(&[provider, outcome]).inc();
    }

    pub fn retry(&self, provider: &str) {
        self.retries.with_label_values(&[provider]).inc();
    }

    pub fn fallback_served(&self, index: usize) {
        let idx = index.to_string();
        self.fallbacks.with_label_values(&[idx.as_str()]).inc();
    }

    /// Usage and cost of one finished request; `model` must be a bounded label.
    pub fn usage(
        &self,
        provider: &str,
        model: &str,
        usage: &crate::usage::Usage,
        cost: Option<f64>,
        ttft: Option<Duration>,
    ) {
        for (kind, v) in [
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
            ("cached", usage.cached_tokens),
            ("cache_write", usage.cache_write_tokens),
            ("reasoning", usage.reasoning_tokens),
        ] {
            if let Some(v) = v.filter(|v| *v > 0) {
                self.tokens
                    .with_label_values(&[provider, model, kind])
                    .inc_by(v);
            }
        }
        match cost {
            Some(c) => self.cost.with_label_values(&[provider, model]).inc_by(c),
            None if usage.is_known() => self.unpriced.with_label_values(&[provider, model]).inc(),
            None => {}
        }
        if let Some(t) = ttft {
            self.ttft
                .with_label_values(&[provider])
                .observe(t.as_secs_f64());
        }
    }

    pub fn observe(&self, o: &Observation) {
        self.requests
            .with_label_values(&[o.provider, status_class(o.status)])
            .inc();
        self.request_duration
            .with_label_values(&[o.provider])
            .observe(o.duration.as_secs_f64());
        if let Some(u) = o.upstream {
            self.upstream_duration
                .with_label_values(&[o.provider])
                .observe(u.as_secs_f64());
        }
        if let Some(t) = o.ttfb {
            self.ttfb
                .with_label_values(&[o.provider])
                .observe(t.as_secs_f64());
        }
        if o.bytes_in > 0 {
            self.bytes_in
                .with_label_values(&[o.provider])
                .inc_by(o.bytes_in);
        }
        if o.bytes_out > 0 {
            self.bytes_out
                .with_label_values(&[o.provider])
                .inc_by(o.bytes_out);
        }
        if let Some(r) = o.rejection {
            self.rejections.with_label_values(&[r.label()]).inc();
        }
    }
}
