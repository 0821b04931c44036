//! The registry file as written (`conf/models.yaml` and the overlays laid over it) and the `pricing:` section of the gateway config: plain data with its checks and the merge of the layers. `Pricing` (in the parent module) is the runtime object built from a merged file.

use std::collections::HashMap;

use serde::Deserialize;

pub const EMBEDDED: &str = include_str!("../../conf/models.yaml");

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingFile {
    /// The date the prices were read (required in the bundled registry; an overlay may omit it).
    #[serde(default)]
    pub as_of: Option<String>,
    pub models: Vec<Price>,
}

/// `name` can be a model name or alias: clients write `model/provider` and `a,b`.
fn bad_model_name(name: &str) -> bool {
    name.is_empty()
        || name
            .bytes()
            .any(|b| matches!(b, b'/' | b',' | b'!') || b.is_ascii_whitespace())
}

/// `YYYY-MM-DD`.
fn is_date(s: &str) -> bool {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

impl PricingFile {
    /// Every problem of this file, as (field path, message). `bundled`: the registry shipped
    /// with the gateway, where every price must name its source and `as_of` is required.
    pub fn problems(&self, bundled: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(d) = &self.as_of {
            if !is_date(d) {
                out.push(("as_of".into(), format!("'{d}' is not a date (YYYY-MM-DD)")));
            }
        } else if bundled {
            out.push((
                "as_of".into(),
                "the date the prices were read is required".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let models: std::collections::HashSet<String> = self
            .models
            .iter()
            .map(|m| m.model.to_ascii_lowercase())
            .collect();
        let mut alias_of: HashMap<String, String> = HashMap::new();
        for (i, m) in self.models.iter().enumerate() {
            let at = |f: &str| format!("models[{i}]{f}");
            if bad_model_name(&m.model) {
                out.push((
                    at(".model"),
                    format!(
                        "'{}' cannot be a model name: clients write `model/provider` and `a,b`, so it must be non-empty without '/', ',', '!' or spaces (put the provider's own id in `id`)",
                        m.model
                    ),
                ));
            }
            if !seen.insert((m.provider.as_str(), m.model.to_ascii_lowercase())) {
                out.push((
                    at(""),
                    format!("{} {} is listed twice in this file", m.provider, m.model),
                ));
            }
            for (f, v) in [
                ("input", m.input),
                ("output", m.output),
                ("cached_input", m.cached_input),
                ("cache_write", m.cache_write),
            ] {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    out.push((
                        at(&format!(".{f}")),
                        format!(
                            "{} {}: a price must be a number >= 0 (USD per million tokens)",
                            m.provider, m.model
                        ),
                    ));
                }
            }
            if m.input.is_some() != m.output.is_some() {
                out.push((
                    at(if m.input.is_none() {
                        ".input"
                    } else {
                        ".output"
                    }),
                    format!(
                        "{} {}: give both input and output prices, or neither (an unpriced model)",
                        m.provider, m.model
                    ),
                ));
            }
            if m.input.is_none() && (m.cached_input.is_some() || m.cache_write.is_some()) {
                out.push((
                    at(".cached_input"),
                    format!(
                        "{} {}: cache prices need input and output prices",
                        m.provider, m.model
                    ),
                ));
            }
            if bundled && m.is_priced() && m.source.is_none() {
                out.push((
                    at(".source"),
                    format!(
                        "{} {}: a bundled price must name its source ({{url, read}})",
                        m.provider, m.model
                    ),
                ));
            }
            if let Some(src) = &m.source {
                if !is_date(&src.read) {
                    out.push((
                        at(".source.read"),
                        format!("'{}' is not a date (YYYY-MM-DD)", src.read),
                    ));
                }
            }
            for (f, d) in [("deprecated", &m.deprecated), ("retired", &m.retired)] {
                if let Some(d) = d.as_deref().filter(|d| !is_date(d)) {
                    out.push((
                        at(&format!(".{f}")),
                        format!("'{d}' is not a date (YYYY-MM-DD)"),
                    ));
                }
            }
            for (k, a) in m.aliases.iter().enumerate() {
                let a_l = a.to_ascii_lowercase();
                let model = m.model.to_ascii_lowercase();
                if bad_model_name(a) {
                    out.push((
                        at(&format!(".aliases[{k}]")),
                        format!("'{a}' cannot be a model name (no '/', ',', '!' or spaces)"),
                    ));
                } else if a_l != model && models.contains(&a_l) {
                    out.push((
                        at(&format!(".aliases[{k}]")),
                        format!("'{a}' is already a model of this file; an alias cannot name another model"),
                    ));
                } else if let Some(other) = alias_of.insert(a_l.clone(), model.clone()) {
                    if other != model {
                        out.push((
                            at(&format!(".aliases[{k}]")),
                            format!("'{a}' is an alias of both {other} and {model}"),
                        ));
                    }
                }
            }
        }
        out
    }
}

/// `pricing:` in switchyard.yaml: registry files laid over the bundled one, and an optional
/// refresh. `pricing: FILE` (one overlay; a file in today's flat `models:` format works) and
/// `pricing: [A, B]` are short forms of `pricing: {overlays: [...]}`.
#[derive(Debug, Clone, Default)]
pub struct PricingConf {
    pub overlays: Vec<std::path::PathBuf>,
    pub refresh: Option<RefreshConf>,
}

/// `pricing.refresh`: a registry file (this YAML format, or LiteLLM's JSON price map) fetched
/// on a timer and laid over the bundled registry and the overlays.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshConf {
    /// `https://...` (`http://` only for a loopback address).
    pub url: String,
    #[serde(default = "default_refresh_secs")]
    pub interval_secs: u64,
    #[serde(default = "default_refresh_timeout")]
    pub timeout_secs: u64,
}

fn default_refresh_secs() -> u64 {
    3600
}

fn default_refresh_timeout() -> u64 {
    30
}

/// `pricing.refresh.url` must be HTTPS; plain HTTP only to a loopback address (tests, a local
/// mirror): prices decide budgets, so they never travel in clear over a network.
pub fn check_refresh_url(url: &str) -> Result<(), String> {
    let u = url::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    let loopback = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        s => Err(format!(
            "'{url}': the scheme must be https ({s}:// is allowed only for a loopback address)"
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PricingSection {
    #[serde(default)]
    overlays: Vec<std::path::PathBuf>,
    #[serde(default)]
    refresh: Option<RefreshConf>,
}

impl<'de> Deserialize<'de> for PricingConf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_yaml::Value::deserialize(d)?;
        match v {
            serde_yaml::Value::String(s) => Ok(PricingConf {
                overlays: vec![s.into()],
                refresh: None,
            }),
            serde_yaml::Value::Sequence(_) => Ok(PricingConf {
                overlays: serde_yaml::from_value(v).map_err(D::Error::custom)?,
                refresh: None,
            }),
            serde_yaml::Value::Mapping(_) => {
                let s: PricingSection = serde_yaml::from_value(v).map_err(D::Error::custom)?;
                Ok(PricingConf {
                    overlays: s.overlays,
                    refresh: s.refresh,
                })
            }
            _ => Err(D::Error::custom(
                "expected a file, a list of files, or {overlays: [...], refresh: {url, interval_secs}}",
            )),
        }
    }
}

/// What an overlay did to the layers below it, for the start-up log and `-t`.
#[derive(Debug, Default, PartialEq)]
pub struct MergeNotes(pub Vec<String>);

/// The bundled registry with each overlay laid over it in order: an overlay's entry for the
/// same (model, provider) replaces the one below; an overlay model named like an alias below
/// takes that name over (the alias is dropped from the model that had it); anything else is
/// added. `as_of` stays the bundled one unless an overlay sets its own.
pub fn merge(
    mut base: PricingFile,
    overlays: Vec<(String, PricingFile)>,
) -> (PricingFile, MergeNotes) {
    let mut notes = MergeNotes::default();
    for (label, layer) in overlays {
        let (mut replaced, mut added, mut took) = (0usize, 0usize, Vec::new());
        for entry in layer.models {
            let model = entry.model.to_ascii_lowercase();
            for b in base.models.iter_mut() {
                let before = b.aliases.len();
                b.aliases.retain(|a| a.to_ascii_lowercase() != model);
                if b.aliases.len() != before {
                    took.push(format!("{} (was an alias of {})", entry.model, b.model));
                }
            }
            match base.models.iter_mut().find(|b| {
                b.provider.eq_ignore_ascii_case(&entry.provider)
                    && b.model.eq_ignore_ascii_case(&entry.model)
            }) {
                Some(b) => {
                    *b = entry.over(b);
                    replaced += 1;
                }
                None => {
                    base.models.push(entry);
                    added += 1;
                }
            }
        }
        took.sort();
        took.dedup();
        notes.0.push(format!(
            "pricing overlay {label}: {replaced} entries replace bundled ones, {added} added{}",
            if took.is_empty() {
                String::new()
            } else {
                format!("; takes over the names {}", took.join(", "))
            }
        ));
        if layer.as_of.is_some() {
            base.as_of = layer.as_of;
        }
    }
    (base, notes)
}

/// Where a bundled price was read.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub url: String,
    /// The date the page gives, or the date it was read.
    pub read: String,
}

/// Whose page a price comes from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Provider,
    ThirdParty,
}

/// USD per million tokens.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub provider: String,
    pub model: String,
    /// Absent (with `output`) for a model whose price could not be sourced: it is routed, and
    /// its requests are logged with `cost_usd: null`, `cost_status: "unpriced"`.
    #[serde(default)]
    pub input: Option<f64>,
    #[serde(default)]
    pub output: Option<f64>,
    #[serde(default)]
    pub cached_input: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// The provider's own id for the model (sent upstream); `model` when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Context window in tokens.
    #[serde(default)]
    pub context: Option<u64>,
    /// The most tokens one answer may have (a translated request's `max_tokens` is clamped to
    /// it, and the clamp reported); unknown when absent.
    #[serde(default)]
    pub max_output: Option<u64>,
    /// The model reasons and takes a reasoning effort (a translated `thinking` maps onto it;
    /// for a model without it, `thinking` is dropped and reported).
    #[serde(default)]
    pub reasoning: Option<bool>,
    /// Tie-breaker between equally priced providers (lower first); the provider's default when absent.
    #[serde(default)]
    pub priority: Option<u32>,
    #[serde(default)]
    pub kind: ModelKind,
    /// Other names clients use for the model (`claude-4.5-haiku`, `claude-3.5-haiku`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The provider announced the model's end (YYYY-MM-DD).
    #[serde(default)]
    pub deprecated: Option<String>,
    /// The provider stopped serving it (YYYY-MM-DD); still routed by its exact id, so the
    /// provider gives its own answer.
    #[serde(default)]
    pub retired: Option<String>,
    #[serde(default)]
    pub source: Option<Source>,
    #[serde(default)]
    pub source_kind: Option<SourceKind>,
    #[serde(default)]
    pub note: Option<String>,
}

