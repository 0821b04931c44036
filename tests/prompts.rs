//! Prompt templates through the real binary: a rendered request is routed, cached, limited and
//! logged like any other; a gateway without a prompt store says so; `-t` names a broken file.

mod common;

use common::*;

async fn chat(gw: &Gateway, body: &str, extra: &[(&str, &str)]) -> Answer {
    let auth = format!("Bearer {UNIFIED_GW_KEY}");
    let defaults = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    post_with(gw, "/v1/chat/completions", body, &defaults, extra).await
}

const PROD: &str =
    r#"{"prompt_id":"incident","inputs":{"incident":"the 09:12 slowdown","bullets":3}}"#;

#[tokio::test]
async fn a_rendered_request_takes_the_version_s_model_and_is_cached_limited_and_logged() {
    let mock = MockProvider::start();
    let (_dir, gw) = prompt_gateway(&mock);
    let cached = [
        ("helicone-cache-enabled", "true"),
        ("helicone-ratelimit-policy", "10;w=60"),
    ];
    // no `model`, no `messages`: both come from the prompt
    let a = chat(&gw, PROD, &cached).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        (a.h("helicone-prompt-id"), a.h("helicone-prompt-version")),
        ("incident", "1")
    );
    assert_eq!(a.h("helicone-cache"), "MISS");
    assert_eq!(
        a.h("helicone-ratelimit-remaining"),
        "9",
        "counted like any request"
    );
    let up: serde_json::Value = serde_json::from_slice(&mock.last().body).unwrap();
    assert_eq!(up["model"], "gpt-4o-mini");
    // the same rendering is a hit; other inputs are another entry
    let b = chat(&gw, PROD, &cached).await;
    assert_eq!(b.h("helicone-cache"), "HIT");
    let other = PROD.replace("09:12", "10:40");
    assert_eq!(chat(&gw, &other, &cached).await.h("helicone-cache"), "MISS");
    assert_eq!(mock.hits(), 2);
    let r = logged_record(&gw, &a.id()).await;
    assert_eq!(
        (r["prompt_id"].as_str(), r["prompt_version"].as_u64()),
        (Some("incident"), Some(1))
    );
    assert_eq!(
        r["request_body"]["json"]["messages"][1]["content"],
        "Summarise the 09:12 slowdown in 3 bullet points.",
        "the record keeps the rendered request"
    );
    let hit = logged_record(&gw, &b.id()).await;
    assert_eq!(hit["prompt_version"], 1);
    // a bad input is a 400 that never reaches the provider, and is logged as one
    let bad = chat(&gw, r#"{"prompt_id":"incident","inputs":{}}"#, &[]).await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("missing input(s) bullets, incident"),
        "{}",
        bad.text()
    );
    assert_eq!(
        logged_record(&gw, &bad.id()).await["rejection"],
        "bad_request"
    );
    assert_eq!(mock.hits(), 2);
}

#[tokio::test]
async fn without_a_prompt_store_prompt_id_is_a_400_and_the_listing_a_404() {
    let mock = MockProvider::start();
    let gw = unified_gateway(&[("openai", &mock)], "", true);
    let a = chat(&gw, PROD, &[]).await;
    assert_eq!(a.status, 400);
    assert!(a.text().contains("serves no prompts"), "{}", a.text());
    let r = client()
        .get(gw.url("/v1/prompts"))
        .header("authorization", format!("Bearer {UNIFIED_GW_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("prompts: {dir:"));
    assert_eq!(mock.hits(), 0);
}

#[test]
fn a_broken_prompt_file_fails_the_config_check_naming_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts");
    std::fs::create_dir(&prompts).unwrap();
    std::fs::write(
        prompts.join("bad.yaml"),
        "versions: [{version: 1, messages: [{role: user, content: 'hi {{name}}'}]}]\n",
    )
    .unwrap();
    // `switchyard -t` on a config whose prompts section is `prompts`: (ok, what it printed)
    let check = |prompts: &str| {
        let cfg = dir.path().join("c.yaml");
        std::fs::write(
            &cfg,
            format!("listeners: [{{address: '127.0.0.1:1'}}]\nprompts: {prompts}\n"),
        )
        .unwrap();
        let out = std::process::Command::new(bin())
            .args(["-t", "-c"])
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let (ok, text) = check("{dir: prompts}");
    assert!(!ok, "{text}");
    assert!(
        text.contains("prompts.dir: bad.yaml") && text.contains("versions[0].messages[0].content"),
        "{text}"
    );
    let (ok, text) = check("{dir: nowhere}");
    assert!(!ok && text.contains("is not a folder"), "{text}");
}
