//! `switchyard models import --from litellm`: LiteLLM's price map (JSON) to a registry overlay (YAML) and a report of what was skipped.
//!
//! The rules, applied to each key of `model_prices_and_context_window.json` in file order:
//! - `litellm_provider` must be one of [`PROVIDERS`]; it names the Switchyard provider.
//! - `mode` must be `chat`, `completion` (both become `kind: chat`, the default) or `embedding`.
//! - `input_cost_per_token` and `output_cost_per_token` (USD per token) must be numbers >= 0; they
//!   become USD per million tokens, rounded to 6 significant digits. An embedding without an
//!   output price gets `output: 0` (embeddings have no output tokens).
//! - The provider's own id is the key without its route prefix (`gemini/`, `groq/`, `together_ai/`,
//!   `vertex_ai/`, `bedrock/`, ...). Fireworks ids are `accounts/fireworks/models/<name>`
//!   (LiteLLM's short keys `fireworks_ai/<name>` name the same model).
//! - A Bedrock or Azure id that still holds a '/' is a price for one region, data zone or
//!   commitment (`bedrock/us-east-1/...`, `azure/eu/...`): skipped, the plain id carries the list price.
//! - `model` (the name clients write) is the id lowercased, with '/' replaced by '-'
//!   (`together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo` -> `meta-llama-llama-3.3-70b-instruct-turbo`);
//!   Fireworks models are named without `accounts/fireworks/models/`. When `model` differs from
//!   the id, the entry carries `id`. A name may only hold ASCII letters, digits and `._:@+-`.
//! - One entry per (provider, model): the first key in the file wins, later ones are reported.
//! - `cache_read_input_token_cost` -> `cached_input`, `cache_creation_input_token_cost` -> `cache_write`,
//!   `max_input_tokens` -> `context`, `deprecation_date` -> `deprecated` (dropped unless YYYY-MM-DD).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// `litellm_provider` value -> Switchyard provider (conf/providers.yaml).
pub const PROVIDERS: &[(&str, &str)] = &[
    ("openai", "openai"),
    ("text-completion-openai", "openai"),
    ("anthropic", "anthropic"),
    ("gemini", "gemini"),
    ("vertex_ai", "vertex"),
    ("vertex_ai-language-models", "vertex"),
    ("vertex_ai-anthropic_models", "vertex"),
    ("azure", "azure"),
    ("bedrock", "bedrock"),
    ("bedrock_converse", "bedrock"),
    ("groq", "groq"),
    ("together_ai", "together"),
    ("fireworks_ai", "fireworks"),
    ("fireworks_ai-embedding-models", "fireworks"),
    ("deepinfra", "deepinfra"),
    ("mistral", "mistral"),
    ("deepseek", "deepseek"),
    ("xai", "xai"),
    ("perplexity", "perplexity"),
    ("cerebras", "cerebras"),
    ("openrouter", "openrouter"),
];

/// The `source.url` of every imported entry.
pub const SOURCE_URL: &str = "litellm:model_prices_and_context_window.json";

/// How many keys of each skip reason the report names.
const EXAMPLES: usize = 4;

