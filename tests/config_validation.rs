//! `switchyard -t -c FILE`: valid configs pass, invalid ones fail naming the field path.

mod common;

use std::process::Command;

fn check(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    common::check_config_in(dir.path(), yaml)
}

#[test]
fn shipped_config_validates() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/switchyard.yaml");
    let out = Command::new(common::bin())
        .args(["-t", "-c", conf])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));
    // the systemd unit's config (its key comes from /etc/switchyard/env)
    let out = Command::new(common::bin())
        .args([
            "-t",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/switchyard.yaml"),
        ])
        .env("SWITCHYARD_KEY_DEFAULT", "k")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd/switchyard.yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(common::bin()).arg("-t").output().unwrap();
    assert!(
        out.status.success(),
        "embedded defaults: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn errors_name_the_field_path() {
    let cases = [
        ("listeners: [{address: '127.0.0.1:1'}]\nupstream: {read_timeout: 5}\n", "upstream: unknown field `read_timeout`"),
        ("listeners: [{address: '127.0.0.1:1'}]\nserver: {threads: lots}\n", "server.threads"),
        ("listeners: [{address: 'localhost'}]\n", "listeners[0].address"),
        ("listeners: [{address: '127.0.0.1:1'}]\nauth: {keys: [{id: a, env: SWITCHYARD_SURELY_UNSET_VAR}]}\n", "auth.keys[0].env"),
        ("listeners: [{address: '127.0.0.1:1'}]\norigins: [{url: 'gopher://x'}]\n", "origins[0].url"),
        ("listeners: [{address: '127.0.0.1:1'}]\nunapproved_origins: {policy: sometimes}\n", "unapproved_origins.policy"),
        ("listeners: [{address: '127.0.0.1:1'}]\nhost_aliases: {oai.example.com: nosuchprovider}\n", "host_aliases.oai.example.com"),
        ("listeners: [{address: '127.0.0.1:1'}]\nbogus: 1\n", "unknown field `bogus`"),
        ("listeners: [{address: '127.0.0.1:1'}]\nexport: {queue_capacity: 0}\n", "export.queue_capacity: must be greater than 0"),
        ("listeners: [{address: '127.0.0.1:1'}]\nexport: {batch_size: 10}\n", "export: unknown field `batch_size`"),
        ("listeners: [{address: '127.0.0.1:1'}]\nexport: {jsonl: {dir: logs, durability: sometimes}}\n", "export.jsonl.durability"),
        ("listeners: [{address: '127.0.0.1:1'}]\nexport: {clickhouse: {url: 'gopher://x'}}\n", "export.clickhouse.url"),
        ("listeners: [{address: '127.0.0.1:1'}]\nexport: {clickhouse: {url: 'http://127.0.0.1:8123', table: 'x; DROP'}}\n", "export.clickhouse.table"),
        ("listeners: [{address: '127.0.0.1:1'}]\nexport: {webhook: {url: 'http://127.0.0.1:1', token_env: SWITCHYARD_SURELY_UNSET_VAR}}\n", "export.webhook.token_env"),
        ("listeners: [{address: '127.0.0.1:1'}]\ncache: {max_bytes: 10}\n", "cache.max_bytes: must be at least 1048576"),
        ("listeners: [{address: '127.0.0.1:1'}]\ncache: {max_entry_bytes: 999999999999}\n", "cache.max_entry_bytes"),
        ("listeners: [{address: '127.0.0.1:1'}]\ncache: {redis: {url: 'http://x'}}\n", "cache.redis.url"),
        ("listeners: [{address: '127.0.0.1:1'}]\ncache: {ttl: 5}\n", "cache: unknown field `ttl`"),
        ("listeners: [{address: '127.0.0.1:1'}]\nproviders: {opnai: {}}\n", "providers.opnai: unknown provider 'opnai' (not in the catalogue). Did you mean openai?"),
        ("listeners: [{address: '127.0.0.1:1'}]\nproviders: {openai: {base_url: 'ftp://x'}}\n", "providers.openai.base_url"),
        ("listeners: [{address: '127.0.0.1:1'}]\nproviders: {openai: {api_key: sk-inline}}\n", "providers.openai: unknown field `api_key`"),
        ("listeners: [{address: '127.0.0.1:1'}]\nproviders: {azure: {deployments: {gpt4o: d}}}\n", "providers.azure.deployments.gpt4o: unknown model 'gpt4o'"),
        ("listeners: [{address: '127.0.0.1:1'}]\nlimits: {redis: {url: 'http://x'}}\n", "limits.redis.url"),
        ("listeners: [{address: '127.0.0.1:1'}]\nmetrics: {address: '127.0.0.1:2', spend_alert_usd_per_hour: -3}\n", "metrics.spend_alert_usd_per_hour: must be a positive amount"),
        ("listeners: [{address: '127.0.0.1:1'}]\nprompts: {dir: '.', poll_ms: 0}\n", "prompts.poll_ms: must be greater than 0"),
        ("listeners: [{address: '127.0.0.1:1'}]\nlimits: {redis: {url: 'redis://127.0.0.1:6379/0', timeout_ms: 0}}\n", "limits.redis.timeout_ms: must be greater than 0"),
        ("listeners: [{address: '127.0.0.1:1'}]\nlimits: {on_store_error: maybe}\n", "limits.on_store_error"),
        ("listeners: [{address: '127.0.0.1:1'}]\nlimits: {concurrency_lease_secs: 0}\n", "limits.concurrency_lease_secs"),
        ("listeners: [{address: '127.0.0.1:1'}]\nauth: {keys: [{id: a, sha256: '0000000000000000000000000000000000000000000000000000000000000000', limits: {usd_per_day: -5}}]}\n", "auth.keys[0].limits.usd_per_day: must be a positive amount"),
        ("listeners: [{address: '127.0.0.1:1'}]\nauth: {keys: [{id: a, sha256: '0000000000000000000000000000000000000000000000000000000000000000', limits: {rpm: 5}}]}\n", "unknown field `rpm`"),
        ("listeners: [{address: '127.0.0.1:1'}]\nauth: {keys: [{id: a, sha256: '0000000000000000000000000000000000000000000000000000000000000000', limits: {}}]}\n", "auth.keys[0].limits: sets no limit"),
    ];
    for (yaml, want) in cases {
        let (ok, out) = check(yaml);
        assert!(!ok, "accepted:\n{yaml}");
        assert!(out.contains(want), "expected `{want}` in:\n{out}");
    }
}

