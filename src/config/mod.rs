//! Typed configuration: the YAML schema, loading with field-path errors, and validation.
//!
//! Plain data at the bottom of the crate: the file's sections converted into checked values.
//! No runtime object is built here: each feature builds its own from its section (`KeyStore`
//! from `auth`, the routing `Registry` and `Pricing` from the merged registry file, the prompt
//! store from `prompts`), and `app::assemble` calls them all, adding what they find to the
//! problems found here (`Draft`), so a configuration is refused with every problem at once.

pub mod catalogue;
pub mod issues;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pingora_core::protocols::tls::CaType;
use pingora_core::server::configuration::ServerConf;
use serde::Deserialize;

pub use crate::auth::conf::KeyConf;
use crate::cache::CacheConf;
use crate::export::ExportConf;
use crate::failover::health::HealthConf;
use crate::origin::Origin;
use crate::pricing::file::{self as registry_file, PricingConf, PricingFile};
use crate::prompts::conf::PromptsConf;
use crate::unified::ProviderSettings;
use catalogue::{Catalogue, CatalogueFile};
pub use issues::{Issue, Issues};

pub const EMBEDDED: &str = include_str!("../../conf/switchyard.yaml");

// ---------------------------------------------------------------- file schema

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    pub listeners: Vec<ListenerConf>,
    #[serde(default)]
    pub metrics: Option<MetricsConf>,
    #[serde(default)]
    pub auth: AuthConf,
    /// Path of the provider catalogue; the embedded `conf/providers.yaml` when absent.
    #[serde(default)]
    pub catalogue: Option<PathBuf>,
    /// Extra host aliases: `oai.gw.example.com: openai`.
    #[serde(default)]
    pub host_aliases: HashMap<String, String>,
    /// Per-origin settings: approval, SSRF exception, private CA.
    #[serde(default)]
    pub origins: Vec<OriginConf>,
    #[serde(default)]
    pub unapproved_origins: UnapprovedConf,
    #[serde(default)]
    pub upstream: UpstreamConf,
    #[serde(default)]
    pub limits: LimitsConf,
    /// Passive circuit breaker per upstream origin.
    #[serde(default)]
    pub health: HealthConf,
    /// Request log export (sinks, batching, body capture).
    #[serde(default)]
    pub export: ExportConf,
    /// Response cache (`Helicone-Cache-Enabled`): memory bound, lock, Redis tier.
    #[serde(default)]
    pub cache: CacheConf,
    /// Registry files (routing and prices) laid over the embedded `conf/models.yaml`, and an
    /// optional timed refresh.
    #[serde(default)]
    pub pricing: PricingConf,
    /// Unified API settings per catalogue provider: key variable, base URL, Azure deployments.
    #[serde(default)]
    pub providers: std::collections::BTreeMap<String, ProviderSettings>,
    /// Where persistent state (quota counters) lives.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Prompt templates served by the gateway (`prompt_id` in unified requests).
    #[serde(default)]
    pub prompts: Option<PromptsConf>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}

