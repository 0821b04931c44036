//! Builds the Pingora server: proxy service and listeners, metrics endpoint, background services.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::configuration::Opt;
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;

use crate::config::Config;
use crate::export;
use crate::failover::health::Health;
use crate::forward::Forwarder;
use crate::lifecycle::{self, Busy, Lingering};
use crate::limits::limiter::{Limiter, Store};
use crate::limits::origin_quota::{OriginQuota, QuotaPersister};
use crate::limits::redis_window::RedisWindows;
use crate::limits::rules::RateLimits;
use crate::limits::window::{Bound, Windows};
use crate::limits::{self, OriginLimits};
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::shared_redis::Link;
use crate::ssrf;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot open the state directory {path}: {source}")]
    State {
        path: String,
        source: std::io::Error,
    },
    #[error("log export: {0}")]
    Export(String),
    #[error("response cache: {0}")]
    Cache(String),
    #[error("rate limits: {0}")]
    Limits(String),
    #[error("listener {address}: {message}")]
    Listener { address: String, message: String },
}

/// Clears the readiness flag when shutdown starts, so load balancers stop sending traffic, and
/// starts draining (answers then close their connections).
struct Readiness(Arc<AtomicBool>);

#[async_trait]
impl BackgroundService for Readiness {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = shutdown.changed().await;
        lifecycle::start_draining();
        self.0.store(false, Ordering::Relaxed);
    }
}

/// The server with every service added, and what must finish before the process exits.
pub struct App {
    server: Server,
    drained: Arc<export::Drained>,
    quota: Arc<OriginQuota>,
    busy: Arc<Busy>,
    linger: Duration,
}

/// How long the process waits at exit for the log exporter's last flush.
const EXPORT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl App {
    /// Serves until a signal stops the server, then finishes what the stopped runtimes may
    /// still be doing on their own threads (their tasks are dropped, not joined): the log
    /// exporter's last flush, and the quota counters' last flush. Then exits.
    pub fn run(self) -> ! {
        let App {
            server,
            drained,
            quota,
            busy,
            linger,
        } = self;
        // an idle gateway need not sleep through the whole grace period: once shutdown has
        // started and no connection is left, flush and exit
        let (d, q) = (drained.clone(), quota.clone());
        lifecycle::exit_when_idle(busy, linger + IDLE_SETTLE, move || {
            d.finish();
            finish(&d, &q)
        });
        server.run(RunArgs::default());
        finish(&drained, &quota)
    }
}

/// How long no connection must be left, after the linger for late connections, before an
/// idle gateway exits at shutdown.
const IDLE_SETTLE: Duration = Duration::from_millis(200);

/// Waits for the exporter's last flush and the quota counters' last flush, then exits.
fn finish(drained: &export::Drained, quota: &OriginQuota) -> ! {
    if !drained.wait(EXPORT_DRAIN_TIMEOUT) {
        log::error!(
            "the log exporter did not finish within {EXPORT_DRAIN_TIMEOUT:?}: records still queued are lost"
        );
    }
    if let Err(e) = quota.flush() {
        log::error!("final flush of origin quota counters failed: {e}");
    }
    std::process::exit(0)
}

