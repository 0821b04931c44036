//! Export into a real ClickHouse (started by .ci/run on 127.0.0.1:8123) and to a webhook:
//! records with usage and cost, an outage survived through the spool with every record once.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn clickhouse_url() -> String {
    std::env::var("SWITCHYARD_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

async fn ch(query: &str) -> String {
    let r = client()
        .post(clickhouse_url())
        .body(query.to_string())
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "ClickHouse is not reachable at {} ({e}); `bash .ci/run` starts it",
                clickhouse_url()
            )
        });
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{query}: {text}");
    text.trim().to_string()
}

fn db_name() -> String {
    format!("sy_test_{}", &uuid_simple()[..12])
}

fn uuid_simple() -> String {
    sha256_hex(format!("{:?}{:?}", Instant::now(), std::thread::current().id()).as_bytes())
}

/// A TCP relay in front of ClickHouse that can refuse connections (an outage) and come back.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: &str) -> Relay {
        let port = free_port();
        let up = Arc::new(AtomicBool::new(true));
        let (u, target) = (up.clone(), target.trim_start_matches("http://").to_string());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                loop {
                    if !u.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                        .await
                        .unwrap();
                    let mut conns = vec![];
                    while u.load(Ordering::SeqCst) {
                        if let Ok(Ok((mut a, _))) =
                            tokio::time::timeout(Duration::from_millis(20), listener.accept()).await
                        {
                            let target = target.clone();
                            conns.push(tokio::spawn(async move {
                                if let Ok(mut b) = tokio::net::TcpStream::connect(target).await {
                                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                                }
                            }));
                        }
                    }
                    // down: stop listening (connections refused) and cut open connections
                    drop(listener);
                    for c in conns {
                        c.abort();
                    }
                }
            });
        });
        Relay { port, up }
    }
}

fn conf_with_clickhouse(mock: &MockProvider, url: &str, db: &str) -> GatewayConf {
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.extra = format!("export: {{batch_max_delay_ms: 100, clickhouse: {{url: '{url}', database: {db}, timeout_secs: 2}}}}\n");
    conf
}

#[tokio::test]
async fn records_land_in_clickhouse_with_usage_and_cost() {
    let mock = MockProvider::start();
    let db = db_name();
    let mut gw = Gateway::start(conf_with_clickhouse(&mock, &clickhouse_url(), &db));
    let n = 30;
    for i in 0..n {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("Helicone-Target-Url", mock.origin())
            .header("Helicone-Property-Run", format!("r{i}"))
            .header("Authorization", "Bearer sk-provider-secret-ch")
            .body(r#"{"model":"gpt-4o","messages":[]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    gw.stop();
    let count = ch(&format!("SELECT count() FROM {db}.requests FINAL")).await;
    assert_eq!(count, n.to_string(), "{}", gw.log());
    let row = ch(&format!(
        "SELECT sum(prompt_tokens), sum(completion_tokens), round(sum(cost_usd) * 1000000, 6), uniqExact(properties) FROM {db}.requests FINAL"
    ))
    .await;
    // gpt-4o: 5 prompt * 2.50 + 3 completion * 10.00 per million, 30 times
    assert_eq!(
        row,
        format!(
            "{}\t{}\t{}\t{n}",
            5 * n,
            3 * n,
            30.0 * (5.0 * 2.5 + 3.0 * 10.0)
        )
    );
    let leaked = ch(&format!("SELECT count() FROM {db}.requests WHERE position(request_body, 'sk-provider') > 0 OR position(attempts, 'sk-provider') > 0")).await;
    assert_eq!(leaked, "0");
    ch(&format!("DROP DATABASE {db}")).await;
}

#[tokio::test]
async fn a_thirty_second_outage_loses_and_duplicates_nothing() {
    let mock = MockProvider::start();
    let relay = Relay::start(&clickhouse_url());
    let db = db_name();
    let mut gw = Gateway::start(conf_with_clickhouse(
        &mock,
        &format!("http://127.0.0.1:{}", relay.port),
        &db,
    ));
    let url = gw.url("/v1/chat/completions");
    let origin = mock.origin();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let traffic = tokio::spawn(async move {
        let mut ids = vec![];
        while !s.load(Ordering::SeqCst) {
            let r = client()
                .post(&url)
                .header("Helicone-Target-Url", &origin)
                .body(r#"{"model":"gpt-4o-mini"}"#)
                .send()
                .await
                .unwrap();
            ids.push(r.headers()["helicone-id"].to_str().unwrap().to_string());
            r.bytes().await.unwrap();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        ids
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    relay.up.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let ids = traffic.await.unwrap();
    assert!(ids.len() > 300, "{}", ids.len());
    // the spool is replayed once the sink answers again
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut count = String::new();
    while Instant::now() < deadline {
        count = ch(&format!("SELECT count() FROM {db}.requests FINAL")).await;
        if count == ids.len().to_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    gw.stop();
    let stored: HashSet<String> = ch(&format!("SELECT id FROM {db}.requests FINAL"))
        .await
        .lines()
        .map(str::to_string)
        .collect();
    let want: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(
        count,
        ids.len().to_string(),
        "missing: {:?}",
        want.difference(&stored).take(5).collect::<Vec<_>>()
    );
    assert_eq!(stored, want);
    let metrics_spooled = gw.log().contains("spool") || gw.log().contains("still failing");
    assert!(metrics_spooled, "the outage was not noticed:\n{}", gw.log());
    ch(&format!("DROP DATABASE {db}")).await;
}

#[tokio::test]
async fn webhook_gets_json_batches_with_the_bearer_token() {
    let mock = MockProvider::start();
    let hook = MockProvider::start();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.extra = format!(
        "export: {{batch_max_delay_ms: 50, webhook: {{url: '{}/hooks/logs', token_env: SWITCHYARD_TEST_HOOK_TOKEN}}}}\n",
        hook.origin()
    );
    let mut gw = Gateway::start_with_env(conf, &[("SWITCHYARD_TEST_HOOK_TOKEN", "hook-secret")]);
    for _ in 0..5 {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("Helicone-Target-Url", mock.origin())
            .body(r#"{"model":"gpt-4o-mini"}"#)
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap();
    }
    gw.stop();
    let posts = hook.state.requests.lock().unwrap().clone();
    assert!(!posts.is_empty());
    let mut total = 0;
    for p in &posts {
        assert_eq!(p.path_and_query, "/hooks/logs");
        assert_eq!(p.header("authorization"), Some("Bearer hook-secret"));
        let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        assert!(v["batch_id"].as_str().is_some_and(|b| b.len() == 36));
        total += v["records"].as_array().unwrap().len();
    }
    assert_eq!(total, 5);
}
