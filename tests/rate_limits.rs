//! Rate limits end to end: `Helicone-RateLimit-Policy` (exactly N, the sliding window, segments,
//! cents), gateway-key limits (requests, daily budget, concurrency), reserve-then-settle under 50
//! concurrent requests, two gateways sharing one Redis, a Redis outage either way, and the
//! in-memory store's bound under a flood of distinct users.

mod common;

use std::time::Duration;

use common::*;

const KEYS: [(&str, &str); 2] = [
    ("SWITCHYARD_TEST_KEY_A", "sk-gw-a"),
    ("SWITCHYARD_TEST_KEY_B", "sk-gw-b"),
];

/// A gateway in front of `mock`; `key_a_limits` is team-a's `limits:` (team-b has none);
/// `limits` the `limits:` section.
fn gateway_with(mock: &MockProvider, key_a_limits: &str, limits: &str) -> Gateway {
    let mut conf = GatewayConf::default().allow(&mock.origin());
    let a = if key_a_limits.is_empty() {
        String::new()
    } else {
        format!(", limits: {key_a_limits}")
    };
    conf.keys = vec![
        format!("{{id: team-a, env: SWITCHYARD_TEST_KEY_A{a}}}"),
        "{id: team-b, env: SWITCHYARD_TEST_KEY_B}".into(),
    ];
    conf.limits = limits.to_string();
    conf.extra = "export: {batch_max_delay_ms: 20}\n".into();
    Gateway::start_with_env(conf, &KEYS)
}

fn gateway(mock: &MockProvider, key_a_limits: &str) -> Gateway {
    gateway_with(mock, key_a_limits, "{}")
}

