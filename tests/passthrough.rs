//! End-to-end passthrough through the real binary: routing, header hygiene, bodies, streaming,
//! errors, health and metrics.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;

fn gateway_for(mock: &MockProvider) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let catalogue = mock_catalogue(dir.path(), &mock.origin());
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.catalogue = Some(catalogue);
    conf.host_aliases = "{ 'alias.gw.test': mock }".into();
    let g = Gateway::start(conf);
    std::mem::forget(dir); // the catalogue must outlive the gateway
    g
}

#[tokio::test]
async fn target_url_forwards_path_and_query_verbatim_without_gateway_headers() {
    let mock = MockProvider::start();
    let gw = gateway_for(&mock);
    let resp = client()
        .post(gw.url("/openai/v1/echo?x=1&y=%2Fz&empty="))
        .header(
            "Helicone-Target-Url",
            format!("{}/this/path/is/ignored", mock.origin()),
        )
        .header("Helicone-Auth", "Bearer gw-key-not-configured")
        .header("Helicone-Property-Team", "search")
        .header("X-Helicone-Debug", "1")
        .header("Authorization", "Bearer sk-provider-key")
        .header("x-api-key", "sk-ant-provider")
        .header("x-custom", "kept")
        .body(r#"{"model":"gpt-4o-mini"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp
        .headers()
        .get("helicone-id")
        .expect("Helicone-Id on every response")
        .to_str()
        .unwrap();
    assert!(uuid_like(id), "{id}");
    let seen = mock.last();
    assert_eq!(seen.path_and_query, "/openai/v1/echo?x=1&y=%2Fz&empty=");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-provider-key"));
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-provider"));
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert_eq!(seen.header("host"), Some(mock.addr.to_string().as_str()));
    for (k, v) in &seen.headers {
        assert!(
            !k.starts_with("helicone-") && !k.starts_with("x-helicone-"),
            "leaked {k}: {v}"
        );
        assert!(
            !v.contains("gw-key-not-configured"),
            "gateway key leaked in {k}"
        );
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn request_id_header_is_reused_when_it_is_a_uuid() {
    let mock = MockProvider::start();
    let gw = gateway_for(&mock);
    let id = "7b0c4f5e-2f1a-4c3e-9a43-1f2e3d4c5b6a";
    let resp = client()
        .get(gw.url("/v1/models"))
        .header("Helicone-Target-Url", mock.origin())
        .header("Helicone-Request-Id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["helicone-id"], id);
}

#[tokio::test]
async fn provider_prefix_and_host_alias_route_to_the_catalogue_origin() {
    let mock = MockProvider::start();
    let gw = gateway_for(&mock);
    let c = client();
    let r = c
        .post(gw.url("/mock/v1/echo?q=1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.last().path_and_query, "/v1/echo?q=1");

    for host in ["mock.gw.test", "alias.gw.test:8080"] {
        let r = c
            .post(gw.url("/v1/echo?h=1"))
            .header("host", host)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
        let seen = mock.last();
        assert_eq!(seen.path_and_query, "/v1/echo?h=1");
        assert_eq!(seen.header("host"), Some(mock.addr.to_string().as_str()));
    }
}

#[tokio::test]
async fn unknown_route_is_404_with_a_hint() {
    let mock = MockProvider::start();
    let gw = gateway_for(&mock);
    let r = client()
        .post(gw.url("/v2/whatever"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("helicone-id"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Helicone-Target-Url"),
        "{v}"
    );
    assert_eq!(mock.hits(), 0);
}

#[tokio::test]
async fn malformed_target_url_is_400_naming_the_header() {
    let mock = MockProvider::start();
    let gw = gateway_for(&mock);
    for bad in [
        "not a url",
        "ftp://api.openai.com",
        "https://",
        "api.openai.com",
    ] {
        let r = post_target(&gw, "/v1/chat/completions", bad, "{}").await;
        assert_eq!(r.status(), 400, "{bad}");
        let v: serde_json::Value = r.json().await.unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("Helicone-Target-Url") && msg.contains(bad),
            "{msg}"
        );
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    assert_eq!(mock.hits(), 0);
}

async fn echo(resp: reqwest::Response) -> serde_json::Value {
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn five_mib_bodies_arrive_byte_exact_with_length_chunked_and_continue() {
    let mock = MockProvider::start();
    let gw = gateway_for(&mock);
    let body = random_bytes(5 * 1024 * 1024, 42);
    let want = sha256_hex(&body);
    let target = mock.origin();

    // Content-Length
    let v = echo(
        client()
            .post(gw.url("/echo"))
            .header("Helicone-Target-Url", &target)
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["body_sha256"], want.as_str());
    assert_eq!(v["content_length"], "5242880");

    // chunked upload (no Content-Length), in uneven pieces
    let v = echo(
        client()
            .post(gw.url("/echo"))
            .header("Helicone-Target-Url", &target)
            .body(chunked(&body, 77_777))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["body_sha256"], want.as_str());
    assert_eq!(v["body_len"], 5_242_880);

    // a small chunked upload takes the normal proxy path
    let v = echo(
        client()
            .post(gw.url("/echo"))
            .header("Helicone-Target-Url", &target)
            .body(chunked(b"{\"a\":1}", 5))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["body_sha256"], sha256_hex(b"{\"a\":1}").as_str());

    // Expect: 100-continue over a raw socket: the body is only sent after "100 Continue"
    let port = gw.port;
    let (status, resp_body) = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST /echo HTTP/1.1\r\nhost: gw\r\nhelicone-target-url: {target}\r\ncontent-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        let mut first = [0u8; 25];
        s.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(&body).unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).unwrap();
        (rest.lines().next().unwrap().to_string(), rest.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
    })
    .await
    .unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(resp_body.contains(&want), "{resp_body}");
    assert!(
        !mock.last().headers.iter().any(|(k, _)| k == "expect"),
        "Expect must not be forwarded"
    );
}

#[tokio::test]
async fn bodies_over_the_cap_get_413() {
    let mock = MockProvider::start();
    let conf = GatewayConf {
        limits: "{max_body_bytes: 1048576}".into(),
        ..GatewayConf::default()
    }
    .allow(&mock.origin());
    let gw = Gateway::start(conf);
    let big = random_bytes(2 * 1024 * 1024, 7);
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Target-Url", mock.origin())
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "body_too_large");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_body_bytes"));
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Target-Url", mock.origin())
        .body(chunked(&big, 100_000))
        .send()
        .await;
    // the gateway answers 413 as soon as the cap is passed; the client may still be uploading
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    assert_eq!(mock.hits(), 0);
    // exactly at the cap is fine
    let ok = random_bytes(1024 * 1024, 8);
    let v = echo(
        client()
            .post(gw.url("/echo"))
            .header("Helicone-Target-Url", mock.origin())
            .body(ok.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["body_sha256"], sha256_hex(&ok).as_str());
}

#[tokio::test]
async fn sse_streams_through_as_events_arrive() {
    let mock = MockProvider::start();
    let gw = gateway_for(&mock);
    let start = Instant::now();
    let r = client()
        .get(gw.url("/sse?n=5&ms=300"))
        .header("Helicone-Target-Url", mock.origin())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert!(r.headers().contains_key("helicone-id"));
    let mut stream = r.bytes_stream();
    let mut arrivals = vec![];
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        arrivals.push(start.elapsed());
        all.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(all).unwrap();
    assert_eq!(text.matches("data: ").count(), 6, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    // the upstream takes >= 1.5 s; the first event must not wait for the end
    assert!(
        *arrivals.last().unwrap() >= Duration::from_millis(1400),
        "{arrivals:?}"
    );
    assert!(
        arrivals[0] < Duration::from_millis(1000),
        "first event was held back: {arrivals:?}"
    );
}

#[tokio::test]
async fn client_hang_up_stops_the_upstream_stream() {
    let mock = MockProvider::start();
    let gw = gateway_for(&mock);
    let r = client()
        .get(gw.url("/sse?n=100&ms=50"))
        .header("Helicone-Target-Url", mock.origin())
        .send()
        .await
        .unwrap();
    let mut stream = r.bytes_stream();
    let _ = stream.next().await.unwrap().unwrap();
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(4);
    while mock
        .state
        .sse_aborted
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "upstream stream still running after the client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        mock.state
            .sse_completed
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn upstream_refused_is_502_and_silent_is_504() {
    let mock = MockProvider::start();
    let closed_port = ClosedPort::new();
    let closed = closed_port.origin();
    let conf = GatewayConf {
        upstream: "{connect_timeout_ms: 1000, read_timeout_secs: 1}".into(),
        ..GatewayConf::default()
    }
    .allow(&mock.origin())
    .allow(&closed);
    let gw = Gateway::start(conf);
    let r = post_target(&gw, "/v1/chat/completions", &closed, "{}").await;
    assert_eq!(r.status(), 502);
    assert!(r.headers().contains_key("helicone-id"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable");

    let start = Instant::now();
    let r = post_target(&gw, "/hang", &mock.origin(), "{}").await;
    assert_eq!(r.status(), 504);
    assert!(start.elapsed() < Duration::from_secs(10));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn upstream_errors_pass_through_untouched() {
    let mock = MockProvider::start();
    let gw = gateway_for(&mock);
    let r = post_target(&gw, "/status/429", &mock.origin(), "{}").await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":{"message":"scripted 429"}}"#
    );
}

#[tokio::test]
async fn health_endpoints_answer() {
    let mock = MockProvider::start();
    let gw = gateway_for(&mock);
    for p in ["/healthz", "/healthcheck", "/readyz"] {
        let r = client().get(gw.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
        assert_eq!(r.text().await.unwrap(), r#"{"status":"ok"}"#);
    }
    assert_eq!(mock.hits(), 0);
}

#[tokio::test]
async fn metrics_endpoint_counts_requests_rejections_and_bytes() {
    let mock = MockProvider::start();
    let gw = gateway_for(&mock);
    let c = client();
    for _ in 0..3 {
        c.post(gw.url("/mock/v1/chat/completions"))
            .body(r#"{"model":"m"}"#)
            .send()
            .await
            .unwrap();
    }
    c.post(gw.url("/nowhere")).send().await.unwrap();
    c.post(gw.url("/x"))
        .header("Helicone-Target-Url", "http://127.0.0.2:9")
        .send()
        .await
        .unwrap();
    // `logging` runs after the response is sent: wait for the last request's to finish
    let needles = [
        r#"switchyard_requests_total{provider="mock",status_class="2xx"} 3"#,
        r#"switchyard_rejections_total{reason="no_route"} 1"#,
        r#"switchyard_rejections_total{reason="ssrf"} 1"#,
        "switchyard_requests_in_flight 0",
    ];
    let text = metrics_with(&gw, &needles).await;
    let has = |needle: &str| assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    has(r#"switchyard_requests_total{provider="mock",status_class="2xx"} 3"#);
    has(r#"switchyard_rejections_total{reason="no_route"} 1"#);
    has(r#"switchyard_rejections_total{reason="ssrf"} 1"#);
    has(r#"switchyard_request_duration_seconds_count{provider="mock"} 3"#);
    has(r#"switchyard_upstream_duration_seconds_count{provider="mock"} 3"#);
    has(r#"switchyard_time_to_first_byte_seconds_count{provider="mock"} 3"#);
    has(r#"switchyard_request_body_bytes_total{provider="mock"} 39"#);
    has("switchyard_response_body_bytes_total{provider=\"mock\"}");
    has("switchyard_requests_in_flight 0");
}
