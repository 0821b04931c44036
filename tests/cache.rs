//! The response cache end to end: Helicone cache headers, hits that never reach the provider,
//! tenants kept apart, buckets, TTL, streamed and translated answers, quota bypass, the memory
//! bound, and a Redis tier shared by two gateways.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"cache me"}]}"#;

fn gateway(mock: &MockProvider, cache: &str) -> Gateway {
    let mut conf = GatewayConf::default().allow(&mock.origin());
    conf.keys = vec![
        "{id: team-a, env: SWITCHYARD_TEST_KEY_A}".into(),
        "{id: team-b, env: SWITCHYARD_TEST_KEY_B}".into(),
    ];
    conf.extra = format!("export: {{batch_max_delay_ms: 50}}\ncache: {cache}\n");
    Gateway::start_with_env(
        conf,
        &[
            ("SWITCHYARD_TEST_KEY_A", "sk-gw-a"),
            ("SWITCHYARD_TEST_KEY_B", "sk-gw-b"),
        ],
    )
}

/// POSTs `body` to `path` through the gateway (passthrough to `mock`) with `extra` headers.
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
        ("authorization", "Bearer sk-provider-1"),
        ("helicone-cache-enabled", "true"),
        ("content-type", "application/json"),
    ];
    post_with(gw, path, body, &defaults, extra).await
}

#[tokio::test]
async fn a_repeat_is_answered_from_cache_byte_identical_and_logged_as_a_hit() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "{}");
    let first = send(&gw, &mock, "/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.h("helicone-cache"), "MISS");
    let second = send(&gw, &mock, "/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.h("helicone-cache"), "HIT");
    assert_eq!(second.h("helicone-cache-bucket-idx"), "0");
    assert!(second.h("helicone-cache-latency").parse::<u64>().is_ok());
    assert_eq!(second.body, first.body, "byte-identical");
    assert_eq!(mock.hits(), 1, "the repeat never reached the provider");
    assert_ne!(second.h("helicone-id"), first.h("helicone-id"));
    assert!(second
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("x-switchyard")));
    // the log: a miss with its cost, then a hit that cost nothing and points at the original
    let a = logged_record(&gw, first.h("helicone-id")).await;
    let b = logged_record(&gw, second.h("helicone-id")).await;
    assert_eq!(a["cache"], "miss");
    assert!(a["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(b["cache"], "hit");
    assert_eq!(b["cost_usd"], 0.0);
    assert_eq!(b["cache_reference_id"], first.h("helicone-id"));
    assert!(
        b["prompt_tokens"].is_null(),
        "a hit consumed no tokens: {b}"
    );
    assert_eq!(a["prompt_tokens"], 5, "the original has them");
    let m = metrics_with(&gw, &["switchyard_cache_lookups_total{result=\"hit\"} 1"]).await;
    assert!(m.contains("switchyard_cache_bytes"), "{m}");
    // without the header nothing is cached or served from cache
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("Helicone-Target-Url", mock.origin())
        .header("Helicone-Auth", "Bearer sk-gw-a")
        .header("Authorization", "Bearer sk-provider-1")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("helicone-cache").is_none());
    assert_eq!(mock.hits(), 2);
}

#[tokio::test]
async fn tenants_provider_keys_seeds_and_bodies_get_their_own_entries() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "{}");
    let path = "/v1/chat/completions";
    assert_eq!(
        send(&gw, &mock, path, CHAT, &[]).await.h("helicone-cache"),
        "MISS"
    );
    for (what, extra) in [
        (
            "another gateway key",
            vec![("Helicone-Auth", "Bearer sk-gw-b")],
        ),
        (
            "another provider key",
            vec![("Authorization", "Bearer sk-provider-2")],
        ),
        ("a seed", vec![("Helicone-Cache-Seed", "s1")]),
    ] {
        let a = send(&gw, &mock, path, CHAT, &extra).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.h("helicone-cache"), "MISS", "{what}");
        let again = send(&gw, &mock, path, CHAT, &extra).await;
        assert_eq!(again.h("helicone-cache"), "HIT", "{what}, repeated");
    }
    let other_body = CHAT.replace("cache me", "cache me too");
    assert_eq!(
        send(&gw, &mock, path, &other_body, &[])
            .await
            .h("helicone-cache"),
        "MISS"
    );
    // ignored keys do not split entries; key order never does
    let ignore = [("Helicone-Cache-Ignore-Keys", "user,metadata")];
    let a = r#"{"model":"m","messages":[1],"user":"u1"}"#;
    let b = r#"{"user":"u2","messages":[1],"model":"m","metadata":{"x":1}}"#;
    assert_eq!(
        send(&gw, &mock, path, a, &ignore).await.h("helicone-cache"),
        "MISS"
    );
    assert_eq!(
        send(&gw, &mock, path, b, &ignore).await.h("helicone-cache"),
        "HIT"
    );
    assert_eq!(mock.hits(), 6);
}

