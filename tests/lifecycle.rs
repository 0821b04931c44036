//! Process lifecycle: graceful shutdown finishes in-flight streams; graceful upgrade (SIGQUIT +
//! `-u`) hands the listening socket to a new process without refusing a single request or
//! losing a single log record.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;

fn fresh_client() -> reqwest::Client {
    // one connection per request, so that a closing process cannot fail a pooled connection
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn sigterm_lets_in_flight_streams_finish_and_stops_accepting() {
    let mock = MockProvider::start();
    let conf = GatewayConf::default().allow(&mock.origin());
    let mut gw = Gateway::start(conf);
    let r = fresh_client()
        .get(gw.url("/sse?n=6&ms=100"))
        .header("Helicone-Target-Url", mock.origin())
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    gw.signal("TERM");
    let mut rest = Vec::new();
    while let Some(c) = stream.next().await {
        rest.extend_from_slice(&c.expect("the in-flight stream was cut by shutdown"));
    }
    assert!(String::from_utf8(rest)
        .unwrap()
        .ends_with("data: [DONE]\n\n"));
    assert!(
        gw.wait_exit(Duration::from_secs(10)),
        "gateway did not exit after SIGTERM"
    );
    assert!(
        fresh_client().get(gw.url("/healthz")).send().await.is_err(),
        "still accepting after exit"
    );
}

#[tokio::test]
async fn an_idle_gateway_stops_at_once_and_keeps_its_records() {
    let mock = MockProvider::start();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.grace_secs = 30;
    let mut gw = Gateway::start(conf);
    // a pooled client: its keep-alive connection stays open, idle, when the signal comes
    let c = client();
    let ids = send_chats(&gw, &mock.origin(), 3).await;
    let r = c.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let t0 = Instant::now();
    gw.signal("TERM");
    assert!(
        gw.wait_exit(Duration::from_secs(2)),
        "an idle gateway did not exit within 2 s of SIGTERM (grace period 30 s):\n{}",
        gw.log()
    );
    let took = t0.elapsed();
    let logged = record_ids(&jsonl_records(gw.dir.path()));
    for id in &ids {
        assert!(logged.contains(id), "record {id} lost at the early exit");
    }
    assert!(
        gw.log().contains("no connection left"),
        "exited early for another reason ({took:?}):\n{}",
        gw.log()
    );
}

#[tokio::test]
async fn answers_say_connection_close_while_draining() {
    let mock = MockProvider::start();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.grace_secs = 30;
    let mut gw = Gateway::start(conf);
    let c = client();
    let before = c
        .post(gw.url("/v1/chat/completions"))
        .header("Helicone-Target-Url", mock.origin())
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(before.headers()["connection"], "keep-alive");
    // in flight when the signal comes: answered after draining started
    let slow = tokio::spawn({
        let (c, url, origin) = (
            c.clone(),
            gw.url("/v1/chat/completions?delay_ms=1500"),
            mock.origin(),
        );
        async move {
            c.post(url)
                .header("Helicone-Target-Url", origin)
                .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    gw.signal("TERM");
    let r = slow.await.unwrap().expect("the in-flight request failed");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["connection"],
        "close",
        "an answer sent while draining must tell the client not to reuse the connection"
    );
    assert!(gw.wait_exit(Duration::from_secs(5)));
}

/// A client that connected just before shutdown, whose request arrives only after the accept loop
/// has stopped, is still answered. Pingora on its own drops such a connection unanswered at that
/// instant (it cannot tell it from an idle keep-alive one), which during a graceful upgrade is a
/// failed request on a fresh connection that no client retries.
#[tokio::test]
async fn a_connection_accepted_just_before_shutdown_is_still_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockProvider::start();
    let conf = GatewayConf::default().allow(&mock.origin());
    let mut gw = Gateway::start(conf);
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // accepted, waiting for its request
    gw.signal("TERM");
    let stopped = format!("Shutting down 127.0.0.1:{}", gw.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains(&stopped) {
        assert!(Instant::now() < deadline, "no shutdown:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: gw\r\nHelicone-Target-Url: {}\r\nContent-Length: 2\r\n\r\n{{}}",
        mock.origin()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut answer))
        .await
        .expect("the answer did not end")
        .expect("the connection was reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the request sent after the accept loop stopped was not answered: {answer:?}\n{}",
        gw.log()
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "a shutting-down gateway closes the connection after the answer: {answer:?}"
    );
    assert!(
        gw.wait_exit(Duration::from_secs(10)),
        "gateway did not exit"
    );
}

// multi-threaded: the load runs on the runtime's workers while the test body blocks its own
// thread (kill, wait_exit). On a current-thread runtime those blocking calls froze the load for
// the whole handover, so it sent nothing while both processes served, and its one request caught
// mid-connect was written only after the old process had closed the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_hands_over_without_refusing_requests() {
    let mock = MockProvider::start();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    // longer than any request of the load: none is cut by the end of the grace period (the old
    // process exits as soon as its last request is done)
    conf.grace_secs = 30;
    let mut old = Gateway::start(conf);
    let url = old.url("/echo");
    let origin = mock.origin();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let began = Instant::now();
    let load = tokio::spawn(async move {
        let c = fresh_client();
        let mut results = vec![];
        while !s.load(Ordering::Relaxed) {
            let sent = began.elapsed();
            let r = c
                .post(&url)
                .header("Helicone-Target-Url", &origin)
                .body("{}")
                .send()
                .await;
            results.push((
                sent,
                r.map(|r| {
                    let id = r.headers()["helicone-id"].to_str().unwrap().to_string();
                    (r.status().as_u16(), id)
                })
                // the whole chain: reqwest's Display hides the cause
                .map_err(|e| format!("{e:?}")),
            ));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        results
    });
    // keep-alive clients, with requests in flight at every moment (the upstream takes 0.2 to
    // 1.5 s, longer than the linger for late connections): an answer sent while the old process
    // drains must not invite them to reuse a connection that is about to close
    let pooled: Vec<_> = (0..8)
        .map(|i| {
            let (s, url, origin) = (
                stop.clone(),
                old.url(&format!("/v1/chat/completions?delay_ms={}", 200 + i * 180)),
                mock.origin(),
            );
            tokio::spawn(async move {
                let c = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let (mut ok, mut failed) = (0usize, Vec::new());
                while !s.load(Ordering::Relaxed) {
                    let r = c
                        .post(&url)
                        .header("Helicone-Target-Url", &origin)
                        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r) => failed.push(format!("status {}", r.status())),
                        Err(e) => failed.push(format!("{e:?}")),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut new = old.spawn_upgrade();
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("QUIT");
    let t0 = Instant::now();
    let quit_at = began.elapsed();
    assert!(
        old.wait_exit(Duration::from_secs(15)),
        "old process did not exit after SIGQUIT:\n{}",
        old.log()
    );
    let exited = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let results = load.await.unwrap();
    let upgrade_log =
        std::fs::read_to_string(old.dir.path().join("upgrade.log")).unwrap_or_default();
    let (mut kept_ok, mut kept_failed) = (0, Vec::new());
    for p in pooled {
        let (ok, failed) = p.await.unwrap();
        kept_ok += ok;
        kept_failed.extend(failed);
    }
    assert!(kept_ok > 40, "the keep-alive load hardly ran: {kept_ok}");
    assert!(
        kept_failed.is_empty(),
        "{} keep-alive requests failed across the upgrade ({kept_ok} succeeded): {kept_failed:?}",
        kept_failed.len()
    );
    // waiting for the old process's sockets is the normal course of an upgrade, not an error
    assert!(
        !upgrade_log
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("socket transfer")),
        "the new process logged the wait for the sockets as an error:\n{upgrade_log}"
    );
    assert!(
        new.try_wait().unwrap().is_none(),
        "new process died:\n{upgrade_log}"
    );
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, r)| !matches!(r, Ok((200, _))))
        .collect();
    // the load really ran while the old process handed over and drained (its 5 s close
    // timeout, then the shutdown): requests every ~10 ms, not a handful
    let during = results
        .iter()
        .filter(|(at, _)| *at > quit_at && *at < quit_at + exited)
        .count();
    assert!(
        during > 100,
        "only {during} requests were sent during the {exited:?} handover"
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the upgrade (SIGQUIT at {quit_at:?}, the old process exited {:?} later): {failed:?}\nold:\n{}\nnew:\n{upgrade_log}",
        failed.len(),
        results.len(),
        exited,
        old.log()
    );
    // the new process serves on the same port after the old one is gone
    let r = fresh_client()
        .get(old.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(t0.elapsed() < Duration::from_secs(15));
    // every request either process answered is logged exactly once, in the JSONL files both
    // processes append to
    terminate(&mut new);
    let echoed: Vec<serde_json::Value> = jsonl_records(old.dir.path())
        .into_iter()
        .filter(|r| r["path"] == "/echo")
        .collect();
    let logged = record_ids(&echoed);
    let unique: std::collections::HashSet<&String> = logged.iter().collect();
    assert_eq!(unique.len(), logged.len(), "a record was written twice");
    let answered: Vec<&String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|(_, id)| id)
        .collect();
    let missing: Vec<_> = answered
        .iter()
        .filter(|id| !unique.contains(**id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} requests answered across the upgrade have no record",
        missing.len(),
        answered.len()
    );
}

/// A stand-in for ClickHouse's HTTP interface: answers 503 to everything until `up` is set,
/// then 200, keeping the `id` of every row it is sent in an INSERT (gzip JSONEachRow).
struct FakeClickHouse {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    ids: Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeClickHouse {
    fn start() -> FakeClickHouse {
        use http_body_util::{BodyExt, Full};
        let up = Arc::new(AtomicBool::new(false));
        let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (u, i) = (up.clone(), ids.clone());
        let addr = serve(move |req: hyper::Request<hyper::body::Incoming>| {
            let (u, i) = (u.clone(), i.clone());
            async move {
                let insert = req.uri().query().is_some_and(|q| q.contains("INSERT"));
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let status = if !u.load(Ordering::SeqCst) {
                    503
                } else {
                    if insert {
                        use std::io::Read;
                        let mut rows = String::new();
                        flate2::read::GzDecoder::new(&body[..])
                            .read_to_string(&mut rows)
                            .unwrap();
                        let mut ids = i.lock().unwrap();
                        for row in json_lines(&rows) {
                            ids.push(row["id"].as_str().unwrap().to_string());
                        }
                    }
                    200
                };
                Ok::<_, std::convert::Infallible>(
                    hyper::Response::builder()
                        .status(status)
                        .body(Full::new(bytes::Bytes::new()))
                        .unwrap(),
                )
            }
        });
        FakeClickHouse { addr, up, ids }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }
}

/// Issue 15: ClickHouse is down, so both processes of a graceful upgrade spool into the one
/// `<state_dir>/spool/clickhouse`; the new process later replays the old one's batches too.
/// Once the sink is back, every answered request is stored exactly once: none dropped as "spool
/// full" by a counter that wrapped, none sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_during_a_sink_outage_loses_and_duplicates_no_record() {
    let mock = MockProvider::start();
    let ch = FakeClickHouse::start();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.extra = format!(
        "export: {{batch_max_delay_ms: 20, jsonl: null, clickhouse: {{url: '{}', timeout_secs: 5}}}}\n",
        ch.url()
    );
    let mut old = Gateway::start(conf);
    let url = old.url("/echo");
    let origin = mock.origin();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (s, ids) = (stop.clone(), sent.clone());
    let load = tokio::spawn(async move {
        let c = fresh_client();
        while !s.load(Ordering::Relaxed) {
            if let Ok(r) = c
                .post(&url)
                .header("Helicone-Target-Url", &origin)
                .body("{}")
                .send()
                .await
            {
                let id = r.headers()["helicone-id"].to_str().unwrap().to_string();
                ids.lock().unwrap().push(id);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let delivered = |ids: &[String], within: Duration| {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let got: std::collections::HashSet<String> = ch.ids().into_iter().collect();
            if ids.iter().all(|id| got.contains(id)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    // the old process spools while the sink is down ...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut new = old.spawn_upgrade();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... and still does after the new one has opened the spool (its grace period)
    old.signal("QUIT");
    assert!(
        old.wait_exit(Duration::from_secs(15)),
        "old process did not exit after SIGQUIT:\n{}",
        old.log()
    );
    let upgrade_log =
        || std::fs::read_to_string(old.dir.path().join("upgrade.log")).unwrap_or_default();
    assert!(
        new.try_wait().unwrap().is_none(),
        "new process died:\n{}",
        upgrade_log()
    );
    let spool = old.dir.path().join("state/spool/clickhouse");
    let batches = || {
        std::fs::read_dir(&spool)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "batch")
            })
            .count()
    };
    assert!(batches() > 0, "nothing spooled:\n{}", old.log());
    // the sink comes back; requests keep coming while the new process replays both spools,
    // and after it has (a counter that wrapped on the replay would then refuse them as "spool
    // full")
    tokio::time::sleep(Duration::from_millis(500)).await;
    ch.up.store(true, Ordering::SeqCst);
    let before = sent.lock().unwrap().clone();
    let replayed = delivered(&before, Duration::from_secs(15));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let sent = sent.lock().unwrap().clone();
    assert!(sent.len() > 200, "only {} requests answered", sent.len());
    let want: std::collections::HashSet<&String> = sent.iter().collect();
    delivered(&sent, Duration::from_secs(if replayed { 10 } else { 1 }));
    terminate(&mut new);
    assert!(
        old.log().contains("clickhouse batch of"),
        "the old process never tried the sink while it was down:\n{}",
        old.log()
    );
    let got = ch.ids();
    let mut times: std::collections::HashMap<&String, usize> = Default::default();
    for id in &got {
        *times.entry(id).or_default() += 1;
    }
    let missing = want.iter().filter(|id| !times.contains_key(**id)).count();
    let twice = times.values().filter(|n| **n > 1).count();
    assert!(
        missing == 0 && twice == 0,
        "{missing} of {} records lost, {twice} stored twice\nold:\n{}\nnew:\n{}",
        want.len(),
        old.log(),
        upgrade_log()
    );
    assert_eq!(
        batches(),
        0,
        "the spool was not replayed:\n{}",
        upgrade_log()
    );
}
