//! `./run`, the README's first command: on a machine without cmake it says what to install and
//! builds nothing; with cmake it goes on to `cargo run --release`. Each run sees a PATH made of a
//! temporary folder of links to the tools the script uses, so nothing is installed or built.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `name` on this machine's PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A folder holding links to bash and to each of `tools` (a stub that fails when the machine
/// lacks one: `--check` only asks whether it is there).
fn bin_dir(tools: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    symlink(which("bash").expect("bash"), dir.path().join("bash")).unwrap();
    for t in tools {
        match which(t) {
            Some(p) => symlink(p, dir.path().join(t)).unwrap(),
            None => script(dir.path(), t, "exit 1"),
        }
    }
    dir
}

/// An executable bash script `name` in `dir`.
fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let bash = which("bash").expect("bash");
    let path = dir.join(name);
    // replaces a link by a file: writing through the link would overwrite the real tool
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, format!("#!{}\n{body}\n", bash.display())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `./run args` with only `dir` on the PATH.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/run"));
    cmd.args(args).env_clear().env("PATH", dir).env("HOME", dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .expect("./run is in the repository root, executable")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn without_cmake_the_check_fails_and_says_how_to_install_it() {
    let dir = bin_dir(&["cargo", "cc"]);
    let o = run(dir.path(), &["--check"], &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("cmake not found"), "{e}");
    for how in [
        "apt-get install -y cmake",
        "dnf install -y cmake",
        "brew install cmake",
    ] {
        assert!(e.contains(how), "missing {how:?} in:\n{e}");
    }
    assert!(!e.contains("gcc"), "cc is there: {e}");
    // SWITCHYARD_NO_INSTALL: the same answer, and no build (cargo is not called)
    script(dir.path(), "cargo", "echo built > \"$HOME/cargo-ran\"");
    let o = run(dir.path(), &[], &[("SWITCHYARD_NO_INSTALL", "1")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("apt-get install -y cmake"));
    assert!(!dir.path().join("cargo-ran").exists(), "nothing was built");
}

#[test]
fn without_cmake_or_a_compiler_both_are_named() {
    let dir = bin_dir(&["cargo"]);
    let o = run(dir.path(), &["--check"], &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("cmake, cc not found"), "{e}");
    assert!(e.contains("apt-get install -y cmake gcc"), "{e}");
    assert!(e.contains("xcode-select --install"), "{e}");
}

#[test]
fn with_cmake_the_check_passes() {
    let dir = bin_dir(&["cargo", "cc", "cmake"]);
    let o = run(dir.path(), &["--check"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("ok: cmake, cc and cargo"));
}

#[test]
fn missing_tools_are_installed_with_apt_get_then_the_build_starts_with_the_arguments() {
    // stand-ins: apt-get "installs" cmake, sudo runs its command, cargo records its arguments
    let dir = bin_dir(&["cc"]);
    let d = dir.path().display().to_string();
    script(
        dir.path(),
        "apt-get",
        &format!(
            "echo \"$*\" >> '{d}/apt-log'\n\
             if [[ $1 == install ]]; then\n\
             printf '#!%s\\nexit 0\\n' \"$BASH\" > '{d}/cmake'\n\
             chmod 755 '{d}/cmake'\n\
             fi"
        ),
    );
    script(
        dir.path(),
        "sudo",
        "while [[ $1 == *=* ]]; do export \"$1\"; shift; done; exec \"$@\"",
    );
    script(
        dir.path(),
        "cargo",
        &format!("echo \"$*\" > '{d}/cargo-args'"),
    );
    // chmod is not a bash built-in: the stand-in apt-get takes the machine's
    symlink(which("chmod").expect("chmod"), dir.path().join("chmod")).unwrap();
    let o = run(dir.path(), &["-t", "-c", "my.yaml"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let apt = std::fs::read_to_string(dir.path().join("apt-log")).unwrap();
    assert_eq!(apt, "update\ninstall -y cmake\n");
    let cargo = std::fs::read_to_string(dir.path().join("cargo-args")).unwrap();
    assert_eq!(cargo, "run --release -- -t -c my.yaml\n");
}
