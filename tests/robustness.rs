//! What a few hostile or broken clients can do to the gateway: slow request heads are cut at a
//! whole-head deadline, request bodies held at once are bounded, and requests the HTTP parser
//! refuses get the gateway's JSON error with a `Helicone-Id`, counted.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn connect(gw: &Gateway) -> TcpStream {
    let addr = gw.url("").trim_start_matches("http://").to_string();
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the peer closes (or the read timeout); what arrived.
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_request_head_sent_byte_by_byte_is_cut_at_the_deadline() {
    let gw = Gateway::start(GatewayConf {
        server_extra: ", header_timeout_secs: 2".into(),
        ..Default::default()
    });
    let mut s = connect(&gw);
    let t0 = Instant::now();
    // a slowloris client: one header byte every 300 ms, never the end of the head
    let trickle = std::thread::spawn({
        let mut w = s.try_clone().unwrap();
        move || {
            let head = b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for b in head.iter() {
                if w.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    });
    let answer = read_all(&mut s);
    let took = t0.elapsed();
    assert!(
        answer.is_empty(),
        "no answer to a head that never ended: {}",
        String::from_utf8_lossy(&answer)
    );
    // Pingora alone allows 60 s per read, forever: the guard cuts at 2 s of the head
    assert!(
        took < Duration::from_secs(8),
        "the connection was held {took:?} (header_timeout_secs: 2)"
    );
    drop(trickle);
    let m = metrics_with(&gw, &["switchyard_header_timeouts_total 1"]).await;
    assert_eq!(counter(&m, "switchyard_header_timeouts_total"), 1.0);

    // an idle keep-alive connection is not a slow head: it is reused after 3 s
    let mut s = connect(&gw);
    let req = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    s.write_all(req).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    std::thread::sleep(Duration::from_secs(3));
    s.write_all(req).unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn request_bodies_held_at_once_are_bounded_with_a_503_and_retry_after() {
    let mock = MockProvider::start();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.limits = "{max_body_bytes: 1000000, max_inflight_body_bytes: 1000000}".into();
    let gw = Gateway::start(conf);
    // a client that announced 800 kB and sends it slowly: the gateway holds its share
    let mut slow = connect(&gw);
    let body = vec![b'a'; 800_000];
    write!(
        slow,
        "POST /echo HTTP/1.1\r\nHost: a\r\nHelicone-Target-Url: {}\r\nContent-Length: {}\r\n\r\n",
        mock.origin(),
        body.len()
    )
    .unwrap();
    slow.write_all(&body[..1000]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = client();
    let r = c
        .post(gw.url("/echo"))
        .header("Helicone-Target-Url", mock.origin())
        .body(vec![b'b'; 400_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.headers().contains_key("helicone-id"));
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "overloaded");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_inflight_body_bytes"),
        "{e}"
    );
    // a small body still fits beside the large one
    let r = c
        .post(gw.url("/echo"))
        .header("Helicone-Target-Url", mock.origin())
        .body(vec![b'c'; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // the slow body completes; once it is done, its share is free again
    slow.write_all(&body[1000..]).unwrap();
    let mut buf = [0u8; 64];
    let n = slow.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    drop(slow);
    let mut last = 0;
    for _ in 0..20 {
        let r = c
            .post(gw.url("/echo"))
            .header("Helicone-Target-Url", mock.origin())
            .body(vec![b'd'; 900_000])
            .send()
            .await
            .unwrap();
        last = r.status().as_u16();
        if last == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, 200, "the budget was not given back");
    let needle = "switchyard_rejections_total{reason=\"overload\"} 1";
    let m = metrics_with(&gw, &[needle]).await;
    assert!(m.contains(needle), "{m}");
}

#[tokio::test]
async fn a_request_the_parser_refuses_gets_a_json_error_with_an_id() {
    let gw = Gateway::start(GatewayConf::default());
    let mut s = connect(&gw);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n")
        .unwrap();
    let answer = String::from_utf8_lossy(&read_all(&mut s)).to_string();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("\r\nhelicone-id: "), "{answer}");
    assert!(lower.contains("content-type: application/json"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "bad_request");
    let m = metrics_with(&gw, &["switchyard_malformed_requests_total 1"]).await;
    assert_eq!(counter(&m, "switchyard_malformed_requests_total"), 1.0);
    // the gateway's own 400s are left as they are
    let r = client()
        .get(gw.url("/healthz"))
        .header("Helicone-Request-Id", "not-a-uuid")
        .send()
        .await
        .unwrap();
    let m = metrics_with(&gw, &["switchyard_malformed_requests_total 1"]).await;
    assert_eq!(
        counter(&m, "switchyard_malformed_requests_total"),
        1.0,
        "{}",
        r.status()
    );
}
