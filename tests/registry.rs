//! The bundled model registry end to end (issue 16): Helicone's model and provider names through
//! the official openai SDK to the right mock under the provider's own id, priced; unknown models
//! answered with the closest names; overlay mistakes named by file, entry and field; a valid
//! overlay's price and private model; retired models listed with their date; unpriced models
//! logged as unknown cost (never $0) and counted.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

const GW_KEY: &str = UNIFIED_GW_KEY;

async fn chat(gw: &Gateway, model: &str) -> Answer {
    post_with(
        gw,
        "/v1/chat/completions",
        &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        &[
            ("authorization", &format!("Bearer {GW_KEY}")),
            ("content-type", "application/json"),
        ],
        &[],
    )
    .await
}

/// The model the mock was sent in request `n` (0-based) it received.
fn sent_model(mock: &MockProvider, n: usize) -> String {
    let reqs = mock.state.requests.lock().unwrap();
    let body: Value = serde_json::from_slice(&reqs[n].body).unwrap();
    body["model"].as_str().unwrap().to_string()
}

// ------------------------------------------------------------ Helicone's strings, via the SDK

/// (model string as Helicone's docs write it, provider that must answer, id it must be sent)
const HELICONE_STRINGS: &[(&str, &str, &str)] = &[
    ("claude-4.5-haiku", "anthropic", "claude-haiku-4-5-20251001"),
    ("claude-sonnet-4", "anthropic", "claude-sonnet-4-20250514"),
    ("claude-opus-4-1", "anthropic", "claude-opus-4-1-20250805"),
    (
        "claude-3.5-haiku/anthropic",
        "anthropic",
        "claude-3-5-haiku-20241022",
    ),
    ("claude-haiku-4-5", "anthropic", "claude-haiku-4-5-20251001"),
    ("claude-haiku-4", "anthropic", "claude-haiku-4-5-20251001"),
    (
        "gpt-4o/openai,claude-sonnet-4/anthropic,gemini-2.5-flash/google",
        "openai",
        "gpt-4o",
    ),
    ("gemini-2.5-flash/google", "gemini", "gemini-2.5-flash"),
    (
        "gemini-2.5-flash/google-ai-studio",
        "gemini",
        "gemini-2.5-flash",
    ),
    ("gpt-4", "openai", "gpt-4"),
    ("gpt-3.5-turbo", "openai", "gpt-3.5-turbo"),
    ("gpt-4o-mini", "openai", "gpt-4o-mini"),
    ("gemini-2.5-pro", "gemini", "gemini-2.5-pro"),
    (
        "claude-3.5-sonnet",
        "anthropic",
        "claude-3-5-sonnet-20241022",
    ),
];

