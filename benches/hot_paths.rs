//! Criterion benchmarks of the per-request hot paths: target resolution, upstream header
//! rewrite, the SSRF address classifier, the error body, the usage tap, and the log record's
//! encoding for each sink, the Anthropic stream translator, and the unified API's planning.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora_http::RequestHeader;
use switchyard::answer::ResponseState;
use switchyard::config;
use switchyard::dialects::{self, anthropic::Anthropic, openai::OpenAi};
use switchyard::error::GatewayError;
use switchyard::export::record;
use switchyard::export::sinks::{ClickHouse, ClickHouseConf, Sink, Webhook, WebhookConf};
use switchyard::routing::{self, RequestMeta};
use switchyard::ssrf;
use switchyard::unified::response::Mapper;
use switchyard::unified::{request as unified_request, Op};
use switchyard::upstream;

/// Sends `body` through an answer pipeline in 512-byte chunks (as the body filter does); the
/// bytes the client gets.
fn pipe(mut r: ResponseState, body: &[u8]) -> usize {
    let chunks: Vec<&[u8]> = body.chunks(512).collect();
    let last = chunks.len() - 1;
    let mut n = 0;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut b = Some(bytes::Bytes::copy_from_slice(chunk));
        r.filter_body(&mut b, i == last, 0);
        n += b.map_or(0, |b| b.len());
    }
    n + r
        .finish_tap()
        .map_or(0, |t| t.usage.prompt_tokens.unwrap_or(0) as usize)
}

fn piped(
    sse: bool,
    reader: &'static dyn dialects::Reader,
    mapper: Option<Mapper>,
) -> ResponseState {
    let mut r = ResponseState::default();
    r.start(sse, Some(reader), mapper);
    r
}

/// A 1 KB OpenAI chat completion, and the same answer as 40 SSE chunks with usage at the end.
fn chat_json() -> String {
    let content = "The gateway adds well under a millisecond. ".repeat(20);
    format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":812,"completion_tokens":164,"total_tokens":976,"prompt_tokens_details":{{"cached_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}"#
    )
}

fn chat_sse() -> String {
    let mut s = String::new();
    for i in 0..40 {
        s.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token{i} \"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":812,\"completion_tokens\":40}}\n\ndata: [DONE]\n\n");
    s
}

fn client_request() -> RequestHeader {
    let mut req =
        RequestHeader::build("POST", b"/openai/v1/chat/completions?api-version=1", None).unwrap();
    for (k, v) in [
        ("host", "gw.example.com"),
        ("content-type", "application/json"),
        ("content-length", "1024"),
        ("authorization", "Bearer sk-provider-0123456789abcdef"),
        ("user-agent", "OpenAI/Python 1.99.0"),
        ("accept", "application/json"),
        ("helicone-auth", "Bearer sk-gw-0123456789"),
        ("helicone-target-url", "https://api.groq.com"),
        ("helicone-property-team", "search"),
        ("x-stainless-lang", "python"),
    ] {
        req.append_header(k.to_string(), v).unwrap();
    }
    req
}

