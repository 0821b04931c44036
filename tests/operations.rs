//! The operations side, for real: Debian's Prometheus scrapes the gateway's /metrics, loads the
//! shipped alert rules (checked by `promtool`), and an alert on a forced error rate fires; every
//! metric the rules and the Grafana dashboard use is one the gateway exports.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn repo(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every `switchyard_*` metric name the gateway's source registers.
fn exported_names() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut stack = vec![repo("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for piece in text.split('"').skip(1).step_by(2) {
                    if piece.starts_with("switchyard_")
                        && piece.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    {
                        names.insert(piece.to_string());
                    }
                }
            }
        }
    }
    names
}

/// The `switchyard_*` names an expression text uses (histogram suffixes stripped).
fn used_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("switchyard_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_rules_and_the_dashboard_use_only_metrics_the_gateway_exports() {
    let exported = exported_names();
    assert!(
        exported.contains("switchyard_requests_total"),
        "{exported:?}"
    );
    let alerts = std::fs::read_to_string(repo("conf/prometheus/alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(repo("conf/grafana/switchyard.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(d["panels"].as_array().unwrap().len() >= 10);
    for (what, text) in [("alerts.yml", &alerts), ("switchyard.json", &dashboard)] {
        for name in used_names(text) {
            assert!(
                exported.contains(&name),
                "{what} uses {name}, which the gateway does not export"
            );
        }
    }
    let rules = promtool(&[
        "check",
        "rules",
        repo("conf/prometheus/alerts.yml").to_str().unwrap(),
    ]);
    assert!(rules.contains("SUCCESS: 14 rules found"), "{rules}");
    promtool(&[
        "check",
        "config",
        repo("conf/prometheus/prometheus.yml").to_str().unwrap(),
    ]);
}

#[tokio::test]
async fn prometheus_scrapes_the_gateway_and_fires_the_error_rate_alert() {
    let mock = MockProvider::failing(500);
    let gw = Gateway::start(GatewayConf::default().allow(&mock.origin()));
    let dir = tempfile::tempdir().unwrap();
    // the shipped files, with test-sized intervals: rules hold for 0 s instead of minutes
    let alerts = std::fs::read_to_string(repo("conf/prometheus/alerts.yml")).unwrap();
    let mut fast = String::new();
    for line in alerts.lines() {
        match line.trim_start().strip_prefix("for: ") {
            Some(_) => fast.push_str(&format!(
                "{}for: 0s",
                &line[..line.len() - line.trim_start().len()]
            )),
            None => fast.push_str(line),
        }
        fast.push('\n');
    }
    std::fs::write(dir.path().join("alerts.yml"), fast).unwrap();
    let scrape = std::fs::read_to_string(repo("conf/prometheus/prometheus.yml"))
        .unwrap()
        .replace("127.0.0.1:9464", &format!("127.0.0.1:{}", gw.metrics_port))
        .replace("15s", "1s");
    std::fs::write(dir.path().join("prometheus.yml"), scrape).unwrap();
    let port = free_port();
    let prom = Killed(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (Debian's package; .ci/run installs it)"),
    );
    let api = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let get = |url: String| async move {
        match client().get(url).send().await {
            Ok(r) => r.json::<serde_json::Value>().await.ok(),
            Err(_) => None,
        }
    };
    // failing requests keep coming until the alert fires (60 s at most)
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut firing = None;
    while Instant::now() < deadline {
        let r = post_target(
            &gw,
            "/v1/chat/completions",
            &mock.origin(),
            r#"{"model":"gpt-4o-mini"}"#,
        )
        .await;
        assert_eq!(r.status(), 500);
        if let Some(v) = get(api("/api/v1/alerts")).await {
            firing = v["data"]["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| {
                    a["labels"]["alertname"] == "SwitchyardHighErrorRate" && a["state"] == "firing"
                })
                .cloned();
            if firing.is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let alert = firing.unwrap_or_else(|| panic!("the alert never fired; prometheus log:\n{log}"));
    assert_eq!(alert["labels"]["provider"], "unknown", "{alert}");
    assert_eq!(alert["labels"]["severity"], "warning");
    // the scrape is real: the target is up and the series is in Prometheus
    let targets = get(api("/api/v1/targets")).await.unwrap();
    let t = &targets["data"]["activeTargets"][0];
    assert_eq!(
        (t["labels"]["job"].as_str(), t["health"].as_str()),
        (Some("switchyard"), Some("up")),
        "{t}"
    );
    let q = get(api(
        "/api/v1/query?query=switchyard_requests_total%7Bstatus_class%3D%225xx%22%7D",
    ))
    .await
    .unwrap();
    let n: f64 = q["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 1.0, "{q}");
    let rules = get(api("/api/v1/rules")).await.unwrap();
    let loaded = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(loaded, 14, "every shipped rule loaded");
    drop(prom);
}