#[tokio::test]
async fn helicones_model_strings_route_to_the_right_provider_and_id_and_are_priced() {
    let openai = MockProvider::start();
    let anthropic = MockProvider::start();
    let gemini = MockProvider::start();
    let gw = unified_gateway(
        &[
            ("openai", &openai),
            ("anthropic", &anthropic),
            ("gemini", &gemini),
        ],
        "",
        true,
    );
    let models: Vec<&str> = HELICONE_STRINGS.iter().map(|(m, _, _)| *m).collect();
    let script = format!(
        "{}/tests/python/sdk_registry.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let url = gw.url("");
    let models_env = models.join("\n");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .env("SWITCHYARD_URL", url)
            .env("GATEWAY_KEY", GW_KEY)
            .env("MODELS", models_env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && stdout.ends_with("done\n"),
        "sdk_registry.py stdout:\n{stdout}\nstderr:\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.contains('\t'))
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(lines.len(), HELICONE_STRINGS.len(), "{stdout}");

    // each mock's requests come in the order of the strings it answered: one each, no retries
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    for ((model, provider, id), line) in HELICONE_STRINGS.iter().zip(&lines) {
        assert_eq!(line[0], *model);
        assert_eq!(line[2], *provider, "{model}: Helicone-Provider");
        let mock = match *provider {
            "openai" => &openai,
            "anthropic" => &anthropic,
            _ => &gemini,
        };
        let n = seen.entry(provider).or_default();
        assert_eq!(
            sent_model(mock, *n),
            *id,
            "{model}: the id {provider} was sent"
        );
        *n += 1;
        let rec = logged_record(&gw, line[1]).await;
        assert_eq!(rec["provider"], *provider, "{model}: {rec}");
        assert_eq!(rec["model_requested"], *model, "{rec}");
        assert_eq!(rec["status"], 200, "{rec}");
        assert!(
            rec["cost_usd"].as_f64().is_some_and(|c| c > 0.0),
            "{model}: cost {rec}"
        );
        assert_eq!(rec["cost_status"], "priced", "{model}: {rec}");
    }
    for (name, mock) in [
        ("openai", &openai),
        ("anthropic", &anthropic),
        ("gemini", &gemini),
    ] {
        assert_eq!(mock.hits(), seen[name], "{name} got an extra request");
    }

    // the alias prices as its model: claude-haiku-4-5 at $1 in, $0.10 cached, $5 out (the mock
    // reports 5 fresh + 2 cached input tokens and 3 output tokens)
    let at = |model: &str| {
        HELICONE_STRINGS
            .iter()
            .position(|(s, _, _)| *s == model)
            .unwrap()
    };
    let haiku = logged_record(&gw, lines[at("claude-4.5-haiku")][1]).await;
    let want = (5.0 * 1.00 + 2.0 * 0.10 + 3.0 * 5.00) / 1e6;
    assert!(
        (haiku["cost_usd"].as_f64().unwrap() - want).abs() < 1e-12,
        "{haiku}"
    );
    assert_eq!(haiku["deprecated"], false, "claude-haiku-4-5 is current");
    // gpt-4 was shut down on 2026-10-23: it still routes and prices (5 in, 3 out at $30/$60),
    // and the record says the caller uses a retired model
    let gpt4 = logged_record(&gw, lines[at("gpt-4")][1]).await;
    assert_eq!(gpt4["deprecated"], true, "{gpt4}");
    let want = (5.0 * 30.0 + 3.0 * 60.0) / 1e6;
    assert!(
        (gpt4["cost_usd"].as_f64().unwrap() - want).abs() < 1e-12,
        "{gpt4}"
    );
    let sonnet4 = logged_record(&gw, lines[at("claude-sonnet-4")][1]).await;
    assert_eq!(sonnet4["deprecated"], true, "retired 2026-06-15: {sonnet4}");
}

// ------------------------------------------------------------ unknown models

#[tokio::test]
async fn an_unknown_model_is_a_404_listing_the_closest_names_first() {
    let openai = MockProvider::start();
    let anthropic = MockProvider::start();
    let gw = unified_gateway(&[("openai", &openai), ("anthropic", &anthropic)], "", true);

    let a = chat(&gw, "claude-4.9-haiku").await;
    assert_eq!(a.status, 404, "{}", a.text());
    let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("'claude-4.9-haiku'"), "{msg}");
    let (_, listed) = msg
        .split_once("Did you mean ")
        .unwrap_or_else(|| panic!("no suggestion: {msg}"));
    let listed: Vec<&str> = listed.split('?').next().unwrap().split(", ").collect();
    assert!(listed[0].contains("haiku"), "a haiku first: {msg}");
    // closest first: every haiku listed comes before any other model
    let first_other = listed.iter().position(|m| !m.contains("haiku"));
    let last_haiku = listed.iter().rposition(|m| m.contains("haiku")).unwrap();
    assert!(first_other.is_none_or(|o| o > last_haiku), "{msg}");
    assert!(listed.len() <= 5, "{msg}");

    // a name close to nothing still gets the one closest name, never an empty hint
    let a = chat(&gw, "qqqqqqqqqqqqqqqqqqqq").await;
    assert_eq!(a.status, 404, "{}", a.text());
    let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
    let (_, listed) = msg
        .split_once("Did you mean ")
        .unwrap_or_else(|| panic!("no suggestion: {msg}"));
    let listed = listed.split('?').next().unwrap();
    assert!(
        !listed.is_empty() && !listed.contains(", "),
        "exactly one suggestion: {msg}"
    );
    assert_eq!(openai.hits() + anthropic.hits(), 0, "nothing went upstream");
}

// ------------------------------------------------------------ overlays and `-t`

#[test]
fn overlay_mistakes_name_the_file_the_entry_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("team-prices.yaml");
    let conf = format!(
        "listeners: [{{address: '127.0.0.1:1'}}]\npricing: {{overlays: ['{}']}}\n",
        overlay.display()
    );
    let at = |i: usize, field: &str| {
        format!(
            "pricing.overlays[0] ({}) models[{i}]{field}",
            overlay.display()
        )
    };
    let ok_entry = "  - {provider: openai, model: acme-chat, input: 1, output: 2}\n";
    let cases: Vec<(String, String, &str)> = vec![
        (
            "  - {provider: openai, model: gpt-4o, input: -2.5, output: 10}\n".into(),
            at(1, ".input"),
            "a price must be a number >= 0",
        ),
        (
            "  - {provider: openai, model: acme-mini, input: 0.5}\n".into(),
            at(1, ".output"),
            "give both input and output prices",
        ),
        // within the overlay, and naming a bundled model
        (
            "  - {provider: openai, model: acme-mini, input: 1, output: 2, aliases: [acme-chat]}\n"
                .into(),
            at(1, ".aliases[0]"),
            "'acme-chat' is already a model",
        ),
        (
            "  - {provider: openai, model: acme-mini, input: 1, output: 2, aliases: [gpt-4o]}\n"
                .into(),
            at(1, ".aliases[0]"),
            "'gpt-4o' is already a model",
        ),
        // an alias the bundled registry gives to another model
        (
            "  - {provider: openai, model: acme-mini, input: 1, output: 2, aliases: [claude-4.5-haiku]}\n"
                .into(),
            at(1, ".aliases[0]"),
            "'claude-4.5-haiku' is an alias of both claude-haiku-4-5 and acme-mini",
        ),
        (
            "  - {provider: openai, model: acme-chat, input: 3, output: 4}\n".into(),
            at(1, ""),
            "openai acme-chat is listed twice",
        ),
        (
            "  - {provider: openai, model: acme-mini, inptu: 1, output: 2}\n".into(),
            format!("{}: models[1].inptu", overlay.display()),
            "unknown field `inptu`",
        ),
    ];
    for (entry, where_, what) in cases {
        std::fs::write(&overlay, format!("models:\n{ok_entry}{entry}")).unwrap();
        let (ok, out) = check_config_in(dir.path(), &conf);
        assert!(!ok, "accepted:\n{entry}");
        let line = out
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no `{what}` for\n{entry}in:\n{out}"));
        assert!(line.contains(&where_), "`{where_}` not in `{line}`");
        // one mistake, one message: not again as an index into the merged registry
        assert_eq!(
            out.matches(what).count(),
            1,
            "reported more than once:\n{out}"
        );
        assert!(!out.contains("(merged)"), "{out}");
    }
}