/// Creates the server with every service added; the caller runs it.
pub fn build(mut cfg: Config, opt: Opt) -> Result<App, AppError> {
    let mut server = Server::new_with_opt_and_conf(opt, cfg.server_conf());
    server.bootstrap();

    if cfg.keys.is_empty() {
        let public = cfg
            .listeners
            .iter()
            .filter_map(|l| l.address.parse::<SocketAddr>().ok())
            .any(|a| !a.ip().is_loopback());
        let msg = "NO GATEWAY KEYS CONFIGURED: Switchyard is running OPEN (anyone who can reach it may use it). Add auth.keys to the config.";
        log::warn!("{msg}");
        if public {
            log::error!("{msg} A listener is bound beyond loopback!");
        }
    }

    let metrics = Arc::new(Metrics::register()?);
    if let Some(usd) = cfg.spend_alert_usd_per_hour {
        // registered only when set: the alert rule compares with nothing otherwise
        metrics.spend_alert.set(usd);
        prometheus::register(Box::new(metrics.spend_alert.clone()))?;
    }
    let store = match &cfg.limits.redis {
        None => Store::Local(Windows::new(
            Bound {
                scopes: cfg.limits.max_scopes,
                bytes: cfg.limits.max_memory_bytes,
            },
            Some(metrics.limit_evictions.clone()),
        )),
        Some(r) => Store::Redis(Box::new(RedisWindows::new(
            Link::new(&r.url, r.timeout()).map_err(AppError::Limits)?,
            r.prefix
                .clone()
                .unwrap_or_else(|| limits::DEFAULT_REDIS_PREFIX.to_string()),
        ))),
    };
    let limiter = Arc::new(Limiter::new(
        store,
        cfg.limits.on_store_error,
        metrics.limit_store_errors.clone(),
    ));
    let quota = OriginQuota::open(cfg.unapproved.clone(), &cfg.state_dir).map_err(|source| {
        AppError::State {
            path: cfg.state_dir.display().to_string(),
            source,
        }
    })?;
    let ready = Arc::new(AtomicBool::new(true));
    for note in &cfg.pricing_notes {
        log::info!("{note}");
    }
    let pricing = std::mem::take(&mut cfg.pricing);
    log::info!(
        "model registry: {} entries as of {}",
        pricing.len(),
        pricing.as_of
    );
    let refresh_metrics = crate::refresh::RefreshMetrics::register()?;
    refresh_metrics.set_as_of(&pricing.as_of);
    let registry = crate::refresh::Live::new(pricing, std::mem::take(&mut cfg.registry));
    let (exporter, export_service, drained) =
        export::build(&cfg.export, &cfg.state_dir).map_err(AppError::Export)?;
    let cache = if cfg.cache.enabled {
        Some(crate::cache::ResponseCache::build(&cfg.cache).map_err(AppError::Cache)?)
    } else {
        None
    };
    let prompts = match &cfg.prompts {
        None => None,
        Some(p) => {
            let store = Arc::new(crate::prompts::Store::open(
                &p.dir,
                Some(crate::prompts::PromptMetrics::register()?),
            ));
            log::info!(
                "prompts: {} served from {}",
                store.snapshot().len(),
                p.dir.display()
            );
            server.add_service(background_service(
                "prompt reloader",
                crate::prompts::Reloader {
                    store: store.clone(),
                    poll: Duration::from_millis(p.poll_ms),
                },
            ));
            Some(store)
        }
    };
    let cfg = Arc::new(cfg);
    if let Some(conf) = cfg.pricing_conf.refresh.clone() {
        server.add_service(background_service(
            "pricing refresh",
            crate::refresh::Refresher {
                live: registry.clone(),
                cfg: cfg.clone(),
                conf,
                metrics: refresh_metrics,
            },
        ));
    }
    let body_budget = crate::body::BodyBudget::new(cfg.limits.max_inflight_body_bytes);
    server.add_service(background_service(
        "memory return",
        crate::memory::MemoryReturn {
            budget: body_budget.clone(),
        },
    ));
    let gateway = Gateway {
        prompts,
        cfg: cfg.clone(),
        guard: ssrf::Guard::new(),
        origins: Default::default(),
        origin_limits: if cfg.limits.redis.is_some() {
            OriginLimits::Shared {
                limiter: limiter.clone(),
                conf: cfg.unapproved.clone(),
            }
        } else {
            OriginLimits::Local(quota.clone())
        },
        rate_limits: RateLimits::new(
            limiter,
            cfg.key_limits.clone(),
            Duration::from_secs(cfg.limits.concurrency_lease_secs),
            metrics.clone(),
        ),
        metrics,
        forwarder: Forwarder::new(&server.configuration),
        health: Health::new(cfg.health.clone())?,
        exporter,
        registry,
        cache,
        body_budget,
        ready: ready.clone(),
    };
    let grace = Duration::from_secs(cfg.server.grace_period_seconds);
    let guard = Arc::new(crate::conn::Guard {
        header_timeout: Duration::from_secs(cfg.server.header_timeout_secs),
        metrics: crate::conn::ConnMetrics::register()?,
    });
    let app = Lingering::new(
        pingora_proxy::http_proxy(&server.configuration, gateway),
        grace,
    )
    .guarded(guard);
    let (busy, linger) = (app.busy(), app.linger());
    let mut proxy = Service::new("switchyard".to_string(), app);
    for l in &cfg.listeners {
        match &l.tls {
            None => proxy.add_tcp(&l.address),
            Some(tls) => proxy
                .add_tls(
                    &l.address,
                    &tls.cert.display().to_string(),
                    &tls.key.display().to_string(),
                )
                .map_err(|e| AppError::Listener {
                    address: l.address.clone(),
                    message: e.to_string(),
                })?,
        }
    }
    server.add_service(proxy);
    if let Some(addr) = &cfg.metrics_address {
        let mut prom = pingora_prometheus::prometheus_http_service();
        prom.add_tcp(addr);
        server.add_service(prom);
    }
    let persisted_quota = quota.clone();
    server.add_service(background_service(
        "origin quota persister",
        QuotaPersister { quota },
    ));
    server.add_service(background_service("readiness", Readiness(ready)));
    server.add_service(background_service("log exporter", export_service));
    Ok(App {
        server,
        drained,
        quota: persisted_quota,
        busy,
        linger,
    })
}
