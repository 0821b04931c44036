use super::*;
use crate::config::catalogue::{self, CatalogueFile};

fn registry(keys: &[&str], settings: &str) -> (Registry, Issues) {
    let mut issues = Issues::default();
    let cat_file: CatalogueFile = serde_yaml::from_str(catalogue::EMBEDDED).unwrap();
    let cat = Catalogue::build(cat_file, &[], &mut issues);
    let pricing: PricingFile = serde_yaml::from_str(crate::pricing::EMBEDDED).unwrap();
    let settings: BTreeMap<String, ProviderSettings> = serde_yaml::from_str(settings).unwrap();
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let env = move |name: &str| {
        keys.iter()
            .any(|k| k == name)
            .then(|| format!("key-{name}"))
    };
    let reg = Registry::build(&pricing, &cat, &settings, &env, &mut issues);
    (reg, issues)
}

fn labels(c: &[Candidate]) -> Vec<String> {
    c.iter()
        .map(|c| format!("{}:{}", c.endpoint.name, c.model_id))
        .collect()
}

fn all_healthy(_: &Endpoint) -> bool {
    true
}

#[test]
fn a_bare_model_tries_the_providers_with_keys_cheapest_first() {
    let (reg, issues) = registry(
        &["GROQ_API_KEY", "TOGETHER_API_KEY", "FIREWORKS_API_KEY"],
        "{}",
    );
    assert!(issues.is_empty(), "{issues}");
    let c = reg.plan("llama-3.3-70b", Op::Chat, &all_healthy).unwrap();
    // openrouter is cheapest but has no key; groq 1.38 < together 1.76 < fireworks 1.80
    assert_eq!(
        labels(&c),
        [
            "groq:llama-3.3-70b-versatile",
            "together:meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "fireworks:accounts/fireworks/models/llama-v3p3-70b-instruct"
        ]
    );
    // same price: priority decides (openai 3 before openrouter 10)
    let (reg, _) = registry(&["OPENAI_API_KEY", "OPENROUTER_API_KEY"], "{}");
    let c = reg.plan("gpt-4o-mini", Op::Chat, &all_healthy).unwrap();
    assert_eq!(
        labels(&c),
        ["openai:gpt-4o-mini", "openrouter:openai/gpt-4o-mini"]
    );
    // the operator's priority overrides the catalogue's
    let (reg, _) = registry(
        &["OPENAI_API_KEY", "OPENROUTER_API_KEY"],
        "{openrouter: {priority: 1}}",
    );
    let c = reg.plan("gpt-4o-mini", Op::Chat, &all_healthy).unwrap();
    assert_eq!(labels(&c)[0], "openrouter:openai/gpt-4o-mini");
}

#[test]
fn chains_keep_their_order_excludes_apply_everywhere_and_duplicates_go() {
    let (reg, _) = registry(
        &["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY"],
        "{}",
    );
    let c = reg
        .plan(
            "gpt-4o/openai,claude-sonnet-4/anthropic,claude-sonnet-4",
            Op::Chat,
            &all_healthy,
        )
        .unwrap();
    assert_eq!(
        labels(&c),
        [
            "openai:gpt-4o",
            "anthropic:claude-sonnet-4-20250514",
            "openrouter:anthropic/claude-sonnet-4"
        ]
    );
    let c = reg
        .plan("claude-sonnet-4,!openrouter", Op::Chat, &all_healthy)
        .unwrap();
    assert_eq!(labels(&c), ["anthropic:claude-sonnet-4-20250514"]);
    assert_eq!(c[0].label(), "claude-sonnet-4/anthropic");
}

#[test]
fn open_circuits_go_last() {
    let (reg, _) = registry(&["GROQ_API_KEY", "TOGETHER_API_KEY"], "{}");
    let c = reg
        .plan("llama-3.3-70b", Op::Chat, &|e: &Endpoint| e.name != "groq")
        .unwrap();
    assert_eq!(
        labels(&c)[0],
        "together:meta-llama/Llama-3.3-70B-Instruct-Turbo"
    );
    assert_eq!(labels(&c)[1], "groq:llama-3.3-70b-versatile");
}

#[test]
fn provider_ids_and_unregistered_models_at_a_named_provider() {
    let (reg, _) = registry(
        &["GROQ_API_KEY", "TOGETHER_API_KEY", "OPENAI_API_KEY"],
        "{}",
    );
    // a provider's own id, slash included, goes to that provider only
    let c = reg
        .plan("llama-3.3-70b-versatile", Op::Chat, &all_healthy)
        .unwrap();
    assert_eq!(labels(&c), ["groq:llama-3.3-70b-versatile"]);
    let c = reg
        .plan("openai/gpt-oss-120b", Op::Chat, &all_healthy)
        .unwrap();
    // both at $0.15 / $0.60 (registry as of 2026-12-06): the providers' priority decides
    assert_eq!(
        labels(&c),
        ["groq:openai/gpt-oss-120b", "together:openai/gpt-oss-120b"]
    );
    // a model the registry does not know yet still reaches a named provider
    let c = reg
        .plan("gpt-6-preview/openai", Op::Chat, &all_healthy)
        .unwrap();
    assert_eq!(labels(&c), ["openai:gpt-6-preview"]);
}