#[tokio::test]
async fn buckets_fill_first_then_answer_from_any_of_them() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "{}");
    let b = [("Helicone-Cache-Bucket-Max-Size", "3")];
    for i in 0..3 {
        let a = send(&gw, &mock, "/v1/chat/completions", CHAT, &b).await;
        assert_eq!(a.h("helicone-cache"), "MISS", "bucket {i} fills");
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        let a = send(&gw, &mock, "/v1/chat/completions", CHAT, &b).await;
        assert_eq!(a.h("helicone-cache"), "HIT");
        seen.insert(a.h("helicone-cache-bucket-idx").to_string());
    }
    assert_eq!(mock.hits(), 3);
    assert!(
        seen.len() >= 2 && seen.iter().all(|i| ["0", "1", "2"].contains(&i.as_str())),
        "{seen:?}"
    );
}

#[tokio::test]
async fn entries_expire_after_their_max_age() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "{}");
    let cc = [("Cache-Control", "max-age=1")];
    assert_eq!(
        send(&gw, &mock, "/v1/chat/completions", CHAT, &cc)
            .await
            .h("helicone-cache"),
        "MISS"
    );
    assert_eq!(
        send(&gw, &mock, "/v1/chat/completions", CHAT, &cc)
            .await
            .h("helicone-cache"),
        "HIT"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        send(&gw, &mock, "/v1/chat/completions", CHAT, &cc)
            .await
            .h("helicone-cache"),
        "MISS"
    );
    assert_eq!(mock.hits(), 2);
}

#[tokio::test]
async fn errors_are_not_cached_and_bad_cache_headers_are_400() {
    let failing = MockProvider::failing(500);
    let gw = gateway(&failing, "{}");
    for _ in 0..2 {
        let a = send(&gw, &failing, "/v1/chat/completions", CHAT, &[]).await;
        assert_eq!(a.status, 500);
    }
    assert_eq!(failing.hits(), 2, "a 500 is never served from cache");
    for (h, v, want) in [
        (
            "Helicone-Cache-Bucket-Max-Size",
            "21",
            "Helicone-Cache-Bucket-Max-Size",
        ),
        (
            "Helicone-Cache-Ignore-Keys",
            "\"a\",",
            "Helicone-Cache-Ignore-Keys",
        ),
        ("Cache-Control", "max-age=forever", "Cache-Control"),
        ("Helicone-Cache-Enabled", "maybe", "Helicone-Cache-Enabled"),
    ] {
        let a = send(&gw, &failing, "/v1/chat/completions", CHAT, &[(h, v)]).await;
        assert_eq!(a.status, 400, "{h}: {v}");
        let e: Value = serde_json::from_slice(&a.body).unwrap();
        assert!(
            e["error"]["message"].as_str().unwrap().contains(want),
            "{e}"
        );
    }
    assert_eq!(failing.hits(), 2);
}

