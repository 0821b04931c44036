//! Time to first chunk of a streamed chat completion: directly at a mock provider, through the
//! gateway by passthrough (`Helicone-Target-Url`), and through the unified API to an
//! OpenAI-compatible provider and to Anthropic (translated), and Anthropic's Messages API in
//! translated to an OpenAI-compatible provider. Sequential requests on one
//! keep-alive connection per variant, variants interleaved in rounds; driven by benches/ttfc.sh.
//!
//!   cargo run --release --example ttfc -- <gateway url> <mock url> [requests per round] [rounds]

use std::time::{Duration, Instant};

use futures_util::StreamExt;

struct Variant {
    name: &'static str,
    url: String,
    body: String,
    target: Option<String>,
    samples: Vec<Duration>,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (gw, mock) = (args[1].clone(), args[2].clone());
    let n: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(300);
    let rounds: usize = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(5);
    let body = |model: &str| {
        format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"Say hello"}}],"stream":true,"max_tokens":64}}"#
        )
    };
    let mut variants = vec![
        Variant {
            name: "direct to the mock (OpenAI SSE)",
            url: format!("{mock}/v1/chat/completions"),
            body: body("gpt-4o-mini"),
            target: None,
            samples: vec![],
        },
        Variant {
            name: "passthrough (Helicone-Target-Url)",
            url: format!("{gw}/v1/chat/completions"),
            body: body("gpt-4o-mini"),
            target: Some(mock.clone()),
            samples: vec![],
        },
        Variant {
            name: "unified, gpt-4o-mini -> openai",
            url: format!("{gw}/v1/chat/completions"),
            body: body("gpt-4o-mini"),
            target: None,
            samples: vec![],
        },
        Variant {
            name: "direct to the mock (Anthropic SSE)",
            url: format!("{mock}/v1/messages"),
            body: body("claude-sonnet-4-20250514"),
            target: None,
            samples: vec![],
        },
        Variant {
            name: "unified, claude-sonnet-4 -> anthropic (translated)",
            url: format!("{gw}/v1/chat/completions"),
            body: body("claude-sonnet-4"),
            target: None,
            samples: vec![],
        },
        // the same body is a valid Messages request (it has max_tokens)
        Variant {
            name: "Messages in (/v1/messages), gpt-4o-mini -> openai (translated)",
            url: format!("{gw}/v1/messages"),
            body: body("gpt-4o-mini"),
            target: None,
            samples: vec![],
        },
    ];
    // one client (and so one pooled connection) per variant
    let clients: Vec<reqwest::Client> = variants
        .iter()
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client")
        })
        .collect();
    for round in 0..=rounds {
        for (v, c) in variants.iter_mut().zip(&clients) {
            for _ in 0..n {
                let mut rb = c
                    .post(&v.url)
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer sk-bench")
                    .body(v.body.clone());
                if let Some(t) = &v.target {
                    rb = rb.header("Helicone-Target-Url", t);
                }
                let t0 = Instant::now();
                let r = rb.send().await.expect("request");
                assert!(r.status().is_success(), "{}: {}", v.name, r.status());
                let mut s = r.bytes_stream();
                let first = s.next().await;
                let ttfc = t0.elapsed();
                assert!(matches!(first, Some(Ok(_))), "{}: no first chunk", v.name);
                while s.next().await.is_some() {}
                if round > 0 {
                    v.samples.push(ttfc); // round 0 warms up connections and caches
                }
            }
        }
    }
    println!("| variant | p50 ms | p90 ms | p99 ms |\n|---|---|---|---|");
    let mut p50 = Vec::new();
    for v in &mut variants {
        v.samples.sort();
        println!(
            "| {} | {:.3} | {:.3} | {:.3} |",
            v.name,
            pct(&v.samples, 0.5),
            pct(&v.samples, 0.9),
            pct(&v.samples, 0.99)
        );
        p50.push(pct(&v.samples, 0.5));
    }
    println!();
    println!(
        "passthrough adds {:.3} ms at p50 over direct",
        p50[1] - p50[0]
    );
    println!(
        "unified (openai) adds {:.3} ms at p50 over passthrough",
        p50[2] - p50[1]
    );
    println!("unified (anthropic, translated) adds {:.3} ms at p50 over passthrough, {:.3} ms over direct Anthropic", p50[4] - p50[1], p50[4] - p50[3]);
    println!(
        "/v1/messages to an OpenAI provider (translated) adds {:.3} ms at p50 over chat completions passthrough",
        p50[5] - p50[1]
    );
}
