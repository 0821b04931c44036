//! Origins and hosts, a leaf both the catalogue (config) and routing use: `Origin` (scheme, canonical host, port), host patterns of the catalogue and aliases, `Host` header parsing.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The host part of an origin, canonicalised (lower-case name, parsed IP address).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(std::net::IpAddr),
}

impl Host {
    /// The name used for SNI, certificate verification and the `Host` header.
    pub fn as_authority_host(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ip(std::net::IpAddr::V4(a)) => a.to_string(),
            Host::Ip(std::net::IpAddr::V6(a)) => format!("[{a}]"),
        }
    }
    pub fn name(&self) -> Option<&str> {
        match self {
            Host::Name(n) => Some(n),
            Host::Ip(_) => None,
        }
    }
}

/// scheme://host:port, canonicalised by the WHATWG URL parser: `http://127.1`,
/// `http://2130706433` and `http://0x7f000001` all become `http://127.0.0.1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
}

impl Origin {
    /// Parses an origin from a URL; any path, query or fragment is returned separately
    /// so that the caller can decide what to do with it.
    pub fn parse(value: &str) -> Result<(Origin, String), String> {
        let url = url::Url::parse(value.trim()).map_err(|e| format!("not a URL ({e})"))?;
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return Err(format!(
                    "scheme '{other}' is not supported (use http or https)"
                ))
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL are not allowed".into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => Host::Name(d.trim_end_matches('.').to_ascii_lowercase()),
            Some(url::Host::Ipv4(a)) => Host::Ip(a.into()),
            Some(url::Host::Ipv6(a)) => Host::Ip(a.into()),
            None => return Err("the URL has no host".into()),
        };
        if let Host::Name(n) = &host {
            if n.is_empty() {
                return Err("the URL has no host".into());
            }
        }
        let port = url.port().unwrap_or(scheme.default_port());
        let rest = &url[url::Position::BeforePath..];
        Ok((Origin { scheme, host, port }, rest.to_string()))
    }

    /// The value for the upstream `Host` header.
    pub fn host_header(&self) -> String {
        let host = self.host.as_authority_host();
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host_header())
    }
}

/// A host pattern: labels separated by dots, where `*` stands for exactly one label
/// (`*-suffix` for one label ending in `-suffix`),
/// except a trailing `*` (aliases only) that stands for one or more labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    labels: Vec<String>,
}

impl HostPattern {
    pub fn parse(pattern: &str, allow_trailing_wildcard: bool) -> Result<Self, String> {
        let p = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
        if p.is_empty() {
            return Err("empty host pattern".into());
        }
        let labels: Vec<String> = p.split('.').map(str::to_string).collect();
        for (i, l) in labels.iter().enumerate() {
            if l.is_empty() {
                return Err(format!("'{pattern}' has an empty label"));
            }
            let literal = l.strip_prefix('*').unwrap_or(l);
            if l != "*"
                && !literal
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "'{pattern}': label '{l}' is not a DNS label or '*'"
                ));
            }
            if l == "*" && i == labels.len() - 1 && i > 0 && !allow_trailing_wildcard {
                return Err(format!(
                    "'{pattern}': a trailing '*' would match any domain; name the domain"
                ));
            }
        }
        if labels.iter().all(|l| l == "*") {
            return Err(format!("'{pattern}' matches every host"));
        }
        Ok(HostPattern { labels })
    }

    pub fn is_exact(&self) -> bool {
        !self.labels.iter().any(|l| l.starts_with('*'))
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        let mut parts = host.split('.');
        let n = self.labels.len();
        for (i, want) in self.labels.iter().enumerate() {
            if i == n - 1 && want == "*" && n > 1 {
                // trailing wildcard: one or more remaining labels
                return parts.next().is_some_and(|l| !l.is_empty());
            }
            match parts.next() {
                Some(got) if !got.is_empty() && label_matches(want, got) => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.labels.join("."))
    }
}

/// `*` matches any label, `*-suffix` any label ending in `-suffix`, anything else itself.
fn label_matches(want: &str, got: &str) -> bool {
    match want.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => {
            got.len() > suffix.len()
                && got.is_char_boundary(got.len() - suffix.len())
                && got[got.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => got.eq_ignore_ascii_case(want),
    }
}

/// Strips an optional `:port` from a Host header value.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}
