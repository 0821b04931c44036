//! The dated pricing registry (`conf/models.yaml`) and the cost of a request's usage.

use std::collections::HashMap;

use serde::Deserialize;

use crate::usage::Usage;

pub const EMBEDDED: &str = include_str!("../conf/models.yaml");

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

    /// USD for `usage` at this price; `None` when the model has no price or the tokens are
    /// unknown.
    pub fn cost(&self, usage: &Usage) -> Option<f64> {
        if !usage.is_known() {
            return None;
        }
        let (input, output) = (self.input?, self.output?);
        let prompt = usage.prompt_tokens.unwrap_or(0) as f64;
        let cached = usage.cached_tokens.unwrap_or(0) as f64;
        let written = usage.cache_write_tokens.unwrap_or(0) as f64;
        let fresh = (prompt - cached - written).max(0.0);
        let out = usage.completion_tokens.unwrap_or(0) as f64;
        let usd = fresh * input
            + cached * self.cached_input.unwrap_or(input)
            + written * self.cache_write.unwrap_or(input)
            + out * output;
        Some(usd / 1_000_000.0)
    }

    pub fn is_priced(&self) -> bool {
        self.input.is_some() && self.output.is_some()
    }

    /// Deprecated or retired.
    pub fn is_deprecated(&self) -> bool {
        self.deprecated.is_some() || self.retired.is_some()
    }
}

#[derive(Debug, Default)]
pub struct Pricing {
    pub as_of: String,
    /// Provider -> model or provider id (lower-case) -> price: looked up by `&str`, no allocation.
    by_provider: HashMap<String, HashMap<String, Price>>,
    by_model: HashMap<String, Price>,
    /// Alias (lower-case) -> canonical model (lower-case).
    aliases: HashMap<String, String>,
    entries: usize,
}

/// `gpt-4o-2024-08-06` -> `gpt-4o`, `claude-sonnet-4-20250514` -> `claude-sonnet-4`,
/// `models/gemini-2.5-flash` -> `gemini-2.5-flash`, `mistral-large-latest` -> `mistral-large`.
pub fn base_model(model: &str) -> String {
    let mut m = model.trim().to_ascii_lowercase();
    if let Some(rest) = m.strip_prefix("models/") {
        m = rest.to_string();
    }
    if let Some((head, _)) = m.split_once('@') {
        m = head.to_string();
    }
    for suffix in ["-latest"] {
        if let Some(h) = m.strip_suffix(suffix) {
            m = h.to_string();
        }
    }
    let b = m.as_bytes();
    let is_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    // -YYYY-MM-DD
    if b.len() > 11 && b[b.len() - 11] == b'-' && b[b.len() - 6] == b'-' && b[b.len() - 3] == b'-' {
        let d = &b[b.len() - 10..];
        if is_digits(&d[0..4]) && is_digits(&d[5..7]) && is_digits(&d[8..10]) {
            m.truncate(m.len() - 11);
            return m;
        }
    }
    // -YYYYMMDD
    if b.len() > 9 && b[b.len() - 9] == b'-' && is_digits(&b[b.len() - 8..]) {
        m.truncate(m.len() - 9);
    }
    m
}

impl Pricing {
    pub fn from_file(file: PricingFile) -> Pricing {
        let mut p = Pricing {
            as_of: file.as_of.unwrap_or_default(),
            entries: file.models.len(),
            ..Pricing::default()
        };
        for price in &file.models {
            for a in &price.aliases {
                p.aliases
                    .insert(a.to_ascii_lowercase(), price.model.to_ascii_lowercase());
            }
        }
        for price in file.models {
            // a response names the provider's id (`llama-3.3-70b-versatile`), a request may name
            // the canonical model (`llama-3.3-70b`): both find the price
            let model = price.model.to_ascii_lowercase();
            let id = price.provider_id().to_ascii_lowercase();
            for name in [&model, &id] {
                p.by_model
                    .entry(name.clone())
                    .or_insert_with(|| price.clone());
                p.by_provider
                    .entry(price.provider.clone())
                    .or_default()
                    .entry(name.clone())
                    .or_insert_with(|| price.clone());
            }
        }
        p
    }

