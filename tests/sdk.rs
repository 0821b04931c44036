//! The official `openai` and `anthropic` Python SDKs through the real gateway (venv made by .ci/run).

mod common;

use std::process::Command;

use common::*;

#[test]
fn official_sdks_work_by_changing_the_base_url() {
    let mock = MockProvider::start();
    let dir = tempfile::tempdir().unwrap();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.catalogue = Some(mock_catalogue(dir.path(), &mock.origin()));
    conf.keys = vec!["{id: sdk, env: SWITCHYARD_TEST_SDK_KEY}".into()];
    let mut gw = Gateway::start_with_env(conf, &[("SWITCHYARD_TEST_SDK_KEY", "sk-gw-sdk")]);
    let stdout = run_python(
        "sdk_passthrough.py",
        &gw,
        &[
            ("GATEWAY_KEY", "sk-gw-sdk"),
            ("MOCK_ORIGIN", &mock.origin()),
        ],
    );
    expect_lines(
        &stdout,
        &[
            "openai sdk, Helicone-Target-Url: ok",
            "openai sdk, /mock prefix: ok",
            "openai sdk, wrong key: ok",
            "anthropic sdk, /mock prefix: ok",
        ],
    );
    // what the provider saw: the client's own provider key, no gateway key, SDK paths verbatim
    let reqs = mock.state.requests.lock().unwrap().clone();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path_and_query.as_str()).collect();
    assert!(paths.contains(&"/v1/chat/completions"), "{paths:?}");
    assert!(paths.contains(&"/v1/messages"), "{paths:?}");
    for r in &reqs {
        assert!(r.header("helicone-auth").is_none());
        let key = r
            .header("authorization")
            .or(r.header("x-api-key"))
            .unwrap_or("");
        assert!(key.contains("provider-key"), "{key}");
        assert!(
            !r.headers.iter().any(|(_, v)| v.contains("sk-gw-sdk")),
            "gateway key leaked"
        );
        // the SDKs ask for gzip; the gateway asks the provider for an answer it can read
        assert_eq!(r.header("accept-encoding"), Some("identity"));
    }
    // every SDK call is logged with its usage: 2 x (JSON + stream), the refused key, Anthropic
    gw.stop();
    let recs = jsonl_records(gw.dir.path());
    assert_eq!(recs.len(), 6, "{recs:#?}");
    let openai: Vec<_> = recs
        .iter()
        .filter(|r| {
            r["path"].as_str().unwrap().ends_with("/chat/completions") && r["status"] == 200
        })
        .collect();
    assert_eq!(openai.len(), 4);
    for r in &openai {
        assert_eq!(
            (r["prompt_tokens"].as_u64(), r["completion_tokens"].as_u64()),
            (Some(5), Some(3)),
            "{r}"
        );
        assert!(r["cost_usd"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["key_id"], "sdk");
    }
    assert_eq!(openai.iter().filter(|r| r["stream"] == true).count(), 2);
    let refused: Vec<_> = recs.iter().filter(|r| r["status"] == 401).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["rejection"], "auth");
    let anthropic: Vec<_> = recs
        .iter()
        .filter(|r| r["path"] == "/mock/v1/messages")
        .collect();
    assert_eq!(anthropic.len(), 1);
    // Anthropic counts 5 fresh input tokens plus 2 cache reads
    assert_eq!(
        (
            anthropic[0]["prompt_tokens"].as_u64(),
            anthropic[0]["cached_tokens"].as_u64(),
            anthropic[0]["completion_tokens"].as_u64()
        ),
        (Some(7), Some(2), Some(3))
    );
}