/// POSTs `body` to `path` (passthrough to `mock`) as team-a, with `extra` headers.
async fn send(
    gw: &Gateway,
    mock: &MockProvider,
    path: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> Answer {
    let target = mock.origin();
    let defaults = [
        ("helicone-target-url", target.as_str()),
        ("helicone-auth", "Bearer sk-gw-a"),
        ("content-type", "application/json"),
    ];
    post_with(gw, path, body, &defaults, extra).await
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const PATH: &str = "/v1/chat/completions";

async fn with_policy(gw: &Gateway, mock: &MockProvider, policy: &str) -> Answer {
    send(
        gw,
        mock,
        PATH,
        CHAT,
        &[("helicone-ratelimit-policy", policy)],
    )
    .await
}

#[tokio::test]
async fn a_quota_of_three_admits_exactly_three_and_the_fourth_is_a_429_that_says_why() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "");
    for remaining in ["2", "1", "0"] {
        let a = with_policy(&gw, &mock, "3;w=60").await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.h("helicone-ratelimit-limit"), "3");
        assert_eq!(a.h("helicone-ratelimit-remaining"), remaining);
        assert_eq!(a.h("helicone-ratelimit-policy"), "3;w=60");
        let reset: u64 = a.h("helicone-ratelimit-reset").parse().unwrap();
        assert!((1..=60).contains(&reset), "{reset}");
    }
    let a = with_policy(&gw, &mock, "3;w=60").await;
    assert_eq!(a.status, 429, "{}", a.text());
    assert_eq!(
        mock.hits(),
        3,
        "the refused request never reached the provider"
    );
    let retry: u64 = a.h("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(a.h("helicone-ratelimit-remaining"), "0");
    assert_eq!(a.h("helicone-ratelimit-policy"), "3;w=60");
    let e = &a.json()["error"];
    assert_eq!(e["type"], "rate_limit_error");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("'3;w=60'") && msg.contains("at most 3 requests per 60 s"),
        "{msg}"
    );
    // another key has its own counter
    let b = send(
        &gw,
        &mock,
        PATH,
        CHAT,
        &[
            ("helicone-ratelimit-policy", "3;w=60"),
            ("helicone-auth", "Bearer sk-gw-b"),
        ],
    )
    .await;
    assert_eq!(b.status, 200);
    // the refusal is in the log record and in the metrics
    let r = logged_record(&gw, &a.id()).await;
    assert_eq!(r["status"], 429);
    assert_eq!(r["rejection"], "rate_limit");
    assert_eq!(r["rate_limit"], "header 3;w=60 refused");
    let ok = logged_record(&gw, &b.id()).await;
    assert_eq!(ok["rate_limit"], "header 3;w=60");
    let m = metrics_with(
        &gw,
        &[r#"switchyard_rate_limit_decisions_total{result="refused",rule="header"} 1"#],
    )
    .await;
    assert!(
        m.contains(r#"switchyard_rate_limit_decisions_total{result="admitted",rule="header"} 4"#),
        "{m}"
    );
    assert!(
        m.contains(r#"switchyard_rejections_total{reason="rate_limit"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn the_window_slides() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "");
    for _ in 0..2 {
        assert_eq!(with_policy(&gw, &mock, "2;w=2").await.status, 200);
    }
    let refused = with_policy(&gw, &mock, "2;w=2").await;
    assert_eq!(refused.status, 429);
    let reset: u64 = refused.h("helicone-ratelimit-reset").parse().unwrap();
    assert!((1..=2).contains(&reset), "{reset}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let a = with_policy(&gw, &mock, "2;w=2").await;
    assert_eq!(a.status, 200, "the first two left the window");
    assert_eq!(a.h("helicone-ratelimit-remaining"), "1");
    assert_eq!(mock.hits(), 3);
}

#[tokio::test]
async fn user_and_property_segments_count_apart_and_a_missing_value_is_a_400() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "");
    let per_user = [("helicone-ratelimit-policy", "1;w=60;s=user")];
    let as_user = |u: &'static str| [per_user[0], ("helicone-user-id", u)];
    assert_eq!(
        send(&gw, &mock, PATH, CHAT, &as_user("u1")).await.status,
        200
    );
    assert_eq!(
        send(&gw, &mock, PATH, CHAT, &as_user("u1")).await.status,
        429
    );
    assert_eq!(
        send(&gw, &mock, PATH, CHAT, &as_user("u2")).await.status,
        200
    );
    // without the header, the body's `user` is the user
    let body_u3 = r#"{"model":"gpt-4o-mini","messages":[],"user":"u3"}"#;
    assert_eq!(send(&gw, &mock, PATH, body_u3, &per_user).await.status, 200);
    assert_eq!(send(&gw, &mock, PATH, body_u3, &per_user).await.status, 429);
    let none = send(&gw, &mock, PATH, CHAT, &per_user).await;
    assert_eq!(none.status, 400);
    assert!(
        none.text().contains("Helicone-User-Id") && none.text().contains("<quota>;w=<seconds>"),
        "{}",
        none.text()
    );

    let per_team = |t: &'static str| {
        [
            ("helicone-ratelimit-policy", "2;w=60;s=team"),
            ("helicone-property-team", t),
        ]
    };
    for _ in 0..2 {
        assert_eq!(
            send(&gw, &mock, PATH, CHAT, &per_team("red")).await.status,
            200
        );
    }
    assert_eq!(
        send(&gw, &mock, PATH, CHAT, &per_team("red")).await.status,
        429
    );
    assert_eq!(
        send(&gw, &mock, PATH, CHAT, &per_team("blue")).await.status,
        200
    );
    let missing = send(
        &gw,
        &mock,
        PATH,
        CHAT,
        &[("helicone-ratelimit-policy", "2;w=60;s=team")],
    )
    .await;
    assert_eq!(missing.status, 400);
    assert!(
        missing.text().contains("Helicone-Property-team"),
        "{}",
        missing.text()
    );
    assert_eq!(mock.hits(), 6);
}

#[tokio::test]
async fn an_invalid_policy_is_a_400_that_quotes_the_grammar() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "");
    for bad in [
        "10",
        "10;w=0",
        "ten;w=60",
        "10;w=60;u=tokens",
        "10;w=60;s=a b",
    ] {
        let a = with_policy(&gw, &mock, bad).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text());
        let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains("Helicone-RateLimit-Policy") && msg.contains("<quota>;w=<seconds>"),
            "{bad}: {msg}"
        );
    }
    assert_eq!(mock.hits(), 0);
}

/// A chat body for `o1` ($15 / $60 per million tokens) whose cost the gateway estimates exactly:
/// the mock reports the estimate's own token counts (a third of the body's bytes as prompt
/// tokens, `max_tokens` as completion tokens).
fn priced_request() -> (String, String, u64) {
    let body =
        r#"{"model":"o1","max_tokens":100,"messages":[{"role":"user","content":"price me"}]}"#;
    let pt = body.len().div_ceil(3) as u64;
    let micros = pt * 15 + 100 * 60;
    (format!("{PATH}?pt={pt}&ct=100"), body.to_string(), micros)
}

