//! Export into a real ClickHouse (started by .ci/run on 127.0.0.1:8123, or one of the test's
//! own that it kills and restarts) and to a webhook: records with usage and cost, an outage
//! survived through the spool with every record once, sinks that hold up no other.

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

/// A ClickHouse server of the test's own (same binary and config as the shared one, its own
/// ports and data directory), so that it can be stopped and started again without disturbing
/// the other tests.
struct OwnClickHouse {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnClickHouse {
    fn start() -> OwnClickHouse {
        let mut ch = OwnClickHouse {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
        };
        ch.up();
        ch
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server on the same data directory and waits until it answers.
    fn up(&mut self) {
        let d = self.dir.path().display().to_string();
        let child = std::process::Command::new("clickhouse-server")
            .arg("--config-file=/etc/clickhouse-server/config.xml")
            .arg("--")
            .arg(format!("--http_port={}", self.port))
            .arg(format!("--tcp_port={}", free_port()))
            .arg(format!("--interserver_http_port={}", free_port()))
            .arg("--listen_host=127.0.0.1")
            .arg(format!("--path={d}/data/"))
            .arg(format!("--tmp_path={d}/tmp/"))
            .arg(format!("--user_files_path={d}/user_files/"))
            .arg(format!("--format_schema_path={d}/format_schemas/"))
            .arg(format!("--logger.log={d}/server.log"))
            .arg(format!("--logger.errorlog={d}/server.err.log"))
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("clickhouse-server is not installed: `bash .ci/run` installs it");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("own ClickHouse did not start on {}", self.port);
    }

    /// Kills the server outright (an outage mid-insert) and waits until it is gone.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn ch_at(url: &str, query: &str) -> String {
    let r = client()
        .post(url)
        .body(query.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{query}: {text}");
    text.trim().to_string()
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

/// ClickHouse killed for 30 s under steady traffic, then started again: every record arrives,
/// exactly once (batches replayed from the spool; `FINAL` folds a replay whose first insert
/// landed before the kill).
#[tokio::test]
async fn clickhouse_down_for_thirty_seconds_loses_and_duplicates_nothing() {
    let mock = MockProvider::start();
    let mut server = OwnClickHouse::start();
    let db = db_name();
    let mut gw = Gateway::start(conf_with_clickhouse(&mock, &server.url(), &db));
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
    server.kill();
    tokio::time::sleep(Duration::from_secs(30)).await;
    server.up();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let ids = traffic.await.unwrap();
    assert!(ids.len() > 300, "{}", ids.len());
    // the spool is replayed once the sink answers again
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut count = String::new();
    while Instant::now() < deadline {
        count = ch_at(
            &server.url(),
            &format!("SELECT count() FROM {db}.requests FINAL"),
        )
        .await;
        if count == ids.len().to_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let m = metrics_with(
        &gw,
        &[r#"switchyard_export_batches_total{outcome="replayed",sink="clickhouse"}"#],
    )
    .await;
    gw.stop();
    let stored: HashSet<String> = ch_at(
        &server.url(),
        &format!("SELECT id FROM {db}.requests FINAL"),
    )
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
    // the outage went through the spool, and nothing was dropped
    assert!(
        m.contains(r#"switchyard_export_batches_total{outcome="spooled",sink="clickhouse"}"#),
        "{m}"
    );
    assert!(
        m.contains(r#"switchyard_export_batches_total{outcome="replayed",sink="clickhouse"}"#),
        "{m}"
    );
    assert!(
        m.contains("switchyard_export_records_dropped_total 0"),
        "{m}"
    );
    assert!(
        m.contains(r#"switchyard_export_spool_bytes{sink="clickhouse"} 0"#),
        "{m}"
    );
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
    send_chats(&gw, &mock.origin(), 5).await;
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

fn jsonl_ids(dir: &std::path::Path) -> Vec<String> {
    record_ids(&jsonl_records(dir))
}

/// Record ids in every batch a webhook mock received.
fn hook_ids(hook: &MockProvider) -> Vec<String> {
    let posts = hook.state.requests.lock().unwrap().clone();
    posts
        .iter()
        .flat_map(|p| {
            let v: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
            v["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// JSONL, ClickHouse (with credentials) and a webhook at once, fed requests carrying every kind
/// of credential: each sink gets every record, and no credential shows up in any sink or in
/// the gateway's own log.
#[tokio::test]
async fn all_sinks_at_once_and_no_credential_in_any_of_them() {
    let mock = MockProvider::start();
    let hook = MockProvider::start();
    let db = db_name();
    let closed_port = ClosedPort::new();
    let closed = closed_port.origin();
    let mut conf = GatewayConf::default().allow(&mock.origin()).allow(&closed);
    conf.keys = vec!["{id: team-a, env: SWITCHYARD_TEST_GW_KEY}".into()];
    conf.extra = format!(
        "export: {{batch_max_delay_ms: 50, \
           clickhouse: {{url: '{}', database: {db}, user: default, password_env: SWITCHYARD_TEST_CH_PASSWORD}}, \
           webhook: {{url: '{}/ingest', token_env: SWITCHYARD_TEST_HOOK_TOKEN}}}}\n",
        clickhouse_url(),
        hook.origin()
    );
    let mut gw = Gateway::start_with_env(
        conf,
        &[
            ("SWITCHYARD_TEST_GW_KEY", "sk-gw-secret-allsinks"),
            ("SWITCHYARD_TEST_CH_PASSWORD", ""),
            ("SWITCHYARD_TEST_HOOK_TOKEN", "hook-token-secret"),
        ],
    );
    let c = client();
    let gw_auth = "Bearer sk-gw-secret-allsinks";
    let mut ids = vec![];
    let mut send = |r: reqwest::Response| {
        ids.push(r.headers()["helicone-id"].to_str().unwrap().to_string());
        r
    };
    let fallbacks = format!(
        r#"[{{"target-url":"{closed}","headers":{{"authorization":"Bearer sk-fallback-a-secret"}},"onCodes":[{{"from":500,"to":599}}]}},
            {{"target-url":"{}","headers":{{"authorization":"Bearer sk-fallback-b-secret"}},"onCodes":[]}}]"#,
        mock.origin()
    );
    let requests = vec![
        c.post(gw.url("/v1/chat/completions"))
            .header("Helicone-Target-Url", mock.origin())
            .header("Authorization", "Bearer sk-openai-secret")
            .body(r#"{"model":"gpt-4o-mini","messages":[]}"#),
        c.post(gw.url("/v1/chat/completions"))
            .header("Helicone-Target-Url", mock.origin())
            .header("Authorization", "Bearer sk-openai-secret")
            .body(
                r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}"#,
            ),
        c.post(gw.url("/v1/messages"))
            .header("Helicone-Target-Url", mock.origin())
            .header("x-api-key", "sk-ant-secret")
            .body(r#"{"model":"claude-3-5-haiku-20241022","max_tokens":5,"messages":[]}"#),
        c.post(gw.url("/openai/deployments/x/chat/completions?api-version=1"))
            .header("Helicone-Target-Url", mock.origin())
            .header("api-key", "azure-key-secret")
            .body(r#"{"messages":[]}"#),
        c.post(gw.url("/v1/chat/completions"))
            .header("Helicone-Fallbacks", fallbacks.replace('\n', ""))
            .body(r#"{"model":"gpt-4o-mini","messages":[]}"#),
    ];
    for rb in requests {
        let r = send(rb.header("Helicone-Auth", gw_auth).send().await.unwrap());
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // refused by the SSRF guard, failed upstream, and a client gone mid-stream
    for (target, status) in [("http://127.0.0.2:9", 403), (closed.as_str(), 502)] {
        let r = send(
            c.post(gw.url("/x"))
                .header("Helicone-Auth", gw_auth)
                .header("Helicone-Target-Url", target)
                .header("Authorization", "Bearer sk-openai-secret")
                .send()
                .await
                .unwrap(),
        );
        assert_eq!(r.status(), status);
    }
    let r = send(
        c.get(gw.url("/sse?n=50&ms=50"))
            .header("Helicone-Auth", gw_auth)
            .header("Helicone-Target-Url", mock.origin())
            .send()
            .await
            .unwrap(),
    );
    let mut s = futures_util::StreamExt::boxed(r.bytes_stream());
    futures_util::StreamExt::next(&mut s)
        .await
        .unwrap()
        .unwrap();
    drop(s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // a wrong gateway key is refused and logged, but not the key itself
    let r = send(
        c.post(gw.url("/v1/chat/completions"))
            .header("Helicone-Auth", "Bearer sk-gw-wrong-secret")
            .header("Helicone-Target-Url", mock.origin())
            .send()
            .await
            .unwrap(),
    );
    assert_eq!(r.status(), 401);
    gw.stop();

    let want: HashSet<String> = ids.iter().cloned().collect();
    let jsonl = jsonl_text(gw.dir.path());
    let in_jsonl: HashSet<String> = jsonl_ids(gw.dir.path()).into_iter().collect();
    assert_eq!(in_jsonl, want);
    let hooked = hook_ids(&hook);
    assert_eq!(hooked.len(), want.len());
    assert_eq!(hooked.into_iter().collect::<HashSet<_>>(), want);
    let rows = ch(&format!(
        "SELECT * FROM {db}.requests FINAL FORMAT JSONEachRow"
    ))
    .await;
    let in_ch: HashSet<String> = record_ids(&json_lines(&rows)).into_iter().collect();
    assert_eq!(in_ch, want);
    assert_eq!(
        ch(&format!(
            "SELECT count() FROM {db}.requests WHERE key_id = 'team-a'"
        ))
        .await,
        "8"
    );
    // what each kind looks like in ClickHouse (the Anthropic call: 5 fresh + 2 cache-read tokens)
    assert_eq!(
        ch(&format!(
            "SELECT status, rejection, prompt_tokens, stream FROM {db}.requests FINAL \
             WHERE path != '/sse' ORDER BY status, stream, prompt_tokens FORMAT TSV"
        ))
        .await,
        "200\t\\N\t5\t0\n200\t\\N\t5\t0\n200\t\\N\t5\t0\n200\t\\N\t7\t0\n200\t\\N\t5\t1\n401\tauth\t\\N\t0\n403\tssrf\t\\N\t0\n502\t\\N\t\\N\t0"
    );
    let disconnected = ch(&format!(
        "SELECT status, position(error, 'Downstream') > 0 FROM {db}.requests FINAL WHERE path = '/sse'"
    ))
    .await;
    assert_eq!(disconnected, "200\t1");
    let hook_bodies: String = hook
        .state
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|p| String::from_utf8_lossy(&p.body).into_owned())
        .collect();
    for secret in [
        "sk-gw-secret-allsinks",
        "sk-gw-wrong-secret",
        "sk-openai-secret",
        "sk-ant-secret",
        "azure-key-secret",
        "sk-fallback-a-secret",
        "sk-fallback-b-secret",
        "hook-token-secret",
    ] {
        for (sink, text) in [
            ("JSONL", &jsonl),
            ("ClickHouse", &rows),
            ("webhook", &hook_bodies),
            ("gateway log", &gw.log()),
        ] {
            assert!(
                !text.contains(secret),
                "{secret} found in the {sink} output"
            );
        }
    }
    ch(&format!("DROP DATABASE {db}")).await;
}

/// A webhook that never answers: JSONL keeps up regardless, the webhook's batches wait in its
/// spool across a restart, and are delivered once, in full, when a working endpoint answers.
#[tokio::test]
async fn a_hung_sink_holds_up_no_other_and_its_spool_survives_a_restart() {
    let mock = MockProvider::start();
    let hung = MockProvider::start_scripted(Script {
        hang: true,
        ..Default::default()
    });
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.extra = format!(
        "export: {{batch_max_delay_ms: 50, webhook: {{url: '{}/ingest', timeout_secs: 1}}}}\n",
        hung.origin()
    );
    let mut gw = Gateway::start(conf.clone());
    let mut ids = vec![];
    ids.extend(send_chats(&gw, &mock.origin(), 20).await);
    // the webhook's first batch alone takes 3 tries of 1 s: JSONL must not wait for it
    let t0 = Instant::now();
    while jsonl_ids(gw.dir.path()).len() < ids.len() && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(jsonl_ids(gw.dir.path()).len(), ids.len());
    assert!(
        t0.elapsed() < Duration::from_millis(800),
        "JSONL waited {:?} for the hung webhook",
        t0.elapsed()
    );
    gw.stop();
    let spool = gw.dir.path().join("state/spool/webhook");
    let spooled = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert!(spooled > 0, "nothing spooled:\n{}", gw.log());

    // back with a working endpoint: the spool is replayed, every record exactly once
    let hook = MockProvider::start();
    let mut conf2 = conf;
    conf2.state_dir = Some(gw.dir.path().join("state"));
    conf2.extra = format!(
        "export: {{batch_max_delay_ms: 50, webhook: {{url: '{}/ingest', timeout_secs: 1}}}}\n",
        hook.origin()
    );
    let mut gw2 = Gateway::start(conf2);
    let t0 = Instant::now();
    while hook_ids(&hook).len() < ids.len() && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw2.stop();
    let got = hook_ids(&hook);
    assert_eq!(got.len(), ids.len(), "{}", gw2.log());
    assert_eq!(
        got.into_iter().collect::<HashSet<_>>(),
        ids.into_iter().collect::<HashSet<_>>()
    );
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "spool not emptied"
    );
}

/// A sink down with its spool full: records are dropped for that sink only, counted and logged.
#[tokio::test]
async fn a_full_spool_drops_counts_and_logs() {
    let mock = MockProvider::start();
    let down = ClosedPort::new();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.extra = format!(
        "export: {{batch_max_delay_ms: 50, spool_max_bytes: 10, clickhouse: {{url: '{}', timeout_secs: 1}}}}\n",
        down.origin()
    );
    let mut gw = Gateway::start(conf);
    send_chats(&gw, &mock.origin(), 10).await;
    let m = metrics_with(&gw, &["switchyard_export_records_dropped_total 10"]).await;
    assert!(
        m.contains("switchyard_export_records_dropped_total 10"),
        "{m}"
    );
    assert!(m.contains(r#"switchyard_export_batches_total{outcome="failed",sink="clickhouse"}"#));
    assert!(
        m.contains(r#"switchyard_export_records_total{sink="jsonl"} 10"#),
        "{m}"
    );
    gw.stop();
    assert_eq!(
        jsonl_ids(gw.dir.path()).len(),
        10,
        "the other sink lost nothing"
    );
    assert!(
        gw.log().contains("clickhouse spool is full"),
        "{}",
        gw.log()
    );
}

/// `conf/clickhouse.sql` for `db.requests` as it was before records had a `record_id`: the
/// table ordered (and so deduplicated) by the request id alone.
fn old_ddl(db: &str) -> String {
    let ddl: String = include_str!("../conf/clickhouse.sql")
        .lines()
        .filter(|l| !l.trim_start().starts_with("--") && l.trim() != "record_id String,")
        .collect::<Vec<_>>()
        .join("\n")
        .replace("{db}", db)
        .replace("{table}", "requests")
        .replace("ORDER BY (id, record_id)", "ORDER BY id");
    assert!(
        !ddl.contains("record_id") && ddl.ends_with("ORDER BY id"),
        "{ddl}"
    );
    ddl
}

/// A client sends the same `Helicone-Request-Id` twice: a priced 200, then a request the SSRF
/// guard refuses. Both records stay under `FINAL` (they share `id`, each has its own
/// `record_id`), while the same rows inserted again, as a replayed batch is, still collapse.
async fn a_reused_request_id_keeps_both_records(old_table: bool) {
    let mock = MockProvider::start();
    let db = db_name();
    if old_table {
        ch(&format!("CREATE DATABASE {db}")).await;
        ch(&old_ddl(&db)).await;
    }
    let mut gw = Gateway::start(conf_with_clickhouse(&mock, &clickhouse_url(), &db));
    let rid = "5d0c8f57-2b8e-4c7e-9a51-3f0f1d2e7a10";
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("Helicone-Target-Url", mock.origin())
        .header("Helicone-Request-Id", rid)
        .body(r#"{"model":"gpt-4o","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["helicone-id"], rid);
    r.bytes().await.unwrap();
    let r = client()
        .post(gw.url("/x"))
        .header("Helicone-Target-Url", "http://127.0.0.2:9")
        .header("Helicone-Request-Id", rid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["helicone-id"], rid);
    gw.stop();
    let table = format!("{db}.requests");
    let rows = ch(&format!(
        "SELECT status, rejection, round(cost_usd * 1000000, 6) FROM {table} FINAL WHERE id = '{rid}' ORDER BY status FORMAT TSV"
    ))
    .await;
    assert_eq!(
        rows,
        format!("200\t\\N\t{}\n403\tssrf\t\\N", 5.0 * 2.5 + 3.0 * 10.0),
        "the priced record and the refused one, both:\n{}",
        gw.log()
    );
    assert_eq!(
        ch(&format!(
            "SELECT uniqExact(record_id), min(length(record_id)) FROM {table} FINAL WHERE id = '{rid}'"
        ))
        .await,
        "2\t36"
    );
    // JSONL has the same two records, told apart by record_id
    let recs = jsonl_records(gw.dir.path());
    assert_eq!(record_ids(&recs), [rid, rid]);
    assert_ne!(recs[0]["record_id"], recs[1]["record_id"]);
    let in_ch: HashSet<String> = ch(&format!("SELECT record_id FROM {table} FINAL"))
        .await
        .lines()
        .map(str::to_string)
        .collect();
    let in_jsonl: HashSet<String> = recs
        .iter()
        .map(|r| r["record_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(in_ch, in_jsonl);
    // a replay: the same rows once more
    ch(&format!("INSERT INTO {table} SELECT * FROM {table}")).await;
    assert_eq!(ch(&format!("SELECT count() FROM {table}")).await, "4");
    assert_eq!(ch(&format!("SELECT count() FROM {table} FINAL")).await, "2");
    ch(&format!("OPTIMIZE TABLE {table} FINAL")).await;
    assert_eq!(ch(&format!("SELECT count() FROM {table}")).await, "2");
    assert_eq!(
        ch(&format!(
            "SELECT sorting_key FROM system.tables WHERE database = '{db}' AND name = 'requests'"
        ))
        .await,
        "id, record_id"
    );
    if old_table {
        assert!(
            gw.log().contains(&format!(
                "ClickHouse table {table} migrated: column record_id added"
            )),
            "{}",
            gw.log()
        );
    }
    // the columns added since (the client's dialect, the dropped hints) are there either way
    let cols = ch(&format!(
        "SELECT count() FROM system.columns WHERE database = '{db}' AND table = 'requests' AND name IN ('dialect', 'dropped_fields')"
    ))
    .await;
    assert_eq!(cols, "2", "{}", gw.log());
    ch(&format!("DROP DATABASE {db}")).await;
}

#[tokio::test]
async fn a_reused_request_id_erases_no_record_and_a_replay_still_collapses() {
    a_reused_request_id_keeps_both_records(false).await;
}

/// A table made by the old DDL (ordered by `id`) gets `record_id` and the new sorting key at
/// start-up, and then keeps both records too.
#[tokio::test]
async fn an_old_table_is_migrated_to_the_record_id_key_at_start_up() {
    a_reused_request_id_keeps_both_records(true).await;
}

/// A table the gateway's rows do not fit (a column of another type): ClickHouse refuses the
/// batch with a parse error, which is not retried but dead-lettered; the spool stays empty.
#[tokio::test]
async fn a_batch_clickhouse_refuses_is_dead_lettered() {
    let mock = MockProvider::start();
    let db = db_name();
    ch(&format!("CREATE DATABASE {db}")).await;
    ch(&format!(
        "CREATE TABLE {db}.requests (event_date Date, id String, record_id String, status UInt16, properties UInt64) \
         ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(event_date) ORDER BY (id, record_id)"
    ))
    .await;
    let mut gw = Gateway::start(conf_with_clickhouse(&mock, &clickhouse_url(), &db));
    send_chats(&gw, &mock.origin(), 3).await;
    // 3 records, in one batch or more
    let dead = r#"switchyard_export_dead_letter_records_total{sink="clickhouse"} 3"#;
    let m = metrics_with(&gw, &[dead]).await;
    gw.stop();
    assert!(m.contains(dead), "{m}\n{}", gw.log());
    assert!(
        !m.contains(r#"switchyard_export_dead_letter_batches_total{sink="clickhouse"} 0"#),
        "{m}"
    );
    assert!(
        !m.contains(r#"switchyard_export_batches_total{outcome="spooled",sink="clickhouse"}"#),
        "a refused batch is not spooled: {m}"
    );
    let dir = gw.dir.path().join("state/dead-letter/clickhouse");
    let reasons: Vec<serde_json::Value> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".reason.json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    assert!(!reasons.is_empty());
    let records: u64 = reasons.iter().map(|r| r["records"].as_u64().unwrap()).sum();
    assert_eq!(records, 3);
    assert!(
        reasons[0]["message"].as_str().unwrap().contains("Code: "),
        "{}",
        reasons[0]
    );
    assert_eq!(
        std::fs::read_dir(gw.dir.path().join("state/spool/clickhouse"))
            .unwrap()
            .count(),
        0,
        "nothing waits in the spool"
    );
    assert_eq!(ch(&format!("SELECT count() FROM {db}.requests")).await, "0");
    ch(&format!("DROP DATABASE {db}")).await;
}

/// A table of the old `ReplacingMergeTree(date, key, 8192)` syntax cannot change its sorting
/// key: it gets the `record_id` column, records keep landing, and the log says at start-up
/// which table still deduplicates on `id` alone and how to migrate it.
#[tokio::test]
async fn an_old_syntax_table_gets_the_column_and_a_warning_naming_it() {
    let mock = MockProvider::start();
    let db = db_name();
    ch(&format!("CREATE DATABASE {db}")).await;
    let ddl = old_ddl(&db).replace(
        "ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(event_date) ORDER BY id",
        "ENGINE = ReplacingMergeTree(event_date, id, 8192)",
    );
    assert!(ddl.ends_with("8192)"), "{ddl}");
    ch(&ddl).await;
    let mut gw = Gateway::start(conf_with_clickhouse(&mock, &clickhouse_url(), &db));
    send_chats(&gw, &mock.origin(), 2).await;
    let sent = r#"switchyard_export_records_total{sink="clickhouse"} 2"#;
    let m = metrics_with(&gw, &[sent]).await;
    gw.stop();
    assert!(m.contains(sent), "{m}\n{}", gw.log());
    assert_eq!(
        ch(&format!(
            "SELECT count(), uniqExact(record_id) FROM {db}.requests"
        ))
        .await,
        "2\t2"
    );
    let log = gw.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains(&format!(
                "ClickHouse table {db}.requests is ordered by (id), not (id, record_id)"
            ))
            && l.contains("Migrate it")),
        "{log}"
    );
    ch(&format!("DROP DATABASE {db}")).await;
}
