//! Exporter capacity, without the proxy in front: pushes N realistic records through the real
//! exporter (queue, batcher, sink workers) into one sink and times until the sink holds them all.
//!
//! `cargo run --release --example export_throughput -- jsonl 200000`
//! `cargo run --release --example export_throughput -- clickhouse 200000 [BATCH_RECORDS] [http://127.0.0.1:8123]`

use std::time::{Duration, Instant};

use pingora_core::services::background::BackgroundService;
use switchyard::export::jsonl::JsonlConf;
use switchyard::export::record::{self, Record};
use switchyard::export::sinks::ClickHouseConf;
use switchyard::export::{self, ExportConf};

async fn clickhouse(url: &str, q: &str) -> String {
    // a tiny HTTP/1.0 client, enough for ClickHouse's interface on loopback
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    let Ok(mut s) = tokio::net::TcpStream::connect(hostport).await else {
        return String::new();
    };
    let req = format!(
        "POST / HTTP/1.0\r\nHost: {hostport}\r\nContent-Length: {}\r\n\r\n{q}",
        q.len()
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sink = args.get(1).map_or("jsonl", String::as_str).to_string();
    let n: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let batch: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(1000);
    let url = args
        .get(4)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8123".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sy_bench_{}", std::process::id());
    let mut conf = ExportConf {
        queue_capacity: n + 1,
        queue_max_bytes: usize::MAX,
        batch_max_records: batch,
        batch_max_bytes: usize::MAX,
        ..ExportConf::default()
    };
    match sink.as_str() {
        "jsonl" => {
            conf.jsonl = Some(JsonlConf {
                dir: dir.path().join("logs"),
                max_file_bytes: 1 << 40,
                durability: Default::default(),
            })
        }
        "clickhouse" => {
            conf.jsonl = None;
            conf.clickhouse = Some(ClickHouseConf {
                url: url.clone(),
                database: db.clone(),
                table: "requests".into(),
                user: None,
                password_env: None,
                create_table: true,
                timeout_secs: 30,
            });
        }
        other => panic!("unknown sink {other}: jsonl or clickhouse"),
    }
    let (exporter, service, drained) = export::build(&conf, dir.path()).expect("exporter");
    let (_stop, watch) = tokio::sync::watch::channel(false);
    tokio::spawn(async move { service.start(watch).await });

    let records: Vec<Record> = (0..n).map(record::sample).collect();
    let t0 = Instant::now();
    for r in records {
        exporter.submit(r);
    }
    let submitted = t0.elapsed();
    let done = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let have: usize = if sink == "jsonl" {
            std::fs::read_dir(dir.path().join("logs"))
                .map(|d| {
                    d.flatten()
                        .map(|e| {
                            std::fs::read(e.path())
                                .map(|b| b.iter().filter(|&&c| c == b'\n').count())
                                .unwrap_or(0)
                        })
                        .sum()
                })
                .unwrap_or(0)
        } else {
            clickhouse(&url, &format!("SELECT count() FROM {db}.requests"))
                .await
                .parse()
                .unwrap_or(0)
        };
        if have >= n {
            break t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(300) {
            panic!("only {have} of {n} records arrived in 300 s");
        }
    };
    println!(
        "{sink}, batches of {batch}: {n} records submitted in {:.0} ms ({:.2} µs each on the request path), all stored after {:.2} s: {:.0} records/s",
        submitted.as_secs_f64() * 1e3,
        submitted.as_secs_f64() * 1e6 / n as f64,
        done.as_secs_f64(),
        n as f64 / done.as_secs_f64()
    );
    if sink == "clickhouse" {
        clickhouse(&url, &format!("DROP DATABASE {db}")).await;
    }
    drop(exporter);
    drained.wait(Duration::from_secs(1));
}