#[test]
fn openai_sdk_survives_a_failing_primary_through_fallbacks() {
    let primary = MockProvider::failing(503);
    let secondary = MockProvider::start();
    let gw = Gateway::start(
        GatewayConf::default()
            .allow(&primary.origin())
            .allow(&secondary.origin()),
    );
    let stdout = run_python(
        "sdk_fallbacks.py",
        &gw,
        &[
            ("PRIMARY", &primary.origin()),
            ("SECONDARY", &secondary.origin()),
        ],
    );
    assert!(stdout.contains("openai sdk, fallbacks: ok"), "{stdout}");
    assert_eq!(primary.hits(), 2);
    assert_eq!(secondary.hits(), 2);
    assert_eq!(
        primary.last().header("authorization"),
        Some("Bearer sk-primary")
    );
    assert_eq!(
        secondary.last().header("authorization"),
        Some("Bearer sk-secondary")
    );
}

/// Every line of `lines` is in the script's output.
fn expect_lines(stdout: &str, lines: &[&str]) {
    for line in lines {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

/// Runs tests/python/`script` against `gw` (as `SWITCHYARD_URL`) with `env`; its stdout.
fn run_python(script: &str, gw: &Gateway, env: &[(&str, &str)]) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(python());
    cmd.arg(path)
        .env("SWITCHYARD_URL", gw.url(""))
        // LiteLLM would fetch its price list from the internet
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_openai_sdk_and_litellm_use_any_model_through_the_unified_api() {
    let openai = MockProvider::start();
    let anthropic = MockProvider::start();
    let together = MockProvider::failing(500);
    let gw = unified_gateway(
        &[
            ("openai", &openai),
            ("anthropic", &anthropic),
            ("together", &together),
        ],
        "",
        true,
    );
    let stdout = run_python("sdk_unified.py", &gw, &[("GATEWAY_KEY", UNIFIED_GW_KEY)]);
    expect_lines(
        &stdout,
        &[
            "openai model: ok",
            "claude model: ok",
            "claude stream: ok",
            "tool calls: ok",
            "fallthrough: ok",
            "all failed: ok",
            "unknown model: ok",
            "models and embeddings: ok",
        ],
    );
    let stdout = run_python(
        "litellm_unified.py",
        &gw,
        &[("GATEWAY_KEY", UNIFIED_GW_KEY)],
    );
    expect_lines(
        &stdout,
        &[
            "litellm claude: ok",
            "litellm gpt: ok",
            "litellm stream: ok",
            "litellm chain: ok",
        ],
    );
    // the providers saw the gateway's keys only
    for (mock, key) in [
        (&openai, "Bearer sk-test-openai"),
        (&together, "Bearer sk-test-together"),
    ] {
        for r in mock.state.requests.lock().unwrap().iter() {
            assert_eq!(r.header("authorization"), Some(key));
        }
    }
    for r in anthropic.state.requests.lock().unwrap().iter() {
        assert_eq!(r.header("x-api-key"), Some("sk-test-anthropic"));
        assert!(!r.headers.iter().any(|(_, v)| v.contains(UNIFIED_GW_KEY)));
    }
}

#[test]
fn the_openai_sdk_gets_repeats_from_the_cache() {
    let openai = MockProvider::start();
    let gw = unified_gateway(&[("openai", &openai)], "", true);
    let stdout = run_python("sdk_cache.py", &gw, &[("GATEWAY_KEY", UNIFIED_GW_KEY)]);
    expect_lines(
        &stdout,
        &[
            "cached chat: ok",
            "keys: ok",
            "cached stream: ok",
            "buckets: ok",
            "ttl: ok",
            "bad header: ok",
        ],
    );
    // chat, another body, a seed, one stream, two buckets, the TTL's two misses: repeats and
    // the refused header never reached the provider
    assert_eq!(openai.hits(), 8);
}

#[test]
fn the_openai_sdk_sees_per_user_limits_and_waits_out_retry_after() {
    let openai = MockProvider::start();
    let gw = unified_gateway(&[("openai", &openai)], "", true);
    let stdout = run_python(
        "sdk_rate_limits.py",
        &gw,
        &[("GATEWAY_KEY", UNIFIED_GW_KEY)],
    );
    expect_lines(
        &stdout,
        &[
            "per-user 429: ok",
            "segments: ok",
            "sdk retry after Retry-After: ok",
            "bad policy: ok",
        ],
    );
    // alice twice, bob, the patient client's two admitted calls; no refused call got through
    assert_eq!(openai.hits(), 5);
}

#[test]
fn the_openai_sdk_uses_prompt_templates_by_environment_and_version_and_sees_them_reload() {
    let openai = MockProvider::start();
    let (dir, gw) = prompt_gateway(&openai);
    let stdout = run_python(
        "sdk_prompts.py",
        &gw,
        &[
            ("GATEWAY_KEY", UNIFIED_GW_KEY),
            ("PROMPTS_DIR", dir.path().to_str().unwrap()),
        ],
    );
    expect_lines(
        &stdout,
        &[
            "production: ok",
            "environment: ok",
            "versions: ok",
            "messages and stream: ok",
            "list: ok",
            "reload: ok",
            "broken file keeps the old version: ok",
            "new prompt: ok",
            "bad inputs: ok",
        ],
    );
    // the provider saw rendered messages, never the prompt fields; refused requests never came
    let seen = openai.state.requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 9, "every admitted call, no refused one");
    let first: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        first["messages"],
        serde_json::json!([
            {"role": "system", "content": "You write for an on-call channel. Be concise."},
            {"role": "user", "content": "Summarise the 09:12 provider slowdown in 3 bullet points."}
        ])
    );
    assert_eq!(first["temperature"], 0.2, "the version's params");
    assert_eq!(first["max_tokens"], 300);
    for r in &seen {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        for f in ["prompt_id", "inputs", "environment", "version"] {
            assert!(v.get(f).is_none(), "{f} went upstream: {v}");
        }
    }
    let own: serde_json::Value = serde_json::from_slice(&seen[4].body).unwrap();
    assert_eq!(
        own["messages"][2]["content"], "Keep it under 50 words.",
        "the request's own messages follow"
    );
    // the log records carry the prompt and its version
    let records = jsonl_records(gw.dir.path());
    let mut versions: Vec<(String, u64)> = records
        .iter()
        .filter(|r| r["status"] == 200 && r["prompt_id"].is_string())
        .map(|r| {
            (
                r["prompt_id"].as_str().unwrap().to_string(),
                r["prompt_version"].as_u64().unwrap(),
            )
        })
        .collect();
    versions.sort();
    versions.dedup();
    assert_eq!(
        versions,
        [
            ("greeting".to_string(), 1),
            ("incident".to_string(), 1),
            ("incident".to_string(), 2),
            ("incident".to_string(), 3)
        ]
    );
    let m = metrics_with_sync(
        &gw,
        "switchyard_prompt_load_errors_total{prompt=\"incident\"}",
    );
    assert!(m.contains("switchyard_prompts_loaded 2"), "{m}");
}

