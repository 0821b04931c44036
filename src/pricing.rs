//! The dated pricing registry (`conf/models.yaml`) and the cost of a request's usage.
//!
//! `file` is the registry file as written and the `pricing:` config section (plain data);
//! `Pricing` is the runtime object built from a merged, checked file.

pub mod file;

use std::collections::HashMap;

use crate::usage::Usage;
pub use file::{
    check_refresh_url, merge, MergeNotes, ModelKind, Price, PricingConf, PricingFile, RefreshConf,
    Source, SourceKind, EMBEDDED,
};

impl Price {
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
