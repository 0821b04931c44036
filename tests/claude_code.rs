//! Claude Code (`claude -p`, the npm package tests/node pins; `.ci/run` installs it) through the
//! gateway's Messages API, offline: a Claude model goes natively to an Anthropic mock, an OpenAI
//! model is translated to an OpenAI mock, for a plain answer and for a turn that runs a tool.
//! Nothing leaves 127.0.0.1: Claude Code gets a throwaway HOME and the documented switches that
//! turn off its telemetry, error reports, update checks and other non-essential traffic.

mod common;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};

/// The Claude Code the tests run: tests/node/node_modules/.bin/claude (`npm ci` in tests/node).
fn claude_bin() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/node_modules/.bin/claude");
    if p.exists() {
        return Some(p);
    }
    // straight to the terminal: libtest would swallow a `println!` of a passing test
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: Claude Code is not installed at {} (run `bash .ci/run`, or `npm ci` in tests/node)",
        p.display()
    );
    None
}

/// One `claude -p` run, ended.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    /// The `--output-format json` result (Null when stdout is not JSON).
    result: Value,
}

impl Run {
    fn explain(&self, gw: &Gateway) -> String {
        format!(
            "claude stdout:\n{}\nclaude stderr:\n{}\ngateway log:\n{}",
            self.stdout,
            self.stderr,
            gw.log()
        )
    }
}

/// Which header carries the gateway key: Claude Code sends `ANTHROPIC_API_KEY` as `x-api-key`
/// and `ANTHROPIC_AUTH_TOKEN` as `Authorization: Bearer`.
#[derive(Clone, Copy)]
enum KeyVar {
    ApiKey,
    AuthToken,
}

/// `claude -p prompt --output-format json` in `workdir` against `gw`, every model set to `model`,
/// with nothing from the developer's environment but PATH, within 120 s.
fn claude(
    bin: &Path,
    gw: &Gateway,
    model: &str,
    key: KeyVar,
    workdir: &Path,
    prompt: &str,
    extra: &[&str],
) -> Run {
    let home = tempfile::tempdir().unwrap();
    let out_path = home.path().join("stdout");
    let err_path = home.path().join("stderr");
    let key_var = match key {
        KeyVar::ApiKey => "ANTHROPIC_API_KEY",
        KeyVar::AuthToken => "ANTHROPIC_AUTH_TOKEN",
    };
    let mut child = Command::new(bin)
        .args(["-p", prompt, "--output-format", "json"])
        .args(extra)
        .current_dir(workdir)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )
        .env("HOME", home.path())
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("ANTHROPIC_BASE_URL", gw.url(""))
        .env(key_var, UNIFIED_GW_KEY)
        .env("ANTHROPIC_MODEL", model)
        .env("ANTHROPIC_SMALL_FAST_MODEL", model)
        .env("ANTHROPIC_DEFAULT_HAIKU_MODEL", model)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let run = Run {
        ok: status.is_some_and(|s| s.success()),
        result: serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        stdout,
        stderr,
    };
    assert!(
        status.is_some(),
        "claude ran over 120 s\n{}",
        run.explain(gw)
    );
    run
}

/// The JSON body of a request a mock received.
fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// The gateway key never went upstream, in any header.
fn no_gateway_key(headers: &[(String, String)]) {
    for (k, v) in headers {
        assert!(
            !v.contains(UNIFIED_GW_KEY),
            "the gateway key went upstream in {k}"
        );
    }
}

