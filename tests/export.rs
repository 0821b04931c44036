//! Request log export to JSONL: one record per client request of every kind, with usage, cost,
//! properties and privacy; nothing lost on SIGTERM; no credential in any line; every line read
//! by `jq`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;

fn records(gw: &Gateway) -> Vec<serde_json::Value> {
    jsonl_records(gw.dir.path())
}

fn raw_logs(gw: &Gateway) -> String {
    jsonl_text(gw.dir.path())
}

#[tokio::test]
async fn every_kind_of_request_gets_exactly_one_record() {
    let mock = MockProvider::start();
    let dir = tempfile::tempdir().unwrap();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.catalogue = Some(mock_catalogue(dir.path(), &mock.origin()));
    conf.keys = vec!["{id: team-a, env: SWITCHYARD_TEST_EXPORT_KEY}".into()];
    let closed_port = ClosedPort::new();
    let closed = closed_port.origin();
    conf = conf.allow(&closed);
    let unapproved = MockProvider::start();
    conf = conf.allow_unapproved(&unapproved.origin());
    conf.unapproved = "{policy: limit, per_second: 1, per_day: 1000}".into();
    let mut gw = Gateway::start_with_env(
        conf,
        &[("SWITCHYARD_TEST_EXPORT_KEY", "sk-gw-secret-export")],
    );
    let c = client();
    let auth = "Bearer sk-gw-secret-export";
    let mut ids: HashMap<&str, String> = HashMap::new();
    let id = |r: &reqwest::Response| r.headers()["helicone-id"].to_str().unwrap().to_string();

    // 1. proxied JSON with usage, properties, user and session
    let r = c
        .post(gw.url("/mock/v1/chat/completions"))
        .header("Helicone-Auth", auth)
        .header("Authorization", "Bearer sk-provider-secret-1")
        .header("Helicone-Property-Team", "search")
        .header("Helicone-User-Id", "user-7")
        .header("Helicone-Session-Id", "sess-1")
        .header("Helicone-Session-Path", "/a/b")
        .header("Helicone-Session-Name", "checkout")
        .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    ids.insert("json", id(&r));
    r.bytes().await.unwrap();
    // 2. streamed, usage asked for
    let r = c
        .post(gw.url("/mock/v1/chat/completions"))
        .header("Helicone-Auth", auth)
        .header("Authorization", "Bearer sk-provider-secret-1")
        .body(r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#)
        .send()
        .await
        .unwrap();
    ids.insert("stream", id(&r));
    r.bytes().await.unwrap();
    // 2a. a client that accepts gzip, as the SDKs do: the gateway asks for an uncompressed
    // answer so that it can read the usage (the mock compresses whenever it may)
    let r = c
        .post(gw.url("/mock/v1/chat/completions"))
        .header("Helicone-Auth", auth)
        .header("Accept-Encoding", "gzip, deflate")
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(mock.last().header("accept-encoding"), Some("identity"));
    ids.insert("gzip_client", id(&r));
    assert!(String::from_utf8_lossy(&r.bytes().await.unwrap()).contains("Hello from mock"));
    // 2b. streamed without usage: tokens are unknown, not guessed
    let r = c
        .post(gw.url("/mock/v1/chat/completions"))
        .header("Helicone-Auth", auth)
        .body(r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    ids.insert("stream_no_usage", id(&r));
    r.bytes().await.unwrap();
    // 2c. a model the pricing registry does not know: cost null, not 0
    let r = c
        .post(gw.url("/mock/v1/chat/completions"))
        .header("Helicone-Auth", auth)
        .body(r#"{"model":"mystery-model-1","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    ids.insert("unpriced", id(&r));
    r.bytes().await.unwrap();
    // 2d. rejected by the unapproved-origin quota (1 per second): the first passes, the second not
    for k in ["quota_ok", "quota"] {
        let r = c
            .post(gw.url("/v1/embeddings"))
            .header("Helicone-Auth", auth)
            .header("Helicone-Target-Url", unapproved.origin())
            .body(r#"{"model":"text-embedding-3-small","input":"x"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), if k == "quota" { 429 } else { 200 });
        ids.insert(k, id(&r));
        r.bytes().await.unwrap();
    }
    // 3. rejected: no gateway key
    let r = c
        .post(gw.url("/mock/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    ids.insert("auth", id(&r));
    // 4. rejected: SSRF
    let r = c
        .post(gw.url("/x"))
        .header("Helicone-Auth", auth)
        .header("Helicone-Target-Url", "http://127.0.0.2:9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    ids.insert("ssrf", id(&r));
    // 5. failed upstream
    let r = c
        .post(gw.url("/x"))
        .header("Helicone-Auth", auth)
        .header("Helicone-Target-Url", &closed)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    ids.insert("failed", id(&r));
    // 6. omitted bodies
    let r = c
        .post(gw.url("/mock/v1/chat/completions"))
        .header("Helicone-Auth", auth)
        .header("Helicone-Omit-Request", "true")
        .header("Helicone-Omit-Response", "true")
        .body(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"private prompt"}]}"#)
        .send()
        .await
        .unwrap();
    ids.insert("omit", id(&r));
    r.bytes().await.unwrap();
    // 7. client gone mid-stream
    let r = c
        .get(gw.url("/sse?n=50&ms=50"))
        .header("Helicone-Auth", auth)
        .header("Helicone-Target-Url", mock.origin())
        .send()
        .await
        .unwrap();
    ids.insert("disconnect", id(&r));
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    drop(s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // health probes are not requests through the gateway
    c.get(gw.url("/healthz")).send().await.unwrap();

    // what was logged is also counted: tokens by provider/model/type, cost, TTFT, unpriced,
    // and the exporter's own batches
    let m = metrics_with(
        &gw,
        &[
            r#"switchyard_export_batches_total{outcome="sent",sink="jsonl"}"#,
            "switchyard_unpriced_requests_total{model=\"other\",provider=\"mock\"} 1",
        ],
    )
    .await;
    for line in [
        // json, stream with usage and gzip client, 5 prompt tokens each; the stream without
        // usage adds nothing
        r#"switchyard_tokens_total{model="gpt-4o-mini",provider="mock",type="prompt"} 15"#,
        r#"switchyard_tokens_total{model="gpt-4o-mini",provider="mock",type="completion"} 9"#,
        r#"switchyard_tokens_total{model="gpt-4o",provider="mock",type="prompt"} 5"#,
        r#"switchyard_unpriced_requests_total{model="other",provider="mock"} 1"#,
        r#"switchyard_time_to_first_token_seconds_count{provider="mock"} 2"#,
        "switchyard_export_queue_depth 0",
        "switchyard_export_records_dropped_total 0",
    ] {
        assert!(m.contains(line), "missing {line} in\n{m}");
    }
    let cost: f64 = m
        .lines()
        .find(|l| {
            l.starts_with(r#"switchyard_cost_usd_total{model="gpt-4o-mini",provider="mock"}"#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no gpt-4o-mini cost in\n{m}"));
    assert!(
        (cost - 3.0 * (5.0 * 0.15 + 3.0 * 0.60) / 1e6).abs() < 1e-12,
        "{cost}"
    );

    gw.stop();
    let recs = records(&gw);
    assert_eq!(recs.len(), ids.len(), "{recs:#?}");
    let by_id: HashMap<String, &serde_json::Value> = recs
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect();
    let get = |k: &str| {
        *by_id
            .get(&ids[k])
            .unwrap_or_else(|| panic!("no record for {k}"))
    };

    let r = get("json");
    assert_eq!(r["status"], 200);
    assert_eq!(r["key_id"], "team-a");
    assert_eq!(r["provider"], "mock");
    assert_eq!(r["model_requested"], "gpt-4o-mini");
    assert_eq!(
        (r["prompt_tokens"].as_u64(), r["completion_tokens"].as_u64()),
        (Some(5), Some(3))
    );
    let cost = r["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (5.0 * 0.15 + 3.0 * 0.60) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert_eq!(r["properties"]["team"], "search");
    assert_eq!(r["user_id"], "user-7");
    assert_eq!(
        (
            r["session_id"].as_str(),
            r["session_path"].as_str(),
            r["session_name"].as_str()
        ),
        (Some("sess-1"), Some("/a/b"), Some("checkout"))
    );
    // complete JSON bodies are embedded as JSON
    assert_eq!(r["request_body"]["kind"], "json");
    assert_eq!(r["request_body"]["json"]["messages"][0]["content"], "hi");
    assert_eq!(r["response_body"]["kind"], "json");
    assert_eq!(
        r["response_body"]["json"]["choices"][0]["message"]["content"],
        "Hello from mock"
    );
    assert_eq!(r["attempts"].as_array().unwrap().len(), 1);
    assert!(r["latency_ms"].is_u64());

    let r = get("stream");
    assert_eq!(r["stream"], true);
    // an SSE body is not one JSON document: kept as text
    assert_eq!(r["response_body"]["kind"], "text");
    assert!(r["response_body"]["text"]
        .as_str()
        .unwrap()
        .contains("data: "));
    assert_eq!(
        (r["prompt_tokens"].as_u64(), r["completion_tokens"].as_u64()),
        (Some(5), Some(3))
    );
    assert!(r["ttft_ms"].is_u64());
    assert!(r["cost_usd"].as_f64().unwrap() > 0.0);
    let r = get("stream_no_usage");
    assert_eq!(r["stream"], true);
    assert!(r["ttft_ms"].is_u64(), "{r}");
    assert_eq!(
        (&r["prompt_tokens"], &r["completion_tokens"], &r["cost_usd"]),
        (
            &serde_json::Value::Null,
            &serde_json::Value::Null,
            &serde_json::Value::Null
        ),
        "tokens not reported must stay unknown: {r}"
    );
    let r = get("gzip_client");
    assert_eq!(
        (r["prompt_tokens"].as_u64(), r["completion_tokens"].as_u64()),
        (Some(5), Some(3))
    );
    assert_eq!(r["response_body"]["kind"], "json");
    let r = get("unpriced");
    assert_eq!(r["prompt_tokens"], 5);
    assert_eq!(r["model_responded"], "mystery-model-1");
    assert_eq!(r["cost_usd"], serde_json::Value::Null, "{r}");
    assert_eq!(r["cost_status"], "unpriced", "never a silent $0: {r}");
    assert_eq!(get("quota_ok")["status"], 200);
    assert_eq!(get("quota_ok")["provider"], serde_json::Value::Null);
    assert_eq!(get("quota_ok")["target"], unapproved.origin());
    assert_eq!(
        (
            get("quota")["status"].as_u64(),
            get("quota")["rejection"].as_str()
        ),
        (Some(429), Some("quota"))
    );

    assert_eq!(
        (
            get("auth")["status"].as_u64(),
            get("auth")["rejection"].as_str()
        ),
        (Some(401), Some("auth"))
    );
    assert_eq!(get("auth")["key_id"], serde_json::Value::Null);
    assert_eq!(
        (
            get("ssrf")["status"].as_u64(),
            get("ssrf")["rejection"].as_str()
        ),
        (Some(403), Some("ssrf"))
    );
    let f = get("failed");
    assert_eq!(f["status"], 502);
    assert_eq!(f["attempts"][0]["status"], 502);
    assert!(f["attempts"][0]["error"].as_str().unwrap().len() > 3);
    let o = get("omit");
    assert_eq!(o["request_body"]["kind"], "omitted");
    assert_eq!(o["response_body"]["kind"], "omitted");
    assert_eq!(
        o["prompt_tokens"], 5,
        "usage is still recorded when bodies are omitted"
    );
    let d = get("disconnect");
    assert_eq!(d["status"], 200);
    assert!(
        d["error"].as_str().unwrap_or("").contains("Downstream"),
        "{d}"
    );

    let raw = raw_logs(&gw);
    for secret in [
        "sk-gw-secret-export",
        "sk-provider-secret-1",
        "private prompt",
    ] {
        assert!(!raw.contains(secret), "{secret} found in the JSONL output");
        assert!(
            !gw.log().contains(secret),
            "{secret} found in the gateway's log"
        );
    }
}

#[tokio::test]
async fn sigterm_mid_load_loses_no_record() {
    let mock = MockProvider::start();
    let mut gw = Gateway::start(GatewayConf::default().allow(&mock.origin()));
    let url = gw.url("/v1/chat/completions");
    let origin = mock.origin();
    let mut tasks = vec![];
    for _ in 0..4 {
        let (url, origin) = (url.clone(), origin.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut answered = vec![];
            for _ in 0..2000 {
                match c
                    .post(&url)
                    .header("Helicone-Target-Url", &origin)
                    .body(r#"{"model":"gpt-4o-mini"}"#)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let id = r
                            .headers()
                            .get("helicone-id")
                            .map(|v| v.to_str().unwrap().to_string());
                        if r.bytes().await.is_ok() {
                            answered.extend(id);
                        }
                    }
                    Err(_) => break,
                }
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    gw.signal("TERM");
    let mut answered = vec![];
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    assert!(gw.wait_exit(Duration::from_secs(15)));
    assert!(
        answered.len() > 50,
        "only {} requests answered",
        answered.len()
    );
    let recs = records(&gw);
    let logged: std::collections::HashSet<String> = recs
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<_> = answered.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no record",
        missing.len(),
        answered.len()
    );
    assert_eq!(logged.len(), recs.len(), "duplicate records");
}

/// Bodies above `export.max_body_bytes` are cut with a marker and their full size.
#[tokio::test]
async fn large_bodies_are_truncated_with_a_marker() {
    let mock = MockProvider::start();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.extra = "export: {max_body_bytes: 100}\n".into();
    let mut gw = Gateway::start(conf);
    let prompt = "x".repeat(5000);
    let body =
        format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{prompt}"}}]}}"#);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("Helicone-Target-Url", mock.origin())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let answer = r.bytes().await.unwrap();
    gw.stop();
    let recs = records(&gw);
    assert_eq!(recs.len(), 1);
    let rq = &recs[0]["request_body"];
    assert_eq!(rq["truncated"], true);
    assert_eq!(rq["bytes"], body.len());
    assert_eq!(rq["text"].as_str().unwrap(), &body[..100]);
    let rs = &recs[0]["response_body"];
    assert_eq!(rs["truncated"], true);
    assert_eq!(rs["bytes"], answer.len());
    assert_eq!(rs["text"].as_str().unwrap().len(), 100);
    assert_eq!(recs[0]["request_bytes"], body.len());
    assert_eq!(
        recs[0]["prompt_tokens"], 5,
        "usage still comes from the whole response"
    );
}

/// SIGINT (fast shutdown: no grace period, runtimes stopped at once) with every record still in
/// the queue: the exporter's last-chance flush writes them all.
#[tokio::test]
async fn fast_shutdown_with_a_full_queue_loses_no_record() {
    let mock = MockProvider::start();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    // nothing would be written for ten minutes: only the exit path can save these records
    conf.extra =
        "export: {batch_max_delay_ms: 600000, batch_max_records: 100000, batch_max_bytes: 1000000000}\n"
            .into();
    let mut gw = Gateway::start(conf);
    let mut ids = std::collections::HashSet::new();
    ids.extend(send_chats(&gw, &mock.origin(), 300).await);
    // the records are queued, none written yet
    let m = metrics_with(&gw, &["switchyard_export_queue_depth 300"]).await;
    assert!(m.contains("switchyard_export_queue_depth 300"), "{m}");
    assert!(records(&gw).is_empty());
    gw.signal("INT");
    assert!(gw.wait_exit(Duration::from_secs(10)));
    let logged: std::collections::HashSet<String> = records(&gw)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(logged, ids, "{}", gw.log());
}

/// `pricing:` points at the operator's own registry: its prices are what records cost.
#[tokio::test]
async fn an_own_pricing_file_sets_the_cost() {
    let mock = MockProvider::start();
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models.yaml");
    std::fs::write(
        &models,
        "as_of: 2026-12-01\nmodels:\n  - {provider: openai, model: gpt-4o-mini, input: 1000, output: 0}\n",
    )
    .unwrap();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.extra = format!("pricing: '{}'\n", models.display());
    let mut gw = Gateway::start(conf);
    let r = post_target(
        &gw,
        "/v1/chat/completions",
        &mock.origin(),
        r#"{"model":"gpt-4o-mini-2024-07-18"}"#,
    )
    .await;
    r.bytes().await.unwrap();
    gw.stop();
    let recs = records(&gw);
    // 5 prompt tokens at $1000 per million; the dated variant matches its base model
    assert_eq!(recs[0]["cost_usd"].as_f64(), Some(0.005), "{:?}", recs[0]);
    assert!(gw.log().contains("as of 2026-12-01"), "{}", gw.log());
}

/// An upstream on 127.0.0.1 that answers every request with its body, as JSON; its origin.
fn echo_upstream() -> String {
    use http_body_util::{BodyExt, Full};
    let addr = serve(|req: hyper::Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Ok::<_, std::convert::Infallible>(
            hyper::Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(body))
                .unwrap(),
        )
    });
    format!("http://{addr}")
}

/// Bodies that the gateway's own (skipping) JSON parses accept but a strict reader refuses, such
/// as a lone surrogate escape, are logged as text: `jq` reads every line of the file, and each
/// body comes back as it was sent (invalid UTF-8 replaced by U+FFFD).
#[tokio::test]
async fn logged_bodies_are_read_by_jq_and_come_back_as_sent() {
    let echo = echo_upstream();
    let mut gw = Gateway::start(GatewayConf::default().allow(&echo));
    // (body, embedded as JSON)
    let bodies: [(&[u8], bool); 6] = [
        (
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"\ud800"}]}"#,
            false,
        ),
        (
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"a\udc00b"}]}"#,
            false,
        ),
        (br#"{"model":"gpt-4o","messages":[{"\ud83d":"x"}]}"#, false),
        (
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"\ud83d\ude00"}]}"#,
            true,
        ),
        (
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"\\ud800"}]}"#,
            true,
        ),
        (
            b"{\"model\":\"gpt-4o\",\"messages\":[{\"content\":\"\xff\xfe\"}]}",
            false,
        ),
    ];
    let mut ids = Vec::new();
    for (body, _) in &bodies {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("Helicone-Target-Url", &echo)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push(r.headers()["helicone-id"].to_str().unwrap().to_string());
        assert_eq!(&r.bytes().await.unwrap()[..], *body, "echoed");
    }
    gw.stop();
    // jq reads the whole file (it stopped at the first lone surrogate before)
    let files: Vec<_> = std::fs::read_dir(gw.dir.path().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let out = std::process::Command::new("jq")
        .arg("-c")
        .arg("{id, request_body, response_body}")
        .args(&files)
        .output()
        .expect("jq (apt package jq) runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "jq failed: {stderr}");
    let read: Vec<serde_json::Value> = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(read.len(), bodies.len(), "jq read every record: {stderr}");
    for ((body, as_json), id) in bodies.iter().zip(&ids) {
        let r = read.iter().find(|r| r["id"] == id.as_str()).unwrap();
        for which in ["request_body", "response_body"] {
            let b = &r[which];
            if *as_json {
                assert_eq!(
                    b["kind"],
                    "json",
                    "{which} of {}",
                    String::from_utf8_lossy(body)
                );
                let sent: serde_json::Value = serde_json::from_slice(body).unwrap();
                assert_eq!(b["json"], sent, "{which}");
            } else {
                assert_eq!(
                    b["kind"],
                    "text",
                    "{which} of {}",
                    String::from_utf8_lossy(body)
                );
                assert_eq!(b["text"], *String::from_utf8_lossy(body), "{which}");
            }
            assert_eq!(b["bytes"], body.len());
        }
    }
}

/// The gateway process is still running.
fn alive(gw: &mut Gateway) -> bool {
    !gw.wait_exit(Duration::from_millis(100))
}

/// A webhook whose host never resolves (the `.invalid` TLD): the lookup failure is a retryable
/// sink error (the batches wait in the webhook's spool), never a panic of the export service, so
/// JSONL keeps getting every record and the process stays up.
#[tokio::test]
async fn a_sink_host_that_does_not_resolve_stops_no_other_sink() {
    let mock = MockProvider::start();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.extra = "export: {batch_max_delay_ms: 50, webhook: {url: 'http://nonexistent.invalid:9/ingest', timeout_secs: 1}}\n".into();
    let mut gw = Gateway::start(conf);
    let mut ids = send_chats(&gw, &mock.origin(), 5).await;
    let spooled = r#"switchyard_export_batches_total{outcome="spooled",sink="webhook"}"#;
    let m = metrics_with(&gw, &[spooled]).await;
    assert!(m.contains(spooled), "{m}\n{}", gw.log());
    // the export service is still there: later requests are logged too
    ids.extend(send_chats(&gw, &mock.origin(), 5).await);
    let all = r#"switchyard_export_records_total{sink="jsonl"} 10"#;
    let m = metrics_with(&gw, &[all]).await;
    assert!(m.contains(all), "{m}\n{}", gw.log());
    assert!(
        m.contains(r#"switchyard_export_batches_total{outcome="failed",sink="webhook"}"#),
        "{m}"
    );
    assert!(alive(&mut gw), "the gateway exited:\n{}", gw.log());
    gw.stop();
    let logged: std::collections::HashSet<String> = record_ids(&records(&gw)).into_iter().collect();
    assert_eq!(logged, ids.into_iter().collect());
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("DNS lookup of nonexistent.invalid failed")
                && l.contains("(retryable)")),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    let spool = gw.dir.path().join("state/spool/webhook");
    let spooled = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert!(
        spooled > 0,
        "nothing spooled in {}:\n{log}",
        spool.display()
    );
}

/// A webhook on 127.0.0.1 that answers 400 to a batch containing `marker` and 200 to any
/// other, and keeps every body it gets.
struct PickyHook {
    addr: std::net::SocketAddr,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl PickyHook {
    fn start(marker: &'static str) -> PickyHook {
        use http_body_util::BodyExt;
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let addr = serve(move |req: hyper::Request<hyper::body::Incoming>| {
            let kept = kept.clone();
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let text = String::from_utf8_lossy(&body).into_owned();
                let bad = text.contains(marker);
                kept.lock().unwrap().push(text);
                let (status, answer) = if bad {
                    (400, "record 0: field 'request_body' is not accepted")
                } else {
                    (200, "ok")
                };
                Ok::<_, std::convert::Infallible>(
                    hyper::Response::builder()
                        .status(status)
                        .body(http_body_util::Full::new(bytes::Bytes::from(answer)))
                        .unwrap(),
                )
            }
        });
        PickyHook { addr, bodies }
    }

    fn url(&self) -> String {
        format!("http://{}/ingest", self.addr)
    }

    /// Record ids in the batches it accepted (200).
    fn accepted_ids(&self, marker: &str) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| !b.contains(marker))
            .flat_map(|b| {
                let v: serde_json::Value = serde_json::from_str(b).unwrap();
                record_ids(v["records"].as_array().unwrap())
            })
            .collect()
    }

    fn posts_with(&self, marker: &str) -> usize {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.contains(marker))
            .count()
    }
}