#[test]
fn bad_catalogue_entries_are_reported_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("p.yaml");
    std::fs::write(
        &cat,
        "providers:\n  - name: x\n    hosts: ['api.openai.*']\n    auth: {header: authorization}\n",
    )
    .unwrap();
    let (ok, out) = check(&format!(
        "listeners: [{{address: '127.0.0.1:1'}}]\ncatalogue: '{}'\n",
        cat.display()
    ));
    assert!(!ok);
    assert!(out.contains("catalogue.providers[0].hosts[0]"), "{out}");
}

#[test]
fn bad_pricing_entries_are_reported_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("m.yaml");
    std::fs::write(
        &models,
        "as_of: 2026-01-01\nmodels:\n  - {provider: openai, model: gpt-x, input: 1, output: 2}\n  - {provider: openai, model: gpt-y, input: -1, output: 2}\n",
    )
    .unwrap();
    let (ok, out) = check(&format!(
        "listeners: [{{address: '127.0.0.1:1'}}]\npricing: '{}'\n",
        models.display()
    ));
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "pricing.overlays[0] ({}) models[1].input",
            models.display()
        )),
        "{out}"
    );
    assert_eq!(out.matches("gpt-y: a price").count(), 1, "once: {out}");
    std::fs::write(&models, "as_of: 2026-01-01\nmodels:\n  - {provider: openai, model: gpt-x, input: cheap, output: 2}\n").unwrap();
    let (ok, out) = check(&format!(
        "listeners: [{{address: '127.0.0.1:1'}}]\npricing: '{}'\n",
        models.display()
    ));
    assert!(!ok);
    assert!(out.contains("models[0].input"), "{out}");
    // a canonical model name cannot hold the model-string separators
    std::fs::write(&models, "as_of: 2026-01-01\nmodels:\n  - {provider: together, model: meta-llama/Llama-3, input: 1, output: 1}\n  - {provider: openai, model: gpt-x, input: 1, output: 1, kind: image}\n").unwrap();
    let (ok, out) = check(&format!(
        "listeners: [{{address: '127.0.0.1:1'}}]\npricing: '{}'\n",
        models.display()
    ));
    assert!(!ok);
    assert!(
        out.contains("models[1].kind: unknown variant `image`"),
        "{out}"
    );
    std::fs::write(&models, "as_of: 2026-01-01\nmodels:\n  - {provider: together, model: meta-llama/Llama-3, id: x, input: 1, output: 1}\n  - {provider: together, model: meta-llama/Llama-3, input: 1, output: 1}\n").unwrap();
    let (ok, out) = check(&format!(
        "listeners: [{{address: '127.0.0.1:1'}}]\npricing: '{}'\n",
        models.display()
    ));
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "pricing.overlays[0] ({}) models[0].model: 'meta-llama/Llama-3' cannot be a model name",
            models.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "pricing.overlays[0] ({}) models[1]: together meta-llama/Llama-3 is listed twice",
            models.display()
        )),
        "{out}"
    );
}

fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// `-t` runs the assembly a start runs: what only building the gateway finds fails it too.
#[test]
fn what_only_the_assembly_finds_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not PEM at all\n").unwrap();
    let listener = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "listeners: [{{address: '127.0.0.1:1', tls: {{cert: '{}', key: '{}'}}}}]\n",
            cert.display(),
            key.display()
        )
    };
    // a certificate that exists but does not load (a start would panic binding the listener)
    let (ok, out) = check(&listener(&junk, &tls_fixture("localhost.key")));
    assert!(!ok, "accepted a certificate that does not load:\n{out}");
    assert!(
        out.contains("listener 127.0.0.1:1:") && out.contains("holds no PEM certificate"),
        "{out}"
    );
    // a key that is not the certificate's
    let (ok, out) = check(&listener(
        &tls_fixture("ca.pem"),
        &tls_fixture("localhost.key"),
    ));
    assert!(!ok, "accepted a key that is not the certificate's:\n{out}");
    assert!(out.contains("listener 127.0.0.1:1:"), "{out}");
    // the real pair passes
    let (ok, out) = check(&listener(
        &tls_fixture("localhost.pem"),
        &tls_fixture("localhost.key"),
    ));
    assert!(ok, "{out}");
    // the log export's folder cannot be made (a file is in the way)
    let (ok, out) = check(&format!(
        "listeners: [{{address: '127.0.0.1:1'}}]\nexport: {{jsonl: {{dir: '{}'}}}}\n",
        junk.display()
    ));
    assert!(!ok, "accepted an export folder that is a file:\n{out}");
    assert!(out.contains("log export: export.jsonl.dir"), "{out}");
    // nor the state directory
    let (ok, out) = check(&format!(
        "listeners: [{{address: '127.0.0.1:1'}}]\nstate_dir: '{}'\n",
        junk.display()
    ));
    assert!(!ok, "accepted a state directory that is a file:\n{out}");
    assert!(out.contains("cannot open the state directory"), "{out}");
}

/// The problems the features find building from their section (keys, routes) come with the
/// configuration's own, at once, with exit status 2.
#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(
        &p,
        "listeners: [{address: 'nope'}]\nauth: {keys: [{id: a, env: SWITCHYARD_SURELY_UNSET_VAR}]}\nproviders: {opnai: {}}\n",
    )
    .unwrap();
    let out = Command::new(common::bin())
        .arg("-t")
        .arg("-c")
        .arg(&p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "invalid configuration:",
        "listeners[0].address",
        "auth.keys[0].env",
        "providers.opnai: unknown provider",
    ] {
        assert!(err.contains(want), "expected `{want}` in:\n{err}");
    }
}

/// `-t` binds nothing: a listener's port in use by another process does not fail it. It opens
/// the state directory as a start does (creating it).
#[test]
fn the_check_binds_no_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = common::check_config_in(
        dir.path(),
        &format!(
            "listeners: [{{address: '127.0.0.1:{port}'}}]\nmetrics: {{address: '127.0.0.1:{port}'}}\nstate_dir: st\n"
        ),
    );
    assert!(ok, "{out}");
    assert!(out.contains("is valid"), "{out}");
    assert!(
        dir.path().join("st").is_dir(),
        "the state directory is made"
    );
}
