//! Helicone-Fallbacks and Helicone-Retry-* end to end: scripted failing mocks, header
//! replacement, per-attempt bodies, streaming, large bodies, circuit breaker, bad input.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;

fn fallbacks(entries: &[(&str, &str, &str)]) -> String {
    // (target, headers JSON, onCodes JSON)
    let items: Vec<String> = entries
        .iter()
        .map(|(t, h, c)| format!(r#"{{"target-url":"{t}","headers":{h},"onCodes":{c}}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

fn gateway(mocks: &[&MockProvider], extra: &[String]) -> Gateway {
    let mut conf = GatewayConf {
        upstream: "{connect_timeout_ms: 1000, read_timeout_secs: 1}".into(),
        ..GatewayConf::default()
    };
    for m in mocks {
        conf = conf.allow(&m.origin());
    }
    for o in extra {
        conf = conf.allow(o);
    }
    Gateway::start(conf)
}

#[tokio::test]
async fn falls_back_on_500_with_per_entry_headers_and_index() {
    let bad = MockProvider::failing(500);
    let good = MockProvider::start();
    let gw = gateway(&[&bad, &good], &[]);
    let fb = fallbacks(&[
        (
            &bad.origin(),
            r#"{"Authorization":"Bearer key-a"}"#,
            r#"[{"from":500,"to":599}]"#,
        ),
        (
            &good.origin(),
            r#"{"Authorization":"Bearer key-b","Content-Type":"application/json"}"#,
            "[]",
        ),
    ]);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("Helicone-Fallbacks", fb)
        .header("Authorization", "Bearer client-key")
        .header("x-client-only", "1")
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["helicone-fallback-index"], "1");
    assert!(r.headers().contains_key("helicone-id"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    let a = bad.last();
    let b = good.last();
    assert_eq!(a.header("authorization"), Some("Bearer key-a"));
    assert_eq!(
        b.header("authorization"),
        Some("Bearer key-b"),
        "entry headers replace the client's"
    );
    assert_eq!(b.header("content-type"), Some("application/json"));
    assert!(a.header("x-client-only").is_none() && b.header("x-client-only").is_none());
    assert!(
        !b.headers.iter().any(|(_, v)| v.contains("key-a")),
        "one provider's key must not reach another"
    );
    assert_eq!(b.path_and_query, "/v1/chat/completions");
    assert!(a.header("helicone-fallbacks").is_none() && b.header("helicone-fallbacks").is_none());
}

#[tokio::test]
async fn body_key_override_applies_to_its_attempt_only() {
    let bad = MockProvider::failing(503);
    let good = MockProvider::start();
    let gw = gateway(&[&bad, &good], &[]);
    let fb = format!(
        r#"[{{"target-url":"{}","headers":{{}},"onCodes":[503],"bodyKeyOverride":{{"model":"override-a","extra":{{"x":1}}}}}},{{"target-url":"{}/ignored","headers":{{}},"onCodes":[]}}]"#,
        bad.origin(),
        good.origin()
    );
    let body = r#"{"model":"original","messages":[{"role":"user","content":"hi"}]}"#;
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Fallbacks", fb)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["body_sha256"],
        sha256_hex(body.as_bytes()).as_str(),
        "the second attempt gets the original body"
    );
    let a = bad.last();
    let want: serde_json::Value = serde_json::json!({"model":"override-a","extra":{"x":1},"messages":[{"role":"user","content":"hi"}]});
    assert_eq!(a.body_sha256, sha256_hex(want.to_string().as_bytes()));
}

#[tokio::test]
async fn connection_refused_and_timeouts_count_as_502_and_504() {
    let good = MockProvider::start();
    let hang = MockProvider::start_scripted(Script {
        hang: true,
        ..Script::default()
    });
    let closed_port = ClosedPort::new();
    let closed = closed_port.origin();
    let gw = gateway(&[&good, &hang], std::slice::from_ref(&closed));
    // refused -> 502 matches
    let fb = fallbacks(&[(&closed, "{}", "[502]"), (&good.origin(), "{}", "[]")]);
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Fallbacks", fb)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["helicone-fallback-index"], "1");
    // silent upstream (/hang) -> 504 matches; the read timeout is 1 s
    let fb = fallbacks(&[
        (&hang.origin(), "{}", "[504]"),
        (&good.origin(), "{}", "[]"),
    ]);
    let start = Instant::now();
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Fallbacks", fb)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["helicone-fallback-index"], "1");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "the 1 s read timeout ended the first attempt"
    );
    // refused but not in onCodes -> the 502 is returned as the gateway error
    let fb = fallbacks(&[(&closed, "{}", "[500]"), (&good.origin(), "{}", "[]")]);
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Fallbacks", fb)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}

#[tokio::test]
async fn the_last_entry_answer_is_returned_whatever_it_is() {
    let a = MockProvider::failing(500);
    let b = MockProvider::failing(503);
    let gw = gateway(&[&a, &b], &[]);
    let fb = fallbacks(&[
        (&a.origin(), "{}", "[500]"),
        (&b.origin(), "{}", r#"[{"from":500,"to":599}]"#),
    ]);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("Helicone-Fallbacks", fb)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["helicone-fallback-index"], "1");
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"error":{"message":"scripted 503","type":"server_error"}}"#
    );
    assert_eq!((a.hits(), b.hits()), (1, 1));
}

#[tokio::test]
async fn retries_back_off_and_honour_retry_after() {
    let flaky = MockProvider::start_scripted(Script {
        fail_first: 2,
        fail_status: 500,
        ..Script::default()
    });
    let gw = gateway(&[&flaky], &[]);
    let start = Instant::now();
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Target-Url", flaky.origin())
        .header("Helicone-Retry-Enabled", "true")
        .header("Helicone-Retry-Num", "3")
        .header("Helicone-Retry-Min-Timeout", "100")
        .header("Helicone-Retry-Max-Timeout", "1000")
        .body(r#"{"a":1}"#)
        .send()
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(flaky.hits(), 3);
    // delays: 100..200 ms then 200..400 ms
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(3000), "{took:?}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["body_sha256"],
        sha256_hex(br#"{"a":1}"#).as_str(),
        "the body is replayed on every retry"
    );

    // 429 with Retry-After: 1 within the max timeout: waits a second, not 50 ms
    let limited = MockProvider::start_scripted(Script {
        fail_first: 1,
        fail_status: 429,
        retry_after: Some("1"),
        ..Script::default()
    });
    let gw = gateway(&[&limited], &[]);
    let start = Instant::now();
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Target-Url", limited.origin())
        .header("Helicone-Retry-Enabled", "true")
        .header("Helicone-Retry-Min-Timeout", "50")
        .header("Helicone-Retry-Max-Timeout", "2000")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "{:?}",
        start.elapsed()
    );

    // retries exhausted: the last upstream answer is returned as is
    let down = MockProvider::failing(502);
    let gw = gateway(&[&down], &[]);
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Target-Url", down.origin())
        .header("Helicone-Retry-Enabled", "true")
        .header("Helicone-Retry-Num", "2")
        .header("Helicone-Retry-Min-Timeout", "10")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(down.hits(), 3);
    let metrics = client()
        .get(gw.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"switchyard_retries_total{provider="unknown"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"switchyard_upstream_attempts_total{outcome="5xx",provider="unknown"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn large_bodies_are_replayed_byte_exact_to_the_fallback() {
    let bad = MockProvider::failing(500);
    let good = MockProvider::start();
    let gw = gateway(&[&bad, &good], &[]);
    let body = random_bytes(2 * 1024 * 1024, 9);
    let want = sha256_hex(&body);
    let fb = fallbacks(&[(&bad.origin(), "{}", "[500]"), (&good.origin(), "{}", "[]")]);
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Fallbacks", &fb)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["body_sha256"], want.as_str());
    assert_eq!(v["content_length"], "2097152");
    assert_eq!(bad.last().body_sha256, want);
    // chunked upload over 64 KiB (manual path) falls back the same way
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Fallbacks", &fb)
        .body(chunked(&body, 50_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["helicone-fallback-index"], "1");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["body_sha256"], want.as_str());
}

#[tokio::test]
async fn a_streaming_request_falls_back_before_the_first_byte() {
    let bad = MockProvider::failing(529);
    let good = MockProvider::start();
    let gw = gateway(&[&bad, &good], &[]);
    let fb = fallbacks(&[
        (&bad.origin(), "{}", r#"[{"from":500,"to":599}]"#),
        (&good.origin(), "{}", "[]"),
    ]);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("Helicone-Fallbacks", fb)
        .body(r#"{"model":"m","stream":true,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["helicone-fallback-index"], "1");
    let mut text = String::new();
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        text.push_str(&String::from_utf8_lossy(&c.unwrap()));
    }
    assert!(
        text.contains("\"content\":\" mock\"") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert!(
        !text.contains("scripted"),
        "no byte of the failed attempt reaches the client"
    );
}

#[tokio::test]
async fn circuit_opens_skips_then_probes() {
    let bad = MockProvider::failing(500);
    let good = MockProvider::start();
    let mut conf = GatewayConf::default()
        .allow(&bad.origin())
        .allow(&good.origin());
    conf.extra = "health: {failure_threshold: 2, cooldown_secs: 1}\n".into();
    let gw = Gateway::start(conf);
    let fb = fallbacks(&[(&bad.origin(), "{}", "[500]"), (&good.origin(), "{}", "[]")]);
    let send = || {
        client()
            .post(gw.url("/echo"))
            .header("Helicone-Fallbacks", fb.clone())
            .body("{}")
            .send()
    };
    for _ in 0..2 {
        assert_eq!(send().await.unwrap().status(), 200);
    }
    assert_eq!(bad.hits(), 2);
    // open: skipped by the chain
    for _ in 0..3 {
        let r = send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["helicone-fallback-index"], "1");
    }
    assert_eq!(bad.hits(), 2, "an open circuit is not called");
    let metrics = client()
        .get(gw.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            r#"switchyard_circuit_state{{origin="{}"}} 1"#,
            bad.origin()
        )),
        "{metrics}"
    );
    assert!(metrics.contains(r#"outcome="skipped""#), "{metrics}");
    // after the cool-down exactly one probe goes through (and fails: open again)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(bad.hits(), 3);
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(bad.hits(), 3);
    // a request whose only target is open-circuited still goes to it
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Target-Url", bad.origin())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(bad.hits(), 4);
}

#[tokio::test]
async fn bad_fallback_and_retry_headers_are_400() {
    let good = MockProvider::start();
    let gw = gateway(&[&good], &[]);
    let cases: Vec<(&str, String, &str)> = vec![
        ("Helicone-Fallbacks", "[{".into(), "not valid JSON"),
        (
            "Helicone-Fallbacks",
            r#"{"target-url":"x"}"#.into(),
            "must be a JSON array",
        ),
        (
            "Helicone-Fallbacks",
            format!(r#"[{{"target-url":"{}","onCodes":[]}}]"#, good.origin()),
            "\"headers\" is missing",
        ),
        (
            "Helicone-Fallbacks",
            format!(
                r#"[{{"target-url":"{}","headers":{{}},"onCodes":["500"]}}]"#,
                good.origin()
            ),
            "onCodes",
        ),
        (
            "Helicone-Retry-Enabled",
            "sure".into(),
            "Helicone-Retry-Enabled",
        ),
    ];
    for (h, v, want) in cases {
        let r = client()
            .post(gw.url("/echo"))
            .header(h, v.as_str())
            .header("Helicone-Target-Url", good.origin())
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{h}: {v}");
        let body: serde_json::Value = r.json().await.unwrap();
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(h) && msg.contains(want), "{msg}");
    }
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Target-Url", good.origin())
        .header("Helicone-Retry-Enabled", "true")
        .header("Helicone-Retry-Num", "three")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Helicone-Retry-Num must be a number"));
    assert_eq!(good.hits(), 0);
}

#[tokio::test]
async fn fallback_targets_pass_the_ssrf_guard() {
    let good = MockProvider::start();
    let canary = Canary::start("127.0.0.1");
    let gw = gateway(&[&good], &[]);
    let fb = fallbacks(&[
        (&good.origin(), "{}", "[500]"),
        (&format!("http://127.1:{}", canary.addr.port()), "{}", "[]"),
    ]);
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Fallbacks", fb)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(good.hits(), 0, "nothing is sent when any target is refused");
    assert_eq!(canary.hits(), 0);
}

#[tokio::test]
async fn fallback_attempts_count_against_unapproved_origin_quotas() {
    let bad = MockProvider::failing(500);
    let unapproved = MockProvider::start();
    let conf = GatewayConf {
        unapproved: "{policy: limit, per_second: 1000, per_day: 1}".into(),
        ..GatewayConf::default()
    }
    .allow(&bad.origin())
    .allow_unapproved(&unapproved.origin());
    let gw = Gateway::start(conf);
    let fb = fallbacks(&[
        (&bad.origin(), "{}", "[500]"),
        (&unapproved.origin(), "{}", "[]"),
    ]);
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Fallbacks", &fb)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // the day's one request to the unapproved fallback is used: its attempt gets the quota's 429
    let r = client()
        .post(gw.url("/echo"))
        .header("Helicone-Fallbacks", &fb)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["helicone-fallback-index"], "1");
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("requests for today"));
    assert_eq!(unapproved.hits(), 1);
}
