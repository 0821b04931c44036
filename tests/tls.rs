//! TLS on both sides: upstream certificates verified (per-origin CA file, real host name or IP
//! as SNI) and an HTTPS listener for clients.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

struct TlsUpstream {
    child: Child,
    port: u16,
}

impl TlsUpstream {
    fn start() -> TlsUpstream {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/python/tls_upstream.py"
            ))
            .arg(port.to_string())
            .arg(fixture("localhost.pem"))
            .arg(fixture("localhost.key"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        TlsUpstream { child, port }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn upstream_tls_is_verified_with_the_per_origin_ca() {
    let up = TlsUpstream::start();
    let by_name = format!("https://localhost:{}", up.port);
    let by_ip = format!("https://127.0.0.1:{}", up.port);
    let ca = fixture("ca.pem");
    let conf = GatewayConf {
        origins: vec![
            format!(
                "{{url: '{by_name}', approved: true, allow_private: true, ca_file: '{}'}}",
                ca.display()
            ),
            format!(
                "{{url: '{by_ip}', approved: true, allow_private: true, ca_file: '{}'}}",
                ca.display()
            ),
        ],
        ..GatewayConf::default()
    };
    let gw = Gateway::start(conf);
    for target in [&by_name, &by_ip] {
        let r = post_target(&gw, "/v1/x?y=1", target, "hello").await;
        assert_eq!(r.status(), 200, "{target}: {}", gw.log());
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["tls"], true);
        assert_eq!(v["path"], "/v1/x?y=1");
        assert_eq!(v["body_len"], 5);
    }

    // the same upstream without the CA: the system roots do not trust it -> 502, nothing sent
    let conf = GatewayConf {
        origins: vec![format!(
            "{{url: '{by_name}', approved: true, allow_private: true}}"
        )],
        ..GatewayConf::default()
    };
    let gw = Gateway::start(conf);
    let r = post_target(&gw, "/v1/x", &by_name, "{}").await;
    assert_eq!(r.status(), 502);
    let v: serde_json::Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(
        msg.contains("certificate") || msg.contains("issuer") || msg.contains("tls"),
        "{msg}"
    );
}

#[tokio::test]
async fn https_listener_serves_clients() {
    let mock = MockProvider::start();
    let tls_port = free_port();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.tls_listener = Some((tls_port, fixture("localhost.pem"), fixture("localhost.key")));
    let gw = Gateway::start(conf);
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(fixture("ca.pem"))
        .args([
            "-H",
            &format!("Helicone-Target-Url: {}", mock.origin()),
            "-d",
            "{\"a\":1}",
        ])
        .arg(format!("https://localhost:{tls_port}/v1/echo"))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], "/v1/echo");
    assert_eq!(v["body_sha256"], sha256_hex(b"{\"a\":1}").as_str());
}
