//! The `model` string grammar of the unified API: `model[/provider[/deployment]]`, comma chains, `!provider` excludes.

/// One comma-separated item of a model string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    /// `!provider`: no attempt goes to this provider.
    Exclude(&'a str),
    Spec(Spec<'a>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec<'a> {
    /// The item as written (a provider's own id may contain '/', such as `openai/gpt-oss-120b`).
    pub raw: &'a str,
    pub model: &'a str,
    pub provider: Option<&'a str>,
    pub deployment: Option<&'a str>,
}

/// At most this many items in one model string.
pub const MAX_ITEMS: usize = 10;

const HELP: &str = "write `model`, `model/provider`, `model/provider/deployment`, a comma-separated chain of those, and `!provider` to exclude one (e.g. \"gpt-4o/openai,claude-sonnet-4/anthropic\")";

/// Splits a model string into its items; a syntax error is the 400 message.
pub fn parse(s: &str) -> Result<Vec<Item<'_>>, String> {
    if s.trim().is_empty() {
        return Err(format!("`model` is empty: {HELP}"));
    }
    let mut out = Vec::new();
    for (i, raw) in s.split(',').enumerate() {
        let item = raw.trim();
        if item.is_empty() {
            return Err(format!("`model` item {} of '{s}' is empty: {HELP}", i + 1));
        }
        if let Some(p) = item.strip_prefix('!') {
            let p = p.trim();
            if p.is_empty() || p.contains('/') {
                return Err(format!(
                    "`model` item '{item}': an exclude is `!provider` (e.g. !openai)"
                ));
            }
            out.push(Item::Exclude(p));
            continue;
        }
        let mut parts = item.splitn(3, '/').map(str::trim);
        let model = parts.next().unwrap_or_default();
        let provider = parts.next();
        let deployment = parts.next();
        if model.is_empty()
            || provider.is_some_and(str::is_empty)
            || deployment.is_some_and(str::is_empty)
        {
            return Err(format!("`model` item '{item}' has an empty part: {HELP}"));
        }
        out.push(Item::Spec(Spec {
            raw: item,
            model,
            provider,
            deployment,
        }));
    }
    if out.len() > MAX_ITEMS {
        return Err(format!(
            "`model` has {} items; at most {MAX_ITEMS} are allowed",
            out.len()
        ));
    }
    if !out.iter().any(|i| matches!(i, Item::Spec(_))) {
        return Err(format!("`model` '{s}' only excludes providers: {HELP}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(
        raw: &'a str,
        model: &'a str,
        provider: Option<&'a str>,
        deployment: Option<&'a str>,
    ) -> Item<'a> {
        Item::Spec(Spec {
            raw,
            model,
            provider,
            deployment,
        })
    }

    #[test]
    fn the_four_forms_and_chains() {
        assert_eq!(
            parse("gpt-4o-mini").unwrap(),
            vec![spec("gpt-4o-mini", "gpt-4o-mini", None, None)]
        );
        assert_eq!(
            parse("claude-sonnet-4/anthropic").unwrap(),
            vec![spec(
                "claude-sonnet-4/anthropic",
                "claude-sonnet-4",
                Some("anthropic"),
                None
            )]
        );
        assert_eq!(
            parse("gpt-4o/azure/prod-eu").unwrap(),
            vec![spec(
                "gpt-4o/azure/prod-eu",
                "gpt-4o",
                Some("azure"),
                Some("prod-eu")
            )]
        );
        assert_eq!(
            parse(" gpt-4o/openai , claude-sonnet-4/anthropic,!groq").unwrap(),
            vec![
                spec("gpt-4o/openai", "gpt-4o", Some("openai"), None),
                spec(
                    "claude-sonnet-4/anthropic",
                    "claude-sonnet-4",
                    Some("anthropic"),
                    None
                ),
                Item::Exclude("groq"),
            ]
        );
        // a provider id with slashes keeps them in the deployment part; `raw` has it whole
        assert_eq!(
            parse("openai/gpt-oss-120b").unwrap(),
            vec![spec(
                "openai/gpt-oss-120b",
                "openai",
                Some("gpt-oss-120b"),
                None
            )]
        );
    }

    #[test]
    fn syntax_errors_say_what_to_write() {
        for (s, want) in [
            ("", "empty"),
            ("  ", "empty"),
            ("gpt-4o,", "item 2"),
            (",gpt-4o", "item 1"),
            ("gpt-4o/", "empty part"),
            ("/openai", "empty part"),
            ("gpt-4o/azure/", "empty part"),
            ("!", "!provider"),
            ("!openai/x", "!provider"),
            ("!openai", "only excludes"),
        ] {
            let e = parse(s).unwrap_err();
            assert!(e.contains(want), "{s:?}: {e}");
        }
        let long = ["gpt-4o"; 11].join(",");
        assert!(parse(&long).unwrap_err().contains("at most 10"));
    }
}