/// The dead-letter files of `sink` under the state directory: (batch payloads, reasons).
fn dead_letters(state: &std::path::Path, sink: &str) -> (Vec<String>, Vec<serde_json::Value>) {
    let dir = state.join("dead-letter").join(sink);
    let mut batches = vec![];
    let mut reasons = vec![];
    for e in std::fs::read_dir(&dir).into_iter().flatten() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".reason.json") {
            reasons.push(serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap());
        } else if name.ends_with(".batch") {
            batches.push(std::fs::read_to_string(&p).unwrap());
        }
    }
    (batches, reasons)
}

const POISON: &str = "POISON-ROW-7f3a";

async fn send_poison(gw: &Gateway, target: &str) -> String {
    let r = post_target(
        gw,
        "/v1/chat/completions",
        target,
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"POISON-ROW-7f3a"}]}"#,
    )
    .await;
    let id = r.headers()["helicone-id"].to_str().unwrap().to_string();
    r.bytes().await.unwrap();
    id
}

/// A batch the webhook refuses with a 400 is not retried: it goes to the dead-letter directory
/// with its reason, is counted and logged, and the batches after it are delivered.
#[tokio::test]
async fn a_batch_the_sink_rejects_is_dead_lettered_and_blocks_nothing() {
    let mock = MockProvider::start();
    let hook = PickyHook::start(POISON);
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.extra = format!(
        "export: {{batch_max_delay_ms: 50, webhook: {{url: '{}', timeout_secs: 2}}}}\n",
        hook.url()
    );
    let mut gw = Gateway::start(conf);
    let poisoned = send_poison(&gw, &mock.origin()).await;
    let dead = r#"switchyard_export_dead_letter_batches_total{sink="webhook"} 1"#;
    let m = metrics_with(&gw, &[dead]).await;
    assert!(m.contains(dead), "{m}\n{}", gw.log());
    // later requests flow to the webhook
    let ids = send_chats(&gw, &mock.origin(), 3).await;
    let t0 = std::time::Instant::now();
    while hook.accepted_ids(POISON).len() < ids.len() && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = metrics_with(&gw, &[]).await;
    gw.stop();
    assert_eq!(hook.accepted_ids(POISON), ids, "{}", gw.log());
    assert_eq!(
        hook.posts_with(POISON),
        1,
        "a rejected batch is not retried"
    );
    for line in [
        dead,
        r#"switchyard_export_dead_letter_records_total{sink="webhook"} 1"#,
        r#"switchyard_export_spool_bytes{sink="webhook"} 0"#,
        "switchyard_export_records_dropped_total 0",
    ] {
        assert!(m.contains(line), "missing {line} in\n{m}");
    }
    let (batches, reasons) = dead_letters(&gw.dir.path().join("state"), "webhook");
    assert_eq!(batches.len(), 1);
    let batch: serde_json::Value = serde_json::from_str(&batches[0]).unwrap();
    assert_eq!(record_ids(batch["records"].as_array().unwrap()), [poisoned]);
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0]["status"], 400);
    assert_eq!(reasons[0]["records"], 1);
    assert!(
        reasons[0]["message"]
            .as_str()
            .unwrap()
            .contains("field 'request_body' is not accepted"),
        "{}",
        reasons[0]
    );
    assert!(reasons[0]["time"].as_str().is_some());
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("webhook rejected a batch of 1 log records")),
        "{log}"
    );
}