/// Why an entry of the price map is not in the overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    SampleSpec,
    NotAnObject,
    NoProvider,
    OtherProvider,
    Mode,
    NoPrice,
    BadPrice,
    SizeBucket,
    Regional,
    BadName,
    Duplicate,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::SampleSpec => "sample_spec (LiteLLM's description of the fields, not a model)",
            Reason::NotAnObject => "value is not a JSON object",
            Reason::NoProvider => "no litellm_provider (e.g. an alias_of entry)",
            Reason::OtherProvider => "litellm_provider is not one Switchyard imports",
            Reason::Mode => "mode is not chat, completion or embedding",
            Reason::NoPrice => {
                "no input_cost_per_token/output_cost_per_token (priced per second, image, character, or not at all)"
            }
            Reason::BadPrice => "a per-token price is not a number >= 0",
            Reason::SizeBucket => "price bucket by model size, not a model (together-ai-*, fireworks-ai-*)",
            Reason::Regional => "price for one region, data zone or commitment (bedrock/<region>/..., azure/<zone>/...)",
            Reason::BadName => "model name would hold characters other than ASCII letters, digits and ._:@+-",
            Reason::Duplicate => "(provider, model) already imported from an earlier key",
        }
    }

    /// Short name, for tests and scripts.
    pub fn code(self) -> &'static str {
        match self {
            Reason::SampleSpec => "sample_spec",
            Reason::NotAnObject => "not_an_object",
            Reason::NoProvider => "no_provider",
            Reason::OtherProvider => "other_provider",
            Reason::Mode => "mode",
            Reason::NoPrice => "no_price",
            Reason::BadPrice => "bad_price",
            Reason::SizeBucket => "size_bucket",
            Reason::Regional => "regional",
            Reason::BadName => "bad_name",
            Reason::Duplicate => "duplicate",
        }
    }
}

/// The keys skipped for one reason.
#[derive(Debug, Default, Clone)]
pub struct Skipped {
    pub count: usize,
    /// The first few keys, in file order.
    pub examples: Vec<String>,
    /// Counts by a detail (the litellm_provider or the mode), for the two reasons that have one.
    pub by_detail: BTreeMap<String, usize>,
}

/// What an import did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub file: String,
    pub keys: usize,
    pub imported: usize,
    /// Per Switchyard provider.
    pub imported_by_provider: BTreeMap<&'static str, usize>,
    pub skipped: BTreeMap<Reason, Skipped>,
}

impl Report {
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().map(|s| s.count).sum()
    }

    fn skip(&mut self, reason: Reason, key: &str, detail: Option<&str>) {
        let s = self.skipped.entry(reason).or_default();
        s.count += 1;
        if s.examples.len() < EXAMPLES {
            s.examples.push(key.to_string());
        }
        if let Some(d) = detail {
            *s.by_detail.entry(d.to_string()).or_default() += 1;
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "switchyard: {} of {} keys of {} imported ({}), {} skipped:",
            self.imported,
            self.keys,
            self.file,
            self.imported_by_provider
                .iter()
                .map(|(p, n)| format!("{p} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.skipped_total()
        )?;
        let mut reasons: Vec<_> = self.skipped.iter().collect();
        reasons.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        for (reason, s) in reasons {
            writeln!(
                f,
                "  {:>5} {}: {}",
                s.count,
                reason.code(),
                reason.describe()
            )?;
            let keys: Vec<String> = s.examples.iter().map(|k| format!("`{k}`")).collect();
            let more = if s.count > s.examples.len() {
                ", ..."
            } else {
                ""
            };
            writeln!(f, "        e.g. {}{more}", keys.join(", "))?;
            if !s.by_detail.is_empty() {
                let mut d: Vec<_> = s.by_detail.iter().collect();
                d.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                let shown: Vec<String> =
                    d.iter().take(8).map(|(k, n)| format!("{k} {n}")).collect();
                let more = if d.len() > 8 {
                    format!(", and {} more", d.len() - 8)
                } else {
                    String::new()
                };
                writeln!(f, "        by value: {}{more}", shown.join(", "))?;
            }
        }
        Ok(())
    }
}

/// The overlay and the report of one import.
#[derive(Debug)]
pub struct Import {
    pub overlay: String,
    pub report: Report,
}

/// The input is not LiteLLM's price map; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{file} is not LiteLLM's model_prices_and_context_window.json: {message}")]
pub struct ImportError {
    pub file: String,
    pub message: String,
}

/// The top-level object's entries in file order (serde_json's map sorts its keys).
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object whose keys are model names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One overlay entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    provider: &'static str,
    model: String,
    id: Option<String>,
    input: f64,
    output: f64,
    cached_input: Option<f64>,
    cache_write: Option<f64>,
    context: Option<u64>,
    embedding: bool,
    deprecated: Option<String>,
}