#[tokio::test]
async fn streams_are_stored_and_replayed_and_concurrent_twins_share_one_call() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "{}");
    let path = "/sse?n=5&ms=100";
    let first = send(&gw, &mock, path, "{}", &[]).await;
    assert_eq!(first.h("helicone-cache"), "MISS");
    let t = Instant::now();
    let second = send(&gw, &mock, path, "{}", &[]).await;
    assert_eq!(second.h("helicone-cache"), "HIT");
    assert_eq!(second.body, first.body);
    assert!(String::from_utf8_lossy(&second.body).ends_with("data: [DONE]\n\n"));
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "replayed at once: {:?}",
        t.elapsed()
    );
    assert_eq!(mock.hits(), 1);
    // two identical streams at once: the second reads the first one's answer as it arrives
    let path = "/sse?n=5&ms=100&twin=1";
    let (a, b) = tokio::join!(send(&gw, &mock, path, "{}", &[]), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(&gw, &mock, path, "{}", &[]).await
    });
    assert_eq!(a.body, b.body);
    assert_eq!(mock.hits(), 2, "one upstream call for both");
    assert_eq!(b.h("helicone-cache"), "HIT");
    let m = metrics_with(&gw, &["switchyard_cache_inflight_hits_total 1"]).await;
    assert!(m.contains("switchyard_cache_inflight_hits_total 1"), "{m}");
}

#[tokio::test]
async fn a_hit_spends_no_origin_quota() {
    let mock = MockProvider::start();
    let mut conf = GatewayConf::default().allow_unapproved(&mock.origin());
    conf.unapproved = "{policy: limit, per_second: 1, per_day: 1000}".into();
    let gw = Gateway::start(conf);
    let post = |cache: bool| {
        let mut rb = client()
            .post(gw.url("/v1/chat/completions"))
            .header("Helicone-Target-Url", mock.origin())
            .body(CHAT);
        if cache {
            rb = rb.header("Helicone-Cache-Enabled", "true");
        }
        rb.send()
    };
    assert_eq!(post(true).await.unwrap().status(), 200);
    for _ in 0..5 {
        let r = post(true).await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "hits are not counted against the 1/s quota"
        );
        assert_eq!(r.headers()["helicone-cache"], "HIT");
    }
    assert_eq!(
        post(false).await.unwrap().status(),
        429,
        "the quota itself still holds"
    );
}