#[test]
fn a_name_two_overlays_give_to_two_models_is_reported_at_the_later_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    std::fs::write(
        &a,
        "models:\n  - {provider: openai, model: acme-chat, input: 1, output: 2, aliases: [acme]}\n",
    )
    .unwrap();
    std::fs::write(
        &b,
        "models:\n  - {provider: openai, model: gpt-4o-mini, input: 1, output: 2}\n  - {provider: openai, model: acme-mini, input: 1, output: 2, aliases: [acme]}\n",
    )
    .unwrap();
    // the list form: each file checks alone, only the two together clash
    let (ok, out) = check_config_in(
        dir.path(),
        &format!(
            "listeners: [{{address: '127.0.0.1:1'}}]\npricing: ['{}', '{}']\n",
            a.display(),
            b.display()
        ),
    );
    assert!(!ok, "{out}");
    let want = format!(
        "pricing.overlays[1] ({}) models[1].aliases[0]: 'acme' is an alias of both acme-chat and acme-mini",
        b.display()
    );
    assert!(out.contains(&want), "`{want}` not in:\n{out}");
    assert_eq!(out.matches("'acme'").count(), 1, "{out}");
}

/// The embedded catalogue plus `inhouse`, an OpenAI-compatible server of the operator's own.
fn catalogue_with_inhouse(dir: &Path) -> PathBuf {
    let p = dir.join("providers.yaml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/providers.yaml"))
        .unwrap();
    std::fs::write(
        &p,
        format!(
            "{text}  - name: inhouse\n    origin: https://llm.internal.example\n    auth: {{ header: authorization, scheme: bearer }}\n    api: {{ format: openai, base_path: /v1, key_env: INHOUSE_API_KEY }}\n"
        ),
    )
    .unwrap();
    p
}

const OVERLAY: &str = "\
as_of: 2026-12-06
models:
  # our negotiated gpt-4o-mini price
  - {provider: openai, model: gpt-4o-mini, input: 1.00, output: 2.00}
  # a private fine-tune on our own OpenAI-compatible server
  - {provider: inhouse, model: acme-chat-7b, id: acme/chat-7b-v3, input: 0.50, output: 1.50, aliases: [acme-chat]}
";