/// The metrics text (blocking).
fn metrics_with_sync(gw: &Gateway, needle: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = rt.block_on(metrics_with(gw, &[needle]));
    assert!(text.contains(needle), "{needle} missing in:\n{text}");
    text
}

#[test]
fn the_openai_sdk_sends_helicone_metadata_in_extra_body_and_it_never_goes_upstream() {
    let openai = MockProvider::start();
    let gw = unified_gateway(&[("openai", &openai)], "", true);
    let stdout = run_python("sdk_metadata.py", &gw, &[("GATEWAY_KEY", UNIFIED_GW_KEY)]);
    expect_lines(&stdout, &["metadata: ok", "bad metadata: ok"]);
    // call, stream, bob's first: the bad one and bob's refused second never reached it
    let seen = openai.state.requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for r in &seen {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            v.get("helicone").is_none(),
            "the helicone key went upstream: {v}"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for label in ["call id: ", "stream id: "] {
        let id = stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label} in {stdout}"));
        let r = rt.block_on(logged_record(&gw, id));
        assert_eq!(r["user_id"], "alice", "{r}");
        assert_eq!(r["session_id"], "sess-42");
        assert_eq!(r["session_name"], "Support triage");
        assert_eq!(r["session_path"], "/triage/step-1");
        assert_eq!(
            r["properties"],
            serde_json::json!({"feature": "search", "tier": "2"})
        );
        assert!(
            !r["request_body"].to_string().contains("sess-42"),
            "the logged body is what went upstream: {r}"
        );
    }
}