#[tokio::test]
async fn a_cents_policy_stops_once_the_real_cost_is_spent() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "");
    let (path, body, micros) = priced_request();
    // 2 cents = 20000 micro-dollars: room for floor(20000 / cost) requests
    let fits = 20_000 / micros;
    assert!(fits >= 2, "{micros}");
    let policy = [("helicone-ratelimit-policy", "2;w=60;u=cents")];
    for i in 0..fits {
        let a = send(&gw, &mock, &path, &body, &policy).await;
        assert_eq!(a.status, 200, "request {i}: {}", a.text());
        assert_eq!(a.h("helicone-ratelimit-limit"), "2", "in cents");
        // settled (in `logging`) before the next one is counted
        let r = logged_record(&gw, &a.id()).await;
        assert_eq!(r["cost_usd"].as_f64().unwrap(), micros as f64 / 1e6);
    }
    let a = send(&gw, &mock, &path, &body, &policy).await;
    assert_eq!(a.status, 429, "{}", a.text());
    assert!(a.text().contains("2 cents per 60 s"), "{}", a.text());
    assert_eq!(mock.hits() as u64, fits);
}

#[tokio::test]
async fn a_key_budget_stops_after_the_day_s_spend_and_says_when_it_resets() {
    let mock = MockProvider::start();
    let (path, body, micros) = priced_request();
    // exactly three requests' cost
    let budget = (3 * micros) as f64 / 1e6;
    let gw = gateway(&mock, &format!("{{usd_per_day: {budget}}}"));
    for _ in 0..3 {
        let a = send(&gw, &mock, &path, &body, &[]).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert!(a
            .h("helicone-ratelimit-policy")
            .ends_with(";w=86400;u=cents"));
        logged_record(&gw, &a.id()).await;
    }
    let a = send(&gw, &mock, &path, &body, &[]).await;
    assert_eq!(a.status, 429, "{}", a.text());
    let msg = a.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("team-a") && msg.contains("usd_per_day") && msg.contains("today (UTC)"),
        "{msg}"
    );
    let retry: u64 = a.h("retry-after").parse().unwrap();
    assert!((1..=86_400).contains(&retry), "until UTC midnight: {retry}");
    assert_eq!(mock.hits(), 3);
    // a request to a model without a price still counts against a spent budget
    let unpriced = r#"{"model":"no-such-model","messages":[]}"#;
    assert_eq!(send(&gw, &mock, PATH, unpriced, &[]).await.status, 429);
    // another key is not limited
    let b = send(
        &gw,
        &mock,
        &path,
        &body,
        &[("helicone-auth", "Bearer sk-gw-b")],
    )
    .await;
    assert_eq!(b.status, 200);
    assert_eq!(b.h("helicone-ratelimit-policy"), "", "no limit, no headers");
}

#[tokio::test]
async fn a_key_request_limit_and_a_header_policy_must_both_pass() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "{requests: 2, window_secs: 60}");
    let a = send(&gw, &mock, PATH, CHAT, &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.h("helicone-ratelimit-policy"),
        "2;w=60",
        "the key's limit"
    );
    let a = with_policy(&gw, &mock, "10;w=60").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.h("helicone-ratelimit-policy"),
        "10;w=60",
        "the header's policy"
    );
    let a = with_policy(&gw, &mock, "10;w=60").await;
    assert_eq!(a.status, 429, "{}", a.text());
    assert_eq!(
        a.h("helicone-ratelimit-policy"),
        "2;w=60",
        "the refusing limit"
    );
    assert!(
        a.text().contains("auth.keys[].limits.requests"),
        "{}",
        a.text()
    );
    // the refused request did not use the header policy's allowance: 9 are left there
    let b = send(
        &gw,
        &mock,
        PATH,
        CHAT,
        &[
            ("helicone-ratelimit-policy", "10;w=60"),
            ("helicone-auth", "Bearer sk-gw-b"),
        ],
    )
    .await;
    assert_eq!(
        b.h("helicone-ratelimit-remaining"),
        "9",
        "team-b counts apart"
    );
    assert_eq!(mock.hits(), 3);
}

/// Sends `n` requests at once; returns their answers.
async fn burst(gw: &Gateway, mock: &MockProvider, path: &str, body: &str, n: usize) -> Vec<Answer> {
    let futures: Vec<_> = (0..n).map(|_| send(gw, mock, path, body, &[])).collect();
    futures_util::future::join_all(futures).await
}

