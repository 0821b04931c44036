//! Unified API: the model registry by provider, and which providers a `model` string tries, in order.

pub mod model_string;
pub mod request;
pub mod response;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::config::catalogue::{ApiFormat, AuthScheme, Catalogue, Provider};
use crate::config::issues::Issues;
use crate::error::GatewayError;
use crate::pricing::{ModelKind, PricingFile};
use crate::routing::Origin;
use model_string::{Item, Spec};

/// At most this many provider attempts for one request.
pub const MAX_ATTEMPTS: usize = 10;

/// `providers.<name>` in switchyard.yaml: the operator's settings for one provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Environment variable with the key (default: the catalogue's `api.key_env`).
    #[serde(default)]
    pub key_env: Option<String>,
    /// Replaces the catalogue's origin and base path: `https://host[:port][/base]`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Azure: the `api-version` query parameter.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Azure: model -> deployment name, so that a bare model can be served by Azure.
    #[serde(default)]
    pub deployments: BTreeMap<String, String>,
    /// Breaks price ties (lower first); the catalogue's `api.priority` when absent.
    #[serde(default)]
    pub priority: Option<u32>,
    /// `false` takes the provider out of the unified API (passthrough is unaffected).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// Default Azure OpenAI `api-version`.
pub const AZURE_API_VERSION: &str = "2024-10-21";

pub use crate::dialects::Op;

fn op_kind(op: Op) -> ModelKind {
    match op {
        Op::Chat | Op::Completions | Op::CountTokens => ModelKind::Chat,
        Op::Embeddings => ModelKind::Embedding,
    }
}

/// A provider as the unified API uses it.
#[derive(Debug)]
pub struct Endpoint {
    pub name: String,
    pub provider: Arc<Provider>,
    pub format: ApiFormat,
    /// `None` when no origin is known (Azure without `base_url`).
    pub origin: Option<Origin>,
    pub base_path: String,
    pub auth_header: HeaderName,
    /// The whole auth header value (`Bearer <key>`); `None` when the key is not set.
    pub auth_value: Option<HeaderValue>,
    pub key_env: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub chat: bool,
    pub embeddings: bool,
    pub completions: bool,
    pub priority: u32,
    pub api_version: String,
    pub deployments: BTreeMap<String, String>,
}

impl Endpoint {
    /// Why this provider cannot take unified requests right now, if it cannot.
    pub fn unusable(&self) -> Option<String> {
        if self.origin.is_none() {
            return Some(format!(
                "{} has no base_url: set providers.{}.base_url in the gateway config",
                self.name, self.name
            ));
        }
        if self.auth_value.is_none() {
            return Some(format!(
                "{} has no API key on this gateway (its operator sets {})",
                self.name, self.key_env
            ));
        }
        None
    }

    /// The provider's dialect: its paths, bodies, answers and errors.
    pub fn dialect(&self) -> &'static dyn crate::dialects::Egress {
        crate::dialects::egress(self.format)
    }

    fn serves(&self, op: Op) -> bool {
        let offered = match op {
            Op::Chat | Op::CountTokens => self.chat,
            Op::Embeddings => self.embeddings,
            Op::Completions => self.completions,
        };
        offered && self.dialect().serves(op)
    }

    /// Path and query of `op` on this provider.
    pub fn path(&self, op: Op, deployment: Option<&str>) -> String {
        self.dialect().path(
            &crate::dialects::Site {
                base_path: &self.base_path,
                deployment,
                api_version: &self.api_version,
            },
            op,
        )
    }
}

/// One provider's offer of a model.
#[derive(Debug, Clone)]
pub struct Offer {
    pub endpoint: Arc<Endpoint>,
    /// The provider's id for the model.
    pub model_id: String,
    /// Azure deployment.
    pub deployment: Option<String>,
    /// USD per million tokens; `None` for a model listed without a price.
    pub input: Option<f64>,
    pub output: Option<f64>,
    pub context: Option<u64>,
    /// The most tokens one answer may have, when the registry knows it.
    pub max_output: Option<u64>,
    /// The model takes a reasoning effort.
    pub reasoning: bool,
    pub priority: u32,
    /// The provider's deprecation and retirement dates for it.
    pub deprecated: Option<String>,
    pub retired: Option<String>,
}