#[test]
fn litellm_s_helicone_provider_and_the_openai_sdk_reach_the_completions_endpoint() {
    let openai = MockProvider::start();
    let anthropic = MockProvider::start();
    let gw = unified_gateway(&[("openai", &openai), ("anthropic", &anthropic)], "", true);
    let stdout = run_python(
        "litellm_completions.py",
        &gw,
        &[("GATEWAY_KEY", UNIFIED_GW_KEY)],
    );
    expect_lines(
        &stdout,
        &[
            "litellm text completion: ok",
            "litellm helicone text completion: ok",
            "openai completions: ok",
            "no completions endpoint: ok",
        ],
    );
    let seen = openai.state.requests.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|r| r.path_and_query.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/completions",
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/completions"
        ]
    );
    for r in seen
        .iter()
        .filter(|r| r.path_and_query == "/v1/completions")
    {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["prompt"], "Say hi", "{v}");
    }
    let chat: serde_json::Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(chat["messages"][0]["content"], "Say hi");
    assert_eq!(anthropic.hits(), 0);
}

/// The openai SDK stops reading at `data: [DONE]` and closes the connection, often before the
/// body's last chunk: the records must say the requests succeeded, with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_streams_closed_at_done_are_logged_without_error() {
    let mock = MockProvider::start();
    let conf = GatewayConf::default().allow(&mock.origin());
    let gw = Gateway::start(conf);
    let stdout = tokio::task::spawn_blocking({
        let (url, origin) = (gw.url(""), mock.origin());
        move || {
            let path = format!(
                "{}/tests/python/sdk_stream_close.py",
                env!("CARGO_MANIFEST_DIR")
            );
            let out = Command::new(python())
                .arg(path)
                .env("SWITCHYARD_URL", url)
                .env("MOCK_ORIGIN", origin)
                .env("STREAMS", "100")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "stdout:\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        }
    })
    .await
    .unwrap();
    expect_lines(&stdout, &["streams: 100 ok"]);
    let ids: Vec<String> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ids: "))
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let mut records = Vec::new();
    for id in &ids {
        records.push(logged_record(&gw, id).await);
    }
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r["status"] != 200 || !r["error"].is_null())
        .map(|r| format!("{} {} {}", r["id"], r["status"], r["error"]))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 100 complete streams logged as failed: {failed:?}",
        failed.len()
    );
    assert!(
        !gw.log().contains("Fail to proxy"),
        "a complete stream was logged as a proxy failure:\n{}",
        gw.log()
    );
}

/// The same, deterministic: a client that reads to `data: [DONE]` and hangs up while the
/// provider's body has not ended yet.
#[tokio::test]
async fn a_client_that_hangs_up_after_done_leaves_a_complete_record() {
    use std::io::{Read, Write};
    let mock = MockProvider::start();
    let conf = GatewayConf::default().allow(&mock.origin());
    let gw = Gateway::start(conf);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let addr = gw.url("").trim_start_matches("http://").to_string();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let body =
            r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        write!(
            s,
            "POST /v1/chat/completions?tail_ms=400 HTTP/1.1\r\nHost: a\r\nHelicone-Target-Url: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            mock.origin(),
            body.len()
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("data: [DONE]") {
            let n = s.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "closed before [DONE]: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).to_string();
        let id = text
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("helicone-id: ")
                    .map(|v| v.trim().to_string())
            })
            .unwrap();
        drop(s); // hang up while the body's last chunk is 400 ms away
        ids.push(id);
    }
    for id in &ids {
        let r = logged_record(&gw, id).await;
        assert_eq!(r["status"], 200, "{r}");
        assert!(
            r["error"].is_null(),
            "a complete stream logged with an error: {r}"
        );
        assert!(r["response_body"].to_string().contains("[DONE]"), "{r}");
    }
}