async fn fifty_concurrent_against_a_budget_of_ten(gws: &[&Gateway], mock: &MockProvider) {
    let (path, body, micros) = priced_request();
    // every request is still running when the last one is counted
    let path = format!("{path}&delay_ms=1500");
    let futures: Vec<_> = (0..50)
        .map(|i| {
            let (gw, path, body) = (gws[i % gws.len()], path.clone(), body.clone());
            async move { (gw, send(gw, mock, &path, &body, &[]).await) }
        })
        .collect();
    let answers = futures_util::future::join_all(futures).await;
    let statuses: Vec<u16> = answers.iter().map(|(_, a)| a.status).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (ok, refused),
        (10, 40),
        "each in-flight request holds its estimated cost: {statuses:?}"
    );
    assert_eq!(mock.hits(), 10);
    let mut spent = 0.0;
    for (gw, a) in answers.iter().filter(|(_, a)| a.status == 200) {
        spent += logged_record(gw, &a.id()).await["cost_usd"]
            .as_f64()
            .unwrap();
    }
    let budget = (10 * micros) as f64 / 1e6;
    assert!(spent <= budget + 1e-12, "spent {spent} of {budget}");
    // the budget is spent: the next request is refused
    let a = send(gws[0], mock, &path, &body, &[]).await;
    assert_eq!(a.status, 429, "{}", a.text());
}

#[tokio::test]
async fn fifty_concurrent_requests_cannot_overrun_a_budget_of_ten_requests() {
    let mock = MockProvider::start();
    let (_, _, micros) = priced_request();
    let budget = (10 * micros) as f64 / 1e6;
    let gw = gateway(&mock, &format!("{{usd_per_day: {budget}}}"));
    fifty_concurrent_against_a_budget_of_ten(&[&gw], &mock).await;
}

#[tokio::test]
async fn max_concurrent_caps_requests_in_flight_and_frees_the_slot_when_one_ends() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "{max_concurrent: 2}");
    let slow = format!("{PATH}?delay_ms=800");
    let answers = burst(&gw, &mock, &slow, CHAT, 5).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    let refused = answers.iter().find(|a| a.status == 429).unwrap();
    assert!(
        refused.text().contains("max_concurrent"),
        "{}",
        refused.text()
    );
    assert_eq!(refused.h("retry-after"), "1");
    // the slots were given back when those two ended (settled in `logging`)
    logged_record(&gw, &answers.iter().find(|a| a.status == 200).unwrap().id()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = burst(&gw, &mock, &slow, CHAT, 2).await;
    assert!(again.iter().all(|a| a.status == 200));
}

fn redis_limits() -> String {
    format!(
        "{{redis: {{url: 'redis://127.0.0.1:6379/0', prefix: 'switchyard-test-{}:'}}}}",
        uuid::Uuid::new_v4().simple()
    )
}

#[tokio::test]
async fn two_gateways_on_one_redis_enforce_one_combined_limit() {
    let mock = MockProvider::start();
    let limits = redis_limits();
    let (a, b) = (
        gateway_with(&mock, "", &limits),
        gateway_with(&mock, "", &limits),
    );
    let mut admitted = 0;
    for i in 0..10 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = with_policy(gw, &mock, "5;w=60").await;
        if r.status == 200 {
            admitted += 1;
        } else {
            assert_eq!(r.status, 429, "{}", r.text());
        }
    }
    assert_eq!(admitted, 5, "one limit across both gateways");
    assert_eq!(mock.hits(), 5);
}

#[tokio::test]
async fn two_gateways_on_one_redis_share_a_key_budget_under_fifty_concurrent_requests() {
    let mock = MockProvider::start();
    let (_, _, micros) = priced_request();
    let budget = (10 * micros) as f64 / 1e6;
    let limits = redis_limits();
    let key = format!("{{usd_per_day: {budget}}}");
    let (a, b) = (
        gateway_with(&mock, &key, &limits),
        gateway_with(&mock, &key, &limits),
    );
    fifty_concurrent_against_a_budget_of_ten(&[&a, &b], &mock).await;
}