#[tokio::test]
async fn unified_answers_are_cached_and_replay_translated() {
    let anthropic = MockProvider::start();
    let openai = MockProvider::failing(500);
    let gw = unified_gateway(&[("openai", &openai), ("anthropic", &anthropic)], "", false);
    for stream in [false, true] {
        let body = json!({"model": "gpt-4o/openai,claude-sonnet-4/anthropic",
            "messages": [{"role": "user", "content": "hi"}], "stream": stream});
        let go = || {
            client()
                .post(gw.url("/v1/chat/completions"))
                .header("Helicone-Cache-Enabled", "true")
                .json(&body)
                .send()
        };
        let a = go().await.unwrap();
        assert_eq!(a.headers()["helicone-cache"], "MISS");
        let a = a.text().await.unwrap();
        let b = go().await.unwrap();
        assert_eq!(b.headers()["helicone-cache"], "HIT");
        assert_eq!(
            b.headers()["helicone-provider"],
            "anthropic",
            "the provider that answered"
        );
        let b = b.text().await.unwrap();
        let norm = |s: &str| s.replace(|c: char| c.is_ascii_digit(), "");
        assert_eq!(norm(&a), norm(&b), "same answer (timestamps aside)");
        if stream {
            assert!(
                b.contains("chat.completion.chunk") && b.ends_with("data: [DONE]\n\n"),
                "{b}"
            );
        } else {
            let v: Value = serde_json::from_str(&b).unwrap();
            assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
        }
    }
    assert_eq!(anthropic.hits(), 2, "one call per answer");
    assert_eq!(
        openai.hits(),
        2,
        "the failing first provider is tried only on misses"
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn memory_stays_bounded_under_a_flood_of_distinct_large_answers() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "{max_bytes: 8388608, max_entry_bytes: 1048576}");
    let warm = send(&gw, &mock, "/big?kb=512&seed=warm", "{}", &[]).await;
    assert_eq!(warm.status, 200);
    // 240 distinct answers of 512 KiB: 120 MiB through a cache of 8 MiB. Without a bound the
    // last 160 alone would add 80 MiB; with it, memory levels off once the cache is full.
    let mut mid = 0;
    for i in 0..240 {
        let a = send(&gw, &mock, &format!("/big?kb=512&seed=s{i}"), "{}", &[]).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body.len(), 512 * 1024 + 23 + format!("s{i}").len());
        if i == 79 {
            mid = rss_kib(gw.pid());
        }
    }
    let after = rss_kib(gw.pid());
    let m = metrics_with(&gw, &["switchyard_cache_evictions_total"]).await;
    let bytes: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_cache_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(bytes <= 8 * 1024 * 1024, "{bytes} bytes held");
    assert!(
        after < mid + 32 * 1024,
        "RSS grew from {mid} KiB (80 answers) to {after} KiB (240 answers)"
    );
    // the newest answers are still served from memory
    let again = send(&gw, &mock, "/big?kb=512&seed=s239", "{}", &[]).await;
    assert_eq!(again.h("helicone-cache"), "HIT");
}

#[tokio::test]
async fn two_gateways_share_answers_through_redis_and_survive_it_being_down() {
    let mock = MockProvider::start();
    let prefix = format!("switchyard-test-{}:", uuid::Uuid::new_v4());
    let shared = format!("{{redis: {{url: 'redis://127.0.0.1:6379/0', prefix: '{prefix}'}}}}");
    let gw1 = gateway(&mock, &shared);
    let gw2 = gateway(&mock, &shared);
    let body = CHAT.replace("cache me", &prefix);
    let a = send(&gw1, &mock, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(a.h("helicone-cache"), "MISS");
    let b = send(&gw2, &mock, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(b.h("helicone-cache"), "HIT", "cached by the other gateway");
    assert_eq!(b.body, a.body);
    assert_eq!(mock.hits(), 1);
    metrics_with(&gw2, &["switchyard_cache_redis_hits_total 1"]).await;

    // Redis unreachable: requests are served, the errors are counted
    let down_port = ClosedPort::new();
    let down = format!(
        "{{redis: {{url: 'redis://127.0.0.1:{}/0', timeout_ms: 100}}}}",
        down_port.port
    );
    let gw3 = gateway(&mock, &down);
    for _ in 0..2 {
        let r = send(&gw3, &mock, "/v1/chat/completions", CHAT, &[]).await;
        assert_eq!(r.status, 200);
    }
    let m = metrics_with(&gw3, &["switchyard_cache_redis_errors_total"]).await;
    let errors: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_cache_redis_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(errors >= 1, "{m}");
    assert!(gw3.log().contains("Redis"), "logged");
}

#[tokio::test]
async fn a_stream_that_fails_after_its_200_is_not_cached() {
    let mock = MockProvider::start();
    let gw = gateway(&mock, "{}");
    for _ in 0..2 {
        let a = send(&gw, &mock, "/sse-error", CHAT, &[]).await;
        assert_eq!((a.status, a.h("helicone-cache")), (200, "MISS"));
        assert!(
            a.text().contains("overloaded_error"),
            "the client sees the error event"
        );
    }
    assert_eq!(
        mock.hits(),
        2,
        "the failed stream was not replayed from cache"
    );
    assert!(
        gw.log().contains("the stream carried an error event"),
        "{}",
        gw.log()
    );
}