#[tokio::test]
async fn a_valid_overlay_reprices_a_bundled_model_and_adds_a_private_one() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("ours.yaml");
    std::fs::write(&overlay, OVERLAY).unwrap();
    let cat = catalogue_with_inhouse(dir.path());
    let extra = format!(
        "catalogue: '{}'\npricing: {{overlays: ['{}']}}\n",
        cat.display(),
        overlay.display()
    );
    let (ok, out) = check_config_in(
        dir.path(),
        &format!("listeners: [{{address: '127.0.0.1:1'}}]\n{extra}"),
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "pricing overlay {}: 1 entries replace bundled ones, 1 added",
            overlay.display()
        )),
        "{out}"
    );

    let openai = MockProvider::start();
    let inhouse = MockProvider::start();
    let gw = unified_gateway_with(
        &[("openai", &openai), ("inhouse", &inhouse)],
        "",
        true,
        &extra,
    );
    // the overridden price: 5 in, 3 out at $1/$2 (the bundled one is $0.15/$0.60)
    let a = chat(&gw, "gpt-4o-mini").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(sent_model(&openai, 0), "gpt-4o-mini");
    let rec = logged_record(&gw, &a.id()).await;
    assert_eq!(rec["cost_status"], "priced", "{rec}");
    let want = (5.0 * 1.00 + 3.0 * 2.00) / 1e6;
    assert!(
        (rec["cost_usd"].as_f64().unwrap() - want).abs() < 1e-12,
        "{rec}"
    );

    // the private model, by its name and its alias, goes to the in-house server under its id
    for (n, name) in ["acme-chat-7b", "acme-chat"].into_iter().enumerate() {
        let a = chat(&gw, name).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.h("helicone-provider"), "inhouse");
        assert_eq!(sent_model(&inhouse, n), "acme/chat-7b-v3");
        assert_eq!(
            inhouse.last().header("authorization"),
            Some("Bearer sk-test-inhouse")
        );
        let rec = logged_record(&gw, &a.id()).await;
        assert_eq!(rec["provider"], "inhouse", "{rec}");
        assert_eq!(rec["cost_status"], "priced", "{rec}");
        let want = (5.0 * 0.50 + 3.0 * 1.50) / 1e6;
        assert!(
            (rec["cost_usd"].as_f64().unwrap() - want).abs() < 1e-12,
            "{rec}"
        );
    }
    assert_eq!(openai.hits(), 1);
    // and it is listed with its price
    let r = client()
        .get(gw.url("/v1/models/acme-chat"))
        .bearer_auth(GW_KEY)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "acme-chat-7b", "{v}");
    assert_eq!(v["providers"][0]["provider"], "inhouse", "{v}");
    assert_eq!(v["providers"][0]["input_per_mtok"], 0.5, "{v}");
}

// ------------------------------------------------------------ retired and unpriced models

#[tokio::test]
async fn retired_models_are_listed_with_their_date_and_unpriced_ones_cost_null_not_zero() {
    let openai = MockProvider::start();
    let gemini = MockProvider::start();
    let gw = unified_gateway(&[("openai", &openai), ("gemini", &gemini)], "", true);

    let r = client()
        .get(gw.url("/v1/models"))
        .bearer_auth(GW_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let offer = |model: &str, provider: &str| -> Value {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == model)
            .unwrap_or_else(|| panic!("{model} not listed"))["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider"] == provider)
            .unwrap_or_else(|| panic!("{model} not listed at {provider}"))
            .clone()
    };
    let old = offer("gpt-3.5-turbo", "openai");
    assert_eq!(old["retired"], "2026-10-23", "{old}");
    assert_eq!(
        old["input_per_mtok"], 0.5,
        "a retired model keeps its last price"
    );
    let current = offer("gpt-4o-mini", "openai");
    assert_eq!(current["retired"], Value::Null, "{current}");
    let unpriced = offer("gemini-1.5-pro", "gemini");
    assert_eq!(unpriced["input_per_mtok"], Value::Null, "{unpriced}");
    assert_eq!(unpriced["output_per_mtok"], Value::Null, "{unpriced}");
    assert_eq!(unpriced["available"], true, "{unpriced}");

    // a registry model without a price still routes; its cost is unknown, never $0
    let a = chat(&gw, "gemini-1.5-pro").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.h("helicone-provider"), "gemini");
    assert_eq!(sent_model(&gemini, 0), "gemini-1.5-pro");
    let rec = logged_record(&gw, &a.id()).await;
    assert_eq!(rec["prompt_tokens"], 5, "the tokens are known: {rec}");
    assert_eq!(rec["cost_usd"], Value::Null, "{rec}");
    assert_eq!(rec["cost_status"], "unpriced", "{rec}");
    let needle =
        r#"switchyard_unpriced_requests_total{model="gemini-1.5-pro",provider="gemini"} 1"#;
    let m = metrics_with(&gw, &[needle]).await;
    assert!(m.contains(needle), "{m}");
    // a priced request beside it is not counted
    let a = chat(&gw, "gpt-4o-mini").await;
    assert_eq!(a.status, 200);
    let rec = logged_record(&gw, &a.id()).await;
    assert_eq!(rec["cost_status"], "priced", "{rec}");
    let m = metrics_with(&gw, &[r#"provider="openai"} "#]).await;
    assert!(
        !m.contains(r#"switchyard_unpriced_requests_total{model="gpt-4o-mini""#),
        "{m}"
    );
}