#[derive(Debug)]
pub struct ModelEntry {
    pub name: String,
    pub kind: ModelKind,
    pub offers: Vec<Offer>,
}

/// One attempt the request will make.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub endpoint: Arc<Endpoint>,
    /// The registry's model name (or the name as written for an unregistered `model/provider`).
    pub model: String,
    pub model_id: String,
    pub deployment: Option<String>,
    /// The most tokens one answer may have, when the registry knows it.
    pub max_output: Option<u64>,
    /// The model takes a reasoning effort.
    pub reasoning: bool,
}

impl Candidate {
    /// `model/provider`, as attempts are listed to the client.
    pub fn label(&self) -> String {
        format!("{}/{}", self.model, self.endpoint.name)
    }
}

/// The registry the unified API routes by.
#[derive(Debug, Default)]
pub struct Registry {
    pub as_of: String,
    models: BTreeMap<String, ModelEntry>,
    /// Provider model id (lower-case) -> (canonical model, provider).
    by_id: HashMap<String, Vec<(String, String)>>,
    /// Model alias (lower-case) -> canonical model (lower-case).
    aliases: HashMap<String, String>,
    /// Provider alias (`google`) -> catalogue name (`gemini`).
    provider_aliases: HashMap<String, String>,
    endpoints: BTreeMap<String, Arc<Endpoint>>,
}

/// Names in `pool` close to `word`, best first (at most 5).
pub fn close_matches<'a>(word: &str, pool: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    close_matches_ranked(word, pool.map(|c| (c, false)))
}

/// As [`close_matches`], over `(name, retired)`: the closest name is always listed (even when
/// it is not close), and a current name wins over a retired one only when they are as close.
pub fn close_matches_ranked<'a>(
    word: &str,
    pool: impl Iterator<Item = (&'a str, bool)>,
) -> Vec<&'a str> {
    let w = word.to_ascii_lowercase();
    let mut scored: Vec<(f64, bool, &str)> = pool
        .map(|(c, retired)| {
            let mut s = strsim::jaro_winkler(&w, &c.to_ascii_lowercase());
            if c.to_ascii_lowercase().contains(&w) {
                s += 0.2;
            }
            (s, retired, c)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(b.2)));
    scored
        .into_iter()
        .enumerate()
        .filter(|(i, (s, _, _))| *i == 0 || *s >= 0.8)
        .take(5)
        .map(|(_, (_, _, c))| c)
        .collect()
}

fn did_you_mean(m: &[&str]) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(" Did you mean {}?", m.join(", "))
    }
}