/// Mapped onto Pingora's `ServerConf`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub threads: usize,
    pub work_stealing: bool,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    /// A request head (request line and headers) must arrive whole within this many seconds of
    /// its first byte (of the connection, for its first request); otherwise the connection is
    /// closed. Bounds slow-header clients (one byte every few seconds).
    pub header_timeout_secs: u64,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub upstream_keepalive_pool_size: usize,
    pub error_log: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            threads: 2,
            work_stealing: true,
            grace_period_seconds: 30,
            graceful_shutdown_timeout_seconds: 5,
            header_timeout_secs: 10,
            pid_file: "/tmp/switchyard.pid".into(),
            upgrade_sock: "/tmp/switchyard_upgrade.sock".into(),
            upstream_keepalive_pool_size: 1024,
            error_log: None,
            user: None,
            group: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConf {
    pub address: String,
    #[serde(default)]
    pub tls: Option<TlsConf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConf {
    pub address: String,
    /// Exported as `switchyard_spend_alert_usd_per_hour`, the threshold of the shipped
    /// "spend per hour" alert rule.
    #[serde(default)]
    pub spend_alert_usd_per_hour: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConf {
    #[serde(default)]
    pub keys: Vec<KeyConf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConf {
    pub url: String,
    /// Exempt from the unapproved-origin quotas.
    #[serde(default)]
    pub approved: bool,
    /// SSRF exception: allow this origin although it is (or resolves to) a private address.
    #[serde(default)]
    pub allow_private: bool,
    /// PEM bundle that verifies this origin's certificate (instead of the system roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnapprovedPolicy {
    /// Allowed within the per-origin quotas.
    Limit,
    /// Refused with 403.
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnapprovedConf {
    pub policy: UnapprovedPolicy,
    pub per_second: u32,
    pub per_day: u64,
}

impl Default for UnapprovedConf {
    fn default() -> Self {
        UnapprovedConf {
            policy: UnapprovedPolicy::Limit,
            per_second: 1,
            per_day: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConf {
    /// TCP connect timeout.
    pub connect_timeout_ms: u64,
    /// TCP + TLS handshake timeout.
    pub tls_timeout_ms: u64,
    /// Longest silence between two bytes of the response (also the wait for the first byte).
    pub read_timeout_secs: u64,
    pub write_timeout_secs: u64,
    /// How long an idle pooled upstream connection is kept.
    pub idle_timeout_secs: u64,
}

impl Default for UpstreamConf {
    fn default() -> Self {
        UpstreamConf {
            connect_timeout_ms: 5_000,
            tls_timeout_ms: 10_000,
            read_timeout_secs: 600,
            write_timeout_secs: 60,
            idle_timeout_secs: 90,
        }
    }
}

impl UpstreamConf {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn tls_timeout(&self) -> Duration {
        Duration::from_millis(self.tls_timeout_ms)
    }
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout_secs)
    }
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConf {
    pub max_body_bytes: usize,
    /// Request-body bytes all requests together may hold in memory; a request that would pass
    /// it is refused with 503 and `Retry-After` (at least `max_body_bytes`).
    pub max_inflight_body_bytes: usize,
    /// Where every counter lives (rate-limit policies, key limits, unapproved-origin quotas):
    /// in this process (absent) or in the Redis several gateways share.
    pub redis: Option<crate::shared_redis::RedisConf>,
    /// Redis unreachable: admit uncounted (`open`) or refuse with 503 (`closed`).
    pub on_store_error: crate::limits::limiter::OnStoreError,
    /// A request still running after this long stops counting against `max_concurrent` (so a
    /// gateway that died mid-request cannot hold its slots for ever).
    pub concurrency_lease_secs: u64,
    /// Completion tokens assumed for a request without `max_tokens` when money limits reserve
    /// its cost up front.
    pub default_completion_tokens: u64,
    /// The in-memory counters (no `redis`): at most this many scopes (a gateway key, user or
    /// property value's counter) ...
    pub max_scopes: usize,
    /// ... and about this many bytes; beyond either, the least recently used scope is forgotten.
    pub max_memory_bytes: usize,
}

impl Default for LimitsConf {
    fn default() -> Self {
        LimitsConf {
            max_body_bytes: 32 * 1024 * 1024,
            max_inflight_body_bytes: 512 * 1024 * 1024,
            redis: None,
            on_store_error: Default::default(),
            concurrency_lease_secs: 900,
            default_completion_tokens: 4096,
            max_scopes: crate::limits::window::DEFAULT_MAX_SCOPES,
            max_memory_bytes: crate::limits::window::DEFAULT_MAX_MEMORY_BYTES,
        }
    }
}

// ---------------------------------------------------------------- validated config

/// Settings that apply to one origin.
#[derive(Clone, Default)]
pub struct OriginPolicy {
    pub approved: bool,
    pub allow_private: bool,
    pub ca: Option<Arc<CaType>>,
}

pub struct Listener {
    pub address: String,
    pub tls: Option<TlsConf>,
}

/// The validated configuration the gateway runs on: plain data, each feature's runtime object
/// is built from its section by `app::assemble`.
pub struct Config {
    /// What it was read from (`embedded conf/switchyard.yaml`, or the file's path): problems
    /// found later, by the features' builders, name it as the config's own do.
    pub source: String,
    pub server: ServerSection,
    pub listeners: Vec<Listener>,
    pub metrics_address: Option<String>,
    /// `metrics.spend_alert_usd_per_hour`.
    pub spend_alert_usd_per_hour: Option<f64>,
    /// `auth:` as written; `auth::KeyStore::build` makes the key store of it (and checks it).
    pub auth: AuthConf,
    /// `auth.keys[].limits` by key id.
    pub key_limits: HashMap<String, crate::limits::conf::KeyLimits>,
    pub catalogue: Catalogue,
    pub origins: HashMap<Origin, OriginPolicy>,
    pub unapproved: UnapprovedConf,
    pub upstream: UpstreamConf,
    pub limits: LimitsConf,
    pub health: HealthConf,
    pub export: ExportConf,
    pub cache: CacheConf,
    /// The model registry file: the bundled `conf/models.yaml` with the overlays laid over it,
    /// checked. Prices (`pricing::Pricing`) and routes (`unified::Registry`) are built of it.
    pub registry_file: PricingFile,
    /// What the pricing overlays replaced and added (logged at start-up, printed by `-t`).
    pub pricing_notes: Vec<String>,
    /// `pricing.refresh` and the files it lays its fetch over.
    pub pricing_conf: PricingConf,
    /// `providers:` as written (routes are built of them, at start-up and on a pricing refresh).
    pub provider_settings: std::collections::BTreeMap<String, ProviderSettings>,
    pub state_dir: PathBuf,
    /// `prompts:` with its folder resolved.
    pub prompts: Option<PromptsConf>,
}

impl Config {
    /// Pingora's server configuration generated from the `server:` section.
    pub fn server_conf(&self) -> ServerConf {
        let s = &self.server;
        ServerConf {
            threads: s.threads,
            work_stealing: s.work_stealing,
            grace_period_seconds: Some(s.grace_period_seconds),
            graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
            pid_file: s.pid_file.clone(),
            upgrade_sock: s.upgrade_sock.clone(),
            upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
            error_log: s.error_log.clone(),
            user: s.user.clone(),
            group: s.group.clone(),
            // retries and fallbacks are bounded by the gateway itself (failover module)
            max_retries: 128,
            ..ServerConf::default()
        }
    }

    pub fn origin_policy(&self, origin: &Origin) -> Option<&OriginPolicy> {
        self.origins.get(origin)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{file}: {path}: {message}")]
    Parse {
        file: String,
        path: String,
        message: String,
    },
    #[error("{file}: invalid configuration:\n{issues}")]
    Invalid { file: String, issues: Issues },
}

/// A configuration read and converted, with the problems its checks found (none: it is valid
/// as far as this module can tell). `app::assemble` adds what the features find building their
/// runtime objects from it, and refuses it with every problem at once.
pub struct Draft {
    pub config: Config,
    pub issues: Issues,
}

impl Draft {
    /// The configuration, or every problem found in it.
    pub fn check(self) -> Result<Config, ConfigError> {
        if self.issues.is_empty() {
            Ok(self.config)
        } else {
            Err(ConfigError::Invalid {
                file: self.config.source,
                issues: self.issues,
            })
        }
    }
}

/// A configuration already checked.
impl From<Config> for Draft {
    fn from(config: Config) -> Draft {
        Draft {
            config,
            issues: Issues::default(),
        }
    }
}

fn parse_yaml<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        ConfigError::Parse {
            file: file.to_string(),
            path: if path == "." {
                "(top level)".into()
            } else {
                path
            },
            message,
        }
    })
}

/// A YAML data file the config points at (`path`), or the embedded default.
fn data_file<T: serde::de::DeserializeOwned>(
    path: Option<PathBuf>,
    embedded_name: &str,
    embedded: &str,
) -> Result<T, ConfigError> {
    match path {
        None => parse_yaml(embedded_name, embedded),
        Some(p) => {
            let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?;
            parse_yaml(&p.display().to_string(), &text)
        }
    }
}

/// (provider, model) of a registry entry, lower-case.
fn entry_key(m: &registry_file::Price) -> (String, String) {
    (
        m.provider.to_ascii_lowercase(),
        m.model.to_ascii_lowercase(),
    )
}

/// `models[12].aliases[0]` -> (12, `.aliases[0]`).
fn merged_entry(field: &str) -> Option<(usize, &str)> {
    let (n, rest) = field.strip_prefix("models[")?.split_once(']')?;
    Some((n.parse().ok()?, rest))
}

/// Loads and validates a configuration file (the checks of this module only: see `Draft`).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    read(path)?.check()
}

/// The embedded default configuration (`conf/switchyard.yaml`), paths relative to the cwd.
pub fn embedded() -> Result<Config, ConfigError> {
    read_embedded()?.check()
}

/// Parses and validates configuration text; relative paths are resolved against `base`.
pub fn from_str(file: &str, text: &str, base: &Path) -> Result<Config, ConfigError> {
    draft(file, text, base)?.check()
}

/// Reads a configuration file: `Err` when it cannot be read or parsed, else the configuration
/// with the problems found in it.
pub fn read(path: &Path) -> Result<Draft, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    draft(&path.display().to_string(), &text, &base)
}

/// `read` of the embedded default configuration.
pub fn read_embedded() -> Result<Draft, ConfigError> {
    draft("embedded conf/switchyard.yaml", EMBEDDED, Path::new("."))
}

/// Parses configuration text and checks it; relative paths are resolved against `base`.
pub fn draft(file: &str, text: &str, base: &Path) -> Result<Draft, ConfigError> {
    let fc: FileConfig = parse_yaml(file, text)?;
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let mut issues = Issues::default();

    let catalogue_file: CatalogueFile = data_file(
        fc.catalogue.as_deref().map(&resolve),
        "embedded conf/providers.yaml",
        catalogue::EMBEDDED,
    )?;
    let bundled: PricingFile =
        data_file(None, "embedded conf/models.yaml", registry_file::EMBEDDED)?;
    for (field, message) in bundled.problems(true) {
        issues.push(
            format!("pricing (bundled conf/models.yaml) {field}"),
            message,
        );
    }
    let mut layers = Vec::new();
    // each overlay's label and (provider, model) entries: a problem of the merged registry is
    // reported at the overlay entry that brought it
    let mut origins: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut reported = std::collections::HashSet::new();
    for (k, path) in fc.pricing.overlays.iter().enumerate() {
        let path = resolve(path);
        let layer: PricingFile = data_file(Some(path.clone()), "", "")?;
        let label = format!("pricing.overlays[{k}] ({})", path.display());
        for (field, message) in layer.problems(false) {
            let at = format!("{label} {field}");
            reported.insert((at.clone(), message.clone()));
            issues.push(at, message);
        }
        origins.push((label, layer.models.iter().map(entry_key).collect()));
        layers.push((path.display().to_string(), layer));
    }
    let (pricing_file, pricing_notes) = registry_file::merge(bundled, layers);
    if !fc.pricing.overlays.is_empty() {
        // what no single file shows (an overlay's alias naming a bundled model, one name given
        // to two models by two files), at the overlay entry that brings it; a problem of one
        // file was reported above, once
        for (field, message) in pricing_file.problems(false) {
            if message.contains("listed twice") {
                continue;
            }
            let Some((j, rest)) = merged_entry(&field) else {
                continue; // as_of: the file that set it was checked
            };
            let key = entry_key(&pricing_file.models[j]);
            let at = origins
                .iter()
                .rev()
                .find_map(|(label, keys)| {
                    let i = keys.iter().rposition(|k| *k == key)?;
                    Some(format!("{label} models[{i}]{rest}"))
                })
                .unwrap_or_else(|| format!("pricing (bundled conf/models.yaml) models[{j}]{rest}"));
            if reported.contains(&(at.clone(), message.clone())) {
                continue;
            }
            let message = message.replace("a model of this file", "a model of the registry");
            if reported.insert((at.clone(), message.clone())) {
                issues.push(at, message);
            }
        }
    }
    if let Some(r) = &fc.pricing.refresh {
        if let Err(e) = registry_file::check_refresh_url(&r.url) {
            issues.push("pricing.refresh.url".into(), e);
        }
        if r.interval_secs == 0 {
            issues.push(
                "pricing.refresh.interval_secs".into(),
                "must be at least 1 (an hour, 3600, is plenty for price lists)".into(),
            );
        }
    }
    let mut aliases: Vec<(String, String)> = fc
        .host_aliases
        .iter()
        .map(|(h, p)| (h.clone(), p.to_ascii_lowercase()))
        .collect();
    aliases.sort();
    let mut cat_issues = Issues::default();
    let catalogue = Catalogue::build(catalogue_file, &aliases, &mut cat_issues);
    for i in cat_issues.0 {
        let path = if i.path.starts_with("host_aliases") {
            i.path
        } else {
            format!("catalogue.{}", i.path)
        };
        issues.push(path, i.message);
    }

    let s = &fc.server;
    if s.threads == 0 || s.threads > 256 {
        issues.push(
            "server.threads".into(),
            format!("{} is out of range (1..=256)", s.threads),
        );
    }
    if fc.listeners.is_empty() {
        issues.push("listeners".into(), "at least one listener is needed".into());
    }
    let mut listeners = Vec::new();
    for (i, l) in fc.listeners.iter().enumerate() {
        if l.address.parse::<std::net::SocketAddr>().is_err() {
            issues.push(
                format!("listeners[{i}].address"),
                format!("'{}' is not an ip:port socket address", l.address),
            );
        }
        let tls = l.tls.as_ref().map(|t| TlsConf {
            cert: resolve(&t.cert),
            key: resolve(&t.key),
        });
        if let Some(t) = &tls {
            for (f, p) in [("cert", &t.cert), ("key", &t.key)] {
                if !p.is_file() {
                    issues.push(
                        format!("listeners[{i}].tls.{f}"),
                        format!("{} does not exist", p.display()),
                    );
                }
            }
        }
        listeners.push(Listener {
            address: l.address.clone(),
            tls,
        });
    }
    let metrics_address = fc.metrics.as_ref().map(|m| m.address.clone());
    let spend_alert_usd_per_hour = fc.metrics.as_ref().and_then(|m| m.spend_alert_usd_per_hour);
    if let Some(v) = spend_alert_usd_per_hour.filter(|v| !(v.is_finite() && *v > 0.0)) {
        issues.push(
            "metrics.spend_alert_usd_per_hour".into(),
            format!("must be a positive amount of USD, got {v}"),
        );
    }
    if let Some(a) = &metrics_address {
        if a.parse::<std::net::SocketAddr>().is_err() {
            issues.push(
                "metrics.address".into(),
                format!("'{a}' is not an ip:port socket address"),
            );
        }
    }

    let mut origins = HashMap::new();
    for (i, oc) in fc.origins.iter().enumerate() {
        let origin = match Origin::parse(&oc.url) {
            Ok((o, rest)) if rest == "/" || rest.is_empty() => o,
            Ok(_) => {
                issues.push(
                    format!("origins[{i}].url"),
                    "must be an origin without a path (scheme://host[:port])".into(),
                );
                continue;
            }
            Err(e) => {
                issues.push(format!("origins[{i}].url"), e);
                continue;
            }
        };
        let ca = match &oc.ca_file {
            None => None,
            Some(p) => match load_ca(&resolve(p)) {
                Ok(ca) => Some(ca),
                Err(e) => {
                    issues.push(format!("origins[{i}].ca_file"), e);
                    None
                }
            },
        };
        if origins.contains_key(&origin) {
            issues.push(
                format!("origins[{i}].url"),
                format!("{origin} is listed twice"),
            );
        }
        origins.insert(
            origin,
            OriginPolicy {
                approved: oc.approved,
                allow_private: oc.allow_private,
                ca,
            },
        );
    }

    if fc.unapproved_origins.per_second == 0 {
        issues.push(
            "unapproved_origins.per_second".into(),
            "must be at least 1 (use policy: deny to refuse)".into(),
        );
    }
    if fc.unapproved_origins.per_day == 0 {
        issues.push(
            "unapproved_origins.per_day".into(),
            "must be at least 1 (use policy: deny to refuse)".into(),
        );
    }
    let u = &fc.upstream;
    for (f, v) in [
        ("connect_timeout_ms", u.connect_timeout_ms),
        ("tls_timeout_ms", u.tls_timeout_ms),
        ("read_timeout_secs", u.read_timeout_secs),
        ("write_timeout_secs", u.write_timeout_secs),
    ] {
        if v == 0 {
            issues.push(format!("upstream.{f}"), "must be greater than 0".into());
        }
    }
    if fc.health.failure_threshold == 0 {
        issues.push(
            "health.failure_threshold".into(),
            "must be at least 1".into(),
        );
    }
    if fc.limits.max_body_bytes == 0 {
        issues.push(
            "limits.max_body_bytes".into(),
            "must be greater than 0".into(),
        );
    }
    if fc.limits.max_inflight_body_bytes < fc.limits.max_body_bytes {
        issues.push(
            "limits.max_inflight_body_bytes".into(),
            format!(
                "{} is smaller than limits.max_body_bytes ({}): a body of the allowed size could never be read",
                fc.limits.max_inflight_body_bytes, fc.limits.max_body_bytes
            ),
        );
    }
    if fc.server.header_timeout_secs == 0 {
        issues.push(
            "server.header_timeout_secs".into(),
            "must be at least 1".into(),
        );
    }

    let mut export = fc.export.clone();
    if let Some(d) = export.spool_dir.as_mut() {
        *d = resolve(d);
    }
    if let Some(d) = export.dead_letter_dir.as_mut() {
        *d = resolve(d);
    }
    if let Some(c) = &export.clickhouse {
        if let Err(e) = Origin::parse(&c.url) {
            issues.push("export.clickhouse.url".into(), e);
        }
        for (f, v) in [("database", &c.database), ("table", &c.table)] {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                issues.push(
                    format!("export.clickhouse.{f}"),
                    format!("'{v}' must be an identifier (letters, digits, _)"),
                );
            }
        }
        if let Some(v) = &c.password_env {
            if std::env::var(v).is_err() {
                issues.push(
                    "export.clickhouse.password_env".into(),
                    format!("environment variable {v} is not set"),
                );
            }
        }
    }
    if let Some(w) = &export.webhook {
        if let Err(e) = Origin::parse(&w.url) {
            issues.push("export.webhook.url".into(), e);
        }
        if let Some(v) = &w.token_env {
            if std::env::var(v).is_err() {
                issues.push(
                    "export.webhook.token_env".into(),
                    format!("environment variable {v} is not set"),
                );
            }
        }
    }
    if let Some(j) = export.jsonl.as_mut() {
        j.dir = resolve(&j.dir);
        if j.max_file_bytes < 4096 {
            issues.push(
                "export.jsonl.max_file_bytes".into(),
                "must be at least 4096".into(),
            );
        }
    }
    for (f, v) in [
        ("queue_capacity", export.queue_capacity),
        ("batch_max_records", export.batch_max_records),
        ("batch_max_bytes", export.batch_max_bytes),
    ] {
        if v == 0 {
            issues.push(format!("export.{f}"), "must be greater than 0".into());
        }
    }
    let c = &fc.cache;
    if c.max_bytes < 1024 * 1024 {
        issues.push(
            "cache.max_bytes".into(),
            "must be at least 1048576 (1 MiB)".into(),
        );
    }
    if c.max_entry_bytes == 0 || c.max_entry_bytes > c.max_bytes {
        issues.push(
            "cache.max_entry_bytes".into(),
            "must be greater than 0 and at most cache.max_bytes".into(),
        );
    }
    if c.lock_timeout_secs == 0 {
        issues.push(
            "cache.lock_timeout_secs".into(),
            "must be greater than 0".into(),
        );
    }
    if let Some(r) = &fc.limits.redis {
        for (path, message) in r.check("limits.redis") {
            issues.push(path, message);
        }
    }
    if fc.limits.concurrency_lease_secs == 0 {
        issues.push(
            "limits.concurrency_lease_secs".into(),
            "must be greater than 0".into(),
        );
    }
    {
        use crate::limits::window::Bound;
        if fc.limits.max_scopes < Bound::MIN_SCOPES {
            issues.push(
                "limits.max_scopes".into(),
                format!(
                    "must be at least {} (one scope per shard of the store)",
                    Bound::MIN_SCOPES
                ),
            );
        }
        if fc.limits.max_memory_bytes < Bound::MIN_BYTES {
            issues.push(
                "limits.max_memory_bytes".into(),
                format!("must be at least {} (64 KiB)", Bound::MIN_BYTES),
            );
        }
    }
    for (i, k) in fc.auth.keys.iter().enumerate() {
        if let Some(l) = &k.limits {
            for (path, message) in l.check(&format!("auth.keys[{i}].limits")) {
                issues.push(path, message);
            }
        }
    }
    if let Some(r) = &c.redis {
        for (path, message) in r.check("cache.redis") {
            issues.push(path, message);
        }
    }
    if let Some(p) = &fc.prompts {
        let dir = resolve(&p.dir);
        if p.poll_ms == 0 {
            issues.push("prompts.poll_ms".into(), "must be greater than 0".into());
        }
        // (the files in it are checked by opening the prompt store: `app::assemble`)
        if !dir.is_dir() {
            issues.push(
                "prompts.dir".into(),
                format!("{} is not a folder", dir.display()),
            );
        }
    }
    let prompts = fc.prompts.as_ref().map(|p| PromptsConf {
        dir: resolve(&p.dir),
        poll_ms: p.poll_ms,
    });
    let key_limits = fc
        .auth
        .keys
        .iter()
        .filter_map(|k| k.limits.clone().map(|l| (k.id.clone(), l)))
        .collect();
    let config = Config {
        source: file.to_string(),
        listeners,
        metrics_address,
        spend_alert_usd_per_hour,
        key_limits,
        catalogue,
        origins,
        unapproved: fc.unapproved_origins,
        upstream: fc.upstream,
        limits: fc.limits,
        health: fc.health,
        export,
        cache: fc.cache.clone(),
        registry_file: pricing_file,
        pricing_notes: pricing_notes.0,
        pricing_conf: PricingConf {
            overlays: fc.pricing.overlays.iter().map(|p| resolve(p)).collect(),
            refresh: fc.pricing.refresh.clone(),
        },
        provider_settings: fc.providers.clone(),
        state_dir: resolve(&fc.state_dir),
        prompts,
        server: fc.server,
        auth: fc.auth,
    };
    Ok(Draft { config, issues })
}

/// Reads a PEM bundle into the CA type Pingora's rustls backend verifies peers with.
fn load_ca(path: &Path) -> Result<Arc<CaType>, String> {
    use pingora_core::utils::tls::WrappedX509;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in rustls_pemfile::certs(&mut pem.as_slice()) {
        let der = item.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
        // validate first: Pingora's parser panics on malformed DER
        x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("{}: not an X.509 certificate: {e}", path.display()))?;
        certs.push(WrappedX509::new(
            der.to_vec(),
            pingora_core::utils::tls::parse_x509,
        ));
    }
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(Arc::from(certs.into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match from_str("t.yaml", text, Path::new(".")) {
            Ok(_) => panic!("config should be rejected:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn embedded_defaults_are_valid() {
        let c = embedded().unwrap();
        assert_eq!(c.listeners[0].address, "127.0.0.1:8787");
        assert!(c.auth.keys.is_empty());
        assert_eq!(c.limits.max_body_bytes, 32 * 1024 * 1024);
        assert_eq!(c.unapproved.per_second, 1);
        assert_eq!(c.unapproved.per_day, 10_000);
        assert!(
            c.upstream.read_timeout_secs >= 120,
            "long generations must not be cut off"
        );
        let sc = c.server_conf();
        assert_eq!(sc.grace_period_seconds, Some(30));
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        let e = err("listeners: [{address: '127.0.0.1:1'}]\nupstream: {read_timeout: 5}\n");
        assert!(e.contains("upstream"), "{e}");
        assert!(e.contains("unknown field `read_timeout`"), "{e}");
        let e = err("listeners: [{address: '127.0.0.1:1', tsl: {}}]\n");
        assert!(e.contains("listeners[0]"), "{e}");
        let e = err("listeners: [{address: '127.0.0.1:1'}]\nserver: {threads: many}\n");
        assert!(e.contains("server.threads"), "{e}");
    }

    #[test]
    fn semantic_errors_name_every_field() {
        let e = err(concat!(
            "listeners: [{address: 'nope'}]\n",
            "metrics: {address: 'x'}\n",
            "auth: {keys: [{id: a, sha256: '0000000000000000000000000000000000000000000000000000000000000000', limits: {}}]}\n",
            "origins: [{url: 'gopher://x'}, {url: 'http://127.0.0.1:1', ca_file: /nonexistent.pem}]\n",
            "unapproved_origins: {per_second: 0}\n",
            "upstream: {read_timeout_secs: 0}\n",
            "limits: {max_body_bytes: 0, max_scopes: 3, max_memory_bytes: 100}\n",
        ));
        for field in [
            "listeners[0].address",
            "metrics.address",
            "auth.keys[0].limits: sets no limit",
            "origins[0].url",
            "origins[1].ca_file",
            "unapproved_origins.per_second",
            "upstream.read_timeout_secs",
            "limits.max_body_bytes",
            "limits.max_scopes: must be at least 16",
            "limits.max_memory_bytes: must be at least 65536",
        ] {
            assert!(e.contains(field), "missing {field} in:\n{e}");
        }
    }
}
