//! End-to-end SSRF guard (loopback encodings only, against canary listeners), unapproved-origin
//! quotas (per second, per day, persisted across a restart) and gateway-key auth.

mod common;

use common::*;

#[tokio::test]
async fn ssrf_loopback_encodings_never_reach_the_canary() {
    let mock = MockProvider::start();
    let canary = Canary::start("127.0.0.1");
    let canary2 = Canary::start("127.0.0.2");
    // the mock is allow-listed; the canaries are not
    let gw = Gateway::start(GatewayConf::default().allow(&mock.origin()));
    let p = canary.addr.port();
    let p2 = canary2.addr.port();
    let targets = [
        format!("http://127.0.0.1:{p}"),
        format!("http://127.0.0.2:{p2}"),
        format!("http://127.1:{p}"),
        format!("http://2130706433:{p}"),
        format!("http://0x7f000001:{p}"),
        format!("http://0177.0.0.1:{p}"),
        format!("http://017700000001:{p}"),
        format!("http://[::ffff:127.0.0.1]:{p}"),
        format!("http://[::ffff:7f00:1]:{p}"),
        format!("http://localhost:{p}"),
        format!("http://LOCALHOST.:{p}"),
        format!("http://api.localhost:{p}"),
        format!("https://127.0.0.1:{p}"),
    ];
    let c = client();
    for t in &targets {
        let r = post_target(&gw, "/v1/chat/completions", t, r#"{"model":"x"}"#).await;
        assert_eq!(r.status(), 403, "{t} must be refused");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "target_refused", "{t}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("allow_private"),
            "{v}"
        );
    }
    // also via a path prefix of a catalogue provider whose origin is loopback but not allow-listed
    let dir = tempfile::tempdir().unwrap();
    let cat = mock_catalogue(dir.path(), &format!("http://127.0.0.1:{p}"));
    let gw2 = Gateway::start(GatewayConf {
        catalogue: Some(cat),
        ..GatewayConf::default()
    });
    let r = c
        .post(gw2.url("/mock/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // the allow-listed mock still works
    let r = post_target(&gw, "/echo", &mock.origin(), "{}").await;
    assert_eq!(r.status(), 200);
    assert_eq!(canary.hits(), 0, "a refused target was connected to");
    assert_eq!(canary2.hits(), 0, "a refused target was connected to");
}

#[tokio::test]
async fn unapproved_origin_is_limited_per_second() {
    let mock = MockProvider::start();
    let conf = GatewayConf {
        unapproved: "{policy: limit, per_second: 1, per_day: 10000}".into(),
        ..GatewayConf::default()
    }
    .allow_unapproved(&mock.origin());
    let gw = Gateway::start(conf);
    // two back-to-back requests: at most one is admitted within the same second
    let mut statuses = vec![];
    let mut last_429 = None;
    for _ in 0..3 {
        let r = post_target(&gw, "/echo", &mock.origin(), "{}").await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
            last_429 = Some(r.json::<serde_json::Value>().await.unwrap());
        }
    }
    assert!(
        statuses.iter().filter(|s| **s == 200).count() <= 2,
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    let v = last_429.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("1 request(s) per second") && msg.contains("approved: true"),
        "{msg}"
    );
    assert_eq!(mock.hits(), statuses.iter().filter(|s| **s == 200).count());
    // after the window the origin is admitted again
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = post_target(&gw, "/echo", &mock.origin(), "{}").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn unapproved_origin_daily_quota_survives_a_restart() {
    let mock = MockProvider::start();
    let approved = MockProvider::start();
    let conf = GatewayConf {
        unapproved: "{policy: limit, per_second: 1000, per_day: 3}".into(),
        ..GatewayConf::default()
    }
    .allow_unapproved(&mock.origin())
    .allow(&approved.origin());
    let gw = Gateway::start(conf);
    for _ in 0..3 {
        let r = post_target(&gw, "/echo", &mock.origin(), "{}").await;
        assert_eq!(r.status(), 200);
    }
    let r = post_target(&gw, "/echo", &mock.origin(), "{}").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 requests for today"),
        "{v}"
    );
    // approved origins are not counted
    for _ in 0..5 {
        let r = post_target(&gw, "/echo", &approved.origin(), "{}").await;
        assert_eq!(r.status(), 200);
    }

    let gw = gw.restart();
    let r = post_target(&gw, "/echo", &mock.origin(), "{}").await;
    assert_eq!(r.status(), 429, "the day counter must survive a restart");
    assert_eq!(mock.hits(), 3);
}

#[tokio::test]
async fn unapproved_origins_can_be_denied() {
    let mock = MockProvider::start();
    let conf = GatewayConf {
        unapproved: "{policy: deny}".into(),
        ..GatewayConf::default()
    }
    .allow_unapproved(&mock.origin());
    let gw = Gateway::start(conf);
    let r = post_target(&gw, "/echo", &mock.origin(), "{}").await;
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("origins:"),
        "{v}"
    );
    assert_eq!(mock.hits(), 0);
}

#[tokio::test]
async fn gateway_keys_are_required_when_configured() {
    let mock = MockProvider::start();
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.keys = vec![
        "{id: team-a, env: SWITCHYARD_TEST_KEY_A}".into(),
        format!("{{id: team-b, sha256: '{}'}}", sha256_hex(b"sk-gw-team-b")),
    ];
    let gw = Gateway::start_with_env(conf, &[("SWITCHYARD_TEST_KEY_A", "sk-gw-team-a")]);
    let c = client();
    let send = |auth: Option<&'static str>| {
        let mut rb = c
            .post(gw.url("/echo"))
            .header("Helicone-Target-Url", mock.origin())
            .body("{}");
        if let Some(a) = auth {
            rb = rb.header("Helicone-Auth", a);
        }
        rb.send()
    };
    for (auth, want) in [
        (None, "missing gateway key"),
        (Some("Bearer sk-wrong"), "invalid gateway key"),
        (Some("sk-gw-team-a"), "expected 'Bearer <key>'"),
    ] {
        let r = send(auth).await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert!(r.headers().contains_key("helicone-id"));
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "authentication_error");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(want),
            "{v}"
        );
    }
    assert_eq!(
        mock.hits(),
        0,
        "unauthenticated requests must not reach the upstream"
    );
    for auth in ["Bearer sk-gw-team-a", "bearer sk-gw-team-b"] {
        let r = send(Some(auth)).await.unwrap();
        assert_eq!(r.status(), 200, "{auth}");
    }
    assert!(mock.last().header("helicone-auth").is_none());
    let metrics = metrics_with(&gw, &[r#"switchyard_rejections_total{reason="auth"} 3"#]).await;
    assert!(
        metrics.contains(r#"switchyard_rejections_total{reason="auth"} 3"#),
        "{metrics}"
    );
}