#[test]
fn unknown_models_and_providers_are_named_with_close_matches() {
    let (reg, _) = registry(&["OPENAI_API_KEY"], "{}");
    let e = reg.plan("gpt-4o-mni", Op::Chat, &all_healthy).unwrap_err();
    assert_eq!(e.status(), 404);
    assert_eq!(e.code(), "model_not_found");
    assert!(e.to_string().contains("Did you mean gpt-4o-mini"), "{e}");
    let e = reg
        .plan("gpt-4o/opanai", Op::Chat, &all_healthy)
        .unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(
        e.to_string().contains("unknown provider 'opanai'")
            && e.to_string().contains("Did you mean openai"),
        "{e}"
    );
    let e = reg
        .plan("gpt-4o,!nope", Op::Chat, &all_healthy)
        .unwrap_err();
    assert!(e.to_string().contains("unknown provider 'nope'"), "{e}");
    // an embedding model is not a chat model
    let e = reg
        .plan("text-embedding-3-small", Op::Chat, &all_healthy)
        .unwrap_err();
    assert_eq!(e.status(), 404);
}

#[test]
fn providers_without_a_key_are_skipped_and_the_error_says_which_variable() {
    let (reg, _) = registry(&[], "{}");
    let e = reg
        .plan("claude-sonnet-4", Op::Chat, &all_healthy)
        .unwrap_err();
    assert_eq!(e.status(), 400);
    let m = e.to_string();
    assert!(
        m.contains("ANTHROPIC_API_KEY") && m.contains("OPENROUTER_API_KEY"),
        "{m}"
    );
    let e = reg
        .plan("gpt-4o/openai", Op::Chat, &all_healthy)
        .unwrap_err();
    assert!(e.to_string().contains("OPENAI_API_KEY"), "{e}");
    // the operator may name another variable
    let (reg, _) = registry(&["MY_OAI"], "{openai: {key_env: MY_OAI}}");
    assert!(reg.plan("gpt-4o", Op::Chat, &all_healthy).is_ok());
}

#[test]
fn azure_needs_a_base_url_and_a_deployment() {
    let (reg, issues) = registry(
        &["AZURE_OPENAI_API_KEY"],
        "{azure: {base_url: 'https://myres.openai.azure.com', api_version: 2025-01-01-preview, deployments: {gpt-4o: prod-4o}}}",
    );
    assert!(issues.is_empty(), "{issues}");
    let c = reg.plan("gpt-4o", Op::Chat, &all_healthy).unwrap();
    assert_eq!(c[0].endpoint.name, "azure");
    assert_eq!(
        c[0].endpoint.path(Op::Chat, c[0].deployment.as_deref()),
        "/openai/deployments/prod-4o/chat/completions?api-version=2025-01-01-preview"
    );
    let c = reg
        .plan("gpt-4o-mini/azure/mini-eu", Op::Chat, &all_healthy)
        .unwrap();
    assert_eq!(c[0].deployment.as_deref(), Some("mini-eu"));
    let e = reg
        .plan("gpt-4o-mini/azure", Op::Chat, &all_healthy)
        .unwrap_err();
    assert!(e.to_string().contains("deployment"), "{e}");
    let e = reg
        .plan("gpt-4o/openai/x", Op::Chat, &all_healthy)
        .unwrap_err();
    assert!(e.to_string().contains("only applies to azure"), "{e}");
    // no base_url: named in the error
    let (reg, _) = registry(&["AZURE_OPENAI_API_KEY"], "{}");
    let e = reg
        .plan("gpt-4o/azure/d", Op::Chat, &all_healthy)
        .unwrap_err();
    assert!(e.to_string().contains("providers.azure.base_url"), "{e}");
}

#[test]
fn paths_follow_each_provider_format() {
    let (reg, _) = registry(&[], "{openai: {base_url: 'http://127.0.0.1:9/proxy/v1/'}}");
    let path = |n: &str, op| reg.endpoint(n).unwrap().path(op, None);
    assert_eq!(path("openai", Op::Chat), "/proxy/v1/chat/completions");
    assert_eq!(path("openai", Op::Embeddings), "/proxy/v1/embeddings");
    assert_eq!(path("groq", Op::Chat), "/openai/v1/chat/completions");
    assert_eq!(path("gemini", Op::Chat), "/v1beta/openai/chat/completions");
    assert_eq!(path("anthropic", Op::Chat), "/v1/messages");
    assert_eq!(path("openrouter", Op::Chat), "/api/v1/chat/completions");
    assert_eq!(path("deepseek", Op::Chat), "/chat/completions");
}

