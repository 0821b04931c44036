//! Test support: an in-process mock provider, a canary listener, and the real `switchyard`
//! binary started on ephemeral 127.0.0.1 ports with a generated config.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use sha2::{Digest, Sha256};

// ------------------------------------------------------------------ mock provider

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub body_sha256: String,
    pub body: Bytes,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Scripted failures: the first `fail_first` API requests answer `fail_status` (with
/// `Retry-After` when set); `always` makes every request answer that status.
#[derive(Default, Clone)]
pub struct Script {
    pub always: Option<u16>,
    pub fail_first: usize,
    pub fail_status: u16,
    pub retry_after: Option<&'static str>,
    /// Never answer (sleep 30 s) on every path.
    pub hang: bool,
    /// Scripted failures come with an empty body (`Content-Length: 0`).
    pub empty_body: bool,
}

#[derive(Default)]
pub struct MockState {
    pub script: Script,
    pub failed: AtomicUsize,
    pub requests: Mutex<Vec<Captured>>,
    /// SSE responses whose client (the gateway) went away before the last event.
    pub sse_aborted: AtomicUsize,
    pub sse_completed: AtomicUsize,
}

pub struct MockProvider {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl MockProvider {
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn hits(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }
    /// Every request the mock received, in order.
    pub fn requests(&self) -> Vec<Captured> {
        self.state.requests.lock().unwrap().clone()
    }
    pub fn last(&self) -> Captured {
        self.state
            .requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the mock received no request")
    }

    /// Starts the mock on an ephemeral 127.0.0.1 port, on its own thread and runtime.
    pub fn start() -> MockProvider {
        Self::start_scripted(Script::default())
    }

    /// A mock that answers `status` to everything.
    pub fn failing(status: u16) -> MockProvider {
        Self::start_scripted(Script {
            always: Some(status),
            ..Script::default()
        })
    }

    pub fn start_scripted(script: Script) -> MockProvider {
        let state = Arc::new(MockState {
            script,
            ..MockState::default()
        });
        let st = state.clone();
        let addr = serve(move |req| handle(req, st.clone()));
        MockProvider { addr, state }
    }
}

/// Serves HTTP/1 with `respond` on an ephemeral 127.0.0.1 port, on a thread and runtime of its
/// own (so a test's blocking calls never stall it); its address.
/// The Messages API's top-level fields (its API reference, 2026); anything else is refused as
/// Anthropic refuses it.
const MESSAGES_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "output_config",
    "output_format",
    "cache_control",
    "inference_geo",
    "speed",
];

/// Anthropic's 400 for a body it would refuse: an unknown field, or no `max_tokens` on
/// `/v1/messages`.
fn anthropic_refusal(v: &serde_json::Value, needs_max_tokens: bool) -> Option<Response<Body>> {
    let obj = v.as_object()?;
    let problem = obj
        .keys()
        .find(|k| !MESSAGES_FIELDS.contains(&k.as_str()))
        .map(|k| format!("{k}: Extra inputs are not permitted"))
        .or_else(|| {
            (needs_max_tokens && !obj.contains_key("max_tokens"))
                .then(|| "max_tokens: Field required".to_string())
        })?;
    let body = serde_json::json!({"type":"error","error":{"type":"invalid_request_error","message":problem}});
    Some(full(400, "application/json", body.to_string()))
}

pub fn serve<F, Fut, B>(respond: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let respond = respond.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(respond);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    addr
}

/// SIGTERM to a process the test started itself, and up to 15 s for it to exit (then SIGKILL).
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

fn query(uri: &hyper::Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct SseGuard {
    state: Arc<MockState>,
    done: bool,
}

impl SseGuard {
    fn mark_done(&mut self) {
        self.done = true;
    }
}

impl Drop for SseGuard {
    fn drop(&mut self) {
        if self.done {
            self.state.sse_completed.fetch_add(1, Ordering::SeqCst);
        } else {
            self.state.sse_aborted.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// SSE response of `events`, one every `every`, then `data: [DONE]`.
fn sse(state: Arc<MockState>, events: Vec<String>, every: Duration) -> Response<Body> {
    sse_tail(state, events, every, Duration::ZERO)
}

/// As `sse`, with the body's end held back `tail` after `data: [DONE]`.
fn sse_tail(
    state: Arc<MockState>,
    events: Vec<String>,
    every: Duration,
    tail: Duration,
) -> Response<Body> {
    let chunks = events
        .iter()
        .map(|e| format!("data: {e}\n\n"))
        .chain(["data: [DONE]\n\n".to_string()])
        .map(Bytes::from)
        .collect();
    raw_stream_tail(state, chunks, every, tail)
}

/// A path under tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// An SSE response sent as these raw chunks, `every` apart.
fn raw_stream(state: Arc<MockState>, chunks: Vec<Bytes>, every: Duration) -> Response<Body> {
    raw_stream_tail(state, chunks, every, Duration::ZERO)
}

/// As `raw_stream`, and the body ends (its last, empty chunk) only `tail` after the last event:
/// a client that stops reading at the last event closes before the body's end.
fn raw_stream_tail(
    state: Arc<MockState>,
    chunks: Vec<Bytes>,
    every: Duration,
    tail: Duration,
) -> Response<Body> {
    let guard = SseGuard { state, done: false };
    let stream = futures_util::stream::unfold(
        (0usize, chunks, guard),
        move |(i, chunks, mut guard)| async move {
            if i >= chunks.len() {
                if !tail.is_zero() {
                    tokio::time::sleep(tail).await;
                }
                guard.mark_done();
                return None;
            }
            if i > 0 {
                tokio::time::sleep(every).await;
            }
            let c = chunks[i].clone();
            Some((Ok::<_, Infallible>(Frame::data(c)), (i + 1, chunks, guard)))
        },
    );
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

async fn handle(req: Request<Incoming>, st: Arc<MockState>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let captured = Captured {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).to_string(),
                )
            })
            .collect(),
        body_len: bytes.len(),
        body_sha256: hex::encode(Sha256::digest(&bytes)),
        body: bytes.clone(),
    };
    st.requests.lock().unwrap().push(captured.clone());
    let q = query(&parts.uri);
    let path = parts.uri.path();
    let script = &st.script;
    if script.hang {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let scripted = script.always.or_else(|| {
        (script.fail_first > 0 && st.failed.fetch_add(1, Ordering::SeqCst) < script.fail_first)
            .then_some(script.fail_status)
    });
    if let Some(code) = scripted {
        let body = if path.ends_with("/messages") {
            // Anthropic's error shape
            let kind = match code {
                400 => "invalid_request_error",
                401 => "authentication_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"scripted {code}"}}}}"#)
        } else {
            format!(r#"{{"error":{{"message":"scripted {code}","type":"server_error"}}}}"#)
        };
        let body = if script.empty_body {
            String::new()
        } else {
            body
        };
        let mut r = full(code, "application/json", body);
        if let Some(ra) = script.retry_after {
            r.headers_mut().insert("retry-after", ra.parse().unwrap());
        }
        return Ok(r);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(500);
        return Ok(full(
            code,
            "application/json",
            format!(r#"{{"error":{{"message":"scripted {code}"}}}}"#),
        ));
    }
    Ok(match path {
        p if p.ends_with("/chat/completions") => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let model = v["model"].as_str().unwrap_or("gpt-4o-mini").to_string();
            let tools = v["tools"].as_array().is_some_and(|t| !t.is_empty());
            let after_tool = v["messages"]
                .as_array()
                .and_then(|m| m.last())
                .is_some_and(|m| m["role"] == "tool");
            if tools && !after_tool {
                // asks for the first tool, as OpenAI does (arguments as a JSON string)
                let name = v["tools"][0]["function"]["name"].as_str().unwrap_or("tool");
                let usage = serde_json::json!({"prompt_tokens":20,"completion_tokens":7,"total_tokens":27,
                    "prompt_tokens_details":{"cached_tokens":4}});
                if v["stream"].as_bool() == Some(true) {
                    let base = |choices: serde_json::Value| serde_json::json!({"id":"chatcmpl-tool","object":"chat.completion.chunk","created":1,"model":model,"choices":choices});
                    let mut events = vec![
                        base(
                            serde_json::json!([{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_mock_1","type":"function","function":{"name":name,"arguments":""}}]},"finish_reason":null}]),
                        ),
                        base(
                            serde_json::json!([{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]),
                        ),
                        base(
                            serde_json::json!([{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]),
                        ),
                        base(
                            serde_json::json!([{"index":0,"delta":{},"finish_reason":"tool_calls"}]),
                        ),
                    ];
                    if v["stream_options"]["include_usage"].as_bool() == Some(true) {
                        let mut u = base(serde_json::json!([]));
                        u["usage"] = usage;
                        events.push(u);
                    }
                    return Ok(sse(
                        st,
                        events.iter().map(|e| e.to_string()).collect(),
                        Duration::from_millis(5),
                    ));
                }
                let body = serde_json::json!({"id":"chatcmpl-tool","object":"chat.completion","created":1,"model":model,
                    "choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
                        {"id":"call_mock_1","type":"function","function":{"name":name,"arguments":"{\"city\":\"Paris\"}"}}]},
                        "finish_reason":"tool_calls"}],"usage":usage});
                return Ok(full(200, "application/json", body.to_string()));
            }
            if v["stream"].as_bool() == Some(true) {
                let mut events: Vec<String> = ["Hello", " from", " mock"]
                    .iter()
                    .map(|t| {
                        serde_json::json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":model,
                            "choices":[{"index":0,"delta":{"content":t},"finish_reason":null}]})
                        .to_string()
                    })
                    .collect();
                events.push(serde_json::json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":model,
                    "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}).to_string());
                // as OpenAI does: usage only when asked for, in a last chunk without choices
                if v["stream_options"]["include_usage"].as_bool() == Some(true) {
                    events.push(serde_json::json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":model,
                        "choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}).to_string());
                }
                // `?tail_ms=` holds the body's end back after `data: [DONE]`
                let tail = q.get("tail_ms").and_then(|v| v.parse().ok()).unwrap_or(0);
                sse_tail(
                    st,
                    events,
                    Duration::from_millis(10),
                    Duration::from_millis(tail),
                )
            } else {
                // `?pt=&ct=` set the usage it reports, `?delay_ms=` holds the answer back
                let (pt, ct) = (
                    q.get("pt").and_then(|v| v.parse::<u64>().ok()).unwrap_or(5),
                    q.get("ct").and_then(|v| v.parse::<u64>().ok()).unwrap_or(3),
                );
                if let Some(ms) = q.get("delay_ms").and_then(|v| v.parse::<u64>().ok()) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let body = serde_json::json!({"id":"chatcmpl-mock","object":"chat.completion","created":1,"model":model,
                    "choices":[{"index":0,"message":{"role":"assistant","content":"Hello from mock"},"finish_reason":"stop"}],
                    "usage":{"prompt_tokens":pt,"completion_tokens":ct,"total_tokens":pt + ct}});
                // like real providers: compressed when the client accepts it
                if parts
                    .headers
                    .get("accept-encoding")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("gzip"))
                {
                    use std::io::Write;
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(body.to_string().as_bytes()).unwrap();
                    let mut r = full(200, "application/json", gz.finish().unwrap());
                    r.headers_mut()
                        .insert("content-encoding", "gzip".parse().unwrap());
                    return Ok(r);
                }
                full(200, "application/json", body.to_string())
            }
        }
        p if p.ends_with("/messages/count_tokens") => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if let Some(e) = anthropic_refusal(&v, false) {
                return Ok(e);
            }
            full(200, "application/json", r#"{"input_tokens":42}"#)
        }
        p if p.ends_with("/messages") => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            if let Some(e) = anthropic_refusal(&v, true) {
                return Ok(e);
            }
            let tools = v["tools"].as_array().is_some_and(|t| !t.is_empty());
            if v["stream"].as_bool() == Some(true) {
                // a recorded Anthropic stream, cut at awkward places
                let name = if tools { "stream_tools" } else { "stream_text" };
                let raw = std::fs::read(fixture(&format!("anthropic/{name}.sse"))).unwrap();
                let cuts = [
                    0,
                    7,
                    raw.len() / 3,
                    raw.len() / 3 + 1,
                    raw.len() / 2 + 13,
                    raw.len(),
                ];
                let chunks = cuts
                    .windows(2)
                    .map(|w| Bytes::copy_from_slice(&raw[w[0]..w[1]]))
                    .collect();
                return Ok(raw_stream(st, chunks, Duration::from_millis(5)));
            }
            let model = v["model"].as_str().unwrap_or("claude-mock");
            let content = if tools {
                let name = v["tools"][0]["name"].as_str().unwrap_or("tool");
                serde_json::json!([{"type":"text","text":"Let me check."},
                    {"type":"tool_use","id":"toolu_mock","name":name,"input":{"city":"Paris"}}])
            } else {
                serde_json::json!([{"type":"text","text":"Hello from mock"}])
            };
            let body = serde_json::json!({"id":"msg_mock","type":"message","role":"assistant","model":model,
                "content":content,"stop_reason": if tools {"tool_use"} else {"end_turn"},
                "usage":{"input_tokens":5,"output_tokens":3,"cache_read_input_tokens":2}});
            full(200, "application/json", body.to_string())
        }
        p if p.ends_with("/completions") => {
            // legacy text completions, as OpenAI answers them
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let model = v["model"]
                .as_str()
                .unwrap_or("gpt-3.5-turbo-instruct")
                .to_string();
            if v["stream"].as_bool() == Some(true) {
                let mut events: Vec<String> = ["Hello", " from", " mock"]
                    .iter()
                    .map(|t| {
                        serde_json::json!({"id":"cmpl-mock","object":"text_completion","created":1,"model":model,
                            "choices":[{"index":0,"text":t,"logprobs":null,"finish_reason":null}]})
                        .to_string()
                    })
                    .collect();
                if v["stream_options"]["include_usage"].as_bool() == Some(true) {
                    events.push(serde_json::json!({"id":"cmpl-mock","object":"text_completion","created":1,"model":model,
                        "choices":[],"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}).to_string());
                }
                sse(st, events, Duration::from_millis(10))
            } else {
                full(200, "application/json", serde_json::json!({"id":"cmpl-mock","object":"text_completion","created":1,"model":model,
                    "choices":[{"index":0,"text":"Hello from mock","logprobs":null,"finish_reason":"stop"}],
                    "usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}).to_string())
            }
        }
        p if p.ends_with("/embeddings") => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let body = serde_json::json!({"object":"list","model":v["model"],
                "data":[{"object":"embedding","index":0,"embedding":[0.25,-0.5,1.0]}],
                "usage":{"prompt_tokens":4,"total_tokens":4}});
            full(200, "application/json", body.to_string())
        }
        "/sse" => {
            let n: usize = q.get("n").and_then(|v| v.parse().ok()).unwrap_or(5);
            let ms: u64 = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(100);
            let events = (0..n).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
            sse(st, events, Duration::from_millis(ms))
        }
        "/sse-error" => {
            // a 200 stream that fails midway, as Anthropic reports an overload
            let chunks = vec![
                Bytes::from_static(b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"),
                Bytes::from_static(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"),
            ];
            raw_stream(st, chunks, Duration::from_millis(10))
        }
        "/big" => {
            // `kb` KiB of JSON whose content depends on `seed`: distinct large answers
            let kb: usize = q.get("kb").and_then(|v| v.parse().ok()).unwrap_or(64);
            let seed = q.get("seed").cloned().unwrap_or_default();
            let filler = seed.repeat(1024 * kb / seed.len().max(1) + 1);
            full(
                200,
                "application/json",
                format!(r#"{{"seed":"{seed}","filler":"{}"}}"#, &filler[..1024 * kb]),
            )
        }
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            full(200, "text/plain", "too late")
        }
        _ => {
            // echo: what arrived, for byte-exactness and header checks
            let body = serde_json::json!({
                "method": captured.method, "path": captured.path_and_query,
                "body_len": captured.body_len, "body_sha256": captured.body_sha256,
                "content_length": parts.headers.get("content-length").map(|v| v.to_str().unwrap_or("").to_string()),
                "transfer_encoding": parts.headers.get("transfer-encoding").map(|v| v.to_str().unwrap_or("").to_string()),
            });
            full(200, "application/json", body.to_string())
        }
    })
}

// ------------------------------------------------------------------ canary

/// A listener that must never be reached: it counts every connection it accepts.
pub struct Canary {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
}

impl Canary {
    pub fn start(ip: &str) -> Canary {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let a = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                a.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        Canary { addr, accepted }
    }
    pub fn hits(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A loopback port that refuses connections for as long as this value lives: the socket is bound,
/// so no other listener (another test's gateway or mock) can take the port, but never listens, so
/// a connection attempt is reset at once. A port merely found free and released can be reused by
/// the next listener of a parallel test, which then answers where a refusal was expected.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    pub port: u16,
}

impl ClosedPort {
    #[allow(clippy::new_without_default)]
    pub fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        ClosedPort {
            _socket: socket,
            port,
        }
    }
    /// `http://127.0.0.1:<port>`
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

// ------------------------------------------------------------------ gateway process

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sections of the generated config (YAML snippets, without their key).
#[derive(Clone)]
pub struct GatewayConf {
    pub origins: Vec<String>,
    pub keys: Vec<String>,
    pub unapproved: String,
    pub upstream: String,
    pub limits: String,
    pub catalogue: Option<PathBuf>,
    pub host_aliases: String,
    pub state_dir: Option<PathBuf>,
    /// An extra HTTPS listener: (port, cert, key).
    pub tls_listener: Option<(u16, PathBuf, PathBuf)>,
    /// Extra top-level YAML appended to the config.
    pub extra: String,
    /// `server.grace_period_seconds`.
    pub grace_secs: u64,
    /// More `server:` settings, e.g. `", header_timeout_secs: 2"`.
    pub server_extra: String,
}

impl Default for GatewayConf {
    fn default() -> Self {
        GatewayConf {
            origins: vec![],
            keys: vec![],
            unapproved: "{policy: limit, per_second: 1000, per_day: 1000000}".into(),
            upstream: "{connect_timeout_ms: 1000, read_timeout_secs: 5}".into(),
            limits: "{max_body_bytes: 33554432}".into(),
            catalogue: None,
            host_aliases: "{}".into(),
            state_dir: None,
            tls_listener: None,
            extra: String::new(),
            grace_secs: 1,
            server_extra: String::new(),
        }
    }
}

impl GatewayConf {
    /// Allow-lists a loopback mock: approved and exempt from the SSRF guard.
    pub fn allow(mut self, origin: &str) -> Self {
        self.origins.push(format!(
            "{{url: '{origin}', approved: true, allow_private: true}}"
        ));
        self
    }
    /// Exempts a loopback origin from the SSRF guard without approving it (quotas apply).
    pub fn allow_unapproved(mut self, origin: &str) -> Self {
        self.origins.push(format!(
            "{{url: '{origin}', approved: false, allow_private: true}}"
        ));
        self
    }
}

pub struct Gateway {
    child: Option<Child>,
    pub port: u16,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    pub conf: GatewayConf,
    log: PathBuf,
}

/// Waits until the gateway `child` answers its own health check on `port` (the body and the
/// `helicone-id` header tell it from anything else listening there).
fn wait_ready(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("gateway exited with {status}"));
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Write;
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            let ours = buf.starts_with("HTTP/1.1 200")
                && buf.to_ascii_lowercase().contains("\r\nhelicone-id:")
                && buf.contains(r#"{"status":"ok"}"#);
            if ours && child.try_wait().unwrap().is_none() {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "gateway not ready after 30 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    ))
}

/// The gateway binary: `SWITCHYARD_TEST_BIN` when set (a copy taken right after the build, when
/// the target directory is shared with other checkouts), else the one cargo built.
/// The Python of the venv `.ci/run` makes (`SWITCHYARD_PYTHON` wins), with the official SDKs.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("SWITCHYARD_PYTHON") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `bash .ci/run` (or python3 -m venv .venv && .venv/bin/pip install openai anthropic)",
        p.display()
    );
    p
}

/// `switchyard -t -c` on `yaml`, written to `dir` (relative paths in it resolve there), with no
/// provider key in the environment: (success, stdout + stderr).
pub fn check_config_in(dir: &Path, yaml: &str) -> (bool, String) {
    let p = dir.join("c.yaml");
    std::fs::write(&p, yaml).unwrap();
    let out = Command::new(bin())
        .arg("-t")
        .arg("-c")
        .arg(&p)
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("SWITCHYARD_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchyard").to_string())
    })
}

impl Gateway {
    pub fn start(conf: GatewayConf) -> Gateway {
        Self::start_with_env(conf, &[])
    }

    pub fn start_with_env(conf: GatewayConf, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, conf, env)
    }

    fn start_in(dir: tempfile::TempDir, conf: GatewayConf, env: &[(&str, &str)]) -> Gateway {
        // `free_port` releases its port before the gateway binds it, so a test running beside
        // this one may take it first: then the gateway cannot bind, and it starts again on
        // other ports (a mock on the stolen port must never pass for the gateway)
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let metrics_port = free_port();
            let d = dir.path().display().to_string();
            let state = conf
                .state_dir
                .clone()
                .unwrap_or_else(|| dir.path().join("state"));
            let mut yaml = format!(
                "server: {{threads: 2, grace_period_seconds: {}, graceful_shutdown_timeout_seconds: 1, pid_file: '{d}/pid', upgrade_sock: '{d}/upgrade.sock'{}}}\n\
                 listeners: [{{address: '127.0.0.1:{port}'}}{}]\n\
                 metrics: {{address: '127.0.0.1:{metrics_port}'}}\n\
                 origins: [{}]\n\
                 auth: {{keys: [{}]}}\n\
                 unapproved_origins: {}\n\
                 upstream: {}\n\
                 limits: {}\n\
                 host_aliases: {}\n\
                 state_dir: '{}'\n",
                conf.grace_secs,
                conf.server_extra,
                conf.tls_listener.as_ref().map_or(String::new(), |(p, cert, key)| format!(
                    ", {{address: '127.0.0.1:{p}', tls: {{cert: '{}', key: '{}'}}}}",
                    cert.display(),
                    key.display()
                )),
                conf.origins.join(", "),
                conf.keys.join(", "),
                conf.unapproved,
                conf.upstream,
                conf.limits,
                conf.host_aliases,
                state.display(),
            );
            yaml.push_str(&conf.extra);
            if let Some(c) = &conf.catalogue {
                yaml.push_str(&format!("catalogue: '{}'\n", c.display()));
            }
            let cfg = dir.path().join("switchyard.yaml");
            std::fs::write(&cfg, yaml).unwrap();
            let log = dir.path().join("gateway.log");
            let out = std::fs::File::create(&log).unwrap();
            let mut cmd = Command::new(bin());
            cmd.arg("-c")
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(out)
                .env("RUST_LOG", "info");
            // a provider key from the developer's shell would send unified requests off the machine
            for (k, _) in std::env::vars() {
                if k.ends_with("_API_KEY") {
                    cmd.env_remove(k);
                }
            }
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().unwrap();
            match wait_ready(&mut child, port, &log) {
                Ok(()) => {
                    return Gateway {
                        child: Some(child),
                        port,
                        metrics_port,
                        dir,
                        conf,
                        log,
                    }
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if !text.contains("in use") {
                        panic!("{why}:\n{text}");
                    }
                    last = text;
                }
            }
        }
        panic!("gateway could not bind free ports 5 times:\n{last}");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchyard.yaml")
    }

    /// Sends `signal` (`TERM`, `QUIT`, `INT`) to the gateway process.
    pub fn signal(&self, signal: &str) {
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway stopped").id()
    }

    /// Waits up to `timeout` for the process to exit; true when it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.as_mut() {
                None => return true,
                Some(c) => {
                    if c.try_wait().unwrap().is_some() {
                        self.child = None;
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Starts `switchyard -u` on the same config: it takes over the listening sockets once
    /// the running process gets SIGQUIT (Pingora's graceful upgrade).
    pub fn spawn_upgrade(&self) -> Child {
        let out = std::fs::File::create(self.dir.path().join("upgrade.log")).unwrap();
        Command::new(bin())
            .arg("-u")
            .arg("-c")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(out)
            .env("RUST_LOG", "info")
            .spawn()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    /// SIGTERM (graceful shutdown) and wait for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts again with the same config and state directory (new ports).
    pub fn restart(mut self) -> Gateway {
        self.stop();
        let mut conf = self.conf.clone();
        conf.state_dir
            .get_or_insert_with(|| self.dir.path().join("state"));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start_in(dir, conf, &[])
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Writes a catalogue with one approved provider `mock` at `origin` (prefix /mock, alias mock.gw.test).
pub fn mock_catalogue(dir: &Path, origin: &str) -> PathBuf {
    let p = dir.join("providers.yaml");
    std::fs::write(
        &p,
        format!(
            "providers:\n  - name: mock\n    origin: {origin}\n    path_prefix: /mock\n    host_aliases: [mock.gw.test]\n    auth: {{header: authorization, scheme: bearer}}\n"
        ),
    )
    .unwrap();
    p
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// `body` as a chunked upload (no Content-Length) in pieces of `piece` bytes.
pub fn chunked(body: &[u8], piece: usize) -> reqwest::Body {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(piece).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
}

/// Deterministic pseudo-random bytes (xorshift), so that a byte slip cannot go unnoticed.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `POST gw+path` with `Helicone-Target-Url: target` and `body`.
pub async fn post_target(
    gw: &Gateway,
    path: &str,
    target: &str,
    body: &'static str,
) -> reqwest::Response {
    client()
        .post(gw.url(path))
        .header("Helicone-Target-Url", target)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Everything the gateway's JSONL sink wrote under `dir/logs` (empty while nothing is).
pub fn jsonl_text(dir: &Path) -> String {
    std::fs::read_dir(dir.join("logs"))
        .map(|d| {
            d.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// One JSON document per line of `text` (JSONL, or ClickHouse's JSONEachRow).
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line ({e}): {line}"))
        })
        .collect()
}

/// The records the JSONL sink wrote under `dir/logs`.
pub fn jsonl_records(dir: &Path) -> Vec<serde_json::Value> {
    json_lines(&jsonl_text(dir))
}

/// The JSONL record of request `id`, once the exporter has written it (at most 5 s).
pub async fn logged_record(gw: &Gateway, id: &str) -> serde_json::Value {
    for _ in 0..50 {
        if let Some(r) = jsonl_records(gw.dir.path())
            .into_iter()
            .find(|r| r["id"] == id)
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("request {id} was not logged within 5 s:\n{}", gw.log());
}

/// The `id` of each record.
pub fn record_ids(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// `n` chat completions through `gw` to `target`, one after another, bodies read; their
/// `Helicone-Id`s.
pub async fn send_chats(gw: &Gateway, target: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let r = post_target(
            gw,
            "/v1/chat/completions",
            target,
            r#"{"model":"gpt-4o-mini"}"#,
        )
        .await;
        ids.push(r.headers()["helicone-id"].to_str().unwrap().to_string());
        r.bytes().await.unwrap();
    }
    ids
}

/// The metrics text once every needle is in it (counters updated in `logging` land just after
/// the response); returns the last text seen after about 2.5 s otherwise.
pub async fn metrics_with(gw: &Gateway, needles: &[&str]) -> String {
    let mut text = String::new();
    for _ in 0..50 {
        text = client()
            .get(gw.metrics_url())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if needles.iter().all(|n| text.contains(n)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    text
}

/// The gateway key of [`unified_gateway`] (when `keys` is set).
pub const UNIFIED_GW_KEY: &str = "sk-gw-unified";

/// A gateway whose unified-API providers `(name, mock)` point at mocks, each with a key
/// `sk-test-<name>`; `keys` requires the gateway key [`UNIFIED_GW_KEY`].
pub fn unified_gateway(
    providers: &[(&str, &MockProvider)],
    extra_settings: &str,
    keys: bool,
) -> Gateway {
    unified_gateway_with(providers, extra_settings, keys, "")
}

/// `unified_gateway` with more top-level YAML (`extra_yaml`).
pub fn unified_gateway_with(
    providers: &[(&str, &MockProvider)],
    extra_settings: &str,
    keys: bool,
    extra_yaml: &str,
) -> Gateway {
    let mut conf = GatewayConf::default();
    let mut settings = Vec::new();
    let mut env: Vec<(String, String)> = vec![(
        "SWITCHYARD_TEST_UNIFIED_GW_KEY".into(),
        UNIFIED_GW_KEY.into(),
    )];
    for (name, mock) in providers {
        conf = conf.allow(&mock.origin());
        let base = match *name {
            "anthropic" | "openai" | "together" => format!("{}/v1", mock.origin()),
            "groq" => format!("{}/openai/v1", mock.origin()),
            _ => mock.origin(),
        };
        let azure = if *name == "azure" {
            ", deployments: {gpt-4o: prod-4o}"
        } else {
            ""
        };
        settings.push(format!("{name}: {{base_url: '{base}'{azure}}}"));
        let var = match *name {
            "azure" => "AZURE_OPENAI_API_KEY".to_string(),
            n => format!("{}_API_KEY", n.to_ascii_uppercase()),
        };
        env.push((var, format!("sk-test-{name}")));
    }
    if !extra_settings.is_empty() {
        settings.push(extra_settings.to_string());
    }
    if keys {
        conf.keys = vec!["{id: team-a, env: SWITCHYARD_TEST_UNIFIED_GW_KEY}".into()];
    }
    conf.extra = format!(
        "providers: {{{}}}\nexport: {{batch_max_delay_ms: 50}}\n{extra_yaml}",
        settings.join(", ")
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start_with_env(conf, &env)
}

/// An answer read whole: status, headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// A header's value ("" when absent).
    pub fn h(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn id(&self) -> String {
        self.h("helicone-id").to_string()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

/// POSTs `body` to `gw`'s `path` with the `defaults` headers, then `extra` (which replace
/// defaults of the same name); the answer read whole.
pub async fn post_with(
    gw: &Gateway,
    path: &str,
    body: &str,
    defaults: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Answer {
    let mut h = reqwest::header::HeaderMap::new();
    for (k, v) in defaults.iter().chain(extra) {
        h.insert(
            reqwest::header::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let r = client()
        .post(gw.url(path))
        .headers(h)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap(),
    }
}

/// A unified gateway in front of `openai` whose prompt folder (a temporary copy of
/// tests/fixtures/prompts/incident.yaml, checked every 100 ms) is the returned folder.
pub fn prompt_gateway(openai: &MockProvider) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("prompts/incident.yaml"),
        dir.path().join("incident.yaml"),
    )
    .unwrap();
    let gw = unified_gateway_with(
        &[("openai", openai)],
        "",
        true,
        &format!(
            "prompts: {{dir: '{}', poll_ms: 100}}\n",
            dir.path().display()
        ),
    );
    (dir, gw)
}
