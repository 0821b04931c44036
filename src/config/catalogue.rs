//! The provider catalogue (`conf/providers.yaml`): approved origins, path prefixes, host aliases.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::issues::Issues;
use crate::origin::{host_without_port, Host, HostPattern, Origin};

pub const EMBEDDED: &str = include_str!("../../conf/providers.yaml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueFile {
    pub providers: Vec<ProviderConf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConf {
    /// Lower-case identifier used in logs, metrics and `Helicone-Target-Provider`.
    pub name: String,
    /// The provider's API origin, e.g. `https://api.openai.com`. Optional for providers
    /// whose host is per-customer (Azure, Bedrock): those list `hosts` patterns instead.
    #[serde(default)]
    pub origin: Option<String>,
    /// More approved hosts, exact or with `*` standing for one label (`*.openai.azure.com`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `/openai` routes `/openai/v1/...` to `origin` + `/v1/...`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Host names (or `oai.*` patterns) whose requests go to this provider, path unchanged.
    #[serde(default)]
    pub host_aliases: Vec<String>,
    /// Other names model strings use for this provider (Helicone's `google` for `gemini`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// How the provider expects its API key.
    pub auth: ProviderAuthConf,
    /// Approved origins are not subject to the unapproved-origin quotas.
    #[serde(default = "yes")]
    pub approved: bool,
    /// How the unified API (`/v1/chat/completions` without a target) talks to this provider;
    /// providers without it are reachable by passthrough only.
    #[serde(default)]
    pub api: Option<ApiConf>,
}

/// Which API a provider speaks to the unified endpoint.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApiFormat {
    /// OpenAI chat completions (OpenAI and every compatible provider): only `model` changes.
    Openai,
    /// Azure OpenAI: OpenAI bodies on `/openai/deployments/{deployment}/...?api-version=`.
    Azure,
    /// Anthropic Messages: requests and responses are translated.
    Anthropic,
}

impl ApiFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiFormat::Openai => "openai",
            ApiFormat::Azure => "azure",
            ApiFormat::Anthropic => "anthropic",
        }
    }
}

/// The unified-API side of a catalogue provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConf {
    pub format: ApiFormat,
    /// Prefix of the API paths on the origin: `/v1` gives `/v1/chat/completions`.
    #[serde(default)]
    pub base_path: String,
    /// Environment variable that holds the gateway's key for this provider.
    pub key_env: String,
    /// Where the key goes when it differs from the passthrough `auth` (Gemini's OpenAI endpoint).
    #[serde(default)]
    pub auth: Option<ProviderAuthConf>,
    /// Headers every unified request to this provider carries (`anthropic-version`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Serves `/chat/completions`.
    #[serde(default = "yes")]
    pub chat: bool,
    /// Serves `/embeddings`.
    #[serde(default)]
    pub embeddings: bool,
    /// Serves the legacy `/completions` (`prompt`).
    #[serde(default)]
    pub completions: bool,
    /// Tie-breaker between equally priced providers: lower goes first.
    #[serde(default = "default_priority")]
    pub priority: u32,
}

fn default_priority() -> u32 {
    4
}

