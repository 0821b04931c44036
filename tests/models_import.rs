//! `switchyard models import --from litellm` on the price map shipped in the litellm package of the venv made by .ci/run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The gateway binary (`SWITCHYARD_TEST_BIN` when the target directory is shared).
fn bin() -> String {
    std::env::var("SWITCHYARD_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchyard").to_string())
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run switchyard")
}

/// `switchyard models import --from litellm SRC [-o OUT]`.
fn import(src: &std::path::Path, out: Option<&std::path::Path>) -> Output {
    let mut args = vec![
        "models",
        "import",
        "--from",
        "litellm",
        src.to_str().unwrap(),
    ];
    if let Some(o) = out {
        args.extend(["-o", o.to_str().unwrap()]);
    }
    run(&args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The venv: the one `$SWITCHYARD_PYTHON` belongs to, else `.venv` in the checkout.
fn venv() -> PathBuf {
    let venv = match std::env::var("SWITCHYARD_PYTHON") {
        // <venv>/bin/python
        Ok(p) => PathBuf::from(p)
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"),
    };
    assert!(
        venv.join("lib").is_dir(),
        "no Python venv at {} (from $SWITCHYARD_PYTHON or CARGO_MANIFEST_DIR/.venv): run `bash .ci/run`, which creates it with litellm installed",
        venv.display()
    );
    venv
}

/// litellm's `model_prices_and_context_window.json` (the installed copy is named `..._backup.json`).
fn litellm_prices() -> PathBuf {
    let venv = venv();
    let mut found = Vec::new();
    for lib in std::fs::read_dir(venv.join("lib"))
        .expect("read venv/lib")
        .flatten()
    {
        let dir = lib.path().join("site-packages/litellm");
        for name in [
            "model_prices_and_context_window.json",
            "model_prices_and_context_window_backup.json",
        ] {
            if dir.join(name).is_file() {
                found.push(dir.join(name));
            }
        }
    }
    found.into_iter().next().unwrap_or_else(|| {
        panic!(
            "litellm's model_prices_and_context_window*.json is not under {}/lib/python*/site-packages/litellm: run `bash .ci/run`, which installs litellm in the venv",
            venv.display()
        )
    })
}

/// The overlay is read by the registry's own loader: what the gateway would accept.
type Overlay = switchyard::pricing::PricingFile;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn real_litellm_price_map_becomes_an_overlay_with_its_prices_per_million_tokens() {
    let src = litellm_prices();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&src).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("litellm.yaml");
    let o = import(&src, Some(&out));
    let report = stderr(&o);
    assert!(o.status.success(), "exit {:?}: {report}", o.status);
    let text = std::fs::read_to_string(&out).expect("the overlay file is written");
    let overlay: Overlay = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        overlay.problems(false),
        vec![],
        "the gateway accepts the overlay"
    );
    assert!(
        overlay.models.len() > 500,
        "only {} entries",
        overlay.models.len()
    );
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(overlay.as_of.as_deref(), Some(today.as_str()));

    // (litellm key, Switchyard provider, model name)
    let samples = [
        ("gpt-4o-mini", "openai", "gpt-4o-mini"),
        (
            "claude-haiku-4-5-20251001",
            "anthropic",
            "claude-haiku-4-5-20251001",
        ),
        ("gemini/gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
        ("groq/openai/gpt-oss-120b", "groq", "openai-gpt-oss-120b"),
        (
            "anthropic.claude-haiku-4-5-20251001-v1:0",
            "bedrock",
            "anthropic.claude-haiku-4-5-20251001-v1:0",
        ),
        (
            "meta.llama3-3-70b-instruct-v1:0",
            "bedrock",
            "meta.llama3-3-70b-instruct-v1:0",
        ),
        ("text-embedding-3-small", "openai", "text-embedding-3-small"),
    ];
    for (key, provider, model) in samples {
        let want = json
            .get(key)
            .unwrap_or_else(|| panic!("{key} is not in {}", src.display()));
        let per_m = |f: &str| want.get(f).and_then(|v| v.as_f64()).map(|v| v * 1e6);
        let got = overlay
            .models
            .iter()
            .find(|m| m.provider == provider && m.model == model)
            .unwrap_or_else(|| panic!("{provider} {model} (from {key}) is not in the overlay"));
        let input = per_m("input_cost_per_token").unwrap();
        let output = per_m("output_cost_per_token").unwrap_or(0.0);
        let (got_in, got_out) = (got.input.unwrap(), got.output.unwrap());
        assert!(close(got_in, input), "{key} input {got_in} != {input}");
        assert!(close(got_out, output), "{key} output {got_out} != {output}");
        match per_m("cache_read_input_token_cost") {
            Some(c) => assert!(
                got.cached_input.is_some_and(|g| close(g, c)),
                "{key} cached_input {:?} != {c}",
                got.cached_input
            ),
            None => assert_eq!(got.cached_input, None, "{key}"),
        }
        match per_m("cache_creation_input_token_cost") {
            Some(c) => assert!(
                got.cache_write.is_some_and(|g| close(g, c)),
                "{key} cache_write {:?} != {c}",
                got.cache_write
            ),
            None => assert_eq!(got.cache_write, None, "{key}"),
        }
        assert_eq!(
            got.context,
            want.get("max_input_tokens").and_then(|v| v.as_u64()),
            "{key}"
        );
        assert_eq!(
            got.deprecated.as_deref(),
            want.get("deprecation_date").and_then(|v| v.as_str()),
            "{key}"
        );
        let embedding = want.get("mode").and_then(|v| v.as_str()) == Some("embedding");
        assert_eq!(
            got.kind == switchyard::pricing::ModelKind::Embedding,
            embedding,
            "{key}"
        );
        let source = got.source.as_ref().unwrap();
        assert_eq!(source.url, "litellm:model_prices_and_context_window.json");
        assert_eq!(source.read, today);
        assert_eq!(
            got.source_kind,
            Some(switchyard::pricing::SourceKind::ThirdParty)
        );
    }
    let groq = overlay
        .models
        .iter()
        .find(|m| m.provider == "groq" && m.model == "openai-gpt-oss-120b")
        .unwrap();
    assert_eq!(groq.id.as_deref(), Some("openai/gpt-oss-120b"));

    let mut seen = std::collections::HashSet::new();
    for m in &overlay.models {
        assert!(
            seen.insert((&m.provider, &m.model)),
            "{} {} is listed twice",
            m.provider,
            m.model
        );
        assert!(
            !m.model.is_empty() && !m.model.contains(['/', ',', '!', ' ']),
            "model name '{}'",
            m.model
        );
    }

    // The report: how many were imported, and per reason how many were skipped, with keys.
    let keys = json.as_object().unwrap().len();
    assert!(
        report.contains(&format!(
            "{} of {keys} keys of {} imported",
            overlay.models.len(),
            src.display()
        )),
        "{report}"
    );
    for (reason, key) in [
        ("sample_spec", "`sample_spec`"),
        ("other_provider", "`"),
        ("mode", "`"),
        ("regional", "`azure/"),
        ("duplicate", "`"),
    ] {
        let line = report
            .lines()
            .position(|l| {
                l.trim_start().split_once(' ').is_some_and(|(n, rest)| {
                    n.parse::<usize>().is_ok_and(|n| n > 0)
                        && rest.starts_with(&format!("{reason}:"))
                })
            })
            .unwrap_or_else(|| panic!("no count for reason {reason} in:\n{report}"));
        let examples = report.lines().nth(line + 1).unwrap_or_default();
        assert!(
            examples.contains("e.g. ") && examples.contains(key),
            "{reason}: {examples}\n{report}"
        );
    }
    assert!(report.contains("image_generation"), "{report}");
    let skipped: usize = report
        .lines()
        .filter_map(|l| l.trim_start().split_once(' '))
        .filter_map(|(n, _)| n.parse::<usize>().ok())
        .sum();
    assert_eq!(overlay.models.len() + skipped, keys, "{report}");

    // Without -o the same overlay goes to stdout.
    let o = import(&src, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), text);
}

#[test]
fn input_that_is_not_a_price_map_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [("not-json.json", "not json {"), ("array.json", "[1, 2, 3]")] {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        let out = dir.path().join("out.yaml");
        let o = import(&p, Some(&out));
        let err = stderr(&o);
        assert!(!o.status.success(), "{name}: {err}");
        assert!(err.contains(p.to_str().unwrap()), "{name}: {err}");
        assert!(!out.exists(), "{name}: an overlay was written");
    }
    let missing = dir.path().join("missing.json");
    let o = import(&missing, None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("missing.json"), "{}", stderr(&o));
}

#[test]
fn import_without_a_known_format_is_a_usage_error() {
    let o = run(&["models", "import", "prices.json"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--from"), "{err}");
    let o = run(&["models", "import", "--from", "xyz", "prices.json"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("xyz") && err.contains("litellm"), "{err}");
}

#[test]
fn the_server_flags_still_parse_next_to_the_subcommand() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/switchyard.yaml");
    for args in [
        vec!["-t"],
        vec!["-t", "-c", conf.to_str().unwrap()],
        vec!["-c", conf.to_str().unwrap(), "-t"],
    ] {
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("is valid"),
            "{args:?}"
        );
    }
}