/// The JSONL record of the request Claude Code made with its answer (status 200).
fn answered_record(gw: &Gateway) -> Value {
    for _ in 0..50 {
        if let Some(r) = jsonl_records(gw.dir.path())
            .into_iter()
            .find(|r| r["path"] == "/v1/messages" && r["status"] == 200)
        {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no record of the answered /v1/messages within 5 s:\n{}",
        gw.log()
    );
}

#[test]
fn claude_code_answers_with_a_claude_model_sent_natively_to_anthropic() {
    let Some(bin) = claude_bin() else { return };
    let anthropic = MockProvider::start();
    let gw = unified_gateway(&[("anthropic", &anthropic)], "", true);
    let work = tempfile::tempdir().unwrap();
    let run = claude(
        &bin,
        &gw,
        "claude-sonnet-4",
        KeyVar::ApiKey,
        work.path(),
        "Say hello",
        &["--tools", ""],
    );
    assert!(run.ok, "claude failed\n{}", run.explain(&gw));
    assert_eq!(run.result["is_error"], false, "{}", run.explain(&gw));
    // the mock's recorded stream (tests/fixtures/anthropic/stream_text.sse)
    let text = run.result["result"].as_str().unwrap_or("");
    assert!(text.contains("Hello, wörld ✓"), "{}", run.explain(&gw));

    let sent = anthropic
        .requests()
        .into_iter()
        .find(|r| r.path_and_query.starts_with("/v1/messages"))
        .expect("Anthropic got the request");
    assert_eq!(sent.header("x-api-key"), Some("sk-test-anthropic"));
    no_gateway_key(&sent.headers);
    // Claude Code's own beta flags reach Anthropic
    let betas = sent.header("anthropic-beta").unwrap_or("");
    assert!(betas.contains("claude-code-20250219"), "{betas}");
    let body = json_of(&sent.body);
    assert!(
        body["model"]
            .as_str()
            .unwrap()
            .starts_with("claude-sonnet-4-"),
        "{body}"
    );
    assert_eq!(body["stream"], true);
    assert!(
        body["system"].to_string().contains("Claude"),
        "{}",
        body["system"]
    );
    assert!(body["messages"].to_string().contains("Say hello"));

    let record = answered_record(&gw);
    assert_eq!(record["provider"], "anthropic", "{record}");
    assert_eq!(record["dialect"], "anthropic", "{record}");
    assert_eq!(record["key_id"], "team-a", "{record}");
}

#[test]
fn claude_code_answers_with_an_openai_model_translated_to_chat_completions() {
    let Some(bin) = claude_bin() else { return };
    let openai = MockProvider::start();
    let gw = unified_gateway(&[("openai", &openai)], "", true);
    let work = tempfile::tempdir().unwrap();
    let run = claude(
        &bin,
        &gw,
        "gpt-4o-mini",
        KeyVar::AuthToken,
        work.path(),
        "Say hello",
        &["--tools", ""],
    );
    assert!(run.ok, "claude failed\n{}", run.explain(&gw));
    assert_eq!(run.result["is_error"], false, "{}", run.explain(&gw));
    let text = run.result["result"].as_str().unwrap_or("");
    assert!(text.contains("Hello from mock"), "{}", run.explain(&gw));

    let sent = openai
        .requests()
        .into_iter()
        .find(|r| r.path_and_query == "/v1/chat/completions")
        .expect("OpenAI got a chat request");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-test-openai"));
    no_gateway_key(&sent.headers);
    let body = json_of(&sent.body);
    assert_eq!(body["model"], "gpt-4o-mini");
    // Claude Code's system prompt as a system message, its prompt as a user message
    assert_eq!(body["messages"][0]["role"], "system", "{body}");
    assert!(body["messages"][0]["content"]
        .to_string()
        .contains("Claude"));
    assert!(body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["role"] == "user" && m["content"].to_string().contains("Say hello")));
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);

    let record = answered_record(&gw);
    assert_eq!(record["provider"], "openai", "{record}");
    assert_eq!(record["dialect"], "anthropic", "{record}");
    assert_eq!(record["prompt_tokens"], 5, "{record}");
}

// ------------------------------------------------------------------ a turn with a tool

/// What the note Claude Code reads with its Read tool says.
const SECRET: &str = "secret-7f3a9c";