/// Converts the text of LiteLLM's price map; `file` names it in messages and in the overlay's
/// header, `today` (YYYY-MM-DD) is the overlay's `as_of` and every entry's `source.read`.
pub fn from_litellm(json: &str, file: &str, today: &str) -> Result<Import, ImportError> {
    let Entries(entries) = serde_json::from_str(json).map_err(|e| ImportError {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    let mut report = Report {
        file: file.to_string(),
        keys: entries.len(),
        ..Report::default()
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (key, value) in &entries {
        match convert(key, value) {
            Err((reason, detail)) => report.skip(reason, key, detail.as_deref()),
            Ok(e) => {
                if !seen.insert((e.provider, e.model.clone())) {
                    report.skip(Reason::Duplicate, key, None);
                    continue;
                }
                *report.imported_by_provider.entry(e.provider).or_default() += 1;
                out.push(e);
            }
        }
    }
    report.imported = out.len();
    let mut overlay = format!(
        "# Imported from LiteLLM's model_prices_and_context_window.json ({}) on {today}: {} entries, {} skipped.\n\
         # Third-party prices (LiteLLM's, not the providers' price lists): check before relying on them.\n\
         as_of: {today}\nmodels:\n",
        file.replace('\n', " "),
        report.imported,
        report.skipped_total()
    );
    for e in &out {
        overlay.push_str(&line(e, today));
        overlay.push('\n');
    }
    Ok(Import { overlay, report })
}

type Skip = (Reason, Option<String>);

fn convert(key: &str, value: &Value) -> Result<Entry, Skip> {
    if key == "sample_spec" {
        return Err((Reason::SampleSpec, None));
    }
    let Some(obj) = value.as_object() else {
        return Err((Reason::NotAnObject, None));
    };
    let Some(lp) = obj.get("litellm_provider").and_then(Value::as_str) else {
        return Err((Reason::NoProvider, None));
    };
    let Some(&(_, provider)) = PROVIDERS.iter().find(|(l, _)| *l == lp) else {
        return Err((Reason::OtherProvider, Some(lp.to_string())));
    };
    let mode = obj.get("mode").and_then(Value::as_str);
    let embedding = match mode {
        Some("chat") | Some("completion") => false,
        Some("embedding") => true,
        other => return Err((Reason::Mode, Some(other.unwrap_or("(none)").to_string()))),
    };
    if key.starts_with("together-ai-") || key.starts_with("fireworks-ai-") {
        return Err((Reason::SizeBucket, None));
    }
    let price = |field: &str| -> Result<Option<f64>, Skip> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(p) if p.is_finite() && p >= 0.0 => Ok(Some(per_million(p))),
                _ => Err((Reason::BadPrice, None)),
            },
        }
    };
    let input = price("input_cost_per_token")?;
    let output = price("output_cost_per_token")?;
    let cached_input = price("cache_read_input_token_cost")?;
    let cache_write = price("cache_creation_input_token_cost")?;
    let (input, output) = match (input, output) {
        (Some(i), Some(o)) => (i, o),
        (Some(i), None) if embedding => (i, 0.0),
        _ => return Err((Reason::NoPrice, None)),
    };
    let id = provider_id(lp, provider, key);
    if matches!(provider, "bedrock" | "azure") && id.contains('/') {
        return Err((Reason::Regional, None));
    }
    let name_source = if provider == "fireworks" {
        id.strip_prefix(FIREWORKS).unwrap_or(&id)
    } else {
        &id
    };
    let model = name_source.to_ascii_lowercase().replace('/', "-");
    if model.is_empty()
        || !model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@+-".contains(&b))
    {
        return Err((Reason::BadName, None));
    }
    let context = obj.get("max_input_tokens").and_then(|v| {
        v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f > 0.0 && *f < 1e15)
                .map(|f| f as u64)
        })
    });
    let deprecated = obj
        .get("deprecation_date")
        .and_then(Value::as_str)
        .filter(|d| is_date(d))
        .map(str::to_string);
    Ok(Entry {
        provider,
        id: (id != model).then_some(id.clone()),
        model,
        input,
        output,
        cached_input,
        cache_write,
        context,
        embedding,
        deprecated,
    })
}

