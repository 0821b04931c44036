//! Anthropic's Messages API on the unified endpoint (`/v1/messages`): the official anthropic
//! SDK against the binary, with mock providers that check what the real ones check.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Runs tests/python/`script` against `gw` with the gateway key; its stdout.
fn run_python(script: &str, gw: &Gateway) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg(path)
        .env("SWITCHYARD_URL", gw.url(""))
        .env("GATEWAY_KEY", UNIFIED_GW_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script} stdout:\n{stdout}\nstderr:\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    stdout
}

fn records_of(gw: &Gateway, path: &str) -> Vec<Value> {
    jsonl_records(gw.dir.path())
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(path)))
        .collect()
}

#[test]
fn the_anthropic_sdk_reaches_every_model_through_v1_messages() {
    let anthropic = MockProvider::start();
    let openai = MockProvider::start();
    let together = MockProvider::failing(500);
    let gw = unified_gateway(
        &[
            ("anthropic", &anthropic),
            ("openai", &openai),
            ("together", &together),
        ],
        "",
        true,
    );
    let stdout = run_python("sdk_messages.py", &gw);
    for line in [
        "native claude: ok",
        "translated gpt: ok",
        "translated stream: ok",
        "tools: ok",
        "fallback: ok",
        "count_tokens: ok",
        "errors: ok",
        "auth and models: ok",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }

    // Anthropic saw the gateway's provider key, the client's beta flag, and never the gateway key
    let native = anthropic
        .requests()
        .into_iter()
        .find(|r| r.path_and_query == "/v1/messages")
        .expect("the native request");
    assert_eq!(native.header("x-api-key"), Some("sk-test-anthropic"));
    assert_eq!(
        native.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
    for r in anthropic.requests().iter().chain(openai.requests().iter()) {
        for (k, v) in &r.headers {
            assert!(
                !v.contains(UNIFIED_GW_KEY),
                "the gateway key went upstream in {k}"
            );
        }
    }
    // the count for Claude went to Anthropic's count_tokens with the provider's model id
    let counted = anthropic
        .requests()
        .into_iter()
        .find(|r| r.path_and_query == "/v1/messages/count_tokens")
        .expect("the count_tokens request");
    let body: Value = serde_json::from_slice(&counted.body).unwrap();
    assert!(
        body["model"]
            .as_str()
            .unwrap()
            .starts_with("claude-sonnet-4-"),
        "{body}"
    );
    // OpenAI got a chat request: system message (not developer), user from metadata, the tool
    let chat: Vec<Value> = openai
        .requests()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let first = &chat[0];
    assert_eq!(first["messages"][0]["role"], "system", "{first}");
    assert_eq!(first["user"], "u-42", "{first}");
    assert!(
        chat.iter().any(|c| c["tool_choice"] == "required"),
        "{chat:?}"
    );
    let turn = chat
        .iter()
        .find(|c| {
            c["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["role"] == "tool")
        })
        .expect("the tool result turn");
    let tool = turn["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert_eq!(tool["tool_call_id"], "call_mock_1");
    assert_eq!(tool["content"], "18C, sunny");

    // the log record: client dialect, provider, model, tokens, cost, dropped hints
    std::thread::sleep(Duration::from_millis(400));
    let records = records_of(&gw, "/v1/messages");
    let translated = records
        .iter()
        .find(|r| {
            r["dropped_fields"]
                .as_array()
                .is_some_and(|d| !d.is_empty())
        })
        .expect("a record with dropped hints");
    assert_eq!(translated["dialect"], "anthropic");
    assert_eq!(translated["provider"], "openai");
    assert_eq!(translated["prompt_tokens"], 5);
    assert_eq!(translated["completion_tokens"], 3);
    assert!(
        translated["cost_usd"].as_f64().is_some_and(|c| c > 0.0),
        "{translated}"
    );
    let streamed = records
        .iter()
        .find(|r| r["stream"] == true && r["provider"] == "openai")
        .expect("a streamed record");
    assert!(streamed["ttft_ms"].is_u64(), "{streamed}");
    let claude = records
        .iter()
        .find(|r| r["provider"] == "anthropic" && r["path"] == "/v1/messages")
        .expect("the native record");
    assert_eq!(claude["dropped_fields"], json!([]));
    assert_eq!(
        claude["prompt_tokens"], 7,
        "5 input + 2 cache reads: {claude}"
    );
}

#[test]
fn the_native_body_reaches_anthropic_as_sent_but_for_the_model_id() {
    let anthropic = MockProvider::start();
    let gw = unified_gateway(&[("anthropic", &anthropic)], "", true);
    // thinking blocks with signatures, cache_control, a document and a server tool
    let body = json!({
        "model": "claude-sonnet-4",
        "max_tokens": 512,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        "messages": [
            {"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQ="}},
                {"type": "text", "text": "Summarise"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me think…", "signature": "EqQBCkYIARgCIkD"},
                {"type": "text", "text": "Sure."}]},
            {"role": "user", "content": "Go on ✓"}
        ]
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(async {
        client()
            .post(gw.url("/v1/messages?beta=true"))
            .header("x-api-key", UNIFIED_GW_KEY)
            .header("anthropic-version", "2023-06-01")
            .header(
                "anthropic-beta",
                "interleaved-thinking-2025-05-14,context-1m-2025-08-07",
            )
            .json(&body)
            .send()
            .await
            .unwrap()
    });
    assert_eq!(r.status(), 200);
    let sent = anthropic.last();
    let mut got: Value = serde_json::from_slice(&sent.body).unwrap();
    assert!(
        got["model"]
            .as_str()
            .unwrap()
            .starts_with("claude-sonnet-4-2"),
        "{got}"
    );
    got["model"] = body["model"].clone();
    assert_eq!(got, body, "the body changed on the way");
    assert_eq!(
        sent.header("anthropic-beta"),
        Some("interleaved-thinking-2025-05-14,context-1m-2025-08-07")
    );
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("x-api-key"), Some("sk-test-anthropic"));
}

#[test]
fn what_an_openai_model_cannot_express_is_a_400_naming_the_field() {
    let openai = MockProvider::start();
    let gw = unified_gateway(&[("openai", &openai)], "", true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let send = |body: Value| {
        rt.block_on(async {
            let r = client()
                .post(gw.url("/v1/messages"))
                .header("x-api-key", UNIFIED_GW_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        })
    };
    let msg = |content: Value| json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": content}]});
    for (body, field) in [
        (
            msg(
                json!([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "x"}}]),
            ),
            "messages[0].content[0].type",
        ),
        (
            {
                let mut b = msg(json!("hi"));
                b["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
                b
            },
            "tools[0].type",
        ),
        (
            {
                let mut b = msg(json!("hi"));
                b["tool_choice"] = json!({"type": "sometimes"});
                b
            },
            "tool_choice.type",
        ),
    ] {
        let (status, v) = send(body);
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(field) && m.contains("openai"), "{field}: {m}");
    }
    assert_eq!(openai.hits(), 0, "nothing was sent");
    // no max_tokens: Anthropic's clients always send it; the error says so
    let (status, v) =
        send(json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{v}"
    );
    // a missing key, in Anthropic's shape, naming the headers that carry it
    let r = rt.block_on(async {
        client()
            .post(gw.url("/v1/messages"))
            .json(&msg(json!("hi")))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(r.status(), 401);
    // Claude Code and the SDKs stop retrying a refusal that says so
    assert_eq!(r.headers()["x-should-retry"], "false");
    let v: Value = rt.block_on(r.json()).unwrap();
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-api-key"),
        "{v}"
    );
}

#[test]
fn hints_an_openai_model_cannot_honour_are_dropped_and_reported_never_refused() {
    let openai = MockProvider::start();
    let gw = unified_gateway(&[("openai", &openai)], "", true);
    // what Claude Code sends on a turn: thinking, cache_control, context management, effort,
    // a max_tokens above gpt-4o-mini's output limit, beta flags
    let body = json!({
        "model": "gpt-4o-mini",
        "max_tokens": 32000,
        "thinking": {"type": "enabled", "budget_tokens": 8000},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "output_config": {"effort": "high"},
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
        "stream": true
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, dropped, text) = rt.block_on(async {
        let r = client()
            .post(gw.url("/v1/messages?beta=true"))
            .header("authorization", format!("Bearer {UNIFIED_GW_KEY}"))
            .header("anthropic-version", "2023-06-01")
            .header(
                "anthropic-beta",
                "claude-code-20250219,context-management-2025-06-27",
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        let dropped = r
            .headers()
            .get("helicone-dropped-fields")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status().as_u16(), dropped, r.text().await.unwrap())
    });
    assert_eq!(status, 200, "{text}");
    for field in [
        "system[0].cache_control",
        "messages[0].content[0].cache_control",
        "context_management",
        "output_config",
        "anthropic-beta: claude-code-20250219,context-management-2025-06-27",
        "max_tokens (clamped from 32000 to 16384, the output limit of gpt-4o-mini)",
        "thinking (gpt-4o-mini has no reasoning setting)",
    ] {
        assert!(dropped.contains(field), "{field} not in {dropped}");
    }
    assert!(text.contains("event: message_stop"), "{text}");
    let sent: Value = serde_json::from_slice(&openai.last().body).unwrap();
    assert_eq!(sent["max_tokens"], 16384, "{sent}");
    assert!(sent.get("reasoning_effort").is_none(), "{sent}");
    assert!(sent.get("context_management").is_none(), "{sent}");
    // the same list in the log record
    std::thread::sleep(Duration::from_millis(400));
    let r = records_of(&gw, "/v1/messages")
        .into_iter()
        .next()
        .expect("the record");
    let logged: Vec<String> = serde_json::from_value(r["dropped_fields"].clone()).unwrap();
    assert_eq!(logged.join(", "), dropped);
}