#[tokio::test]
async fn two_gateways_on_one_redis_share_an_unapproved_origin_s_daily_quota() {
    let mock = MockProvider::start();
    let limits = redis_limits();
    let start = || {
        let mut conf = GatewayConf::default().allow_unapproved(&mock.origin());
        conf.unapproved = "{policy: limit, per_second: 100, per_day: 3}".into();
        conf.limits = limits.clone();
        Gateway::start(conf)
    };
    let (a, b) = (start(), start());
    let mut statuses = Vec::new();
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = post_target(gw, PATH, &mock.origin(), r#"{"model":"gpt-4o-mini"}"#).await;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    assert_eq!(mock.hits(), 3);
}

#[tokio::test]
async fn redis_down_fails_open_by_default_and_closed_when_configured() {
    let mock = MockProvider::start();
    let dead_port = ClosedPort::new();
    let dead = dead_port.port;
    let open = gateway_with(
        &mock,
        "",
        &format!("{{redis: {{url: 'redis://127.0.0.1:{dead}/0', timeout_ms: 100}}}}"),
    );
    let a = with_policy(&open, &mock, "1;w=60").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let a = with_policy(&open, &mock, "1;w=60").await;
    assert_eq!(a.status, 200, "uncounted: fail-open");
    let m = metrics_with(
        &open,
        &[r#"switchyard_rate_limit_decisions_total{result="uncounted",rule="header"} 2"#],
    )
    .await;
    assert!(
        m.contains("switchyard_rate_limit_store_errors_total 2"),
        "{m}"
    );
    assert!(open.log().contains("fail-open"), "logged");

    let closed = gateway_with(
        &mock,
        "",
        &format!(
            "{{on_store_error: closed, redis: {{url: 'redis://127.0.0.1:{dead}/0', timeout_ms: 100}}}}"
        ),
    );
    let a = with_policy(&closed, &mock, "1;w=60").await;
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(a.text().contains("on_store_error: closed"), "{}", a.text());
    let r = logged_record(&closed, &a.id()).await;
    assert_eq!(r["rejection"], "limit_store");
    // no limit, no store: requests without a policy pass
    assert_eq!(send(&closed, &mock, PATH, CHAT, &[]).await.status, 200);
    assert_eq!(mock.hits(), 3);
}

/// Cache hits do not count against rate limits (gateway-semantics section 7): a hit takes
/// nothing, is served even once the limit is reached, and shows the limit's room as it is. In
/// memory and in Redis.
#[tokio::test]
async fn a_cache_hit_is_not_counted_is_served_past_the_limit_and_shows_the_room() {
    let mock = MockProvider::start();
    let local = gateway(&mock, "");
    let shared = gateway_with(&mock, "", &redis_limits());
    for (gw, store) in [(&local, "memory"), (&shared, "redis")] {
        let before = mock.hits();
        let cached = |policy: &'static str| {
            [
                ("helicone-cache-enabled", "true"),
                ("helicone-ratelimit-policy", policy),
            ]
        };
        // a fresh cache key per store, so the two gateways' runs are independent
        let body = |n: u32| {
            format!(
                r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{store} {n}"}}]}}"#
            )
        };
        let miss = send(gw, &mock, PATH, &body(0), &cached("2;w=60")).await;
        assert_eq!((miss.status, miss.h("helicone-cache")), (200, "MISS"));
        assert_eq!(miss.h("helicone-ratelimit-remaining"), "1", "{store}");
        for _ in 0..4 {
            let hit = send(gw, &mock, PATH, &body(0), &cached("2;w=60")).await;
            assert_eq!(
                (hit.status, hit.h("helicone-cache")),
                (200, "HIT"),
                "{store}"
            );
            assert_eq!(
                hit.h("helicone-ratelimit-remaining"),
                "1",
                "{store}: a hit takes nothing from the limit"
            );
            assert_eq!(hit.h("helicone-ratelimit-limit"), "2");
            assert_eq!(hit.h("helicone-ratelimit-policy"), "2;w=60");
            let reset: u64 = hit.h("helicone-ratelimit-reset").parse().unwrap();
            assert!((1..=60).contains(&reset), "{reset}");
            let r = logged_record(gw, &hit.id()).await;
            assert_eq!(r["rate_limit"], "header 2;w=60 not counted (cache hit)");
        }
        // the second miss takes the last unit, the third is refused
        let other = send(gw, &mock, PATH, &body(1), &cached("2;w=60")).await;
        assert_eq!((other.status, other.h("helicone-cache")), (200, "MISS"));
        assert_eq!(other.h("helicone-ratelimit-remaining"), "0");
        let refused = send(gw, &mock, PATH, &body(2), &cached("2;w=60")).await;
        assert_eq!(refused.status, 429, "{store}: {}", refused.text());
        assert!(refused.h("retry-after").parse::<u64>().unwrap() >= 1);
        // a cached answer is still served once the limit is reached
        let hit = send(gw, &mock, PATH, &body(0), &cached("2;w=60")).await;
        assert_eq!(
            (hit.status, hit.h("helicone-cache")),
            (200, "HIT"),
            "{store}"
        );
        assert_eq!(hit.h("helicone-ratelimit-remaining"), "0");
        assert_eq!(
            mock.hits() - before,
            2,
            "{store}: only the misses went upstream"
        );
        // a bad segment is a 400 even when the answer is cached
        let bad = send(gw, &mock, PATH, &body(0), &cached("2;w=60;s=user")).await;
        assert_eq!(bad.status, 400, "{}", bad.text());
    }
    // money: the miss spends the budget (one cent holds one such request), the hits cost
    // nothing and are served on; another miss no longer fits
    let (path, body, micros) = priced_request();
    assert_eq!(10_000 / micros, 1, "{micros}");
    let cents = [
        ("helicone-cache-enabled", "true"),
        ("helicone-ratelimit-policy", "1;w=60;u=cents"),
    ];
    let miss = send(&local, &mock, &path, &body, &cents).await;
    assert_eq!((miss.status, miss.h("helicone-cache")), (200, "MISS"));
    logged_record(&local, &miss.id()).await;
    let hits = mock.hits();
    for _ in 0..3 {
        let a = send(&local, &mock, &path, &body, &cents).await;
        assert_eq!(
            (a.status, a.h("helicone-cache")),
            (200, "HIT"),
            "{}",
            a.text()
        );
        assert_eq!(logged_record(&local, &a.id()).await["cost_usd"], 0.0);
    }
    assert_eq!(mock.hits(), hits);
    let other = body.replace("price me", "price me too");
    let refused = send(&local, &mock, &path, &other, &cents).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
}

/// The gateway's resident memory, in KiB (`VmRSS` of /proc/<pid>/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in:\n{status}"))
}