impl Registry {
    /// Builds the registry from the model file, the catalogue and the operator's `providers:`;
    /// `env` reads the keys. Problems are filed under `providers.*` and `pricing.*`.
    pub fn build(
        pricing: &PricingFile,
        catalogue: &Catalogue,
        settings: &BTreeMap<String, ProviderSettings>,
        env: &dyn Fn(&str) -> Option<String>,
        issues: &mut Issues,
    ) -> Registry {
        let mut reg = Registry {
            as_of: pricing.as_of.clone().unwrap_or_default(),
            ..Registry::default()
        };
        for p in catalogue.providers() {
            for a in &p.aliases {
                reg.provider_aliases
                    .insert(a.to_ascii_lowercase(), p.name.clone());
            }
        }
        for m in &pricing.models {
            for a in &m.aliases {
                reg.aliases
                    .insert(a.to_ascii_lowercase(), m.model.to_ascii_lowercase());
            }
        }
        for (name, s) in settings {
            let at = format!("providers.{name}");
            match catalogue.by_name(name) {
                None => {
                    let names: Vec<&str> =
                        catalogue.providers().iter().map(|p| p.name.as_str()).collect();
                    issues.push(
                        at,
                        format!(
                            "unknown provider '{name}' (not in the catalogue).{}",
                            did_you_mean(&close_matches(name, names.into_iter()))
                        ),
                    );
                }
                Some(p) if p.api.is_none() => issues.push(
                    at,
                    format!("provider '{name}' has no `api:` in the catalogue, so the unified API cannot use it"),
                ),
                Some(_) => {
                    if s.api_version.as_deref().is_some_and(|v| {
                        v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    }) {
                        issues.push(
                            format!("{at}.api_version"),
                            "must look like 2024-10-21".into(),
                        );
                    }
                }
            }
        }
        for p in catalogue.providers() {
            let Some(api) = &p.api else { continue };
            let s = settings.get(&p.name);
            if s.is_some_and(|s| !s.enabled) {
                continue;
            }
            let (mut origin, mut base_path) = (p.origin.clone(), api.base_path.clone());
            if let Some(url) = s.and_then(|s| s.base_url.as_deref()) {
                match Origin::parse(url) {
                    Ok((o, rest)) => {
                        origin = Some(o);
                        let path = rest.split(['?', '#']).next().unwrap_or_default();
                        base_path = path.trim_end_matches('/').to_string();
                    }
                    Err(e) => issues.push(format!("providers.{}.base_url", p.name), e),
                }
            }
            let key_env = s
                .and_then(|s| s.key_env.clone())
                .unwrap_or_else(|| api.key_env.clone());
            let auth_value = env(&key_env)
                .filter(|k| !k.trim().is_empty())
                .and_then(|k| {
                    let v = match api.auth_scheme {
                        AuthScheme::Bearer => format!("Bearer {}", k.trim()),
                        AuthScheme::Plain => k.trim().to_string(),
                    };
                    match HeaderValue::from_str(&v) {
                        Ok(mut v) => {
                            v.set_sensitive(true);
                            Some(v)
                        }
                        Err(_) => {
                            issues.push(
                                format!("providers.{}.key_env", p.name),
                                format!("the value of {key_env} is not a valid header value"),
                            );
                            None
                        }
                    }
                });
            let ep = Endpoint {
                name: p.name.clone(),
                provider: p.clone(),
                format: api.format,
                origin,
                base_path,
                auth_header: api.auth_header.clone(),
                auth_value,
                key_env,
                headers: api.headers.clone(),
                chat: api.chat,
                embeddings: api.embeddings,
                completions: api.completions,
                priority: s.and_then(|s| s.priority).unwrap_or(api.priority),
                api_version: s
                    .and_then(|s| s.api_version.clone())
                    .unwrap_or_else(|| AZURE_API_VERSION.to_string()),
                deployments: s.map(|s| s.deployments.clone()).unwrap_or_default(),
            };
            reg.endpoints.insert(p.name.clone(), Arc::new(ep));
        }
        for m in &pricing.models {
            let key = m.model.to_ascii_lowercase();
            let entry = reg.models.entry(key.clone()).or_insert_with(|| ModelEntry {
                name: m.model.clone(),
                kind: m.kind,
                offers: Vec::new(),
            });
            if catalogue.by_name(&m.provider).is_none() {
                log::warn!(
                    "model registry: provider '{}' of {} is not in the catalogue; the model is priced but not routed there",
                    m.provider,
                    m.model
                );
                continue;
            }
            let Some(ep) = reg.endpoints.get(&m.provider) else {
                continue;
            };
            reg.by_id
                .entry(m.provider_id().to_ascii_lowercase())
                .or_default()
                .push((key, m.provider.clone()));
            entry.offers.push(Offer {
                endpoint: ep.clone(),
                model_id: m.provider_id().to_string(),
                deployment: None,
                input: m.input,
                output: m.output,
                context: m.context,
                max_output: m.max_output,
                reasoning: m.reasoning.unwrap_or(false),
                priority: m.priority.unwrap_or(ep.priority),
                deprecated: m.deprecated.clone(),
                retired: m.retired.clone(),
            });
        }
        // Azure serves the models its operator deployed, at the model's registry price
        for ep in reg.endpoints.values() {
            for (model, deployment) in &ep.deployments {
                let at = format!("providers.{}.deployments.{model}", ep.name);
                let Some(entry) = reg.models.get_mut(&model.to_ascii_lowercase()) else {
                    let names: Vec<&str> =
                        pricing.models.iter().map(|m| m.model.as_str()).collect();
                    issues.push(
                        at,
                        format!(
                            "unknown model '{model}' (not in the model registry).{}",
                            did_you_mean(&close_matches(model, names.into_iter()))
                        ),
                    );
                    continue;
                };
                if deployment.is_empty() || deployment.contains(['/', '?', '#']) {
                    issues.push(at, "must be a deployment name".into());
                    continue;
                }
                let (input, output, context, max_output, reasoning) = entry
                    .offers
                    .first()
                    .map_or((None, None, None, None, false), |o| {
                        (o.input, o.output, o.context, o.max_output, o.reasoning)
                    });
                entry.offers.retain(|o| o.endpoint.name != ep.name);
                entry.offers.push(Offer {
                    endpoint: ep.clone(),
                    model_id: entry.name.clone(),
                    deployment: Some(deployment.clone()),
                    input,
                    output,
                    context,
                    max_output,
                    reasoning,
                    priority: ep.priority,
                    deprecated: None,
                    retired: None,
                });
            }
        }
        reg
    }

