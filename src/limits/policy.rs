//! `Helicone-RateLimit-Policy`: the header grammar and the scope a policy counts in.

use std::time::Duration;

use crate::error::GatewayError;

/// What a policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Request,
    /// The cost of each finished request, in US cents.
    Cents,
}

/// Who shares a counter (besides the gateway key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Global,
    /// `Helicone-User-Id`, else the body's `user`.
    User,
    /// The value of `Helicone-Property-<name>` (name lower-cased).
    Property(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub quota: u64,
    pub window: Duration,
    pub unit: Unit,
    pub segment: Segment,
    /// The header value as sent, echoed in `Helicone-RateLimit-Policy`.
    pub raw: String,
}

/// Longest window: one year.
pub const MAX_WINDOW_SECS: u64 = 365 * 24 * 3600;

/// A segment (`user=<id>`, `<property>=<value>`) longer than this is counted under a hash of it.
pub const MAX_SEGMENT_BYTES: usize = 256;

/// A segment's part of a scope: `name=value`, or, when longer than `MAX_SEGMENT_BYTES`,
/// `name#<blake3 of the value>` (`#<blake3 of name=value>` for a name over 64 bytes), so a scope
/// has a bounded size whatever the client sends (a 64 KB `Helicone-User-Id` made a 64 KB key,
/// kept for the window, here and in Redis).
///
/// Hashed rather than refused: Helicone takes a user id or property value of any length (long
/// ones exist: emails, JWT subjects, URLs), and a hash keeps the semantics, one counter per
/// distinct value (a collision of 256-bit BLAKE3 hashes is not a practical concern). A hashed
/// segment never equals a plain one: names are letters, digits, `_` and `-`, never `#`.
fn segment(name: &str, value: &str) -> String {
    if name.len() + 1 + value.len() <= MAX_SEGMENT_BYTES {
        format!("{name}={value}")
    } else if name.len() <= 64 {
        format!("{name}#{}", blake3::hash(value.as_bytes()).to_hex())
    } else {
        let mut h = blake3::Hasher::new();
        h.update(name.as_bytes());
        h.update(b"=");
        h.update(value.as_bytes());
        format!("#{}", h.finalize().to_hex())
    }
}

const GRAMMAR: &str = "expected <quota>;w=<seconds>[;u=request|cents][;s=user|<property>], e.g. 100;w=60 or 500;w=3600;u=cents;s=user (quota and w are positive integers, in that order)";

fn bad(v: &str, why: &str) -> GatewayError {
    GatewayError::BadRequest(format!(
        "Helicone-RateLimit-Policy '{v}' is invalid: {why}; {GRAMMAR}"
    ))
}

fn positive(v: &str, s: &str, what: &str) -> Result<u64, GatewayError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            v,
            &format!("{what} must be a positive integer, got '{s}'"),
        ));
    }
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad(
            v,
            &format!("{what} must be a positive integer, got '{s}'"),
        )),
    }
}

/// Parses the header (Helicone's grammar: `^(\d+);w=(\d+)(;u=(request|cents))?(;s=([\w-]+))?$`).
pub fn parse(v: &str) -> Result<Policy, GatewayError> {
    let raw = v.trim();
    let mut parts = raw.split(';');
    let quota = positive(raw, parts.next().unwrap_or_default(), "the quota")?;
    let window = match parts.next().and_then(|p| p.strip_prefix("w=")) {
        Some(w) => positive(raw, w, "w")?,
        None => return Err(bad(raw, "the window `w=<seconds>` must follow the quota")),
    };
    if window > MAX_WINDOW_SECS {
        return Err(bad(
            raw,
            &format!("w is at most {MAX_WINDOW_SECS} seconds (a year)"),
        ));
    }
    let mut unit = Unit::Request;
    let mut segment = Segment::Global;
    let mut rest: Vec<&str> = parts.collect();
    if let Some(u) = rest.first().and_then(|p| p.strip_prefix("u=")) {
        unit = match u {
            "request" => Unit::Request,
            "cents" => Unit::Cents,
            _ => return Err(bad(raw, &format!("u must be request or cents, got '{u}'"))),
        };
        rest.remove(0);
    }
    if let Some(s) = rest.first().and_then(|p| p.strip_prefix("s=")) {
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(bad(
                raw,
                &format!("s must be user or a property name (letters, digits, _ and -), got '{s}'"),
            ));
        }
        segment = if s == "user" {
            Segment::User
        } else {
            Segment::Property(s.to_ascii_lowercase())
        };
        rest.remove(0);
    }
    if let Some(extra) = rest.first() {
        return Err(bad(raw, &format!("unexpected part '{extra}'")));
    }
    Ok(Policy {
        quota,
        window: Duration::from_secs(window),
        unit,
        segment,
        raw: raw.to_string(),
    })
}

