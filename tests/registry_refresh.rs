//! `pricing.refresh`: a registry file fetched on a timer is swapped in without a restart (prices
//! and routes together), and a broken fetch keeps the last good registry.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// A registry server on 127.0.0.1 that serves whatever `body` holds now.
fn registry_server(body: Arc<Mutex<String>>) -> String {
    let addr = serve(move |_req: hyper::Request<hyper::body::Incoming>| {
        let body = body.clone();
        async move {
            let text = body.lock().unwrap().clone();
            Ok::<_, std::convert::Infallible>(
                hyper::Response::builder()
                    .header("content-type", "application/yaml")
                    .body(http_body_util::Full::new(bytes::Bytes::from(text)))
                    .unwrap(),
            )
        }
    });
    format!("http://{addr}/registry.yaml")
}

fn registry(price: f64) -> String {
    format!(
        "as_of: 2026-12-07\nmodels:\n- {{ provider: openai, model: gpt-4o-mini, input: {price}, output: {price} }}\n- {{ provider: openai, model: refreshed-model, id: refreshed-1, input: 1, output: 1 }}\n"
    )
}

/// Sends one gpt-4o-mini chat (the mock reports 5 prompt + 3 completion tokens); its cost.
async fn cost(gw: &Gateway, model: &str) -> (u16, Option<f64>) {
    let a = post_with(
        gw,
        "/v1/chat/completions",
        &format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#),
        &[("content-type", "application/json")],
        &[],
    )
    .await;
    if a.status != 200 {
        return (a.status, None);
    }
    let rec = logged_record(gw, &a.id()).await;
    (a.status, rec["cost_usd"].as_f64())
}

async fn refreshes(gw: &Gateway, result: &str, n: u32) {
    let needle = format!("switchyard_registry_refresh_total{{result=\"{result}\"}} {n}");
    let m = metrics_with(gw, &[&needle]).await;
    assert!(
        m.contains(&needle),
        "waiting for {needle}:\n{m}\n{}",
        gw.log()
    );
}

#[tokio::test]
async fn a_refreshed_registry_is_swapped_in_and_a_broken_one_keeps_the_last_good() {
    let openai = MockProvider::start();
    let body = Arc::new(Mutex::new(registry(1000.0)));
    let url = registry_server(body.clone());
    let gw = unified_gateway_with(
        &[("openai", &openai)],
        "",
        false,
        &format!("pricing: {{refresh: {{url: '{url}', interval_secs: 1}}}}\n"),
    );
    // the first fetch at start-up: 8 tokens at $1000 per million
    refreshes(&gw, "ok", 1).await;
    let (status, c) = cost(&gw, "gpt-4o-mini").await;
    assert_eq!(status, 200);
    assert!((c.unwrap() - 8000.0 / 1e6).abs() < 1e-12, "{c:?}");
    // a model only the fetched file knows is routed, with its id
    let (status, _) = cost(&gw, "refreshed-model").await;
    assert_eq!(status, 200);
    assert!(openai.last().body.windows(11).any(|w| w == b"refreshed-1"));
    let m = metrics_with(&gw, &["switchyard_registry_as_of_timestamp_seconds"]).await;
    assert!(
        m.contains("switchyard_registry_as_of_timestamp_seconds 1796601600"),
        "{m}"
    );

    // a broken file: errors counted, the last good registry stays
    *body.lock().unwrap() = "models: [ {provider: openai, model: gpt-4o-mini, input: -5".into();
    refreshes(&gw, "error", 1).await;
    let (_, c) = cost(&gw, "gpt-4o-mini").await;
    assert!(
        (c.unwrap() - 8000.0 / 1e6).abs() < 1e-12,
        "kept the last good: {c:?}"
    );
    assert!(
        gw.log().contains("the registry in force stays"),
        "{}",
        gw.log()
    );

    // a new good file: swapped in without a restart
    *body.lock().unwrap() = registry(2000.0);
    let mut last = None;
    for _ in 0..40 {
        let (_, c) = cost(&gw, "gpt-4o-mini").await;
        last = c;
        if c.is_some_and(|c| (c - 16000.0 / 1e6).abs() < 1e-12) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        last.is_some_and(|c| (c - 16000.0 / 1e6).abs() < 1e-12),
        "the new price never came: {last:?}"
    );
}

#[tokio::test]
async fn a_refresh_url_over_plain_http_to_a_remote_host_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.yaml");
    std::fs::write(
        &conf,
        "listeners: [{address: '127.0.0.1:1'}]\npricing: {refresh: {url: 'http://prices.example.com/r.yaml'}}\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["-t", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("pricing.refresh.url") && err.contains("https"),
        "{err}"
    );
}