#[test]
fn embeddings_use_embedding_models_and_providers_that_serve_them() {
    let (reg, _) = registry(&["OPENAI_API_KEY", "ANTHROPIC_API_KEY"], "{}");
    let c = reg
        .plan("text-embedding-3-small", Op::Embeddings, &all_healthy)
        .unwrap();
    assert_eq!(labels(&c), ["openai:text-embedding-3-small"]);
    let e = reg
        .plan("gpt-4o", Op::Embeddings, &all_healthy)
        .unwrap_err();
    assert_eq!(e.status(), 404);
    let e = reg
        .plan("x/anthropic", Op::Embeddings, &all_healthy)
        .unwrap_err();
    assert!(e.to_string().contains("no embeddings endpoint"), "{e}");
}

#[test]
fn bad_provider_settings_name_the_field() {
    let (_, issues) = registry(
        &[],
        "{opnai: {}, bedrock: {}, azure: {base_url: 'ftp://x', deployments: {gpt-40: d}}}",
    );
    let text = issues.to_string();
    for want in [
        "providers.opnai: unknown provider 'opnai'",
        "Did you mean openai",
        "providers.bedrock: provider 'bedrock' has no `api:`",
        "providers.azure.base_url",
        "providers.azure.deployments.gpt-40: unknown model",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
}

#[test]
fn the_models_list_has_every_routable_model_with_its_providers() {
    let (reg, _) = registry(&["OPENAI_API_KEY"], "{}");
    let (status, body) = models_json(&reg, None);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert!(data.len() >= 40, "{}", data.len());
    let mini = data.iter().find(|m| m["id"] == "gpt-4o-mini").unwrap();
    assert_eq!(mini["object"], "model");
    assert!(mini["created"].as_i64().unwrap() > 1_700_000_000);
    let openai = mini["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "openai")
        .unwrap();
    assert_eq!(openai["available"], true);
    assert_eq!(openai["context_length"], 128000);
    let (status, body) = models_json(&reg, Some("claude-sonet-4"));
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("claude-sonnet-4"));
}

#[test]
fn helicone_model_and_provider_names_resolve_to_the_registry() {
    let (reg, _) = registry(
        &["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"],
        "{}",
    );
    for (model, want) in [
        ("claude-4.5-haiku", "anthropic:claude-haiku-4-5-20251001"),
        (
            "claude-3.5-haiku/anthropic",
            "anthropic:claude-3-5-haiku-20241022",
        ),
        ("claude-haiku-4-5", "anthropic:claude-haiku-4-5-20251001"),
        // Helicone's fallbacks page writes `claude-haiku-4`: the Haiku of the 4 family is 4.5
        ("claude-haiku-4", "anthropic:claude-haiku-4-5-20251001"),
        ("gemini-2.5-flash/google", "gemini:gemini-2.5-flash"),
        (
            "gemini-2.5-flash/google-ai-studio",
            "gemini:gemini-2.5-flash",
        ),
    ] {
        let c = reg.plan(model, Op::Chat, &all_healthy).unwrap();
        assert_eq!(labels(&c)[0], want, "{model}");
    }
    let c = reg
        .plan(
            "gpt-4o/openai,claude-sonnet-4/anthropic,gemini-2.5-flash/google",
            Op::Chat,
            &all_healthy,
        )
        .unwrap();
    assert_eq!(
        labels(&c),
        [
            "openai:gpt-4o",
            "anthropic:claude-sonnet-4-20250514",
            "gemini:gemini-2.5-flash"
        ]
    );
    // `!google` excludes gemini
    let c = reg.plan("!google,gemini-2.5-flash", Op::Chat, &all_healthy);
    assert!(
        c.is_err()
            || labels(&c.unwrap())
                .iter()
                .all(|l| !l.starts_with("gemini:"))
    );
    assert_eq!(reg.provider_name("Google-AI-Studio"), "gemini");
}

#[test]
fn the_closest_name_is_always_suggested_and_current_models_win_only_ties() {
    let ranked = close_matches_ranked(
        "claude-4.9-haiku",
        [
            ("claude-3-haiku", true),
            ("claude-haiku-4-5", false),
            ("gpt-4o", false),
        ]
        .into_iter(),
    );
    assert_eq!(
        ranked.first(),
        Some(&"claude-3-haiku"),
        "closest first, retired or not"
    );
    let far = close_matches_ranked("zzzz", [("gpt-4o", false), ("o1", false)].into_iter());
    assert_eq!(far.len(), 1, "a far name still gets the closest: {far:?}");
    let tie = close_matches_ranked(
        "model-x",
        [("model-a", true), ("model-b", false)].into_iter(),
    );
    assert_eq!(tie[0], "model-b", "a current model wins a tie");
}
