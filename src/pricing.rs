//! The dated pricing registry (`conf/models.yaml`) and the cost of a request's usage.

use std::collections::HashMap;

use serde::Deserialize;

use crate::usage::Usage;

pub const EMBEDDED: &str = include_str!("../conf/models.yaml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingFile {
    pub as_of: String,
    pub models: Vec<Price>,
}

impl PricingFile {
    /// Every price that is not a number >= 0, as (field path, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            if m.model.is_empty()
                || m.model
                    .bytes()
                    .any(|b| matches!(b, b'/' | b',' | b'!') || b.is_ascii_whitespace())
            {
                out.push((
                    format!("models[{i}].model"),
                    format!(
                        "'{}' cannot be a model name: clients write `model/provider` and `a,b`, so it must be non-empty without '/', ',', '!' or spaces (put the provider's own id in `id`)",
                        m.model
                    ),
                ));
            }
            if !seen.insert((m.provider.as_str(), m.model.to_ascii_lowercase())) {
                out.push((
                    format!("models[{i}]"),
                    format!("{} {} is listed twice", m.provider, m.model),
                ));
            }
            for (f, v) in [
                ("input", Some(m.input)),
                ("output", Some(m.output)),
                ("cached_input", m.cached_input),
                ("cache_write", m.cache_write),
            ] {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    out.push((
                        format!("models[{i}].{f}"),
                        format!(
                            "{} {}: a price must be a number >= 0 (USD per million tokens)",
                            m.provider, m.model
                        ),
                    ));
                }
            }
        }
        out
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub provider: String,
    pub model: String,
    pub input: f64,
    pub output: f64,
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
    /// The id the provider knows the model by.
    pub fn provider_id(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.model)
    }
}

#[derive(Debug, Default)]
pub struct Pricing {
    pub as_of: String,
    by_provider_model: HashMap<(String, String), Price>,
    by_model: HashMap<String, Price>,
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
            as_of: file.as_of,
            entries: file.models.len(),
            ..Pricing::default()
        };
        for price in file.models {
            // a response names the provider's id (`llama-3.3-70b-versatile`), a request may name
            // the canonical model (`llama-3.3-70b`): both find the price
            let model = price.model.to_ascii_lowercase();
            let id = price.provider_id().to_ascii_lowercase();
            for name in [&model, &id] {
                p.by_model
                    .entry(name.clone())
                    .or_insert_with(|| price.clone());
                p.by_provider_model
                    .entry((price.provider.clone(), name.clone()))
                    .or_insert_with(|| price.clone());
            }
        }
        p
    }

    pub fn embedded() -> Result<Pricing, serde_yaml::Error> {
        Ok(Self::from_file(serde_yaml::from_str(EMBEDDED)?))
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
        for m in [&exact, &base] {
            if let Some(p) =
                provider.and_then(|prov| self.by_provider_model.get(&(prov.to_string(), m.clone())))
            {
                return Some(p);
            }
        }
        self.by_model
            .get(&exact)
            .or_else(|| self.by_model.get(&base))
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
        let prompt = (body_bytes as f64 / 3.0).ceil();
        let completion = max_tokens.unwrap_or(default_completion) as f64;
        Some((prompt * p.input + completion * p.output) / 1_000_000.0)
    }

    /// USD for `usage`; `None` when the model has no price or the tokens are unknown.
    pub fn cost(&self, provider: Option<&str>, model: &str, usage: &Usage) -> Option<f64> {
        if !usage.is_known() {
            return None;
        }
        let p = self.find(provider, model)?;
        let prompt = usage.prompt_tokens.unwrap_or(0) as f64;
        let cached = usage.cached_tokens.unwrap_or(0) as f64;
        let written = usage.cache_write_tokens.unwrap_or(0) as f64;
        let fresh = (prompt - cached - written).max(0.0);
        let out = usage.completion_tokens.unwrap_or(0) as f64;
        let usd = fresh * p.input
            + cached * p.cached_input.unwrap_or(p.input)
            + written * p.cache_write.unwrap_or(p.input)
            + out * p.output;
        Some(usd / 1_000_000.0)
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
}