/// A model behind a mock provider that speaks both APIs and answers as a model would with
/// Claude Code's tools: first it asks for `Read` on `note`, and once the tool result comes
/// back it answers with the secret found in it (streamed, as Claude Code asks). Every request
/// is kept.
struct ToolModel {
    origin: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A request the tool model received: path, headers, JSON body.
type Seen = (String, Vec<(String, String)>, Value);

impl ToolModel {
    fn start(note: &Path) -> ToolModel {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (s, note) = (seen.clone(), note.display().to_string());
        let addr = serve(move |req: Request<Incoming>| {
            let (s, note) = (s.clone(), note.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = json_of(
                    &body
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default(),
                );
                let headers = parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).to_string(),
                        )
                    })
                    .collect();
                let path = parts.uri.path().to_string();
                s.lock()
                    .unwrap()
                    .push((path.clone(), headers, body.clone()));
                Ok::<_, Infallible>(answer(&path, &body, &note))
            }
        });
        ToolModel {
            origin: format!("http://{addr}"),
            seen,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn sse(body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// The scripted model's answer to one request.
fn answer(path: &str, body: &Value, note: &str) -> Response<Full<Bytes>> {
    if body["stream"] != true {
        return Response::builder()
            .status(400)
            .body(Full::new(Bytes::from_static(
                b"this mock answers streams only",
            )))
            .unwrap();
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let args = json!({ "file_path": note }).to_string();
    let (first, rest) = args.split_at(12);
    let model = body["model"].clone();
    if path.ends_with("/chat/completions") {
        let result = messages.iter().find(|m| m["role"] == "tool");
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut events = match result {
            None => vec![
                chunk(
                    json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_read_1", "type": "function", "function": {"name": "Read", "arguments": ""}}]}),
                    Value::Null,
                ),
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": first}}]}),
                    Value::Null,
                ),
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": rest}}]}),
                    Value::Null,
                ),
                chunk(json!({}), json!("tool_calls")),
            ],
            Some(tool) => vec![
                chunk(
                    json!({"role": "assistant", "content": said(&tool["content"])}),
                    Value::Null,
                ),
                chunk(json!({}), json!("stop")),
            ],
        };
        if body["stream_options"]["include_usage"] == true {
            events.push(json!({"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}}));
        }
        let mut out: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        out.push_str("data: [DONE]\n\n");
        return sse(out);
    }
    // Anthropic's Messages stream
    let result = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|b| b["type"] == "tool_result");
    let start = json!({"type": "message_start", "message": {"id": "msg_tool", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 20, "output_tokens": 1}}});
    let (blocks, stop) = match result {
        None => (
            vec![
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_read_1", "name": "Read", "input": {}}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": first}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": rest}}),
            ],
            "tool_use",
        ),
        Some(tool) => (
            vec![
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": said(&tool["content"])}}),
            ],
            "end_turn",
        ),
    };
    let events = std::iter::once(start)
        .chain(blocks)
        .chain([
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 7}}),
            json!({"type": "message_stop"}),
        ]);
    sse(events
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect())
}

/// The model's last word: what the tool result says (a string, or text blocks).
fn said(content: &Value) -> String {
    if content.to_string().contains(SECRET) {
        format!("The note says {SECRET}.")
    } else {
        format!("The tool result did not carry the note: {content}")
    }
}

/// A working directory with `note.txt`, and its path.
fn project_with_note() -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let note = work.path().join("note.txt");
    std::fs::write(&note, format!("the note: {SECRET}\n")).unwrap();
    (work, note)
}