    pub fn endpoint(&self, name: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(name)
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    /// A model by its name or one of its aliases.
    pub fn model(&self, name: &str) -> Option<&ModelEntry> {
        let n = name.to_ascii_lowercase();
        self.models
            .get(&n)
            .or_else(|| self.aliases.get(&n).and_then(|m| self.models.get(m)))
    }

    /// The catalogue name of a provider written by its name or an alias (`google` -> `gemini`).
    pub fn provider_name(&self, name: &str) -> String {
        let n = name.to_ascii_lowercase();
        self.provider_aliases.get(&n).cloned().unwrap_or(n)
    }

    fn unknown_provider(&self, p: &str, at: &str) -> GatewayError {
        GatewayError::BadRequest(format!(
            "{at}: unknown provider '{p}'. Providers of the unified API: {}.{}",
            self.endpoints
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            did_you_mean(&close_matches(p, self.endpoints.keys().map(String::as_str)))
        ))
    }

    /// The attempts for `model` (the request's `model` field) in order: chain order; within a
    /// bare model cheapest first, then priority; providers without a key left out; those whose
    /// circuit is open (`healthy` false) last.
    pub fn plan(
        &self,
        model: &str,
        op: Op,
        healthy: &dyn Fn(&Endpoint) -> bool,
    ) -> Result<Vec<Candidate>, GatewayError> {
        let items = model_string::parse(model).map_err(GatewayError::BadRequest)?;
        let mut excluded = HashSet::new();
        for it in &items {
            if let Item::Exclude(p) = it {
                let p = self.provider_name(p);
                if !self.endpoints.contains_key(&p) {
                    return Err(self.unknown_provider(&p, &format!("`model` exclude '!{p}'")));
                }
                excluded.insert(p);
            }
        }
        let mut out: Vec<Candidate> = Vec::new();
        let mut skipped: Vec<String> = Vec::new();
        for it in &items {
            let Item::Spec(spec) = it else { continue };
            for c in self.expand(spec, op, &excluded, &mut skipped)? {
                let dup = out.iter().any(|o| {
                    o.endpoint.name == c.endpoint.name
                        && o.model_id == c.model_id
                        && o.deployment == c.deployment
                });
                if !dup {
                    out.push(c);
                }
            }
        }
        if out.is_empty() {
            return Err(GatewayError::BadRequest(format!(
                "no provider can serve `model` '{model}': {}",
                skipped.join("; ")
            )));
        }
        // stable: the order above holds within each group
        let (mut ok, open): (Vec<_>, Vec<_>) = out.into_iter().partition(|c| healthy(&c.endpoint));
        ok.extend(open);
        ok.truncate(MAX_ATTEMPTS);
        Ok(ok)
    }

    fn expand(
        &self,
        spec: &Spec,
        op: Op,
        excluded: &HashSet<String>,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<Candidate>, GatewayError> {
        let what = match op {
            Op::Chat | Op::Completions | Op::CountTokens => "chat",
            Op::Embeddings => "embedding",
        };
        let usable = |ep: &Endpoint, skipped: &mut Vec<String>| -> bool {
            if excluded.contains(&ep.name) {
                skipped.push(format!("{} is excluded", ep.name));
                return false;
            }
            if !ep.serves(op) {
                skipped.push(format!("{} has no {} endpoint", ep.name, op.suffix()));
                return false;
            }
            if let Some(why) = ep.unusable() {
                skipped.push(why);
                return false;
            }
            true
        };
        let from_offers = |entry: &ModelEntry, mut offers: Vec<&Offer>| -> Vec<Candidate> {
            offers.sort_by(|a, b| cheaper(a, b));
            offers.into_iter().map(|o| candidate(entry, o)).collect()
        };
        let kind_matches = |e: &ModelEntry| e.kind == op_kind(op);
        // the whole item may be a model name or a provider id with '/' in it
        let whole = spec.raw.to_ascii_lowercase();
        // a provider's own id names that provider's offer: it wins over an alias of the same
        // spelling (`llama-3.3-70b-versatile` is Groq's id and an alias of llama-3.3-70b)
        let as_id = self.by_id.get(&whole);
        let as_model = match self.models.get(&whole) {
            Some(e) => Some(e),
            None if as_id.is_none() => self.model(&whole),
            None => None,
        }
        .filter(|e| kind_matches(e));
        if spec.provider.is_none() || as_model.is_some() || as_id.is_some() {
            if let Some(entry) = as_model {
                let offers: Vec<&Offer> = entry
                    .offers
                    .iter()
                    .filter(|o| usable(&o.endpoint, skipped))
                    .collect();
                if entry.offers.is_empty() {
                    skipped.push(format!("{} has no provider in the registry", entry.name));
                }
                return Ok(from_offers(entry, offers));
            }
            if let Some(ids) = as_id {
                let before = skipped.len();
                let mut pairs: Vec<(&ModelEntry, &Offer)> = Vec::new();
                for (model, provider) in ids {
                    let Some(entry) = self.models.get(model).filter(|e| kind_matches(e)) else {
                        continue;
                    };
                    for o in &entry.offers {
                        if &o.endpoint.name == provider
                            && o.model_id.eq_ignore_ascii_case(&whole)
                            && usable(&o.endpoint, skipped)
                        {
                            pairs.push((entry, o));
                        }
                    }
                }
                pairs.sort_by(|(_, a), (_, b)| cheaper(a, b));
                if !pairs.is_empty() || skipped.len() > before {
                    return Ok(pairs.into_iter().map(|(e, o)| candidate(e, o)).collect());
                }
            }
            let names = self.models.values().filter(|e| kind_matches(e)).map(|e| {
                let retired = !e.offers.is_empty() && e.offers.iter().all(|o| o.retired.is_some());
                (e.name.as_str(), retired)
            });
            return Err(GatewayError::ModelNotFound(format!(
                "The model '{}' is not in this gateway's {what} model registry.{} GET /v1/models lists the models; `model/provider` sends any model id to that provider.",
                spec.raw,
                did_you_mean(&close_matches_ranked(spec.model, names))
            )));
        }
        let provider = self.provider_name(spec.provider.unwrap_or_default());
        let Some(ep) = self.endpoints.get(&provider) else {
            return Err(self.unknown_provider(&provider, &format!("`model` '{}'", spec.raw)));
        };
        if ep.format != ApiFormat::Azure && spec.deployment.is_some() {
            return Err(GatewayError::BadRequest(format!(
                "`model` '{}': a third part (deployment) only applies to azure",
                spec.raw
            )));
        }
        if !usable(ep, skipped) {
            return Ok(vec![]);
        }
        let entry = self.model(spec.model);
        let offer = entry.and_then(|e| e.offers.iter().find(|o| o.endpoint.name == provider));
        let (model, model_id) = match (entry, offer) {
            (Some(e), Some(o)) => (e.name.clone(), o.model_id.clone()),
            (Some(e), None) => (e.name.clone(), e.name.clone()),
            // not in the registry: the name goes to the provider as its model id (no price)
            (None, _) => (spec.model.to_string(), spec.model.to_string()),
        };
        let (max_output, reasoning) = offer
            .or_else(|| entry.and_then(|e| e.offers.first()))
            .map_or((None, false), |o| (o.max_output, o.reasoning));
        let deployment = match (ep.format, spec.deployment) {
            (ApiFormat::Azure, Some(d)) => Some(d.to_string()),
            (ApiFormat::Azure, None) => match ep.deployments.get(&model).or_else(|| ep.deployments.get(spec.model)) {
                Some(d) => Some(d.clone()),
                None => {
                    return Err(GatewayError::BadRequest(format!(
                        "`model` '{}': Azure needs a deployment; write {}/azure/<deployment> or map the model under providers.azure.deployments",
                        spec.raw, spec.model
                    )))
                }
            },
            _ => None,
        };
        Ok(vec![Candidate {
            endpoint: ep.clone(),
            model,
            model_id,
            deployment,
            max_output,
            reasoning,
        }])
    }
}

/// Cheapest (input + output) first, then priority; an unpriced offer after every priced one.
fn cheaper(a: &Offer, b: &Offer) -> std::cmp::Ordering {
    let total = |o: &Offer| match (o.input, o.output) {
        (Some(i), Some(o)) => i + o,
        _ => f64::INFINITY,
    };
    total(a)
        .total_cmp(&total(b))
        .then(a.priority.cmp(&b.priority))
}

fn candidate(entry: &ModelEntry, o: &Offer) -> Candidate {
    Candidate {
        endpoint: o.endpoint.clone(),
        model: entry.name.clone(),
        model_id: o.model_id.clone(),
        deployment: o.deployment.clone(),
        max_output: o.max_output,
        reasoning: o.reasoning,
    }
}

/// `GET /v1/models` (`id` None) or `GET /v1/models/{id}`: (status, body), OpenAI's shape plus
/// each model's providers, prices and whether this gateway has their key.
/// `GET /v1/models[/{id}]` in Anthropic's shape (a request that carries `anthropic-version`):
/// the chat models, each `{"type": "model", "id", "display_name", "created_at"}`.
pub fn models_json_anthropic(reg: &Registry, id: Option<&str>) -> (u16, Vec<u8>) {
    let created_at = format!("{}T00:00:00Z", reg.as_of);
    let model = |e: &ModelEntry| serde_json::json!({"type": "model", "id": e.name, "display_name": e.name, "created_at": created_at});
    let listed = || {
        reg.models
            .values()
            .filter(|e| !e.offers.is_empty() && e.kind == ModelKind::Chat)
    };
    match id {
        None => {
            let data: Vec<_> = listed().map(model).collect();
            let first = data.first().map(|m| m["id"].clone());
            let last = data.last().map(|m| m["id"].clone());
            let body = serde_json::json!({"data": data, "has_more": false, "first_id": first, "last_id": last});
            (200, body.to_string().into_bytes())
        }
        Some(id) => match reg.model(id).filter(|e| !e.offers.is_empty()) {
            Some(e) => (200, model(e).to_string().into_bytes()),
            None => {
                let (status, body) = models_json(reg, Some(id));
                let client = crate::dialects::Client::Anthropic;
                (status, client.error_body(status, &body))
            }
        },
    }
}

pub fn models_json(reg: &Registry, id: Option<&str>) -> (u16, Vec<u8>) {
    let created = chrono::NaiveDate::parse_from_str(&reg.as_of, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(0, |t| t.and_utc().timestamp());
    let model = |e: &ModelEntry| {
        serde_json::json!({
            "id": e.name,
            "object": "model",
            "created": created,
            "owned_by": e.offers.first().map_or("switchyard", |o| o.endpoint.name.as_str()),
            "kind": match e.kind { ModelKind::Chat => "chat", ModelKind::Embedding => "embedding" },
            "providers": e.offers.iter().map(|o| serde_json::json!({
                "provider": o.endpoint.name,
                "id": o.model_id,
                "deployment": o.deployment,
                "input_per_mtok": o.input,
                "output_per_mtok": o.output,
                "context_length": o.context,
                "available": o.endpoint.unusable().is_none(),
                "deprecated": o.deprecated,
                "retired": o.retired,
            })).collect::<Vec<_>>(),
        })
    };
    let listed = || reg.models.values().filter(|e| !e.offers.is_empty());
    match id {
        None => {
            let data: Vec<_> = listed().map(model).collect();
            (
                200,
                serde_json::json!({"object": "list", "data": data})
                    .to_string()
                    .into_bytes(),
            )
        }
        Some(id) => match reg.model(id).filter(|e| !e.offers.is_empty()) {
            Some(e) => (200, model(e).to_string().into_bytes()),
            None => {
                let e = GatewayError::ModelNotFound(format!(
                    "The model '{id}' is not in this gateway's model registry.{}",
                    did_you_mean(&close_matches(id, listed().map(|e| e.name.as_str())))
                ));
                (e.status(), e.to_json().to_vec())
            }
        },
    }
}

#[cfg(test)]
mod tests;