/// A refused batch that waited in the spool (the webhook was down when it was cut) is
/// dead-lettered on replay, and the spooled batches behind it are delivered.
#[tokio::test]
async fn a_spooled_batch_the_sink_rejects_is_dead_lettered_on_replay() {
    let mock = MockProvider::start();
    let down = ClosedPort::new();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.extra = format!(
        "export: {{batch_max_delay_ms: 50, webhook: {{url: '{}/ingest', timeout_secs: 1}}}}\n",
        down.origin()
    );
    let mut first = Gateway::start(conf.clone());
    let mut ids = send_chats(&first, &mock.origin(), 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let poisoned = send_poison(&first, &mock.origin()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ids.extend(send_chats(&first, &mock.origin(), 2).await);
    first.stop();
    assert!(
        std::fs::read_dir(first.dir.path().join("state/spool/webhook"))
            .unwrap()
            .count()
            >= 3,
        "{}",
        first.log()
    );
    // back with an endpoint that refuses the poisoned batch
    let hook = PickyHook::start(POISON);
    let mut conf2 = conf;
    conf2.state_dir = Some(first.dir.path().join("state"));
    conf2.extra = format!(
        "export: {{batch_max_delay_ms: 50, webhook: {{url: '{}', timeout_secs: 1}}}}\n",
        hook.url()
    );
    let mut gw = Gateway::start(conf2);
    let t0 = std::time::Instant::now();
    while hook.accepted_ids(POISON).len() < ids.len() && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = metrics_with(
        &gw,
        &[r#"switchyard_export_dead_letter_batches_total{sink="webhook"} 1"#],
    )
    .await;
    gw.stop();
    let mut got = hook.accepted_ids(POISON);
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "{}", gw.log());
    assert!(
        m.contains(r#"switchyard_export_dead_letter_batches_total{sink="webhook"} 1"#),
        "{m}"
    );
    let (batches, reasons) = dead_letters(gw.conf.state_dir.as_ref().unwrap(), "webhook");
    assert_eq!(batches.len(), 1, "{}", gw.log());
    assert!(batches[0].contains(&poisoned));
    assert_eq!(reasons[0]["status"], 400);
}

/// The `*.jsonl` files under `dir/logs`, by name, with the records of each (every line must
/// parse: a torn or glued line fails here).
fn jsonl_files(dir: &std::path::Path) -> Vec<(String, Vec<serde_json::Value>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.ends_with('\n'), "{} ends in a torn line", p.display());
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                json_lines(&text),
            )
        })
        .collect()
}

