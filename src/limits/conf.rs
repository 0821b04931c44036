//! `auth.keys[].limits` as the config file gives it, checked with field paths; `rules` counts requests against it.

use serde::Deserialize;

use super::policy::MAX_WINDOW_SECS;

/// `auth.keys[].limits`: what one gateway key may use. Every limit set must pass.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// At most this many requests per sliding window of `window_secs`.
    #[serde(default)]
    pub requests: Option<u64>,
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// Spend per UTC day, in USD (the real cost of finished requests; running ones reserve an
    /// estimate).
    #[serde(default)]
    pub usd_per_day: Option<f64>,
    /// Spend per UTC calendar month, in USD.
    #[serde(default)]
    pub usd_per_month: Option<f64>,
    /// Requests in flight at once.
    #[serde(default)]
    pub max_concurrent: Option<u64>,
}

fn default_window() -> u64 {
    60
}

impl KeyLimits {
    /// Config problems, each with its field (`at` is `auth.keys[i].limits`).
    pub fn check(&self, at: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.requests == Some(0) {
            out.push((
                format!("{at}.requests"),
                "must be at least 1 (leave it out for no request limit)".into(),
            ));
        }
        if self.window_secs == 0 || self.window_secs > MAX_WINDOW_SECS {
            out.push((
                format!("{at}.window_secs"),
                format!("must be between 1 and {MAX_WINDOW_SECS} seconds"),
            ));
        }
        for (name, v) in [
            ("usd_per_day", self.usd_per_day),
            ("usd_per_month", self.usd_per_month),
        ] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0 && *v < 1e9)) {
                out.push((
                    format!("{at}.{name}"),
                    format!("must be a positive amount of USD below 1e9, got {v}"),
                ));
            }
        }
        if self.max_concurrent == Some(0) {
            out.push((
                format!("{at}.max_concurrent"),
                "must be at least 1 (leave it out for no cap)".into(),
            ));
        }
        if self.requests.is_none()
            && self.usd_per_day.is_none()
            && self.usd_per_month.is_none()
            && self.max_concurrent.is_none()
        {
            out.push((
                at.to_string(),
                "sets no limit: give requests, usd_per_day, usd_per_month or max_concurrent (or remove `limits`)".into(),
            ));
        }
        out
    }
}
