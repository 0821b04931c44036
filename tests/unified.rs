//! The unified API end to end: `model` strings routed to mock OpenAI-compatible, Anthropic and
//! Azure providers with the gateway's keys, translation both ways (JSON and SSE), fallthrough on
//! failure, the aggregated error, `/v1/models`, `/v1/embeddings`, logging and cost.

mod common;

use common::*;
use serde_json::{json, Value};

const GW_KEY: &str = UNIFIED_GW_KEY;

fn gateway(providers: &[(&str, &MockProvider)], extra_settings: &str, keys: bool) -> Gateway {
    unified_gateway(providers, extra_settings, keys)
}

async fn chat(gw: &Gateway, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(GW_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, headers, v)
}

fn hdr<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// The `data:` payloads of an SSE body.
fn frames(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn an_openai_model_goes_to_openai_with_the_gateways_key_never_the_clients() {
    let openai = MockProvider::start();
    let gw = gateway(&[("openai", &openai)], "", true);
    let (status, h, v) = chat(
        &gw,
        json!({"model": "gpt-4o-mini", "messages": user("Hi"), "temperature": 0.2}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    assert_eq!(hdr(&h, "helicone-provider"), "openai");
    assert_eq!(hdr(&h, "helicone-model"), "gpt-4o-mini");
    assert!(!hdr(&h, "helicone-id").is_empty());
    let got = openai.last();
    assert_eq!(got.path_and_query, "/v1/chat/completions");
    assert_eq!(got.header("authorization"), Some("Bearer sk-test-openai"));
    assert!(
        got.headers
            .iter()
            .all(|(k, v)| !k.starts_with("helicone") && !v.contains(GW_KEY)),
        "{:?}",
        got.headers
    );
    let sent: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["temperature"], 0.2);

    // /chat/completions (the SDKs' base_url without /v1) is the same endpoint
    let r = client()
        .post(gw.url("/chat/completions"))
        .bearer_auth(GW_KEY)
        .json(&json!({"model": "gpt-4o-mini", "messages": user("Hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // no gateway key, or a wrong one: 401, and nothing reaches the provider
    let before = openai.hits();
    for auth in [None, Some("Bearer sk-wrong")] {
        let mut rb = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "gpt-4o-mini", "messages": user("Hi")}));
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "authentication_error");
    }
    assert_eq!(openai.hits(), before);
}

#[tokio::test]
async fn a_claude_model_is_translated_to_anthropic_and_back() {
    let anthropic = MockProvider::start();
    let gw = gateway(&[("anthropic", &anthropic)], "", false);
    let (status, h, v) = chat(
        &gw,
        json!({"model": "claude-sonnet-4", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"}], "stop": ["END"], "user": "u-42"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(hdr(&h, "helicone-provider"), "anthropic");
    assert_eq!(hdr(&h, "helicone-model"), "claude-sonnet-4-20250514");
    assert!(hdr(&h, "content-type").starts_with("application/json"));
    // the translated body is chunked, so the client's connection stays open for the next request
    assert_eq!(hdr(&h, "transfer-encoding"), "chunked");
    assert_ne!(hdr(&h, "connection"), "close");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "chatcmpl-msg_mock");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Anthropic's input excludes cache reads: 5 + 2
    assert_eq!(v["usage"]["prompt_tokens"], 7);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
    assert_eq!(v["usage"]["total_tokens"], 10);
    let got = anthropic.last();
    assert_eq!(got.path_and_query, "/v1/messages");
    assert_eq!(got.header("x-api-key"), Some("sk-test-anthropic"));
    assert_eq!(got.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(got.header("authorization"), None);
    let sent: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-20250514");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 4096);
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(sent["messages"][0]["role"], "user");
    assert_eq!(
        got.body_len.to_string(),
        got.header("content-length").unwrap()
    );
}

#[tokio::test]
async fn an_anthropic_stream_arrives_as_the_golden_openai_chunks() {
    let anthropic = MockProvider::start();
    let gw = gateway(&[("anthropic", &anthropic)], "", false);
    for (name, tools) in [("stream_text", false), ("stream_tools", true)] {
        // the golden tool stream was recorded without the usage chunk
        let mut body = json!({"model": "claude-sonnet-4/anthropic", "messages": user("Hi"),
            "stream": true, "stream_options": {"include_usage": !tools}});
        if tools {
            body["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
        }
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        assert!(r.headers().get("content-length").is_none());
        let text = r.text().await.unwrap();
        let golden =
            std::fs::read_to_string(fixture(&format!("anthropic/{name}.openai.sse"))).unwrap();
        let norm = |s: &str| -> Vec<Value> {
            frames(s)
                .iter()
                .map(|f| {
                    let mut v: Value = serde_json::from_str(f).unwrap_or(json!(f));
                    if v.get("created").is_some() {
                        v["created"] = json!(0);
                    }
                    v
                })
                .collect()
        };
        assert_eq!(norm(&text), norm(&golden), "{name}:\n{text}");
        assert_eq!(frames(&text).last().unwrap(), "[DONE]");
    }
}

#[tokio::test]
async fn a_failing_first_provider_falls_through_and_the_record_has_both_attempts() {
    let openai = MockProvider::failing(500);
    let anthropic = MockProvider::start();
    let gw = gateway(&[("openai", &openai), ("anthropic", &anthropic)], "", false);
    let (status, h, v) = chat(
        &gw,
        json!({"model": "gpt-4o/openai,claude-sonnet-4/anthropic", "messages": user("Hi")}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(hdr(&h, "helicone-provider"), "anthropic");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
    assert_eq!((openai.hits(), anthropic.hits()), (1, 1));
    let id = hdr(&h, "helicone-id").to_string();
    let rec = logged_record(&gw, &id).await;
    assert_eq!(rec["provider"], "anthropic");
    assert_eq!(rec["status"], 200);
    let attempts = rec["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{rec}");
    assert_eq!(attempts[0]["provider"], "openai");
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(attempts[1]["provider"], "anthropic");
    assert_eq!(attempts[1]["model"], "claude-sonnet-4-20250514");
    // cost by the provider that answered: 5 fresh + 2 cached at Sonnet 4 prices, 3 out
    assert_eq!(rec["prompt_tokens"], 7, "{rec}");
    assert_eq!(rec["cached_tokens"], 2);
    assert_eq!(rec["completion_tokens"], 3);
    assert_eq!(rec["model_responded"], "claude-sonnet-4-20250514");
    let want = (5.0 * 3.0 + 2.0 * 0.30 + 3.0 * 15.0) / 1e6;
    let cost = rec["cost_usd"].as_f64().unwrap();
    assert!((cost - want).abs() < 1e-12, "{cost} vs {want}");
}

#[tokio::test]
async fn when_every_attempt_fails_the_error_lists_them_with_the_telling_status() {
    let openai = MockProvider::failing(500);
    let anthropic = MockProvider::failing(429);
    let gw = gateway(&[("openai", &openai), ("anthropic", &anthropic)], "", false);
    let (status, _, v) = chat(
        &gw,
        json!({"model": "gpt-4o/openai,claude-sonnet-4/anthropic", "messages": user("Hi")}),
    )
    .await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited");
    let attempts = v["error"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["provider"], "openai");
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(attempts[1]["provider"], "anthropic");
    assert_eq!(attempts[1]["status"], 429);
    // the last provider's own message, translated from Anthropic's shape
    assert_eq!(attempts[1]["message"], "scripted 429");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("all 2 provider attempts failed"), "{msg}");

    // one attempt: the provider's status and error type pass on, in OpenAI's shape
    let bad = MockProvider::failing(400);
    let gw = gateway(&[("anthropic", &bad)], "", false);
    let (status, _, v) = chat(
        &gw,
        json!({"model": "claude-sonnet-4", "messages": user("Hi")}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("claude-sonnet-4-20250514/anthropic: 400 scripted 400"),
        "{msg}"
    );

    // a failure without a body still gets the listing (no body hook runs for it)
    let empty = MockProvider::start_scripted(Script {
        always: Some(503),
        empty_body: true,
        ..Script::default()
    });
    let gw = gateway(&[("openai", &empty)], "", false);
    let (status, _, v) = chat(&gw, json!({"model": "gpt-4o", "messages": user("Hi")})).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["attempts"][0]["status"], 503);

    // no provider answers at all (connection refused): 502 with the attempt listed
    let port = free_port();
    let mut conf = GatewayConf::default().allow(&format!("http://127.0.0.1:{port}"));
    conf.extra = format!("providers: {{openai: {{base_url: 'http://127.0.0.1:{port}/v1'}}}}\n");
    let gw = Gateway::start_with_env(conf, &[("OPENAI_API_KEY", "sk-x")]);
    let (status, _, v) = chat(&gw, json!({"model": "gpt-4o", "messages": user("Hi")})).await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["attempts"][0]["provider"], "openai");
    let m = v["error"]["attempts"][0]["message"].as_str().unwrap();
    assert!(m.to_ascii_lowercase().contains("connect"), "{v}");
}

#[tokio::test]
async fn a_bare_model_goes_to_the_cheapest_provider_and_excludes_and_failures_move_on() {
    let groq = MockProvider::start();
    let together = MockProvider::start();
    let gw = gateway(&[("groq", &groq), ("together", &together)], "", false);
    let (status, h, _) = chat(
        &gw,
        json!({"model": "llama-3.3-70b", "messages": user("Hi")}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(hdr(&h, "helicone-provider"), "groq");
    assert_eq!(hdr(&h, "helicone-model"), "llama-3.3-70b-versatile");
    let got = groq.last();
    assert_eq!(got.path_and_query, "/openai/v1/chat/completions");
    assert_eq!(got.header("authorization"), Some("Bearer sk-test-groq"));
    assert_eq!(
        serde_json::from_slice::<Value>(&got.body).unwrap()["model"],
        "llama-3.3-70b-versatile"
    );
    let (_, h, _) = chat(
        &gw,
        json!({"model": "llama-3.3-70b,!groq", "messages": user("Hi")}),
    )
    .await;
    assert_eq!(hdr(&h, "helicone-provider"), "together");
    assert_eq!(
        serde_json::from_slice::<Value>(&together.last().body).unwrap()["model"],
        "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    );

    let groq_down = MockProvider::failing(503);
    let gw = gateway(&[("groq", &groq_down), ("together", &together)], "", false);
    let (status, h, _) = chat(
        &gw,
        json!({"model": "llama-3.3-70b", "messages": user("Hi")}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(hdr(&h, "helicone-provider"), "together");
    assert_eq!(groq_down.hits(), 1);
}

#[tokio::test]
async fn streams_from_openai_compatible_providers_are_logged_with_usage_the_client_did_not_ask_for()
{
    let openai = MockProvider::start();
    let gw = gateway(&[("openai", &openai)], "", false);
    for include_usage in [false, true] {
        let mut body = json!({"model": "gpt-4o-mini", "messages": user("Hi"), "stream": true});
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let id = r.headers()["helicone-id"].to_str().unwrap().to_string();
        let text = r.text().await.unwrap();
        let f = frames(&text);
        assert_eq!(f.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = f
            .iter()
            .filter_map(|x| serde_json::from_str(x).ok())
            .collect();
        let content: String = chunks
            .iter()
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(content, "Hello from mock");
        // the gateway always asks for the usage chunk, and hands it on only when asked for
        let sent: Value = serde_json::from_slice(&openai.last().body).unwrap();
        assert_eq!(sent["stream_options"]["include_usage"], true);
        let usage_chunks = chunks.iter().filter(|c| c["usage"].is_object()).count();
        assert_eq!(usage_chunks, usize::from(include_usage), "{text}");
        assert!(
            chunks
                .iter()
                .all(|c| !c["choices"].as_array().unwrap().is_empty())
                || include_usage,
            "a client that did not ask gets no chunk without choices: {text}"
        );
        let rec = logged_record(&gw, &id).await;
        assert_eq!(
            (
                rec["prompt_tokens"].as_u64(),
                rec["completion_tokens"].as_u64()
            ),
            (Some(5), Some(3)),
            "{rec}"
        );
        assert!(rec["cost_usd"].as_f64().unwrap() > 0.0);
    }
}

#[tokio::test]
async fn bad_requests_get_a_clear_error_and_reach_no_provider() {
    let openai = MockProvider::start();
    let gw = gateway(&[("openai", &openai)], "", false);
    for (body, status, want) in [
        (
            json!({"model": "gpt-4o-mni", "messages": user("Hi")}),
            404,
            "Did you mean gpt-4o-mini",
        ),
        (
            json!({"model": "gpt-4o/opnai", "messages": user("Hi")}),
            400,
            "unknown provider 'opnai'",
        ),
        (
            json!({"model": "claude-sonnet-4", "messages": user("Hi")}),
            400,
            "ANTHROPIC_API_KEY",
        ),
        (
            json!({"model": "gpt-4o,", "messages": user("Hi")}),
            400,
            "item 2",
        ),
        (json!({"messages": user("Hi")}), 400, "`model` is missing"),
        (
            json!({"model": 4, "messages": user("Hi")}),
            400,
            "`model` must be a string",
        ),
        (json!({"model": "gpt-4o"}), 400, "`messages` is missing"),
        (
            json!({"model": "gpt-4o", "messages": []}),
            400,
            "`messages` is empty",
        ),
        (
            json!({"model": "gpt-4o", "messages": user("Hi"), "stream": "yes"}),
            400,
            "`stream`",
        ),
    ] {
        let (s, _, v) = chat(&gw, body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(want), "{body}: {m}");
    }
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not valid JSON"));
    let r = client()
        .get(gw.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(openai.hits(), 0);
}

#[tokio::test]
async fn models_lists_the_registry_and_embeddings_and_azure_work() {
    let openai = MockProvider::start();
    let azure = MockProvider::start();
    let gw = gateway(&[("openai", &openai), ("azure", &azure)], "", false);
    let r = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for want in [
        "gpt-4o-mini",
        "claude-sonnet-4",
        "llama-3.3-70b",
        "text-embedding-3-small",
    ] {
        assert!(ids.contains(&want), "{want} not in {ids:?}");
    }
    let r = client()
        .get(gw.url("/v1/models/claude-sonnet-4"))
        .send()
        .await
        .unwrap();
    let m: Value = r.json().await.unwrap();
    let anth = m["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "anthropic")
        .unwrap();
    assert_eq!(anth["available"], false, "no ANTHROPIC_API_KEY here");

    let r = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "text-embedding-3-small", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["helicone-provider"], "openai");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["embedding"], json!([0.25, -0.5, 1.0]));
    assert_eq!(openai.last().path_and_query, "/v1/embeddings");

    // gpt-4o: openai and the azure deployment cost the same; openai's priority (3) goes first
    let (_, h, _) = chat(
        &gw,
        json!({"model": "gpt-4o/azure", "messages": user("Hi")}),
    )
    .await;
    assert_eq!(hdr(&h, "helicone-provider"), "azure");
    let got = azure.last();
    assert_eq!(
        got.path_and_query,
        "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(got.header("api-key"), Some("sk-test-azure"));
    let (_, h, _) = chat(
        &gw,
        json!({"model": "gpt-4o-mini/azure/mini-eu", "messages": user("Hi")}),
    )
    .await;
    assert_eq!(hdr(&h, "helicone-provider"), "azure");
    assert!(azure
        .last()
        .path_and_query
        .starts_with("/openai/deployments/mini-eu/chat/completions"));
}

#[tokio::test]
async fn a_large_chunked_upload_is_translated_and_falls_through_the_same_way() {
    // over 64 KiB without Content-Length: the gateway's manual exchange, not Pingora's replay
    let together = MockProvider::failing(500);
    let anthropic = MockProvider::start();
    let gw = gateway(
        &[("together", &together), ("anthropic", &anthropic)],
        "",
        false,
    );
    let long = "x".repeat(200_000);
    for stream in [false, true] {
        let body = serde_json::to_vec(&json!({
            "model": "llama-3.3-70b/together,claude-sonnet-4/anthropic",
            "messages": user(&long), "stream": stream}))
        .unwrap();
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .body(chunked(&body, 40_000))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["helicone-provider"], "anthropic");
        let text = r.text().await.unwrap();
        if stream {
            let f = frames(&text);
            assert_eq!(f.last().unwrap(), "[DONE]", "{text}");
            assert!(text.contains("chat.completion.chunk"), "{text}");
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["choices"][0]["message"]["content"], "Hello from mock");
        }
        let sent: Value = serde_json::from_slice(&anthropic.last().body).unwrap();
        assert_eq!(sent["messages"][0]["content"][0]["text"], long.as_str());
    }
    assert_eq!(together.hits(), 2);
}

#[tokio::test]
async fn retry_headers_apply_to_each_provider_of_the_chain() {
    let together = MockProvider::start_scripted(Script {
        fail_first: 1,
        fail_status: 503,
        ..Script::default()
    });
    let gw = gateway(&[("together", &together)], "", false);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("Helicone-Retry-Enabled", "true")
        .header("Helicone-Retry-Num", "2")
        .header("Helicone-Retry-Min-Timeout", "10")
        .header("Helicone-Retry-Max-Timeout", "50")
        .json(&json!({"model": "llama-3.3-70b", "messages": user("Hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["helicone-provider"], "together");
    assert_eq!(together.hits(), 2, "one retry on the same provider");
}
