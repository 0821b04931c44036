//! Registry lookups for a deterministic instruction count: `valgrind --tool=callgrind` on
//! `registry_lookup N` and `registry_lookup 2N`; the difference over N is the cost of one round
//! (a price by dated id at a provider, a price by model name, the plan of a bare model),
//! without the set-up. Used to compare the registry before and after it grew (README:
//! Performance).

use switchyard::config;
use switchyard::unified::Op;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let file: switchyard::pricing::PricingFile =
        serde_yaml::from_str(switchyard::pricing::EMBEDDED).expect("models.yaml");
    let cfg = config::embedded().expect("embedded config");
    let env = |name: &str| name.ends_with("_API_KEY").then(|| "sk-bench".to_string());
    let (pricing, reg) =
        switchyard::refresh::assemble(file, &cfg.catalogue, &Default::default(), &env)
            .expect("the bundled registry");
    let mut found = 0usize;
    for _ in 0..n {
        found += pricing
            .find(
                Some("openai"),
                std::hint::black_box("gpt-4o-mini-2024-07-18"),
            )
            .is_some() as usize;
        found += pricing
            .find(None, std::hint::black_box("claude-sonnet-4"))
            .is_some() as usize;
        found += reg
            .plan(std::hint::black_box("llama-3.3-70b"), Op::Chat, &|_| true)
            .map_or(0, |p| p.len());
    }
    println!("{found}");
}
