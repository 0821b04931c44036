//! Versioned prompt templates kept as YAML files (one per prompt id), rendered into a unified request's messages, and reloaded when a file changes (a broken file keeps the old version).

pub mod conf;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::{IntCounterVec, IntGauge};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::GatewayError;
pub use conf::PromptsConf;

/// The type an input must have.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Number,
    Integer,
    Boolean,
}

impl InputType {
    fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Number => "number",
            InputType::Integer => "integer",
            InputType::Boolean => "boolean",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        match self {
            InputType::String => v.is_string(),
            InputType::Number => v.is_number(),
            InputType::Integer => v.is_i64() || v.is_u64(),
            InputType::Boolean => v.is_boolean(),
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageFile {
    role: String,
    content: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    version: u32,
    /// The model used when the request names none (a unified model string).
    #[serde(default)]
    model: Option<String>,
    /// Request fields applied when the request does not set them (`temperature`, ...).
    #[serde(default)]
    params: Map<String, Value>,
    /// The inputs this version takes, by name.
    #[serde(default)]
    inputs: BTreeMap<String, InputType>,
    messages: Vec<MessageFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptFile {
    #[serde(default)]
    description: Option<String>,
    versions: Vec<VersionFile>,
    /// Environment name -> version.
    #[serde(default)]
    environments: BTreeMap<String, u32>,
}

/// A piece of a message template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Var(String),
}

#[derive(Debug, Clone)]
struct Message {
    role: String,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone)]
pub struct Version {
    pub version: u32,
    pub model: Option<String>,
    params: Map<String, Value>,
    pub inputs: BTreeMap<String, InputType>,
    messages: Vec<Message>,
}

#[derive(Debug, Clone)]
pub struct Prompt {
    pub id: String,
    pub description: Option<String>,
    pub versions: BTreeMap<u32, Version>,
    pub environments: BTreeMap<String, u32>,
}

/// Request body fields that select and feed a prompt; removed before the body goes upstream.
pub const FIELDS: [&str; 4] = ["prompt_id", "inputs", "environment", "version"];

/// The environment used when a request names neither `environment` nor `version`.
pub const DEFAULT_ENVIRONMENT: &str = "production";

const ROLES: [&str; 4] = ["system", "developer", "user", "assistant"];

/// Splits `{{ name }}` placeholders out of a template; names are letters, digits and `_`.
fn pieces(template: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(Piece::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("an unclosed '{{{{' in \"{template}\""))?;
        let name = after[..end].trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "'{{{{{}}}}}' is not a placeholder: write {{{{name}}}} with letters, digits and _",
                &after[..end]
            ));
        }
        out.push(Piece::Var(name.to_string()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// A prompt id is its file's stem: letters, digits, `_`, `-` and `.`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Parses and checks one prompt file; errors name the field.
pub fn parse(id: &str, text: &str) -> Result<Prompt, String> {
    if !valid_id(id) {
        return Err(format!(
            "'{id}' is not a prompt id: name the file <id>.yaml with letters, digits, _, - and ."
        ));
    }
    let file: PromptFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    if file.versions.is_empty() {
        return Err("versions: a prompt needs at least one version".into());
    }
    let mut versions = BTreeMap::new();
    for (i, v) in file.versions.into_iter().enumerate() {
        let at = format!("versions[{i}]");
        if v.messages.is_empty() {
            return Err(format!(
                "{at}.messages: a version needs at least one message"
            ));
        }
        for k in v.params.keys() {
            if k == "messages" || k == "model" || FIELDS.contains(&k.as_str()) {
                return Err(format!(
                    "{at}.params.{k}: set `{k}` {} not in params",
                    if k == "model" {
                        "as the version's `model`,"
                    } else {
                        "elsewhere,"
                    }
                ));
            }
        }
        let mut messages = Vec::with_capacity(v.messages.len());
        let mut used = std::collections::BTreeSet::new();
        for (j, m) in v.messages.into_iter().enumerate() {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(format!(
                    "{at}.messages[{j}].role: '{}' is not one of {}",
                    m.role,
                    ROLES.join(", ")
                ));
            }
            let pieces =
                pieces(&m.content).map_err(|e| format!("{at}.messages[{j}].content: {e}"))?;
            for p in &pieces {
                if let Piece::Var(name) = p {
                    if !v.inputs.contains_key(name) {
                        return Err(format!(
                            "{at}.messages[{j}].content: {{{{{name}}}}} is not declared under {at}.inputs (e.g. inputs: {{{name}: string}})"
                        ));
                    }
                    used.insert(name.clone());
                }
            }
            messages.push(Message {
                role: m.role,
                pieces,
            });
        }
        if let Some(unused) = v.inputs.keys().find(|k| !used.contains(*k)) {
            return Err(format!(
                "{at}.inputs.{unused}: declared but used in no message"
            ));
        }
        let number = v.version;
        if versions
            .insert(
                number,
                Version {
                    version: number,
                    model: v.model,
                    params: v.params,
                    inputs: v.inputs,
                    messages,
                },
            )
            .is_some()
        {
            return Err(format!("{at}.version: version {number} is defined twice"));
        }
    }
    for (env, v) in &file.environments {
        if !versions.contains_key(v) {
            return Err(format!(
                "environments.{env}: version {v} is not defined (versions: {})",
                versions
                    .keys()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(Prompt {
        id: id.to_string(),
        description: file.description,
        versions,
        environments: file.environments,
    })
}

fn bad(msg: String) -> GatewayError {
    GatewayError::BadRequest(msg)
}

impl Prompt {
    /// The version a request selects: `version` if given, else `environment` (default
    /// production).
    fn select(
        &self,
        version: Option<&Value>,
        env: Option<&Value>,
    ) -> Result<&Version, GatewayError> {
        let listed = || {
            self.versions
                .keys()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (version, env) {
            (Some(_), Some(_)) => Err(bad(format!(
                "prompt '{}': send `version` or `environment`, not both",
                self.id
            ))),
            (Some(v), None) => {
                let n = match v {
                    Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                    Value::String(s) => s.trim().trim_start_matches('v').parse().ok(),
                    _ => None,
                }
                .ok_or_else(|| {
                    bad(format!(
                        "`version` must be a version number such as 2, got {v}"
                    ))
                })?;
                self.versions.get(&n).ok_or_else(|| {
                    bad(format!(
                        "prompt '{}' has no version {n} (versions: {})",
                        self.id,
                        listed()
                    ))
                })
            }
            (None, e) => {
                let env = match e {
                    None => DEFAULT_ENVIRONMENT,
                    Some(Value::String(s)) => s.as_str(),
                    Some(other) => {
                        return Err(bad(format!(
                            "`environment` must be a string such as \"production\", got {other}"
                        )))
                    }
                };
                let n = self.environments.get(env).ok_or_else(|| {
                    bad(format!(
                        "prompt '{}' has no environment '{env}' (environments: {}); send `version` to pick one directly",
                        self.id,
                        if self.environments.is_empty() {
                            "none".to_string()
                        } else {
                            self.environments
                                .iter()
                                .map(|(k, v)| format!("{k} -> {v}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ))
                })?;
                self.versions.get(n).ok_or_else(|| {
                    GatewayError::Internal(format!(
                        "prompt '{}': environment '{env}' points nowhere",
                        self.id
                    ))
                })
            }
        }
    }
}

impl Version {
    /// Checks the inputs (every declared one present, nothing else, the declared types) and
    /// renders the messages.
    fn render(
        &self,
        prompt: &str,
        inputs: &Map<String, Value>,
    ) -> Result<Vec<Value>, GatewayError> {
        let missing: Vec<&str> = self
            .inputs
            .keys()
            .filter(|k| !inputs.contains_key(*k))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(bad(format!(
                "prompt '{prompt}' version {}: missing input(s) {}; it takes {}",
                self.version,
                missing.join(", "),
                self.signature()
            )));
        }
        let extra: Vec<&str> = inputs
            .keys()
            .filter(|k| !self.inputs.contains_key(*k))
            .map(String::as_str)
            .collect();
        if !extra.is_empty() {
            return Err(bad(format!(
                "prompt '{prompt}' version {}: unknown input(s) {}; it takes {}",
                self.version,
                extra.join(", "),
                self.signature()
            )));
        }
        for (name, ty) in &self.inputs {
            let v = &inputs[name];
            if !ty.accepts(v) {
                return Err(bad(format!(
                    "prompt '{prompt}' version {}: input '{name}' must be a {}, got a {} ({v})",
                    self.version,
                    ty.name(),
                    json_type(v)
                )));
            }
        }
        Ok(self
            .messages
            .iter()
            .map(|m| {
                let mut content = String::new();
                for p in &m.pieces {
                    match p {
                        Piece::Text(t) => content.push_str(t),
                        Piece::Var(name) => match &inputs[name] {
                            Value::String(s) => content.push_str(s),
                            other => content.push_str(&other.to_string()),
                        },
                    }
                }
                serde_json::json!({"role": m.role, "content": content})
            })
            .collect())
    }

    fn signature(&self) -> String {
        if self.inputs.is_empty() {
            return "no inputs".into();
        }
        self.inputs
            .iter()
            .map(|(k, t)| format!("{k}: {}", t.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a rendered request used, for its log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Used {
    pub id: String,
    pub version: u32,
}

/// One prompt file's state.
struct Loaded {
    modified: Option<SystemTime>,
    len: u64,
    /// The last version of the file that loaded.
    prompt: Option<Arc<Prompt>>,
    /// Why the file on disk does not load (the old prompt, if any, keeps serving).
    error: Option<String>,
}

pub struct PromptMetrics {
    pub reload_errors: IntCounterVec,
    pub reloads: IntCounterVec,
    pub loaded: IntGauge,
}

impl PromptMetrics {
    pub fn register() -> Result<PromptMetrics, prometheus::Error> {
        Ok(PromptMetrics {
            reload_errors: prometheus::register_int_counter_vec!(
                "switchyard_prompt_load_errors_total",
                "Prompt files that failed to load (the previous version, if any, keeps serving), by prompt id",
                &["prompt"]
            )?,
            reloads: prometheus::register_int_counter_vec!(
                "switchyard_prompt_reloads_total",
                "Prompt files loaded after a change, by prompt id",
                &["prompt"]
            )?,
            loaded: prometheus::register_int_gauge!(
                "switchyard_prompts_loaded",
                "Prompts being served"
            )?,
        })
    }
}

/// The prompts being served: swapped whole when the folder changes, so a request sees one
/// consistent set.
pub struct Store {
    dir: PathBuf,
    served: RwLock<Arc<BTreeMap<String, Arc<Prompt>>>>,
    files: std::sync::Mutex<HashMap<String, Loaded>>,
    metrics: Option<PromptMetrics>,
}

impl Store {
    /// Loads every `*.yaml` in `dir`; files that do not load are reported in the answer (and
    /// logged and counted by `refresh`) and not served.
    pub fn open(dir: &Path, metrics: Option<PromptMetrics>) -> Store {
        let s = Store {
            dir: dir.to_path_buf(),
            served: RwLock::new(Arc::new(BTreeMap::new())),
            files: std::sync::Mutex::new(HashMap::new()),
            metrics,
        };
        s.refresh();
        s
    }

    /// Problems of the files as they are on disk, `(file, error)`.
    pub fn errors(&self) -> Vec<(String, String)> {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, String)> = files
            .iter()
            .filter_map(|(id, l)| l.error.clone().map(|e| (format!("{id}.yaml"), e)))
            .collect();
        out.sort();
        out
    }

    pub fn snapshot(&self) -> Arc<BTreeMap<String, Arc<Prompt>>> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the folder again: changed and new files are parsed (a file that does not parse
    /// keeps its last good version serving), removed files stop being served.
    pub fn refresh(&self) {
        let mut seen: HashMap<String, (PathBuf, Option<SystemTime>, u64)> = HashMap::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let path = e.path();
                    let is_yaml = path.extension().is_some_and(|x| x == "yaml" || x == "yml");
                    let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                        continue;
                    };
                    if !is_yaml || stem.starts_with('.') {
                        continue;
                    }
                    let meta = e.metadata().ok();
                    seen.insert(
                        stem.to_string(),
                        (
                            path.clone(),
                            meta.as_ref().and_then(|m| m.modified().ok()),
                            meta.map_or(0, |m| m.len()),
                        ),
                    );
                }
            }
            Err(e) => {
                log::error!("prompts: cannot read {}: {e}", self.dir.display());
                return;
            }
        }
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        let before = files.len();
        files.retain(|id, _| seen.contains_key(id));
        if files.len() != before {
            changed = true;
        }
        for (id, (path, modified, len)) in seen {
            if files
                .get(&id)
                .is_some_and(|l| l.modified == modified && l.len == len)
            {
                continue;
            }
            let result = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| parse(&id, &text));
            let entry = files.entry(id.clone()).or_insert(Loaded {
                modified,
                len,
                prompt: None,
                error: None,
            });
            entry.modified = modified;
            entry.len = len;
            match result {
                Ok(p) => {
                    if entry.prompt.is_some() {
                        log::info!("prompts: reloaded {}", path.display());
                    }
                    if let Some(m) = &self.metrics {
                        m.reloads.with_label_values(&[id.as_str()]).inc();
                    }
                    entry.prompt = Some(Arc::new(p));
                    entry.error = None;
                    changed = true;
                }
                Err(e) => {
                    log::error!(
                        "prompts: {} does not load, {}: {e}",
                        path.display(),
                        if entry.prompt.is_some() {
                            "its previous version keeps serving"
                        } else {
                            "it is not served"
                        }
                    );
                    if let Some(m) = &self.metrics {
                        m.reload_errors.with_label_values(&[id.as_str()]).inc();
                    }
                    entry.error = Some(e);
                }
            }
        }
        if changed {
            let served: BTreeMap<String, Arc<Prompt>> = files
                .iter()
                .filter_map(|(id, l)| l.prompt.clone().map(|p| (id.clone(), p)))
                .collect();
            if let Some(m) = &self.metrics {
                m.loaded.set(served.len() as i64);
            }
            *self.served.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(served);
        }
    }

    /// Why a prompt that is not served does not load, if its file exists.
    fn load_error(&self, id: &str) -> Option<String> {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.get(id).and_then(|l| l.error.clone())
    }

    /// Renders the prompt a unified chat body asks for (`prompt_id`, ...) into that body: the
    /// prompt's messages first, then the request's own; the version's `model` and `params` where
    /// the request sets none; the prompt fields removed. `None` when the body names no prompt.
    pub fn apply(&self, body: &mut Map<String, Value>) -> Result<Option<Used>, GatewayError> {
        let Some(id) = body.remove("prompt_id") else {
            if let Some(f) = FIELDS[1..].iter().find(|f| body.contains_key(**f)) {
                return Err(bad(format!(
                    "`{f}` is only read with `prompt_id`; send the prompt's id, or drop `{f}`"
                )));
            }
            return Ok(None);
        };
        let Value::String(id) = id else {
            return Err(bad(format!("`prompt_id` must be a string, got {id}")));
        };
        let inputs = match body.remove("inputs") {
            None => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(bad(format!(
                    "`inputs` must be an object of input names to values, got {other}"
                )))
            }
        };
        let version = body.remove("version");
        let env = body.remove("environment");
        let prompts = self.snapshot();
        let Some(prompt) = prompts.get(&id) else {
            let why = match self.load_error(&id) {
                Some(e) => format!(" (its file does not load: {e})"),
                None => String::new(),
            };
            let known: Vec<&str> = prompts.keys().map(String::as_str).collect();
            return Err(bad(format!(
                "unknown prompt '{id}'{why}; prompts: {} (GET /v1/prompts lists them)",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        let v = prompt.select(version.as_ref(), env.as_ref())?;
        let mut messages = v.render(&id, &inputs)?;
        match body.remove("messages") {
            None => {}
            Some(Value::Array(own)) => messages.extend(own),
            Some(other) => {
                return Err(bad(format!(
                    "`messages` must be an array (it follows the prompt's messages), got {other}"
                )))
            }
        }
        body.insert("messages".into(), Value::Array(messages));
        if !body.contains_key("model") {
            match &v.model {
                Some(m) => {
                    body.insert("model".into(), Value::String(m.clone()));
                }
                None => {
                    return Err(bad(format!(
                        "prompt '{id}' version {} names no model: send `model`",
                        v.version
                    )))
                }
            }
        }
        for (k, val) in &v.params {
            body.entry(k.clone()).or_insert_with(|| val.clone());
        }
        Ok(Some(Used {
            id,
            version: v.version,
        }))
    }

    /// `GET /v1/prompts`.
    pub fn list_json(&self) -> Vec<u8> {
        let data: Vec<Value> = self
            .snapshot()
            .values()
            .map(|p| {
                serde_json::json!({
                    "id": p.id,
                    "object": "prompt",
                    "description": p.description,
                    "environments": p.environments,
                    "versions": p.versions.values().map(|v| serde_json::json!({
                        "version": v.version,
                        "model": v.model,
                        "inputs": v.inputs.iter().map(|(k, t)| (k.clone(), Value::String(t.name().into()))).collect::<Map<_, _>>(),
                        "params": v.params,
                        "messages": v.messages.len(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let errors: Vec<Value> = self
            .errors()
            .into_iter()
            .map(|(file, error)| serde_json::json!({"file": file, "error": error}))
            .collect();
        serde_json::json!({"object": "list", "data": data, "errors": errors})
            .to_string()
            .into_bytes()
    }
}

/// Checks the folder every `poll` and reloads what changed.
pub struct Reloader {
    pub store: Arc<Store>,
    pub poll: Duration,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.poll) => {}
            }
            let store = self.store.clone();
            // file reads are blocking
            if let Err(e) = tokio::task::spawn_blocking(move || store.refresh()).await {
                log::error!("prompts: reload failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
description: Incident summary
environments: {production: 1, development: 2}
versions:
  - version: 1
    model: gpt-4o-mini
    params: {temperature: 0.2}
    inputs: {incident: string, bullets: integer}
    messages:
      - {role: system, content: "You write for an on-call channel."}
      - {role: user, content: "Summarise {{incident}} in {{ bullets }} bullets."}
  - version: 2
    inputs: {incident: string}
    messages:
      - {role: user, content: "Summarise {{incident}}."}
"#;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn store_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let s = Store::open(dir.path(), None);
        (dir, s)
    }

    #[test]
    fn renders_the_selected_version_before_the_request_s_messages() {
        let (_d, s) = store_with(&[("incident.yaml", FILE)]);
        let mut b = body(serde_json::json!({
            "prompt_id": "incident", "inputs": {"incident": "the 09:12 outage", "bullets": 3},
            "messages": [{"role": "user", "content": "and keep it short"}], "temperature": 0.9
        }));
        let used = s.apply(&mut b).unwrap().unwrap();
        assert_eq!(
            used,
            Used {
                id: "incident".into(),
                version: 1
            }
        );
        assert_eq!(b["model"], "gpt-4o-mini");
        assert_eq!(b["temperature"], 0.9, "the request's own parameter wins");
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1]["content"], "Summarise the 09:12 outage in 3 bullets.");
        assert_eq!(m[2]["content"], "and keep it short");
        assert!(FIELDS.iter().all(|f| !b.contains_key(*f)));
        let mut dev = body(
            serde_json::json!({"prompt_id": "incident", "environment": "development",
            "inputs": {"incident": "x"}, "model": "claude-sonnet-4"}),
        );
        assert_eq!(s.apply(&mut dev).unwrap().unwrap().version, 2);
        let mut v2 = body(serde_json::json!({"prompt_id": "incident", "version": "2",
            "inputs": {"incident": "x"}, "model": "m"}));
        assert_eq!(s.apply(&mut v2).unwrap().unwrap().version, 2);
    }

    #[test]
    fn every_bad_request_is_a_400_that_names_what_is_wrong() {
        let (_d, s) = store_with(&[("incident.yaml", FILE)]);
        let ok_inputs = serde_json::json!({"incident": "x", "bullets": 2});
        for (req, want) in [
            (
                serde_json::json!({"prompt_id": "nope"}),
                "unknown prompt 'nope'",
            ),
            (
                serde_json::json!({"prompt_id": 7}),
                "`prompt_id` must be a string",
            ),
            (
                serde_json::json!({"prompt_id": "incident", "version": 9, "inputs": ok_inputs}),
                "has no version 9 (versions: 1, 2)",
            ),
            (
                serde_json::json!({"prompt_id": "incident", "version": "latest"}),
                "`version` must be a version number",
            ),
            (
                serde_json::json!({"prompt_id": "incident", "environment": "staging"}),
                "no environment 'staging' (environments: development -> 2, production -> 1)",
            ),
            (
                serde_json::json!({"prompt_id": "incident", "environment": "production", "version": 1}),
                "not both",
            ),
            (
                serde_json::json!({"prompt_id": "incident", "inputs": {"incident": "x"}}),
                "missing input(s) bullets; it takes bullets: integer, incident: string",
            ),
            (
                serde_json::json!({"prompt_id": "incident", "inputs": {"incident": "x", "bullets": 2, "tone": "dry"}}),
                "unknown input(s) tone",
            ),
            (
                serde_json::json!({"prompt_id": "incident", "inputs": {"incident": "x", "bullets": "three"}}),
                "input 'bullets' must be a integer, got a string (\"three\")",
            ),
            (
                serde_json::json!({"prompt_id": "incident", "inputs": {"incident": "x", "bullets": 2.5}}),
                "input 'bullets' must be a integer, got a number",
            ),
            (
                serde_json::json!({"prompt_id": "incident", "inputs": "x"}),
                "`inputs` must be an object",
            ),
            (
                serde_json::json!({"prompt_id": "incident", "inputs": ok_inputs, "messages": "hi"}),
                "`messages` must be an array",
            ),
            (
                serde_json::json!({"prompt_id": "incident", "version": 2, "inputs": {"incident": "x"}}),
                "names no model: send `model`",
            ),
            (
                serde_json::json!({"inputs": {"a": 1}, "model": "m"}),
                "`inputs` is only read with `prompt_id`",
            ),
        ] {
            let e = s.apply(&mut body(req.clone())).unwrap_err();
            assert_eq!(e.status(), 400, "{req}");
            assert!(e.to_string().contains(want), "{req}: {e}");
        }
    }

    #[test]
    fn bad_files_are_refused_naming_the_field() {
        for (text, want) in [
            ("versions: []", "at least one version"),
            ("versions: [{version: 1, messages: []}]", "versions[0].messages: a version needs at least one message"),
            ("versions: [{version: 1, messages: [{role: robot, content: x}]}]", "versions[0].messages[0].role: 'robot'"),
            ("versions: [{version: 1, messages: [{role: user, content: 'hi {{name}}'}]}]", "{{name}} is not declared under versions[0].inputs"),
            ("versions: [{version: 1, inputs: {name: string, x: string}, messages: [{role: user, content: 'hi {{name}}'}]}]", "versions[0].inputs.x: declared but used"),
            ("versions: [{version: 1, inputs: {name: text}, messages: [{role: user, content: 'hi {{name}}'}]}]", "unknown variant `text`"),
            ("versions: [{version: 1, messages: [{role: user, content: 'hi {{na me}}'}]}]", "is not a placeholder"),
            ("versions: [{version: 1, messages: [{role: user, content: 'hi {{name'}]}]", "unclosed"),
            ("versions: [{version: 1, messages: [{role: user, content: a}]}, {version: 1, messages: [{role: user, content: b}]}]", "versions[1].version: version 1 is defined twice"),
            ("environments: {production: 3}\nversions: [{version: 1, messages: [{role: user, content: a}]}]", "environments.production: version 3 is not defined"),
            ("versions: [{version: 1, params: {model: x}, messages: [{role: user, content: a}]}]", "versions[0].params.model"),
            ("versions: [{version: 1, messages: [{role: user, content: a}], temprature: 1}]", "unknown field `temprature`"),
        ] {
            let e = parse("p", text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(parse("a b", "versions: []")
            .unwrap_err()
            .contains("not a prompt id"));
    }

    #[test]
    fn the_shipped_example_loads() {
        let text = include_str!("../conf/prompts/incident-summary.yaml");
        let p = parse("incident-summary", text).unwrap();
        assert_eq!(p.environments["production"], 1);
    }

    #[test]
    fn a_broken_change_keeps_the_old_version_and_a_fixed_one_replaces_it() {
        let (dir, s) = store_with(&[("incident.yaml", FILE)]);
        let path = dir.path().join("incident.yaml");
        std::fs::write(&path, "versions: [oops").unwrap();
        s.refresh();
        assert!(s.snapshot().contains_key("incident"), "still served");
        assert_eq!(s.errors().len(), 1);
        let fixed = FILE.replace("production: 1", "production: 2");
        // a different length: seen as changed even within the same mtime tick
        std::fs::write(&path, format!("{fixed}\n# v2 in production\n")).unwrap();
        s.refresh();
        assert!(s.errors().is_empty());
        let mut b = body(
            serde_json::json!({"prompt_id": "incident", "inputs": {"incident": "x"}, "model": "m"}),
        );
        assert_eq!(s.apply(&mut b).unwrap().unwrap().version, 2);
        std::fs::remove_file(&path).unwrap();
        s.refresh();
        assert!(s.snapshot().is_empty(), "a removed file stops being served");
    }
}