const FIREWORKS: &str = "accounts/fireworks/models/";

/// The key without LiteLLM's route prefix: the id the provider knows the model by.
fn provider_id(litellm_provider: &str, provider: &str, key: &str) -> String {
    let prefixes: &[&str] = match provider {
        "vertex" => &["vertex_ai/"],
        "bedrock" => &["bedrock/converse/", "bedrock/"],
        "together" => &["together_ai/"],
        "fireworks" => &["fireworks_ai/"],
        "openai" => &["openai/", "text-completion-openai/"],
        _ => &[],
    };
    let own = format!("{litellm_provider}/");
    let generic = format!("{provider}/");
    let rest = prefixes
        .iter()
        .copied()
        .chain([own.as_str(), generic.as_str()])
        .find_map(|p| key.strip_prefix(p))
        .unwrap_or(key);
    if provider == "fireworks" && !rest.starts_with("accounts/") {
        return format!("{FIREWORKS}{rest}");
    }
    rest.to_string()
}

/// USD per token -> USD per million tokens, to 6 significant digits (3e-07 is 0.3, not 0.30000000000000004).
fn per_million(per_token: f64) -> f64 {
    let x = per_token * 1e6;
    format!("{x:.5e}").parse().unwrap_or(x)
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// A YAML scalar for `s`: plain when it cannot be read as anything but that string, else double-quoted.
fn yaml_str(s: &str) -> String {
    const RESERVED: &[&str] = &[
        "y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf", "infinity",
    ];
    let plain = s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s));
    if plain {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

fn line(e: &Entry, today: &str) -> String {
    let mut f = vec![
        format!("provider: {}", e.provider),
        format!("model: {}", yaml_str(&e.model)),
    ];
    if let Some(id) = &e.id {
        f.push(format!("id: {}", yaml_str(id)));
    }
    f.push(format!("input: {}", num(e.input)));
    f.push(format!("output: {}", num(e.output)));
    if let Some(c) = e.cached_input {
        f.push(format!("cached_input: {}", num(c)));
    }
    if let Some(c) = e.cache_write {
        f.push(format!("cache_write: {}", num(c)));
    }
    if let Some(c) = e.context {
        f.push(format!("context: {c}"));
    }
    if e.embedding {
        f.push("kind: embedding".to_string());
    }
    if let Some(d) = &e.deprecated {
        f.push(format!("deprecated: {d}"));
    }
    f.push(format!(
        "source: {{ url: \"{SOURCE_URL}\", read: {} }}",
        yaml_str_date(today)
    ));
    f.push("source_kind: third-party".to_string());
    format!("  - {{ {} }}", f.join(", "))
}

fn yaml_str_date(s: &str) -> String {
    if is_date(s) {
        s.to_string()
    } else {
        yaml_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// The overlay's fields exactly as written (the registry's own loader reads it too, in `import`).
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct TestEntry {
        provider: String,
        model: String,
        #[serde(default)]
        id: Option<String>,
        input: f64,
        output: f64,
        #[serde(default)]
        cached_input: Option<f64>,
        #[serde(default)]
        cache_write: Option<f64>,
        #[serde(default)]
        context: Option<u64>,
        #[serde(default)]
        kind: Option<String>,
        #[serde(default)]
        deprecated: Option<String>,
        source: TestSource,
        source_kind: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct TestSource {
        url: String,
        read: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TestFile {
        as_of: String,
        models: Vec<TestEntry>,
    }

    const SAMPLE: &str = r#"{
      "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "litellm_provider": "one of https://docs.litellm.ai/docs/providers", "max_input_tokens": "max input tokens", "mode": "one of: chat, embedding"},
      "gpt-4o-mini": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07, "cache_read_input_token_cost": 7.5e-08, "litellm_provider": "openai", "max_input_tokens": 128000, "mode": "chat", "deprecation_date": "2027-01-14"},
      "openai/gpt-4o-mini": {"input_cost_per_token": 9e-07, "output_cost_per_token": 9e-07, "litellm_provider": "openai", "mode": "chat"},
      "gemini/gemini-2.5-flash": {"input_cost_per_token": 3e-07, "output_cost_per_token": 2.4999999e-06, "cache_read_input_token_cost": 3e-08, "litellm_provider": "gemini", "max_input_tokens": 1048576, "mode": "chat"},
      "claude-haiku-4-5": {"input_cost_per_token": 1e-06, "output_cost_per_token": 5e-06, "cache_read_input_token_cost": 1e-07, "cache_creation_input_token_cost": 1.25e-06, "litellm_provider": "anthropic", "max_input_tokens": 200000, "mode": "chat"},
      "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo": {"input_cost_per_token": 8.8e-07, "output_cost_per_token": 8.8e-07, "litellm_provider": "together_ai", "mode": "chat"},
      "fireworks_ai/accounts/fireworks/models/gpt-oss-120b": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07, "litellm_provider": "fireworks_ai", "mode": "chat"},
      "fireworks_ai/gpt-oss-120b": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07, "litellm_provider": "fireworks_ai", "mode": "chat"},
      "fireworks_ai/deepseek-v3p1": {"input_cost_per_token": 5.6e-07, "output_cost_per_token": 1.68e-06, "litellm_provider": "fireworks_ai", "mode": "chat"},
      "fireworks-ai-above-16b": {"input_cost_per_token": 9e-07, "output_cost_per_token": 9e-07, "litellm_provider": "fireworks_ai", "mode": "chat"},
      "anthropic.claude-haiku-4-5-20251001-v1:0": {"input_cost_per_token": 1e-06, "output_cost_per_token": 5e-06, "litellm_provider": "bedrock_converse", "mode": "chat"},
      "bedrock/us-east-1/anthropic.claude-v2:1": {"input_cost_per_token": 8e-06, "output_cost_per_token": 2.4e-05, "litellm_provider": "bedrock", "mode": "chat"},
      "mistral/mistral-embed": {"input_cost_per_token": 1e-07, "litellm_provider": "mistral", "max_input_tokens": 8192, "mode": "embedding"},
      "vertex_ai/claude-haiku-4-5@20251001": {"input_cost_per_token": 1e-06, "output_cost_per_token": 5e-06, "litellm_provider": "vertex_ai-anthropic_models", "mode": "chat"},
      "dall-e-3": {"input_cost_per_image": 0.04, "litellm_provider": "openai", "mode": "image_generation"},
      "gpt-4o-transcribe": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05, "litellm_provider": "openai", "mode": "audio_transcription"},
      "fal_ai/some-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06, "litellm_provider": "fal_ai", "mode": "chat"},
      "bedrock/claude-opus-latest": {"alias_of": "global.anthropic.claude-opus-5-5"},
      "groq/whisper-large-v3": {"input_cost_per_second": 3e-05, "litellm_provider": "groq", "mode": "chat"},
      "groq/openai/gpt-oss-120b": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07, "litellm_provider": "groq", "mode": "chat", "max_input_tokens": 131072},
      "xai/grok weird": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06, "litellm_provider": "xai", "mode": "chat"},
      "xai/grok-neg": {"input_cost_per_token": -1e-06, "output_cost_per_token": 1e-06, "litellm_provider": "xai", "mode": "chat"},
      "deepseek/yes": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06, "litellm_provider": "deepseek", "mode": "completion"},
      "deepinfra/01-ai/Yi-34B-Chat": {"input_cost_per_token": 6e-07, "output_cost_per_token": 6e-07, "litellm_provider": "deepinfra", "mode": "chat"}
    }"#;

    fn import() -> (TestFile, Report, String) {
        let imp = from_litellm(SAMPLE, "prices.json", "2026-12-06").unwrap();
        let file: TestFile =
            serde_yaml::from_str(&imp.overlay).unwrap_or_else(|e| panic!("{e}\n{}", imp.overlay));
        // and the registry itself accepts it as an overlay
        let registry: crate::pricing::PricingFile = serde_yaml::from_str(&imp.overlay).unwrap();
        assert_eq!(registry.problems(false), vec![]);
        (file, imp.report, imp.overlay)
    }

    fn find<'a>(f: &'a TestFile, provider: &str, model: &str) -> &'a TestEntry {
        f.models
            .iter()
            .find(|m| m.provider == provider && m.model == model)
            .unwrap_or_else(|| panic!("no {provider} {model} in {:#?}", f.models))
    }

    #[test]
    fn prices_become_usd_per_million_with_cache_context_and_source() {
        let (f, _, text) = import();
        assert_eq!(f.as_of, "2026-12-06");
        let m = find(&f, "openai", "gpt-4o-mini");
        assert_eq!(
            (m.input, m.output, m.cached_input),
            (0.15, 0.6, Some(0.075))
        );
        assert_eq!(m.context, Some(128000));
        assert_eq!(m.deprecated.as_deref(), Some("2027-01-14"));
        assert_eq!(m.id, None);
        assert_eq!(m.source.url, SOURCE_URL);
        assert_eq!(m.source.read, "2026-12-06");
        assert_eq!(m.source_kind, "third-party");
        // 2.4999999e-06 rounds to 2.5, 3e-07 * 1e6 is written 0.3.
        let g = find(&f, "gemini", "gemini-2.5-flash");
        assert_eq!((g.input, g.output, g.cached_input), (0.3, 2.5, Some(0.03)));
        assert!(
            text.contains("{ provider: gemini, model: gemini-2.5-flash, input: 0.3, output: 2.5, cached_input: 0.03, context: 1048576, source: { url: \"litellm:model_prices_and_context_window.json\", read: 2026-12-06 }, source_kind: third-party }"),
            "{text}"
        );
        let a = find(&f, "anthropic", "claude-haiku-4-5");
        assert_eq!((a.cached_input, a.cache_write), (Some(0.1), Some(1.25)));
        assert!(text.starts_with("# Imported from LiteLLM's model_prices_and_context_window.json (prices.json) on 2026-12-06: "), "{text}");
    }

    #[test]
    fn prefixes_are_stripped_and_slashes_keep_the_id() {
        let (f, _, _) = import();
        let t = find(&f, "together", "meta-llama-llama-3.3-70b-instruct-turbo");
        assert_eq!(
            t.id.as_deref(),
            Some("meta-llama/Llama-3.3-70B-Instruct-Turbo")
        );
        let g = find(&f, "groq", "openai-gpt-oss-120b");
        assert_eq!(g.id.as_deref(), Some("openai/gpt-oss-120b"));
        assert_eq!(g.context, Some(131072));
        let fw = find(&f, "fireworks", "gpt-oss-120b");
        assert_eq!(
            fw.id.as_deref(),
            Some("accounts/fireworks/models/gpt-oss-120b")
        );
        let fw = find(&f, "fireworks", "deepseek-v3p1");
        assert_eq!(
            fw.id.as_deref(),
            Some("accounts/fireworks/models/deepseek-v3p1")
        );
        let b = find(&f, "bedrock", "anthropic.claude-haiku-4-5-20251001-v1:0");
        assert_eq!((b.input, b.output, b.id.as_deref()), (1.0, 5.0, None));
        let v = find(&f, "vertex", "claude-haiku-4-5@20251001");
        assert_eq!(v.input, 1.0);
        let d = find(&f, "deepinfra", "01-ai-yi-34b-chat");
        assert_eq!(d.id.as_deref(), Some("01-ai/Yi-34B-Chat"));
        let y = find(&f, "deepseek", "yes");
        assert_eq!((y.input, y.kind.as_deref()), (1.0, None));
        let e = find(&f, "mistral", "mistral-embed");
        assert_eq!(
            (e.input, e.output, e.kind.as_deref()),
            (0.1, 0.0, Some("embedding"))
        );
    }

    #[test]
    fn every_skip_is_counted_under_its_reason_with_its_keys() {
        let (f, r, _) = import();
        let keys = |reason: Reason| -> Vec<&str> {
            r.skipped
                .get(&reason)
                .map(|s| s.examples.iter().map(String::as_str).collect())
                .unwrap_or_default()
        };
        assert_eq!(keys(Reason::SampleSpec), ["sample_spec"]);
        assert_eq!(
            keys(Reason::Duplicate),
            ["openai/gpt-4o-mini", "fireworks_ai/gpt-oss-120b"]
        );
        assert_eq!(keys(Reason::SizeBucket), ["fireworks-ai-above-16b"]);
        assert_eq!(
            keys(Reason::Regional),
            ["bedrock/us-east-1/anthropic.claude-v2:1"]
        );
        assert_eq!(keys(Reason::Mode), ["dall-e-3", "gpt-4o-transcribe"]);
        assert_eq!(keys(Reason::OtherProvider), ["fal_ai/some-model"]);
        assert_eq!(keys(Reason::NoProvider), ["bedrock/claude-opus-latest"]);
        assert_eq!(keys(Reason::NoPrice), ["groq/whisper-large-v3"]);
        assert_eq!(keys(Reason::BadName), ["xai/grok weird"]);
        assert_eq!(keys(Reason::BadPrice), ["xai/grok-neg"]);
        assert_eq!(r.skipped[&Reason::Mode].by_detail["image_generation"], 1);
        assert_eq!(r.skipped[&Reason::OtherProvider].by_detail["fal_ai"], 1);
        // The first key of a clash wins.
        assert_eq!(find(&f, "openai", "gpt-4o-mini").input, 0.15);
        assert_eq!(r.imported, f.models.len());
        assert_eq!(r.imported + r.skipped_total(), r.keys);
        let text = r.to_string();
        assert!(
            text.contains(&format!(
                "{} of {} keys of prices.json imported",
                r.imported, r.keys
            )),
            "{text}"
        );
        assert!(
            text.contains("2 duplicate: (provider, model) already imported"),
            "{text}"
        );
        assert!(
            text.contains("e.g. `openai/gpt-4o-mini`, `fireworks_ai/gpt-oss-120b`"),
            "{text}"
        );
        assert!(text.contains("2 mode: mode is not chat"), "{text}");
        assert!(
            text.contains("by value: audio_transcription 1, image_generation 1"),
            "{text}"
        );
    }

    #[test]
    fn overlay_is_valid_yaml_with_one_entry_per_provider_and_model() {
        let (f, _, text) = import();
        let mut seen = std::collections::HashSet::new();
        for m in &f.models {
            assert!(
                seen.insert((&m.provider, &m.model)),
                "{} {} twice",
                m.provider,
                m.model
            );
            assert!(!m.model.contains(['/', ',', '!', ' ']), "{}", m.model);
        }
        // One flow-style entry per line.
        assert_eq!(
            text.lines().filter(|l| l.starts_with("  - { ")).count(),
            f.models.len()
        );
    }

    #[test]
    fn names_yaml_would_misread_are_quoted() {
        for s in [
            "yes",
            "No",
            "1.5",
            "0x1f",
            "a:b",
            "claude@2024",
            "null",
            "8b",
        ] {
            let v: String = serde_yaml::from_str(&yaml_str(s)).unwrap();
            assert_eq!(v, s);
        }
        assert_eq!(yaml_str("gpt-4o-mini"), "gpt-4o-mini");
    }

    #[test]
    fn input_that_is_not_the_price_map_names_the_file() {
        let e = from_litellm("not json", "/tmp/x.json", "2026-12-06").unwrap_err();
        assert!(
            e.to_string().starts_with("/tmp/x.json is not LiteLLM's"),
            "{e}"
        );
        let e = from_litellm("[1, 2]", "/tmp/x.json", "2026-12-06").unwrap_err();
        assert!(e.to_string().contains("/tmp/x.json"), "{e}");
        assert!(
            e.to_string()
                .contains("a JSON object whose keys are model names"),
            "{e}"
        );
    }
}