fn bench(c: &mut Criterion) {
    let cfg = config::embedded().unwrap();
    let cat = &cfg.catalogue;
    let cache = routing::OriginCache::default();

    c.bench_function("resolve: Helicone-Target-Url (approved origin)", |b| {
        b.iter(|| {
            let meta = RequestMeta {
                target_url: Some(black_box(b"https://api.groq.com")),
                target_provider: None,
                host: Some("gw.example.com"),
                path_and_query: "/openai/v1/chat/completions",
            };
            routing::resolve(&meta, cat, &cache).unwrap()
        })
    });
    c.bench_function("resolve: provider path prefix", |b| {
        b.iter(|| {
            let meta = RequestMeta {
                target_url: None,
                target_provider: None,
                host: Some("gw.example.com"),
                path_and_query: black_box("/anthropic/v1/messages"),
            };
            routing::resolve(&meta, cat, &cache).unwrap()
        })
    });
    c.bench_function("resolve: host alias", |b| {
        b.iter(|| {
            let meta = RequestMeta {
                target_url: None,
                target_provider: None,
                host: Some(black_box("oai.gw.example.com")),
                path_and_query: "/v1/chat/completions",
            };
            routing::resolve(&meta, cat, &cache).unwrap()
        })
    });

    let meta = RequestMeta {
        target_url: Some(b"https://api.groq.com"),
        target_provider: None,
        host: None,
        path_and_query: "/openai/v1/chat/completions?api-version=1",
    };
    let route = routing::resolve(&meta, cat, &cache).unwrap().unwrap();
    let template = client_request();
    c.bench_function("upstream header rewrite (10 headers)", |b| {
        b.iter_batched(
            || template.clone(),
            |mut req| upstream::prepare_request(&mut req, &route, Some(1024), None).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });

    let addrs: Vec<std::net::IpAddr> = [
        "104.18.6.192",
        "10.0.0.1",
        "169.254.169.254",
        "2606:4700::6810:1",
        "::ffff:127.0.0.1",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    c.bench_function("ssrf classify (5 addresses)", |b| {
        b.iter(|| {
            addrs
                .iter()
                .filter(|a| ssrf::classify(black_box(**a)).is_some())
                .count()
        })
    });

    c.bench_function("gateway error response", |b| {
        b.iter(|| {
            GatewayError::Forbidden(black_box("target refused").into())
                .response("7b0c4f5e-2f1a-4c3e-9a43-1f2e3d4c5b6a")
        })
    });
}

fn bench_logging(c: &mut Criterion) {
    let json = chat_json();
    c.bench_function("usage tap: 1 KB chat completion JSON", |b| {
        b.iter(|| pipe(piped(false, &OpenAi, None), black_box(json.as_bytes())))
    });
    let sse = chat_sse();
    c.bench_function("usage tap: SSE stream of 41 chunks", |b| {
        b.iter(|| pipe(piped(true, &OpenAi, None), black_box(sse.as_bytes())))
    });
    let records: Vec<record::Record> = (0..1000).map(record::sample).collect();
    let one = &records[..1];
    let mut out = Vec::with_capacity(1 << 20);
    c.bench_function("record to JSON (one 3 KB record, bodies included)", |b| {
        b.iter(|| {
            out.clear();
            serde_json::to_writer(&mut out, black_box(&one[0])).unwrap();
            out.len()
        })
    });
    let ch = ClickHouse::new(ClickHouseConf {
        url: "http://127.0.0.1:8123".into(),
        database: "switchyard".into(),
        table: "requests".into(),
        user: None,
        password_env: None,
        create_table: false,
        timeout_secs: 1,
    })
    .unwrap();
    c.bench_function("ClickHouse encode (1000 records, gzip JSONEachRow)", |b| {
        b.iter(|| {
            out.clear();
            ch.encode(black_box(&records), "batch", &mut out);
            out.len()
        })
    });
    let hook = Webhook::new(WebhookConf {
        url: "http://127.0.0.1:9/x".into(),
        token_env: None,
        timeout_secs: 1,
    })
    .unwrap();
    c.bench_function("webhook encode (1000 records)", |b| {
        b.iter(|| {
            out.clear();
            hook.encode(black_box(&records), "batch", &mut out);
            out.len()
        })
    });
}

fn bench_translate(c: &mut Criterion) {
    let tools = include_str!("../tests/fixtures/anthropic/stream_tools.sse");
    let mut g = c.benchmark_group("anthropic stream to OpenAI chunks");
    g.throughput(criterion::Throughput::Bytes(tools.len() as u64));
    g.bench_function(
        "tools fixture, 512-byte chunks, decoded once for tap and translator",
        |b| {
            b.iter(|| {
                let m = Mapper::for_success(&Anthropic, dialects::Client::OpenAi, true, true);
                pipe(piped(true, &Anthropic, m), black_box(tools.as_bytes()))
            })
        },
    );
    g.finish();
    let sse = chat_sse();
    let mut g = c.benchmark_group("openai stream, usage chunk taken out");
    g.throughput(criterion::Throughput::Bytes(sse.len() as u64));
    g.bench_function("41-chunk stream, 512-byte chunks", |b| {
        b.iter(|| {
            let m = Mapper::for_success(&OpenAi, dialects::Client::OpenAi, true, false);
            pipe(piped(true, &OpenAi, m), black_box(sse.as_bytes()))
        })
    });
    g.finish();
}

/// What the unified API does per request before anything is sent: parse the body, plan the
/// attempts from the model string, and build each attempt's body (translated for Anthropic).
fn bench_unified(c: &mut Criterion) {
    let cfg = config::embedded().expect("embedded config");
    let file: switchyard::pricing::PricingFile =
        serde_yaml::from_str(switchyard::pricing::EMBEDDED).expect("models.yaml");
    let env = |name: &str| name.ends_with("_API_KEY").then(|| "sk-bench".to_string());
    let (_, reg) = switchyard::refresh::assemble(file, &cfg.catalogue, &Default::default(), &env)
        .expect("the bundled registry");
    let body = chat_json_request();
    let mut g = c.benchmark_group("unified request");
    for model in [
        "gpt-4o-mini",
        "claude-sonnet-4",
        "llama-3.3-70b",
        "gpt-4o/openai,claude-sonnet-4/anthropic",
    ] {
        g.bench_function(format!("parse + plan + prepare: {model}"), |b| {
            let text = body.replace("MODEL", model);
            b.iter(|| {
                let req = unified_request::parse_as(
                    dialects::Client::OpenAi,
                    Op::Chat,
                    black_box(text.as_bytes()),
                )
                .expect("parse");
                let plan = reg.plan(&req.model, Op::Chat, &|_| true).expect("plan");
                let mut n = 0;
                for cand in &plan {
                    n += unified_request::prepare(&req, cand, &http::HeaderMap::new())
                        .expect("prepare")
                        .body
                        .len();
                }
                n
            })
        });
    }
    g.finish();
}

/// Registry lookups on the request path: a price by dated id (the record), by name, and the
/// unified plan of a bare model (same code before and after the registry grew to 224 entries).
fn bench_registry(c: &mut Criterion) {
    let file: switchyard::pricing::PricingFile =
        serde_yaml::from_str(switchyard::pricing::EMBEDDED).expect("models.yaml");
    let cfg = config::embedded().expect("embedded config");
    let env = |name: &str| name.ends_with("_API_KEY").then(|| "sk-bench".to_string());
    let (pricing, reg) =
        switchyard::refresh::assemble(file, &cfg.catalogue, &Default::default(), &env)
            .expect("the bundled registry");
    let mut g = c.benchmark_group("registry lookup");
    g.bench_function("price: dated id at a provider", |b| {
        b.iter(|| {
            pricing
                .find(Some("openai"), black_box("gpt-4o-mini-2024-07-18"))
                .is_some()
        })
    });
    g.bench_function("price: model name, any provider", |b| {
        b.iter(|| pricing.find(None, black_box("claude-sonnet-4")).is_some())
    });
    g.bench_function("plan: bare model", |b| {
        b.iter(|| {
            reg.plan(black_box("llama-3.3-70b"), Op::Chat, &|_| true)
                .map(|p| p.len())
        })
    });
    g.finish();
}

/// A 1.3 KB chat request with a system prompt, two turns and a tool.
fn chat_json_request() -> String {
    r#"{"model":"MODEL","messages":[{"role":"system","content":"You are a concise assistant for an on-call team. Answer in three bullet points."},{"role":"user","content":"Summarise this incident: at 09:12 UTC the provider slowed down, p99 latency rose from 1.2 s to 9 s, retries doubled the load, the circuit breaker opened at 09:14 and traffic moved to the fallback provider; it recovered at 09:31."},{"role":"assistant","content":"- 09:12 slowdown\n- 09:14 breaker opened\n- 09:31 recovered"},{"role":"user","content":"What should we change?"}],"tools":[{"type":"function","function":{"name":"open_ticket","description":"Open a follow-up ticket","parameters":{"type":"object","properties":{"title":{"type":"string"},"priority":{"type":"string","enum":["p1","p2","p3"]}},"required":["title"]}}}],"temperature":0.2,"max_tokens":400,"stream":true,"user":"oncall-7"}"#.to_string()
}

/// The cache key of a 1.3 KB request (BLAKE3 over its parts), without and with ignored keys.
fn bench_cache_key(c: &mut Criterion) {
    let body = chat_json_request();
    let mut policy = switchyard::cache::Policy {
        ttl: std::time::Duration::from_secs(60),
        seed: Some("tenant-seed".into()),
        buckets: 1,
        ignore_keys: Vec::new(),
    };
    let creds: [&[u8]; 1] = [b"Bearer sk-provider-0123456789"];
    let parts = switchyard::cache::KeyParts {
        method: "POST",
        target: "https://api.openai.com/v1/chat/completions",
        body: body.as_bytes(),
        tenant: Some("team-a"),
        credentials: &creds,
    };
    let mut g = c.benchmark_group("cache key");
    g.bench_function("1.3 KB body", |b| {
        b.iter(|| switchyard::cache::base_key(black_box(&policy), black_box(&parts)))
    });
    policy.ignore_keys = vec!["user".into()];
    g.bench_function("1.3 KB body, ignoring user", |b| {
        b.iter(|| switchyard::cache::base_key(black_box(&policy), black_box(&parts)))
    });
    g.finish();
}

/// One admission in the exact in-memory sliding window: a hot scope near its quota's steady
/// state (1000 entries in the window), and the policy header parsed.
fn bench_rate_limit(c: &mut Criterion) {
    use switchyard::limits::window::Windows;
    let w = Windows::default();
    let window = std::time::Duration::from_secs(1);
    let mut now = 0u64;
    let mut g = c.benchmark_group("rate limit");
    g.bench_function("admit, hot scope, 1000 in window", |b| {
        b.iter(|| {
            // one admission per ms: the window holds 1000, the oldest leaves each time
            now += 1;
            w.admit(black_box("team-a|r1|user=oncall-7"), window, 2000, 1, now)
        })
    });
    // a flood of new users against a full store: each admission creates a scope and evicts the
    // least recently used one
    let full = Windows::new(
        switchyard::limits::window::Bound {
            scopes: 16_384,
            bytes: 64 << 20,
        },
        None,
    );
    let mut user = 0u64;
    g.bench_function("admit, a new scope each time, store full", |b| {
        b.iter(|| {
            user += 1;
            let scope = format!("p|team-a|r60|user=flood-{user}");
            full.admit(black_box(&scope), window, 10, 1, 1)
        })
    });
    g.bench_function("parse policy header", |b| {
        b.iter(|| switchyard::limits::policy::parse(black_box("500;w=3600;u=cents;s=user")))
    });
    g.finish();
}

/// A prompt rendered into a unified body (parse, render, re-serialize as the proxy does), and the
/// body's `helicone` metadata taken out.
fn bench_prompt(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/conf/prompts/incident-summary.yaml"
        ),
        dir.path().join("incident-summary.yaml"),
    )
    .unwrap();
    let store = switchyard::prompts::Store::open(dir.path(), None);
    let body = br#"{"prompt_id":"incident-summary","inputs":{"incident":"at 09:12 UTC the provider slowed down, p99 rose from 1.2 s to 9 s","bullets":3},"messages":[{"role":"user","content":"Keep it short."}],"helicone":{"session":{"id":"s-1","name":"triage","path":"/a/b"},"properties":{"team":"oncall"},"user_id":"u-7"}}"#;
    let mut g = c.benchmark_group("unified body");
    g.bench_function("render prompt + take metadata + serialize", |b| {
        b.iter(|| {
            let serde_json::Value::Object(mut m) =
                serde_json::from_slice::<serde_json::Value>(black_box(body)).unwrap()
            else {
                unreachable!()
            };
            let meta = switchyard::metadata::take(&mut m).unwrap();
            let used = store.apply(&mut m).unwrap();
            (meta, used, serde_json::to_vec(&m).unwrap())
        })
    });
    g.finish();
}

