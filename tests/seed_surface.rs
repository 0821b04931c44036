//! The rest of Helicone's request headers: `Helicone-Request-Id`, `Helicone-Model-Override`,
//! `Helicone-Stream-Usage` and `Helicone-Target-Provider`, through the real binary.

mod common;

use common::*;

fn gateway(mock: &MockProvider) -> Gateway {
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.extra = "export: {batch_max_delay_ms: 20}\n".into();
    Gateway::start(conf)
}

async fn send(gw: &Gateway, mock: &MockProvider, body: &str, extra: &[(&str, &str)]) -> Answer {
    let target = mock.origin();
    let defaults = [
        ("helicone-target-url", target.as_str()),
        ("content-type", "application/json"),
    ];
    post_with(gw, "/v1/chat/completions", body, &defaults, extra).await
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn a_valid_request_id_becomes_the_id_and_an_invalid_one_is_a_400() {
    let mock = MockProvider::start();
    let gw = gateway(&mock);
    let id = "0b6f3c3e-8a49-4c1e-9a8e-3f1f4c1e2d7a";
    let a = send(&gw, &mock, CHAT, &[("helicone-request-id", id)]).await;
    assert_eq!((a.status, a.h("helicone-id")), (200, id));
    assert_eq!(logged_record(&gw, id).await["id"], id);
    let bad = send(&gw, &mock, CHAT, &[("helicone-request-id", "req-17")]).await;
    assert_eq!(bad.status, 400);
    let msg = bad.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("Helicone-Request-Id 'req-17' is not a UUID"),
        "{msg}"
    );
    assert_eq!(mock.hits(), 1, "the refused one never went upstream");
}

#[tokio::test]
async fn the_model_override_prices_and_logs_and_the_target_provider_is_recorded() {
    let mock = MockProvider::start();
    let gw = gateway(&mock);
    // the mock answers as gpt-4o-mini; the override says the tokens were o1's
    let a = send(
        &gw,
        &mock,
        CHAT,
        &[
            ("helicone-model-override", "o1"),
            ("helicone-target-provider", "OpenAI"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    let r = logged_record(&gw, &a.id()).await;
    assert_eq!(r["model_override"], "o1");
    assert_eq!(r["model_responded"], "gpt-4o-mini");
    assert_eq!(r["target_provider"], "OpenAI");
    // 5 prompt + 3 completion tokens at o1's $15 / $60 per million
    let want = (5.0 * 15.0 + 3.0 * 60.0) / 1e6;
    assert!(
        (r["cost_usd"].as_f64().unwrap() - want).abs() < 1e-12,
        "{r}"
    );
    let m = metrics_with(&gw, &[r#"model="o1""#]).await;
    assert!(m.contains(r#"switchyard_cost_usd_total{model="o1""#), "{m}");
}

#[tokio::test]
async fn stream_usage_asks_the_provider_for_usage_so_a_stream_is_counted() {
    let mock = MockProvider::start();
    let gw = gateway(&mock);
    let stream =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let plain = send(&gw, &mock, stream, &[]).await;
    let up: serde_json::Value = serde_json::from_slice(&mock.last().body).unwrap();
    assert!(
        up.get("stream_options").is_none(),
        "forwarded verbatim without the header"
    );
    assert!(logged_record(&gw, &plain.id()).await["prompt_tokens"].is_null());
    let a = send(&gw, &mock, stream, &[("helicone-stream-usage", "true")]).await;
    assert_eq!(a.status, 200);
    let up: serde_json::Value = serde_json::from_slice(&mock.last().body).unwrap();
    assert_eq!(up["stream_options"]["include_usage"], true);
    assert_eq!(
        mock.last().body_len.to_string(),
        mock.last().header("content-length").unwrap(),
        "the rewritten body went with its own length"
    );
    let r = logged_record(&gw, &a.id()).await;
    assert_eq!(
        (r["prompt_tokens"].as_u64(), r["completion_tokens"].as_u64()),
        (Some(5), Some(3))
    );
    assert!(r["cost_usd"].as_f64().unwrap() > 0.0);
    let bad = send(&gw, &mock, stream, &[("helicone-stream-usage", "yes")]).await;
    assert_eq!(bad.status, 400);
    assert!(bad
        .text()
        .contains("Helicone-Stream-Usage must be true or false"));
    assert_eq!(mock.hits(), 2);
}

#[tokio::test]
async fn cache_control_reaches_anthropic_through_the_translation() {
    let anthropic = MockProvider::start();
    let gw = unified_gateway(&[("anthropic", &anthropic)], "", true);
    let body = serde_json::json!({
        "model": "claude-sonnet-4",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "A long handbook.", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "What does chapter 2 say?", "cache_control": {"type": "ephemeral"}}
        ]
    })
    .to_string();
    let auth = format!("Bearer {UNIFIED_GW_KEY}");
    let a = post_with(
        &gw,
        "/v1/chat/completions",
        &body,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let up: serde_json::Value = serde_json::from_slice(&anthropic.last().body).unwrap();
    assert_eq!(
        up["system"][0]["cache_control"]["type"], "ephemeral",
        "{up}"
    );
    assert_eq!(
        up["messages"][0]["content"][0]["cache_control"]["type"],
        "ephemeral"
    );
}
