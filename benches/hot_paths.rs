//! Criterion benchmarks of the per-request hot paths: target resolution, upstream header
//! rewrite, the SSRF address classifier and the error body.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora_http::RequestHeader;
use switchyard::config;
use switchyard::error::GatewayError;
use switchyard::routing::{self, RequestMeta};
use switchyard::ssrf;
use switchyard::upstream;

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

criterion_group!(benches, bench);
criterion_main!(benches);