#[tokio::test]
async fn distinct_huge_user_ids_cannot_grow_the_gateway_and_a_hot_users_limit_still_holds() {
    // each request names another 8 KB user under a year-long window: before the fix, each one
    // kept its 8 KB counter key (and more) for the year, with no bound
    let mock = MockProvider::start();
    let gw = gateway_with(&mock, "", "{max_scopes: 256, max_memory_bytes: 1048576}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()
        .unwrap();
    let target = mock.origin();
    let send = |user: String, policy: &'static str| {
        let req = http
            .post(gw.url(PATH))
            .header("helicone-target-url", &target)
            .header("helicone-auth", "Bearer sk-gw-a")
            .header("content-type", "application/json")
            .header("helicone-ratelimit-policy", policy)
            .header("helicone-user-id", user)
            .body(CHAT);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let huge = |i: usize| format!("{i:08}-{}", "x".repeat(8 * 1024 - 9));
    let flood = |from: usize, n: usize| {
        futures_util::future::join_all(
            (from..from + n).map(|i| send(huge(i), "1000;w=31536000;s=user")),
        )
    };
    // warm up: connections, buffers and the allocator's pools
    for round in 0..10 {
        assert!(flood(round * 20, 20).await.iter().all(|s| *s == 200));
    }
    let before = rss_kib(gw.pid());
    let (mut admitted, mut refused) = (0, 0);
    for round in 0..100 {
        let statuses = flood(1_000 + round * 20, 20).await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        // the hot user comes back every 20 requests: its counter is never the least recent
        match send("hot-user".into(), "50;w=31536000;s=user").await {
            200 => admitted += 1,
            429 => refused += 1,
            s => panic!("hot user: {s}"),
        }
    }
    let grown = rss_kib(gw.pid()).saturating_sub(before);
    // 2,000 scopes of 8 KB keys alone would be 16 MB; the store holds at most 256 small ones
    assert!(
        grown < 6 * 1024,
        "RSS grew by {grown} KiB over 2,000 distinct 8 KB users"
    );
    assert_eq!(
        (admitted, refused),
        (50, 50),
        "the hot user's quota of 50 holds through the flood"
    );
    let m = metrics_with(&gw, &["switchyard_rate_limit_evictions_total"]).await;
    let evicted: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_rate_limit_evictions_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{m}"));
    // 2,200 users and the hot one, at most 256 held
    assert!(evicted >= 2_201 - 256, "{evicted} evictions");
}