/// The Messages client dialect: a Claude Code-sized request read and translated to chat form,
/// and an OpenAI stream turned into Messages events (per stream and per event).
fn bench_messages(c: &mut Criterion) {
    let system = "You are Claude Code, Anthropic's official CLI. ".repeat(200);
    let body = serde_json::json!({
        "model": "gpt-4o-mini", "max_tokens": 32000, "stream": true,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "tools": (0..16).map(|i| serde_json::json!({"name": format!("tool_{i}"), "description": "Runs a thing",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}})).collect::<Vec<_>>(),
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Fix the failing test"}]}],
    })
    .to_string();
    c.bench_function(
        "messages: parse + translate a 10 KB Claude Code request",
        |b| {
            b.iter(|| {
                dialects::anthropic_ingress::parse(black_box(body.as_bytes())).expect("parse")
            })
        },
    );
    let mut sse = String::new();
    for i in 0..40 {
        sse.push_str(&format!(
            "data: {{\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}}}}]}}\n\n"
        ));
    }
    sse.push_str("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    sse.push_str("data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":40}}\n\ndata: [DONE]\n\n");
    let mut g = c.benchmark_group("openai stream to Messages events");
    g.throughput(criterion::Throughput::Elements(43));
    g.bench_function("43 events, 512-byte chunks (per event: time / 43)", |b| {
        b.iter(|| {
            let m = Mapper::for_success(&OpenAi, dialects::Client::Anthropic, true, true);
            pipe(piped(true, &OpenAi, m), black_box(sse.as_bytes()))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench,
    bench_logging,
    bench_translate,
    bench_messages,
    bench_unified,
    bench_registry,
    bench_cache_key,
    bench_rate_limit,
    bench_prompt
);
criterion_main!(benches);