impl Policy {
    /// The counter's scope: the gateway key plus the segment's value. A named segment without a
    /// value is a 400 (Helicone would stop limiting).
    pub fn scope(
        &self,
        key_id: Option<&str>,
        user: Option<&str>,
        property: impl Fn(&str) -> Option<String>,
    ) -> Result<String, GatewayError> {
        let key = key_id.unwrap_or("-");
        // the window is part of the scope: two policies with other windows are other counters
        let unit = match self.unit {
            Unit::Request => format!("r{}", self.window.as_secs()),
            Unit::Cents => format!("c{}", self.window.as_secs()),
        };
        match &self.segment {
            Segment::Global => Ok(format!("{key}|{unit}|global")),
            Segment::User => match user.filter(|u| !u.is_empty()) {
                Some(u) => Ok(format!("{key}|{unit}|{}", segment("user", u))),
                None => Err(GatewayError::BadRequest(format!(
                    "Helicone-RateLimit-Policy '{}' limits per user, but the request names none: send Helicone-User-Id (or `user` in the body), or drop `;s=user`; {GRAMMAR}",
                    self.raw
                ))),
            },
            Segment::Property(p) => match property(p).filter(|v| !v.is_empty()) {
                Some(v) => Ok(format!("{key}|{unit}|{}", segment(p, &v))),
                None => Err(GatewayError::BadRequest(format!(
                    "Helicone-RateLimit-Policy '{}' limits per property '{p}', but the request has no Helicone-Property-{p} header; send it, or drop `;s={p}`; {GRAMMAR}",
                    self.raw
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helicone_grammar() {
        let p = parse("100;w=60").unwrap();
        assert_eq!(
            (p.quota, p.window.as_secs(), p.unit, p.segment.clone()),
            (100, 60, Unit::Request, Segment::Global)
        );
        let p = parse(" 500;w=3600;u=cents;s=user ").unwrap();
        assert_eq!(
            (p.unit, p.segment.clone(), p.raw.as_str()),
            (Unit::Cents, Segment::User, "500;w=3600;u=cents;s=user")
        );
        let p = parse("3;w=60;s=Team-Name").unwrap();
        assert_eq!(p.segment, Segment::Property("team-name".into()));
    }

    #[test]
    fn invalid_policies_are_400_with_the_grammar() {
        for (v, why) in [
            ("", "quota"),
            ("abc;w=60", "quota"),
            ("0;w=60", "quota"),
            ("-1;w=60", "quota"),
            ("10", "window"),
            ("10;60", "window"),
            ("10;w=0", "w must"),
            ("10;w=x", "w must"),
            ("10;w=99999999999", "at most"),
            ("10;w=60;u=tokens", "u must"),
            ("10;w=60;s=", "s must"),
            ("10;w=60;s=a b", "s must"),
            ("10;w=60;s=user;u=cents", "unexpected part"),
            ("10;w=60;x=1", "unexpected part"),
        ] {
            let e = parse(v).unwrap_err();
            assert_eq!(e.status(), 400);
            let m = e.to_string();
            assert!(
                m.contains(why) && m.contains("<quota>;w=<seconds>"),
                "{v:?}: {m}"
            );
        }
    }

    #[test]
    fn scopes_keep_keys_users_and_properties_apart_and_missing_values_are_400() {
        let none = |_: &str| None;
        let p = parse("3;w=60;s=user").unwrap();
        assert_eq!(
            p.scope(Some("team-a"), Some("u1"), none).unwrap(),
            "team-a|r60|user=u1"
        );
        assert_ne!(
            p.scope(Some("team-a"), Some("u1"), none).unwrap(),
            p.scope(Some("team-b"), Some("u1"), none).unwrap()
        );
        assert!(p
            .scope(Some("team-a"), None, none)
            .unwrap_err()
            .to_string()
            .contains("Helicone-User-Id"));
        let p = parse("3;w=60;s=feature").unwrap();
        let prop = |n: &str| (n == "feature").then(|| "search".to_string());
        assert_eq!(p.scope(None, None, prop).unwrap(), "-|r60|feature=search");
        assert!(p
            .scope(None, None, none)
            .unwrap_err()
            .to_string()
            .contains("Helicone-Property-feature"));
        let cents = parse("3;w=60;u=cents").unwrap();
        assert_ne!(
            cents.scope(None, None, none).unwrap(),
            parse("3;w=60").unwrap().scope(None, None, none).unwrap()
        );
    }

    #[test]
    fn long_segment_values_are_counted_under_a_fixed_size_hash() {
        let none = |_: &str| None;
        let p = parse("3;w=60;s=user").unwrap();
        let at = |u: &str| p.scope(Some("team-a"), Some(u), none).unwrap();
        // up to the bound the value is kept as it is
        let short = "u".repeat(MAX_SEGMENT_BYTES - "user=".len());
        assert_eq!(at(&short), format!("team-a|r60|user={short}"));
        // beyond it: a fixed size, one counter per distinct value
        let (a, b) = ("a".repeat(65_536), format!("{}b", "a".repeat(65_535)));
        let (sa, sb) = (at(&a), at(&b));
        assert!(sa.len() < 100 && sb.len() == sa.len(), "{sa}");
        assert!(sa.starts_with("team-a|r60|user#"), "{sa}");
        assert_ne!(sa, sb, "two long ids are two counters");
        assert_eq!(sa, at(&a), "one long id is one counter");
        assert_ne!(at(&(short.clone() + "x")), at(&short));
        // a plain value can never name a hashed counter
        let hash = sa
            .rsplit('|')
            .next()
            .unwrap()
            .strip_prefix("user#")
            .unwrap();
        assert_ne!(at(&format!("#{hash}")), sa);
        // properties too, and a long property name
        let p = parse("3;w=60;s=feature").unwrap();
        let long = "v".repeat(300);
        let prop = |_: &str| Some(long.clone());
        assert!(p
            .scope(None, None, prop)
            .unwrap()
            .starts_with("-|r60|feature#"));
        let name = "n".repeat(1000);
        let p = parse(&format!("3;w=60;s={name}")).unwrap();
        let s = p.scope(None, None, |_: &str| Some("v".into())).unwrap();
        assert!(s.len() < 100 && s.starts_with("-|r60|#"), "{s}");
    }
}