/// What a model is for: which unified endpoint serves it.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    #[default]
    Chat,
    Embedding,
}

impl Price {
    /// This overlay entry laid over `below` (same provider and model): the fields it sets win,
    /// the others are kept, so an overlay that corrects a price keeps the upstream id, aliases
    /// and dates. Prices go together: an entry that sets input and output replaces all four.
    fn over(self, below: &Price) -> Price {
        let priced = self.is_priced();
        Price {
            provider: below.provider.clone(),
            model: self.model,
            input: if priced { self.input } else { below.input },
            output: if priced { self.output } else { below.output },
            cached_input: if priced {
                self.cached_input
            } else {
                below.cached_input
            },
            cache_write: if priced {
                self.cache_write
            } else {
                below.cache_write
            },
            id: self.id.or_else(|| below.id.clone()),
            context: self.context.or(below.context),
            max_output: self.max_output.or(below.max_output),
            reasoning: self.reasoning.or(below.reasoning),
            priority: self.priority.or(below.priority),
            kind: if self.kind == ModelKind::Chat {
                below.kind
            } else {
                self.kind
            },
            aliases: if self.aliases.is_empty() {
                below.aliases.clone()
            } else {
                self.aliases
            },
            deprecated: self.deprecated.or_else(|| below.deprecated.clone()),
            retired: self.retired.or_else(|| below.retired.clone()),
            source: if priced {
                self.source
            } else {
                below.source.clone()
            },
            source_kind: if priced {
                self.source_kind
            } else {
                below.source_kind
            },
            note: self.note.or_else(|| below.note.clone()),
        }
    }

    /// The id the provider knows the model by.
    pub fn provider_id(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.model)
    }

    pub fn is_priced(&self) -> bool {
        self.input.is_some() && self.output.is_some()
    }

    /// Deprecated or retired.
    pub fn is_deprecated(&self) -> bool {
        self.deprecated.is_some() || self.retired.is_some()
    }
}