/// Issue 15: a `kill -9` in the middle of a batch leaves the day's file ending in a torn line
/// (here a record cut inside its 30 KB body). The next start cuts it off, keeps it in
/// `<file>.torn`, counts and logs it, and its own records start on lines of their own.
#[tokio::test]
async fn a_torn_last_line_is_cut_off_saved_and_counted_on_the_next_start() {
    let mock = MockProvider::start();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.extra = "export: {batch_max_delay_ms: 50}\n".into();
    let mut gw = Gateway::start(conf);
    let mut ids = send_chats(&gw, &mock.origin(), 3).await;
    gw.stop();
    let files = jsonl_files(gw.dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let day_file = gw.dir.path().join("logs").join(&files[0].0);
    let torn = format!(
        r#"{{"id":"torn-by-kill-9","request_body":"{}"#,
        "x".repeat(30 * 1024)
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&day_file)
        .unwrap();
    std::io::Write::write_all(&mut f, torn.as_bytes()).unwrap();
    drop(f);

    let mut gw = gw.restart();
    ids.extend(send_chats(&gw, &mock.origin(), 3).await);
    let m = metrics_with(&gw, &["switchyard_export_jsonl_repairs_total 1"]).await;
    gw.stop();
    // every line of every file is a record; each request's exactly once
    let logged: Vec<String> = jsonl_files(gw.dir.path())
        .iter()
        .flat_map(|(_, recs)| record_ids(recs))
        .collect();
    assert_eq!(logged, ids);
    // the fragment is kept, whole, and the cut is logged with its size
    let saved = std::fs::read_to_string(format!("{}.torn", day_file.display())).unwrap();
    assert_eq!(saved, format!("{torn}\n"));
    assert!(m.contains("switchyard_export_jsonl_repairs_total 1"), "{m}");
    let log = gw.log();
    assert!(
        log.contains("WARN") && log.contains(&format!("last {} bytes", torn.len())),
        "{log}"
    );
}
