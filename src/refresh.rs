//! Keeps the model registry current: fetches `pricing.refresh.url` on a timer, lays it over the bundled registry (under the operator's overlays), and swaps prices and routes in at once; any failure keeps the last good registry.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::{register_int_counter_vec, register_int_gauge, IntCounterVec, IntGauge};

use crate::config::{Config, Issues};
use crate::export::http::Poster;
use crate::pricing::{self, Pricing, PricingFile, RefreshConf};
use crate::routing::Origin;
use crate::unified::Registry;

/// A registry file larger than this is refused (LiteLLM's whole map is about 1.5 MB).
const MAX_REGISTRY_BYTES: usize = 32 * 1024 * 1024;

/// The registry in force: prices (costs, budgets) and routes (the unified API), swapped together.
pub struct Live {
    pricing: ArcSwap<Pricing>,
    routing: ArcSwap<Registry>,
}

impl Live {
    pub fn new(pricing: Pricing, routing: Registry) -> Arc<Live> {
        Arc::new(Live {
            pricing: ArcSwap::from_pointee(pricing),
            routing: ArcSwap::from_pointee(routing),
        })
    }

    pub fn pricing(&self) -> Arc<Pricing> {
        self.pricing.load_full()
    }

    pub fn routing(&self) -> Arc<Registry> {
        self.routing.load_full()
    }

    fn swap(&self, pricing: Pricing, routing: Registry) {
        self.routing.store(Arc::new(routing));
        self.pricing.store(Arc::new(pricing));
    }
}

pub struct RefreshMetrics {
    as_of: IntGauge,
    last_success: IntGauge,
    results: IntCounterVec,
}

impl RefreshMetrics {
    pub fn register() -> Result<RefreshMetrics, prometheus::Error> {
        Ok(RefreshMetrics {
            as_of: register_int_gauge!(
                "switchyard_registry_as_of_timestamp_seconds",
                "The date (as_of) of the model registry's prices in force, as a Unix time"
            )?,
            last_success: register_int_gauge!(
                "switchyard_registry_last_refresh_success_timestamp_seconds",
                "When pricing.refresh last swapped in a new registry (0: never)"
            )?,
            results: register_int_counter_vec!(
                "switchyard_registry_refresh_total",
                "pricing.refresh attempts by result (ok, error: the last good registry stays)",
                &["result"]
            )?,
        })
    }

    /// Shows the `as_of` date of the registry in force.
    pub fn set_as_of(&self, as_of: &str) {
        if let Ok(d) = chrono::NaiveDate::parse_from_str(as_of, "%Y-%m-%d") {
            if let Some(t) = d.and_hms_opt(0, 0, 0) {
                self.as_of.set(t.and_utc().timestamp());
            }
        }
    }
}

/// Reads a fetched registry: this gateway's YAML format (`as_of`, `models`), or LiteLLM's JSON
/// price map (converted as `switchyard models import --from litellm` does).
pub fn parse(text: &str, url: &str) -> Result<PricingFile, String> {
    let overlay;
    let yaml = if text.trim_start().starts_with('{') {
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        overlay = crate::registry_import::from_litellm(text, url, &today)
            .map_err(|e| e.to_string())?
            .overlay;
        overlay.as_str()
    } else {
        text
    };
    let file: PricingFile =
        serde_yaml::from_str(yaml).map_err(|e| format!("not a registry file: {e}"))?;
    let problems = file.problems(false);
    if let Some((field, message)) = problems.first() {
        return Err(format!(
            "{} problem(s), the first: {field}: {message}",
            problems.len()
        ));
    }
    Ok(file)
}

/// The bundled registry, then `fetched`, then the operator's overlays (read again from disk):
/// an operator's correction always wins over the fetched file.
pub fn build(cfg: &Config, fetched: PricingFile) -> Result<(Pricing, Registry), String> {
    let bundled: PricingFile =
        serde_yaml::from_str(pricing::EMBEDDED).map_err(|e| format!("bundled registry: {e}"))?;
    let mut layers = vec![("refresh".to_string(), fetched)];
    for path in &cfg.pricing_conf.overlays {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("overlay {}: {e}", path.display()))?;
        let layer: PricingFile =
            serde_yaml::from_str(&text).map_err(|e| format!("overlay {}: {e}", path.display()))?;
        layers.push((path.display().to_string(), layer));
    }
    let (merged, _) = pricing::merge(bundled, layers);
    assemble(merged, &cfg.catalogue, &cfg.provider_settings, &|name| {
        std::env::var(name).ok()
    })
}

/// Prices and routes from a merged registry file (checked again as a whole), with the keys
/// `env` gives: what the gateway serves by. The benches use it too.
pub fn assemble(
    merged: PricingFile,
    catalogue: &crate::config::catalogue::Catalogue,
    settings: &std::collections::BTreeMap<String, crate::unified::ProviderSettings>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Pricing, Registry), String> {
    let problems: Vec<_> = merged
        .problems(false)
        .into_iter()
        .filter(|(_, m)| !m.contains("listed twice"))
        .collect();
    if let Some((field, message)) = problems.first() {
        return Err(format!("merged registry: {field}: {message}"));
    }
    let mut issues = Issues::default();
    let routing = Registry::build(&merged, catalogue, settings, env, &mut issues);
    if !issues.is_empty() {
        return Err(format!("merged registry: {issues}"));
    }
    Ok((Pricing::from_file(merged), routing))
}

pub struct Refresher {
    pub live: Arc<Live>,
    pub cfg: Arc<Config>,
    pub conf: RefreshConf,
    pub metrics: RefreshMetrics,
}

impl Refresher {
    /// One fetch, check and swap; `Err` leaves the registry in force as it is.
    pub async fn once(&self) -> Result<String, String> {
        pricing::check_refresh_url(&self.conf.url)?;
        let (origin, path) = Origin::parse(&self.conf.url)?;
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };
        let poster = Poster::new(origin, Duration::from_secs(self.conf.timeout_secs.max(1)));
        let answer = poster
            .get(&path, MAX_REGISTRY_BYTES)
            .await
            .map_err(|e| format!("fetch failed: {e}"))?;
        if !answer.is_success() {
            return Err(format!(
                "fetch answered HTTP {}: {}",
                answer.status,
                answer.body.chars().take(200).collect::<String>()
            ));
        }
        let fetched = parse(&answer.body, &self.conf.url)?;
        let entries = fetched.models.len();
        let (pricing, routing) = build(&self.cfg, fetched)?;
        let as_of = pricing.as_of.clone();
        self.live.swap(pricing, routing);
        self.metrics.set_as_of(&as_of);
        Ok(format!(
            "{entries} entries from {}, as of {as_of}",
            self.conf.url
        ))
    }
}

#[async_trait]
impl BackgroundService for Refresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.conf.interval_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            match self.once().await {
                Ok(what) => {
                    self.metrics.results.with_label_values(&["ok"]).inc();
                    self.metrics
                        .last_success
                        .set(chrono::Utc::now().timestamp());
                    log::info!("pricing refresh: swapped in {what}");
                }
                Err(e) => {
                    self.metrics.results.with_label_values(&["error"]).inc();
                    log::error!(
                        "pricing refresh from {} failed, the registry in force stays: {e}",
                        self.conf.url
                    );
                }
            }
        }
    }
}