/// A validated [`ApiConf`].
#[derive(Debug, Clone)]
pub struct ProviderApi {
    pub format: ApiFormat,
    pub base_path: String,
    pub key_env: String,
    pub auth_header: http::HeaderName,
    pub auth_scheme: AuthScheme,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub chat: bool,
    pub embeddings: bool,
    pub completions: bool,
    pub priority: u32,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderAuthConf {
    /// Header that carries the key: `authorization`, `x-api-key`, `api-key`, ...
    pub header: String,
    /// `bearer` sends `Bearer <key>`, `plain` sends the key as is.
    #[serde(default)]
    pub scheme: AuthScheme,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    #[default]
    Bearer,
    Plain,
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub origin: Option<Origin>,
    pub hosts: Vec<HostPattern>,
    pub path_prefix: Option<String>,
    pub host_aliases: Vec<HostPattern>,
    pub auth_header: http::HeaderName,
    pub auth_scheme: AuthScheme,
    pub approved: bool,
    pub api: Option<ProviderApi>,
    /// Other names model strings use for it (lower-case).
    pub aliases: Vec<String>,
}

/// Validated catalogue with lookup indexes.
#[derive(Debug, Default)]
pub struct Catalogue {
    providers: Vec<Arc<Provider>>,
    by_name: HashMap<String, Arc<Provider>>,
    exact_hosts: HashMap<String, Arc<Provider>>,
    host_patterns: Vec<(HostPattern, Arc<Provider>)>,
    prefixes: Vec<(String, Arc<Provider>)>,
    exact_aliases: HashMap<String, Arc<Provider>>,
    alias_patterns: Vec<(HostPattern, Arc<Provider>)>,
}

/// Validates a provider's `api:` block; problems go to `issues` under `at("api...")`.
fn build_api(
    a: &ApiConf,
    passthrough: &ProviderAuthConf,
    passthrough_header: &http::HeaderName,
    at: &dyn Fn(&str) -> String,
    issues: &mut Issues,
) -> Option<ProviderApi> {
    let mut ok = true;
    if !(a.base_path.is_empty() || (a.base_path.starts_with('/') && !a.base_path.ends_with('/'))) {
        issues.push(
            at("api.base_path"),
            format!(
                "'{}' must be empty or look like /v1 (leading slash, no trailing slash)",
                a.base_path
            ),
        );
        ok = false;
    }
    if a.key_env.is_empty() {
        issues.push(
            at("api.key_env"),
            "must name an environment variable".into(),
        );
        ok = false;
    }
    let (auth_header, auth_scheme) = match &a.auth {
        None => (passthrough_header.clone(), passthrough.scheme),
        Some(auth) => {
            match http::HeaderName::from_bytes(auth.header.to_ascii_lowercase().as_bytes()) {
                Ok(h) => (h, auth.scheme),
                Err(_) => {
                    issues.push(
                        at("api.auth.header"),
                        format!("'{}' is not a valid header name", auth.header),
                    );
                    return None;
                }
            }
        }
    };
    let mut headers = Vec::new();
    for (k, v) in &a.headers {
        match (
            http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => {
                issues.push(
                    at(&format!("api.headers.{k}")),
                    "is not a valid header name and value".into(),
                );
                ok = false;
            }
        }
    }
    ok.then(|| ProviderApi {
        format: a.format,
        base_path: a.base_path.clone(),
        key_env: a.key_env.clone(),
        auth_header,
        auth_scheme,
        headers,
        chat: a.chat,
        embeddings: a.embeddings,
        completions: a.completions,
        priority: a.priority,
    })
}

impl Catalogue {
    pub fn build(
        file: CatalogueFile,
        extra_aliases: &[(String, String)],
        issues: &mut Issues,
    ) -> Catalogue {
        let mut cat = Catalogue::default();
        for (i, pc) in file.providers.into_iter().enumerate() {
            let at = |f: &str| format!("providers[{i}].{f}");
            let name = pc.name.trim().to_ascii_lowercase();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                issues.push(
                    at("name"),
                    format!(
                        "'{}' must be a non-empty identifier (a-z, 0-9, -, _)",
                        pc.name
                    ),
                );
                continue;
            }
            if cat.by_name.contains_key(&name) {
                issues.push(at("name"), format!("provider '{name}' is listed twice"));
                continue;
            }
            let origin = match pc.origin.as_deref().map(Origin::parse) {
                None => None,
                Some(Ok((o, rest))) if rest == "/" || rest.is_empty() => Some(o),
                Some(Ok(_)) => {
                    issues.push(
                        at("origin"),
                        "must be an origin without a path (scheme://host[:port])".into(),
                    );
                    None
                }
                Some(Err(e)) => {
                    issues.push(at("origin"), e);
                    None
                }
            };
            let mut hosts = Vec::new();
            for (j, h) in pc.hosts.iter().enumerate() {
                match HostPattern::parse(h, false) {
                    Ok(p) => hosts.push(p),
                    Err(e) => issues.push(at(&format!("hosts[{j}]")), e),
                }
            }
            let mut host_aliases = Vec::new();
            for (j, h) in pc.host_aliases.iter().enumerate() {
                match HostPattern::parse(h, true) {
                    Ok(p) => host_aliases.push(p),
                    Err(e) => issues.push(at(&format!("host_aliases[{j}]")), e),
                }
            }
            let path_prefix = match pc.path_prefix {
                Some(p) if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') => {
                    issues.push(
                        at("path_prefix"),
                        format!("'{p}' must look like /name (leading slash, no trailing slash)"),
                    );
                    None
                }
                other => other,
            };
            if path_prefix.is_some() && pc.origin.is_none() {
                issues.push(
                    at("path_prefix"),
                    "needs `origin`: a prefix routes to the provider's origin".into(),
                );
            }
            let auth_header = match http::HeaderName::from_bytes(
                pc.auth.header.to_ascii_lowercase().as_bytes(),
            ) {
                Ok(h) => h,
                Err(_) => {
                    issues.push(
                        at("auth.header"),
                        format!("'{}' is not a valid header name", pc.auth.header),
                    );
                    continue;
                }
            };
            let api = pc
                .api
                .as_ref()
                .and_then(|a| build_api(a, &pc.auth, &auth_header, &at, issues));
            let p = Arc::new(Provider {
                name: name.clone(),
                origin,
                hosts,
                path_prefix,
                host_aliases,
                auth_header,
                auth_scheme: pc.auth.scheme,
                approved: pc.approved,
                api,
                aliases: pc.aliases.iter().map(|a| a.to_ascii_lowercase()).collect(),
            });
            cat.index(p);
        }
        for (host, provider) in extra_aliases {
            let at = format!("host_aliases.{host}");
            match (
                HostPattern::parse(host, true),
                cat.by_name.get(provider).cloned(),
            ) {
                (Ok(pattern), Some(p)) => cat.add_alias(pattern, p),
                (Err(e), _) => issues.push(at, e),
                (_, None) => issues.push(
                    at,
                    format!("unknown provider '{provider}' (not in the catalogue)"),
                ),
            }
        }
        // longest prefix first so that /openai-eu wins over /openai
        cat.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        cat
    }

    fn index(&mut self, p: Arc<Provider>) {
        self.by_name.insert(p.name.clone(), p.clone());
        if let Some(Origin {
            host: Host::Name(h),
            ..
        }) = &p.origin
        {
            self.exact_hosts.insert(h.clone(), p.clone());
        }
        for pat in &p.hosts {
            if pat.is_exact() {
                self.exact_hosts.insert(pat.to_string(), p.clone());
            } else {
                self.host_patterns.push((pat.clone(), p.clone()));
            }
        }
        if let Some(prefix) = &p.path_prefix {
            self.prefixes.push((prefix.clone(), p.clone()));
        }
        for a in p.host_aliases.clone() {
            self.add_alias(a, p.clone());
        }
        self.providers.push(p);
    }

    fn add_alias(&mut self, pattern: HostPattern, p: Arc<Provider>) {
        if pattern.is_exact() {
            self.exact_aliases.insert(pattern.to_string(), p);
        } else {
            self.alias_patterns.push((pattern, p));
        }
    }

    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<Provider>> {
        self.by_name.get(name).cloned()
    }

    /// The catalogue provider serving this origin (exact host or declared pattern).
    pub fn for_origin(&self, origin: &Origin) -> Option<Arc<Provider>> {
        let Host::Name(host) = &origin.host else {
            return None;
        };
        if let Some(p) = self.exact_hosts.get(host.as_str()) {
            return Some(p.clone());
        }
        self.host_patterns
            .iter()
            .find(|(pat, _)| pat.matches(host))
            .map(|(_, p)| p.clone())
    }

    /// `/openai/v1/x?y` -> (openai, `/v1/x?y`).
    pub fn by_path_prefix<'a>(&self, path: &'a str) -> Option<(&Arc<Provider>, &'a str)> {
        self.prefixes.iter().find_map(|(prefix, p)| {
            let rest = path.strip_prefix(prefix.as_str())?;
            match rest.as_bytes().first() {
                Some(b'/') => Some((p, rest)),
                Some(b'?') => None,
                None => Some((p, "/")),
                _ => None,
            }
        })
    }

    pub fn by_host_alias(&self, host_header: &str) -> Option<&Arc<Provider>> {
        let host = host_without_port(host_header).trim_end_matches('.');
        if let Some(p) = self.exact_aliases.get(host) {
            return Some(p);
        }
        if self.alias_patterns.is_empty() {
            return None;
        }
        let host = host.to_ascii_lowercase();
        if let Some(p) = self.exact_aliases.get(host.as_str()) {
            return Some(p);
        }
        self.alias_patterns
            .iter()
            .find(|(pat, _)| pat.matches(&host))
            .map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded() -> Catalogue {
        let file: CatalogueFile = serde_yaml::from_str(EMBEDDED).unwrap();
        let mut issues = Issues::default();
        let c = Catalogue::build(file, &[], &mut issues);
        assert!(issues.is_empty(), "{issues}");
        c
    }

    #[test]
    fn embedded_catalogue_is_valid_and_matches_exactly() {
        let c = embedded();
        assert!(c.providers().len() >= 20);
        let o = |s: &str| Origin::parse(s).unwrap().0;
        assert_eq!(
            c.for_origin(&o("https://api.openai.com")).unwrap().name,
            "openai"
        );
        assert_eq!(
            c.for_origin(&o("https://myres.openai.azure.com"))
                .unwrap()
                .name,
            "azure"
        );
        assert_eq!(
            c.for_origin(&o("https://bedrock-runtime.eu-west-1.amazonaws.com"))
                .unwrap()
                .name,
            "bedrock"
        );
        assert!(c
            .for_origin(&o("https://api.openai.com.evil.tld"))
            .is_none());
        assert!(c.for_origin(&o("https://evil.tld")).is_none());
        assert!(c.for_origin(&o("http://10.0.0.1")).is_none());
    }

    #[test]
    fn prefixes_and_aliases() {
        let c = embedded();
        let (p, rest) = c.by_path_prefix("/openai/v1/chat/completions?x=1").unwrap();
        assert_eq!(
            (p.name.as_str(), rest),
            ("openai", "/v1/chat/completions?x=1")
        );
        assert!(c.by_path_prefix("/openaix/v1").is_none());
        assert!(c.by_path_prefix("/v1/chat/completions").is_none());
        assert_eq!(
            c.by_host_alias("oai.gw.example.com:8080").unwrap().name,
            "openai"
        );
        assert_eq!(
            c.by_host_alias("anthropic.gw.example.com").unwrap().name,
            "anthropic"
        );
        assert!(c.by_host_alias("gw.example.com").is_none());
    }

    #[test]
    fn bad_entries_name_the_field() {
        let file: CatalogueFile = serde_yaml::from_str(
            "providers:\n  - name: x\n    origin: ftp://a\n    path_prefix: nope\n    auth: {header: 'bad header'}\n",
        )
        .unwrap();
        let mut issues = Issues::default();
        Catalogue::build(file, &[("h.example".into(), "missing".into())], &mut issues);
        let text = issues.to_string();
        assert!(text.contains("providers[0].origin"), "{text}");
        assert!(text.contains("providers[0].path_prefix"), "{text}");
        assert!(text.contains("providers[0].auth.header"), "{text}");
        assert!(text.contains("host_aliases.h.example"), "{text}");
    }
}