#[test]
fn claude_code_runs_its_read_tool_with_a_claude_model() {
    let Some(bin) = claude_bin() else { return };
    let (work, note) = project_with_note();
    let model = ToolModel::start(&note);
    let mut conf = GatewayConf::default().allow(&model.origin);
    conf.keys = vec!["{id: team-a, env: SWITCHYARD_TEST_UNIFIED_GW_KEY}".into()];
    conf.extra = format!(
        "providers: {{anthropic: {{base_url: '{}/v1'}}}}\nexport: {{batch_max_delay_ms: 50}}\n",
        model.origin
    );
    let gw = Gateway::start_with_env(
        conf,
        &[
            ("SWITCHYARD_TEST_UNIFIED_GW_KEY", UNIFIED_GW_KEY),
            ("ANTHROPIC_API_KEY", "sk-test-anthropic"),
        ],
    );
    // Claude Code's full tool set, as a user runs it
    let run = claude(
        &bin,
        &gw,
        "claude-sonnet-4",
        KeyVar::AuthToken,
        work.path(),
        "What does note.txt say?",
        &[],
    );
    assert!(run.ok, "claude failed\n{}", run.explain(&gw));
    assert_eq!(run.result["is_error"], false, "{}", run.explain(&gw));
    assert_eq!(run.result["num_turns"], 2, "{}", run.explain(&gw));
    let text = run.result["result"].as_str().unwrap_or("");
    assert!(text.contains(SECRET), "{}", run.explain(&gw));

    let seen = model.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (path, headers, body) in &seen {
        assert_eq!(path, "/v1/messages");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "x-api-key" && v == "sk-test-anthropic"),
            "{headers:?}"
        );
        no_gateway_key(headers);
        let tools: Vec<&str> = body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(tools.contains(&"Read"), "{tools:?}");
    }
    // the second turn carries the tool call and its result
    let turn = seen[1].2["messages"].to_string();
    assert!(
        turn.contains("toolu_read_1") && turn.contains(SECRET),
        "{turn}"
    );
}

#[test]
fn claude_code_runs_its_read_tool_with_an_openai_model() {
    let Some(bin) = claude_bin() else { return };
    let (work, note) = project_with_note();
    let model = ToolModel::start(&note);
    let mut conf = GatewayConf::default().allow(&model.origin);
    conf.keys = vec!["{id: team-a, env: SWITCHYARD_TEST_UNIFIED_GW_KEY}".into()];
    conf.extra = format!(
        "providers: {{openai: {{base_url: '{}/v1'}}}}\nexport: {{batch_max_delay_ms: 50}}\n",
        model.origin
    );
    let gw = Gateway::start_with_env(
        conf,
        &[
            ("SWITCHYARD_TEST_UNIFIED_GW_KEY", UNIFIED_GW_KEY),
            ("OPENAI_API_KEY", "sk-test-openai"),
        ],
    );
    let run = claude(
        &bin,
        &gw,
        "gpt-4o-mini",
        KeyVar::ApiKey,
        work.path(),
        "What does note.txt say?",
        &[],
    );
    assert!(run.ok, "claude failed\n{}", run.explain(&gw));
    assert_eq!(run.result["is_error"], false, "{}", run.explain(&gw));
    assert_eq!(run.result["num_turns"], 2, "{}", run.explain(&gw));
    let text = run.result["result"].as_str().unwrap_or("");
    assert!(text.contains(SECRET), "{}", run.explain(&gw));

    let seen = model.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (path, headers, body) in &seen {
        assert_eq!(path, "/v1/chat/completions");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "authorization" && v == "Bearer sk-test-openai"),
            "{headers:?}"
        );
        no_gateway_key(headers);
        assert_eq!(body["messages"][0]["role"], "system", "{body}");
        let tools: Vec<&str> = body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["function"]["name"].as_str())
            .collect();
        assert!(tools.contains(&"Read"), "{tools:?}");
    }
    // nothing Claude Code wrote was lost on the way: the agent list it sends as a
    // mid-conversation system message (`role: "system"` in `messages`) reached the provider
    assert!(
        seen[0].2["messages"]
            .to_string()
            .contains("Available agent types"),
        "{}",
        seen[0].2
    );
    // the second turn: the assistant's tool call, then the tool message with the file's text
    let messages = seen[1].2["messages"].as_array().unwrap().clone();
    let call = messages
        .iter()
        .find(|m| m["role"] == "assistant" && m["tool_calls"].is_array())
        .expect("the assistant's tool call");
    assert_eq!(call["tool_calls"][0]["id"], "call_read_1");
    assert_eq!(call["tool_calls"][0]["function"]["name"], "Read");
    let args: Value = serde_json::from_str(
        call["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args["file_path"], note.display().to_string());
    let tool = messages
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("the tool message");
    assert_eq!(tool["tool_call_id"], "call_read_1");
    assert!(tool["content"].to_string().contains(SECRET), "{tool}");
}
