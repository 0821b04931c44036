//! The one assembly of the gateway: `assemble` builds every runtime object from the checked configuration (each feature from its section) and the Pingora services that serve them, without binding a port or starting a thread; `Runtime::serve` adds the services to the server and runs it. `switchyard -t` runs the same `assemble` and stops there.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::configuration::Opt;
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;
use pingora_core::services::ServiceWithDependents;

use crate::auth::KeyStore;
use crate::config::{Config, ConfigError, Draft, TlsConf};
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
use crate::pricing::Pricing;
use crate::prompts;
use crate::proxy::Gateway;
use crate::shared_redis::Link;
use crate::ssrf;
use crate::unified::Registry;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Problems of the configuration, its own and those the features' builders found.
    #[error(transparent)]
    Config(#[from] ConfigError),
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

/// Every runtime object built from the configuration and the services that serve them, none
/// started and no port bound; and what must finish before the process exits.
pub struct Runtime {
    server: Server,
    /// In the order they are added to the server.
    services: Vec<Box<dyn ServiceWithDependents>>,
    drained: Arc<export::Drained>,
    quota: Arc<OriginQuota>,
    busy: Arc<Busy>,
    linger: Duration,
    notes: Vec<String>,
}

/// How long the process waits at exit for the log exporter's last flush.
const EXPORT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Runtime {
    /// What the pricing overlays replaced and added: printed by `-t`, logged by `serve`.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Takes over the listening sockets of the running instance on an upgrade (`-u`), adds the
    /// services and serves until a signal stops the server, then finishes what the stopped
    /// runtimes may still be doing on their own threads (their tasks are dropped, not joined):
    /// the log exporter's last flush, and the quota counters' last flush. Then exits.
    pub fn serve(self) -> ! {
        let Runtime {
            mut server,
            services,
            drained,
            quota,
            busy,
            linger,
            notes,
        } = self;
        for note in &notes {
            log::info!("{note}");
        }
        server.bootstrap();
        for service in services {
            server.add_boxed_service(service);
        }
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

/// What the features whose builders check their config section built: their problems join the
/// configuration's own, and a configuration with any is refused before anything is opened.
struct Checked {
    cfg: Config,
    keys: KeyStore,
    pricing: Pricing,
    routing: Registry,
    prompts: Option<Arc<prompts::Store>>,
}

/// Builds the key store (`auth`), the routes (the registry file and `providers`) and the prompt
/// store (`prompts`), then refuses the configuration with every problem found, its own and theirs.
fn check(draft: Draft) -> Result<Checked, AppError> {
    let Draft { config, mut issues } = draft;
    let keys = KeyStore::build(&config.auth.keys, &mut issues);
    let routing = Registry::build(
        &config.registry_file,
        &config.catalogue,
        &config.provider_settings,
        &|name| std::env::var(name).ok(),
        &mut issues,
    );
    let prompts = match &config.prompts {
        // a missing folder is the configuration's own problem, reported already
        Some(p) if p.dir.is_dir() => {
            let store = prompts::Store::open(&p.dir, Some(prompts::PromptMetrics::register()?));
            for (file, e) in store.errors() {
                issues.push(format!("prompts.dir: {file}"), e);
            }
            Some(Arc::new(store))
        }
        _ => None,
    };
    let cfg = Draft { config, issues }.check()?;
    let pricing = Pricing::from_file(cfg.registry_file.clone());
    Ok(Checked {
        cfg,
        keys,
        pricing,
        routing,
        prompts,
    })
}

/// Loads a TLS listener's certificate chain and key as the listener does when it starts (where
/// a file that does not load is a panic), so that a bad one is refused by `-t` and at start-up.
fn check_tls(tls: &TlsConf) -> Result<(), String> {
    use pingora_core::tls;
    let (cert, key) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let (chain, private_key) = tls::load_certs_and_key_files(&cert, &key)
        .map_err(|e| format!("{cert}, {key}: {e}"))?
        .ok_or_else(|| format!("{cert} holds no PEM certificate, or {key} no PEM private key"))?;
    tls::install_default_crypto_provider();
    tls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| format!("{cert} and {key} do not make a certificate and its key: {e}"))?;
    Ok(())
}

/// The one assembly of the gateway: checks the configuration (its own problems and those the
/// features' builders find, all at once), then builds every runtime object and the services
/// that serve them. Nothing is started and no port is bound: that is `Runtime::serve`. Opens
/// the state directory (created if missing, as its counters and the export spool live there)
/// and the log export's folders. `switchyard -t` runs this and drops the result.
pub fn assemble(draft: impl Into<Draft>, opt: Opt) -> Result<Runtime, AppError> {
    let Checked {
        cfg,
        keys,
        pricing,
        routing,
        prompts,
    } = check(draft.into())?;
    let server = Server::new_with_opt_and_conf(opt, cfg.server_conf());
    let mut services: Vec<Box<dyn ServiceWithDependents>> = Vec::new();

    if keys.is_empty() {
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
    log::info!(
        "model registry: {} entries as of {}",
        pricing.len(),
        pricing.as_of
    );
    let refresh_metrics = crate::refresh::RefreshMetrics::register()?;
    refresh_metrics.set_as_of(&pricing.as_of);
    let registry = crate::refresh::Live::new(pricing, routing);
    let (exporter, export_service, drained) =
        export::build(&cfg.export, &cfg.state_dir).map_err(AppError::Export)?;
    let cache = if cfg.cache.enabled {
        Some(crate::cache::ResponseCache::build(&cfg.cache).map_err(AppError::Cache)?)
    } else {
        None
    };
    if let (Some(store), Some(p)) = (&prompts, &cfg.prompts) {
        log::info!(
            "prompts: {} served from {}",
            store.snapshot().len(),
            p.dir.display()
        );
        services.push(Box::new(background_service(
            "prompt reloader",
            prompts::Reloader {
                store: store.clone(),
                poll: Duration::from_millis(p.poll_ms),
            },
        )));
    }
    let notes = cfg.pricing_notes.clone();
    let cfg = Arc::new(cfg);
    if let Some(conf) = cfg.pricing_conf.refresh.clone() {
        services.push(Box::new(background_service(
            "pricing refresh",
            crate::refresh::Refresher {
                live: registry.clone(),
                cfg: cfg.clone(),
                conf,
                metrics: refresh_metrics,
            },
        )));
    }
    let body_budget = crate::body::BodyBudget::new(cfg.limits.max_inflight_body_bytes);
    services.push(Box::new(background_service(
        "memory return",
        crate::memory::MemoryReturn {
            budget: body_budget.clone(),
        },
    )));
    let gateway = Gateway {
        prompts,
        cfg: cfg.clone(),
        keys,
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
    // the addresses are bound when the server runs
    for l in &cfg.listeners {
        match &l.tls {
            None => proxy.add_tcp(&l.address),
            Some(tls) => {
                let listener = |message| AppError::Listener {
                    address: l.address.clone(),
                    message,
                };
                check_tls(tls).map_err(listener)?;
                proxy
                    .add_tls(
                        &l.address,
                        &tls.cert.display().to_string(),
                        &tls.key.display().to_string(),
                    )
                    .map_err(|e| listener(e.to_string()))?
            }
        }
    }
    services.push(Box::new(proxy));
    if let Some(addr) = &cfg.metrics_address {
        let mut prom = pingora_prometheus::prometheus_http_service();
        prom.add_tcp(addr);
        services.push(Box::new(prom));
    }
    services.push(Box::new(background_service(
        "origin quota persister",
        QuotaPersister {
            quota: quota.clone(),
        },
    )));
    services.push(Box::new(background_service("readiness", Readiness(ready))));
    services.push(Box::new(background_service("log exporter", export_service)));
    Ok(Runtime {
        server,
        services,
        drained,
        quota,
        busy,
        linger,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(yaml: &str) -> String {
        let draft =
            crate::config::draft("t.yaml", yaml, std::path::Path::new(".")).expect("parses");
        match assemble(draft, Opt::default()) {
            Ok(_) => panic!("assembled:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_features_problems_come_with_the_configurations_own() {
        let e = refused(concat!(
            "listeners: [{address: 'nope'}]\n",
            "auth: {keys: [{id: a, env: SWITCHYARD_TEST_SURELY_UNSET}, {id: b, sha256: xyz}, {id: c}]}\n",
            "providers: {opnai: {}}\n",
        ));
        for field in [
            "t.yaml: invalid configuration:",
            "listeners[0].address",
            "auth.keys[0].env",
            "auth.keys[1].sha256",
            "auth.keys[2]",
            "providers.opnai: unknown provider 'opnai'",
        ] {
            assert!(e.contains(field), "missing {field} in:\n{e}");
        }
    }

    #[test]
    fn a_tls_listener_must_load() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, "not a certificate\n").unwrap();
        std::fs::write(&key, "not a key\n").unwrap();
        let e = check_tls(&TlsConf { cert, key }).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }
}