    pub fn embedded() -> Result<Pricing, serde_yaml::Error> {
        Ok(Self::from_file(serde_yaml::from_str(EMBEDDED)?))
    }

    /// The canonical model an alias stands for (lower-case), if `name` is one.
    pub fn alias(&self, name: &str) -> Option<&str> {
        self.aliases
            .get(&name.trim().to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Priced (provider, model) entries.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The price of `model` at `provider` (exact, then the base of a dated variant, then the
    /// model at any provider).
    pub fn find(&self, provider: Option<&str>, model: &str) -> Option<&Price> {
        let exact = model.trim().to_ascii_lowercase();
        let base = base_model(model);
        // the name as written or its base; only then what either stands for as an alias (so a
        // name that is no alias costs what it did before aliases existed)
        let alias = || {
            self.aliases
                .get(&exact)
                .or_else(|| self.aliases.get(&base))
                .map(String::as_str)
        };
        if let Some(models) = provider.and_then(|prov| self.by_provider.get(prov)) {
            let found = models
                .get(&exact)
                .or_else(|| models.get(&base))
                .or_else(|| alias().and_then(|a| models.get(a)));
            if found.is_some() {
                return found;
            }
        }
        self.by_model
            .get(&exact)
            .or_else(|| self.by_model.get(&base))
            .or_else(|| alias().and_then(|a| self.by_model.get(a)))
    }

    /// An upper estimate of a request's cost in USD before it runs, for budgets that reserve at
    /// admission and settle on completion: prompt tokens as a third of the body's bytes (a token
    /// is about four bytes of text, so this over-counts), completion tokens as `max_tokens`
    /// (or `default_completion` when the request sets none). `None` when the model has no price.
    pub fn estimate(
        &self,
        provider: Option<&str>,
        model: &str,
        body_bytes: usize,
        max_tokens: Option<u64>,
        default_completion: u64,
    ) -> Option<f64> {
        let p = self.find(provider, model)?;
        let (input, output) = (p.input?, p.output?);
        let prompt = (body_bytes as f64 / 3.0).ceil();
        let completion = max_tokens.unwrap_or(default_completion) as f64;
        Some((prompt * input + completion * output) / 1_000_000.0)
    }

    /// USD for `usage`; `None` when the model has no price or the tokens are unknown.
    pub fn cost(&self, provider: Option<&str>, model: &str, usage: &Usage) -> Option<f64> {
        self.find(provider, model)?.cost(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_cache_reads_and_writes_are_priced_at_their_own_rates() {
        let p = Pricing::embedded().unwrap();
        // claude-sonnet-4: $3 input, $0.30 cache read, $3.75 cache write, $15 output per million
        let u = Usage {
            prompt_tokens: Some(1000 + 8000 + 2000),
            cached_tokens: Some(8000),
            cache_write_tokens: Some(2000),
            completion_tokens: Some(100),
            ..Usage::default()
        };
        let c = p
            .cost(Some("anthropic"), "claude-sonnet-4-20250514", &u)
            .unwrap();
        let want = (1000.0 * 3.0 + 8000.0 * 0.30 + 2000.0 * 3.75 + 100.0 * 15.0) / 1e6;
        assert!((c - want).abs() < 1e-12, "{c} vs {want}");
    }

    #[test]
    fn registry_has_forty_plus_models_across_the_providers() {
        let p = Pricing::embedded().unwrap();
        assert!(p.len() >= 40, "{}", p.len());
        for (prov, model) in [
            ("openai", "gpt-4o"),
            ("anthropic", "claude-sonnet-4"),
            ("gemini", "gemini-2.5-flash"),
            ("groq", "llama-3.3-70b-versatile"),
            ("mistral", "mistral-large"),
            ("deepseek", "deepseek-chat"),
            ("xai", "grok-4"),
            ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        ] {
            assert!(p.find(Some(prov), model).is_some(), "{prov}/{model}");
        }
    }

    #[test]
    fn dated_variants_match_their_base() {
        assert_eq!(base_model("gpt-4o-2024-08-06"), "gpt-4o");
        assert_eq!(base_model("gpt-4o-mini-2024-07-18"), "gpt-4o-mini");
        assert_eq!(base_model("claude-sonnet-4-20250514"), "claude-sonnet-4");
        assert_eq!(
            base_model("claude-3-5-sonnet@20240620"),
            "claude-3-5-sonnet"
        );
        assert_eq!(base_model("models/gemini-2.5-flash"), "gemini-2.5-flash");
        assert_eq!(base_model("mistral-large-latest"), "mistral-large");
        assert_eq!(base_model("gpt-4.1"), "gpt-4.1");
        let p = Pricing::embedded().unwrap();
        assert_eq!(
            p.find(Some("openai"), "gpt-4o-2024-08-06").unwrap().model,
            "gpt-4o"
        );
        assert_eq!(
            p.find(None, "claude-3-5-haiku-20241022").unwrap().model,
            "claude-3-5-haiku"
        );
        assert!(p.find(Some("openai"), "no-such-model").is_none());
    }

    #[test]
    fn estimates_bound_the_real_cost_from_above() {
        let p = Pricing::embedded().unwrap();
        // 3,000 body bytes -> 1,000 prompt tokens; 500 completion tokens at gpt-4o prices
        let e = p
            .estimate(Some("openai"), "gpt-4o", 3000, Some(500), 4096)
            .unwrap();
        assert!(
            (e - (1000.0 * 2.5 + 500.0 * 10.0) / 1e6).abs() < 1e-12,
            "{e}"
        );
        let real = p
            .cost(
                Some("openai"),
                "gpt-4o",
                &Usage {
                    prompt_tokens: Some(700),
                    completion_tokens: Some(480),
                    ..Usage::default()
                },
            )
            .unwrap();
        assert!(real <= e);
        assert!(
            p.estimate(Some("openai"), "gpt-4o", 10, None, 4096)
                .unwrap()
                > 4096.0 * 10.0 / 1e6
        );
        assert!(p.estimate(None, "no-such-model", 10, None, 4096).is_none());
    }

    #[test]
    fn cost_counts_cached_and_cache_write_tokens_at_their_price() {
        let p = Pricing::embedded().unwrap();
        let u = Usage {
            prompt_tokens: Some(1_000_000),
            completion_tokens: Some(1_000_000),
            cached_tokens: Some(500_000),
            ..Usage::default()
        };
        // gpt-4o: 0.5M fresh * 2.5 + 0.5M cached * 1.25 + 1M out * 10
        let c = p.cost(Some("openai"), "gpt-4o", &u).unwrap();
        assert!((c - (1.25 + 0.625 + 10.0)).abs() < 1e-9, "{c}");
        let u = Usage {
            prompt_tokens: Some(160),
            cached_tokens: Some(100),
            cache_write_tokens: Some(50),
            completion_tokens: Some(7),
            ..Usage::default()
        };
        let c = p
            .cost(Some("anthropic"), "claude-sonnet-4-20250514", &u)
            .unwrap();
        let want = (10.0 * 3.0 + 100.0 * 0.30 + 50.0 * 3.75 + 7.0 * 15.0) / 1e6;
        assert!((c - want).abs() < 1e-12, "{c} vs {want}");
        assert_eq!(
            p.cost(Some("openai"), "unknown-model", &u),
            None,
            "unknown model: null, not 0"
        );
        assert_eq!(
            p.cost(Some("openai"), "gpt-4o", &Usage::default()),
            None,
            "unknown tokens: null"
        );
    }

    fn file(yaml: &str) -> PricingFile {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn aliases_and_helicone_names_find_their_model() {
        let p = Pricing::embedded().unwrap();
        for (name, model) in [
            ("claude-4.5-haiku", "claude-haiku-4-5"),
            ("claude-3.5-haiku", "claude-3-5-haiku"),
            ("claude-3.5-sonnet", "claude-3-5-sonnet"),
            ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ] {
            assert_eq!(
                p.find(Some("anthropic"), name).map(|m| m.model.as_str()),
                Some(model),
                "{name}"
            );
        }
        assert!(p.find(None, "gpt-4").is_some_and(|m| m.is_priced()));
        assert!(p.find(None, "gpt-3.5-turbo").is_some_and(|m| m.is_priced()));
        assert_eq!(p.alias("Claude-4.5-Haiku"), Some("claude-haiku-4-5"));
    }

    #[test]
    fn the_bundled_registry_is_current_sourced_and_large() {
        let f: PricingFile = serde_yaml::from_str(EMBEDDED).unwrap();
        assert_eq!(f.problems(true), vec![], "the bundled registry validates");
        assert!(f.models.len() >= 150, "{} entries", f.models.len());
        assert!(f.as_of.as_deref() >= Some("2026-12-01"));
        assert!(f
            .models
            .iter()
            .filter(|m| m.is_priced())
            .all(|m| m.source.is_some()));
        // a model without a price is listed, not priced at 0
        let unpriced = f.models.iter().find(|m| !m.is_priced()).unwrap();
        let p = Pricing::from_file(f.clone());
        let u = Usage {
            prompt_tokens: Some(10),
            completion_tokens: Some(5),
            ..Usage::default()
        };
        assert_eq!(p.cost(Some(&unpriced.provider), &unpriced.model, &u), None);
    }

    #[test]
    fn overlays_replace_fields_add_entries_and_take_over_alias_names() {
        let base = file(
            "as_of: 2026-12-06\nmodels:\n\
             - { provider: anthropic, model: claude-3-5-haiku, id: claude-3-5-haiku-20241022, input: 0.8, output: 4, aliases: [claude-3.5-haiku, claude-haiku-3-5], source: {url: u, read: 2026-12-06} }\n\
             - { provider: openai, model: gpt-4o, input: 2.5, output: 10, source: {url: u, read: 2026-12-06} }\n",
        );
        let over = file(
            "models:\n\
             - { provider: openai, model: gpt-4o, input: 2, output: 8 }\n\
             - { provider: openai, model: my-private, id: acme/chat-v2, input: 0.1, output: 0.2 }\n\
             - { provider: openai, model: claude-3.5-haiku, id: claude-proxy, input: 1, output: 1 }\n",
        );
        let (m, notes) = merge(base, vec![("team.yaml".into(), over)]);
        assert_eq!(m.as_of.as_deref(), Some("2026-12-06"));
        let gpt = m.models.iter().find(|e| e.model == "gpt-4o").unwrap();
        assert_eq!((gpt.input, gpt.output), (Some(2.0), Some(8.0)));
        assert_eq!(m.models.len(), 4);
        let haiku = m
            .models
            .iter()
            .find(|e| e.model == "claude-3-5-haiku")
            .unwrap();
        assert_eq!(
            haiku.aliases,
            ["claude-haiku-3-5"],
            "the overlay took the name over"
        );
        assert_eq!(haiku.id.as_deref(), Some("claude-3-5-haiku-20241022"));
        assert!(
            notes.0[0].contains("team.yaml: 1 entries replace bundled ones, 2 added"),
            "{notes:?}"
        );
        assert!(
            notes.0[0].contains("claude-3.5-haiku (was an alias of claude-3-5-haiku)"),
            "{notes:?}"
        );
        assert_eq!(m.problems(false), vec![]);
        let p = Pricing::from_file(m);
        assert_eq!(
            p.find(Some("openai"), "claude-3.5-haiku")
                .unwrap()
                .provider_id(),
            "claude-proxy"
        );
    }

    #[test]
    fn a_price_correction_keeps_the_upstream_id_aliases_and_dates() {
        let base = file(
            "as_of: 2026-12-06\nmodels:\n\
             - { provider: anthropic, model: claude-haiku-4-5, id: claude-haiku-4-5-20251001, input: 1, output: 5, cached_input: 0.1, aliases: [claude-4.5-haiku], deprecated: 2026-11-01, source: {url: u, read: 2026-12-06} }\n",
        );
        let over = file("models:\n- { provider: anthropic, model: claude-haiku-4-5, input: 0.9, output: 4.5 }\n");
        let (m, _) = merge(base, vec![("fix.yaml".into(), over)]);
        let e = &m.models[0];
        assert_eq!(
            (e.input, e.output, e.cached_input),
            (Some(0.9), Some(4.5), None)
        );
        assert_eq!(e.id.as_deref(), Some("claude-haiku-4-5-20251001"));
        assert_eq!(e.aliases, ["claude-4.5-haiku"]);
        assert_eq!(e.deprecated.as_deref(), Some("2026-11-01"));
        assert!(
            e.source.is_none(),
            "the overlay's price has no source: it is the operator's"
        );
    }

    #[test]
    fn overlay_mistakes_name_the_entry_and_field() {
        let f = file(
            "models:\n\
             - { provider: openai, model: a, input: -1, output: 1 }\n\
             - { provider: openai, model: b, input: 1 }\n\
             - { provider: openai, model: c, input: 1, output: 1, aliases: [a] }\n\
             - { provider: openai, model: c, input: 1, output: 1 }\n\
             - { provider: openai, model: d, input: 1, output: 1, aliases: [x], retired: soon }\n\
             - { provider: groq, model: e, input: 1, output: 1, aliases: [x] }\n",
        );
        let p = f.problems(false);
        let has = |field: &str, text: &str| {
            assert!(
                p.iter().any(|(f, m)| f == field && m.contains(text)),
                "{field} / {text} in {p:?}"
            )
        };
        has("models[0].input", ">= 0");
        has("models[1].output", "both input and output");
        has("models[2].aliases[0]", "already a model");
        has("models[3]", "listed twice");
        has("models[4].retired", "not a date");
        has("models[5].aliases[0]", "alias of both");
        assert!(f
            .problems(true)
            .iter()
            .any(|(f, m)| f == "as_of" && m.contains("required")));
        assert!(f
            .problems(true)
            .iter()
            .any(|(f, _)| f == "models[0].source"));
        let bad: Result<PricingFile, _> =
            serde_yaml::from_str("models:\n- { provider: openai, model: a, price: 1 }\n");
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("unknown field `price`"));
    }

    #[test]
    fn pricing_takes_a_file_a_list_or_a_section() {
        let c: PricingConf = serde_yaml::from_str("mine.yaml").unwrap();
        assert_eq!(c.overlays, [std::path::PathBuf::from("mine.yaml")]);
        let c: PricingConf = serde_yaml::from_str("[a.yaml, b.yaml]").unwrap();
        assert_eq!(c.overlays.len(), 2);
        let c: PricingConf = serde_yaml::from_str(
            "{overlays: [a.yaml], refresh: {url: 'https://prices.example.com/r.yaml', interval_secs: 600}}",
        )
        .unwrap();
        assert_eq!(c.refresh.unwrap().interval_secs, 600);
        let e = serde_yaml::from_str::<PricingConf>("{overlay: [a.yaml]}").unwrap_err();
        assert!(e.to_string().contains("unknown field `overlay`"), "{e}");
        assert!(check_refresh_url("https://prices.example.com/x").is_ok());
        assert!(check_refresh_url("http://127.0.0.1:9/x").is_ok());
        assert!(check_refresh_url("http://prices.example.com/x")
            .unwrap_err()
            .contains("https"));
    }
}
