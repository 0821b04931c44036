//! No import cycle between the files of `src/`: the same check as
//! `python3 ../shared/tools/import_cycles.py src` (CI runs both), so that `cargo test` alone
//! guards it. A file's imports are the `crate::`, `super::` and `self::` paths it names (in `use`
//! lines and inline, `{..}` groups expanded one level) and the paths through the modules it
//! declares (`mod x;` then `x::..`), each mapped to the file that defines the module; comments
//! and the `#[cfg(test)] mod .. {` block are left out, and so are a module's uses of its own
//! ancestors and the imports of `tests` modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every `.rs` file under `root` by its module path (`export/mod.rs` is `export`); the crate
/// root (`lib.rs`, `main.rs`) is left out: nothing imports it.
fn modules(root: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<Module, PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().with_extension("");
                let mut m: Module = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    m.pop();
                }
                if !m.is_empty() {
                    out.insert(m, path);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The source without `//` comments and from its `#[cfg(test)] mod name {` on.
fn strip(src: &str) -> String {
    let mut src = src;
    let mut from = 0;
    while let Some(i) = src[from..].find("#[cfg(test)]").map(|i| i + from) {
        let rest = src[i + "#[cfg(test)]".len()..].trim_start();
        let opens_block = rest.strip_prefix("mod").is_some_and(|r| {
            let name = r.trim_start();
            let len = name.bytes().take_while(|&b| is_word(b)).count();
            r.len() > name.len() && len > 0 && name[len..].trim_start().starts_with('{')
        });
        if opens_block {
            src = &src[..i];
            break;
        }
        from = i + 1;
    }
    src.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `::a::b` chains from `at`: the names and where the chain ends.
fn chain(s: &[u8], mut at: usize) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    while s[at..].starts_with(b"::") && s.get(at + 2).is_some_and(|&c| is_word(c)) {
        let len = s[at + 2..].iter().take_while(|&&c| is_word(c)).count();
        names.push(String::from_utf8_lossy(&s[at + 2..at + 2 + len]).into_owned());
        at += 2 + len;
    }
    (names, at)
}

/// The items of a `::{a, b::c, d as e}` group starting at `at`, if it has no nested group.
fn group(s: &[u8], at: usize) -> Option<Vec<String>> {
    if !s[at..].starts_with(b"::{") {
        return None;
    }
    let body = &s[at + 3..];
    let end = body.iter().position(|&c| c == b'}' || c == b'{')?;
    if body[end] != b'}' {
        return None;
    }
    let items = String::from_utf8_lossy(&body[..end]);
    Some(
        items
            .split(',')
            .map(|i| i.trim().split(" as ").next().unwrap().trim().to_string())
            .filter(|i| !i.is_empty() && i != "self")
            .collect(),
    )
}

/// Where `name` starts a path in `s`: not after `:` or a letter, digit or `_`.
fn starts(s: &[u8], name: &str) -> Vec<usize> {
    let n = name.as_bytes();
    (0..s.len())
        .filter(|&i| s[i..].starts_with(n) && (i == 0 || !(s[i - 1] == b':' || is_word(s[i - 1]))))
        .collect()
}

/// The modules a source declares with `mod name;`.
fn declared(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|l| {
            let mut l = l.trim_start();
            if let Some(r) = l.strip_prefix("pub") {
                let r = match r.strip_prefix('(') {
                    Some(r) => &r[r.find(')')? + 1..],
                    None => r,
                };
                if !r.starts_with(char::is_whitespace) {
                    return None;
                }
                l = r.trim_start();
            }
            let r = l.strip_prefix("mod")?;
            let name = r.trim_start();
            let len = name.bytes().take_while(|&b| is_word(b)).count();
            (r.len() > name.len() && len > 0 && name[len..].trim_start().starts_with(';'))
                .then(|| name[..len].to_string())
        })
        .collect()
}

/// The file-level import graph of the crate under `root`.
fn graph(
    root: &Path,
) -> (
    BTreeMap<Module, PathBuf>,
    BTreeMap<Module, BTreeSet<Module>>,
) {
    let files = modules(root);
    // the longest prefix of `path` that is a file's module
    let resolve = |path: &[String]| -> Option<Module> {
        (1..=path.len())
            .rev()
            .map(|i| path[..i].to_vec())
            .find(|m| files.contains_key(m))
    };
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, path) in &files {
        let src = strip(&std::fs::read_to_string(path).expect("readable source"));
        let s = src.as_bytes();
        let mut to = BTreeSet::new();
        let mut add = |target: Option<Module>| {
            if let Some(t) = target.filter(|t| t != m) {
                to.insert(t);
            }
        };
        // paths through the modules this file declares
        for child in declared(&src) {
            for at in starts(s, &child) {
                let (names, end) = chain(s, at + child.len());
                let base: Module = m
                    .iter()
                    .cloned()
                    .chain([child.clone()])
                    .chain(names)
                    .collect();
                add(resolve(&base));
                for item in group(s, end).unwrap_or_default() {
                    add(resolve(&[base.clone(), vec![item]].concat()));
                }
            }
        }
        // crate::, super::, self:: paths, left to right (a path's own `super`s are part of it)
        let mut at = 0;
        while at < s.len() {
            let kind = ["crate", "super", "self"]
                .into_iter()
                .find(|k| s[at..].starts_with(k.as_bytes()) && (at == 0 || !is_word(s[at - 1])));
            let Some(kind) = kind else {
                at += 1;
                continue;
            };
            let (mut names, end) = chain(s, at + kind.len());
            let mut base: Module = match kind {
                "crate" => vec![],
                "self" => m.clone(),
                _ => m[..m.len() - 1].to_vec(),
            };
            let named = !names.is_empty();
            while names.first().is_some_and(|n| n == "super") {
                names.remove(0);
                base.pop();
            }
            let prefix: Module = [base, names].concat();
            if named {
                add(resolve(&prefix));
            }
            for item in group(s, end).unwrap_or_default() {
                let item: String = item.chars().filter(|c| *c != ' ').collect();
                let (more, _) = chain(format!("::{item}").as_bytes(), 0);
                if !more.is_empty() {
                    add(resolve(&[prefix.clone(), more].concat()));
                }
            }
            at = if named { end } else { at + 1 };
        }
        // a module using its ancestors' items is not an import; nor are a `tests` module's
        to.retain(|t| !(t.len() < m.len() && m.starts_with(t)));
        if m.last().is_some_and(|n| n == "tests") {
            to.clear();
        }
        graph.insert(m.clone(), to);
    }
    (files, graph)
}

/// The strongly connected components of more than one file (Tarjan), each as sorted paths.
fn cycles(root: &Path) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, (usize, usize)>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        out: Vec<Vec<&'a Module>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a Module) {
            let n = self.index.len();
            self.index.insert(v, (n, n));
            self.stack.push(v);
            self.on.insert(v);
            for w in &self.graph[v] {
                let low = match self.index.get(w) {
                    None => {
                        self.visit(w);
                        self.index[w].1
                    }
                    Some(&(i, _)) if self.on.contains(w) => i,
                    Some(_) => continue,
                };
                let e = self.index.get_mut(v).unwrap();
                e.1 = e.1.min(low);
            }
            if self.index[v].0 == self.index[v].1 {
                let mut comp = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on.remove(w);
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    self.out.push(comp);
                }
            }
        }
    }
    let (files, graph) = graph(root);
    let mut t = Tarjan {
        graph: &graph,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    let base = root.parent().unwrap_or(root);
    let mut out: Vec<Vec<String>> = t
        .out
        .iter()
        .map(|c| {
            let mut c: Vec<String> = c
                .iter()
                .map(|m| files[*m].strip_prefix(base).unwrap().display().to_string())
                .collect();
            c.sort();
            c
        })
        .collect();
    out.sort();
    out
}

#[test]
fn no_import_cycle_between_the_files_of_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = cycles(&src);
    assert!(
        found.is_empty(),
        "import cycles between files of src/ (a type both sides need belongs in a leaf module \
         below them):\n{}",
        found
            .iter()
            .map(|c| format!("cycle: {}", c.join(", ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Config is plain data at the bottom: its files import no module that builds a runtime object
/// from it (the key store, prices, the prompt store: their conf types live in leaf modules,
/// `auth::conf`, `pricing::file`, `prompts::conf`), nor the assembly that calls those builders.
#[test]
fn config_imports_no_runtime_builder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (_, graph) = graph(&src);
    let builders: Vec<Module> = ["auth", "pricing", "prompts", "app", "proxy", "refresh"]
        .iter()
        .map(|m| vec![m.to_string()])
        .collect();
    for (m, to) in &graph {
        if m.first().is_some_and(|c| c == "config") {
            let wrong: Vec<_> = to.iter().filter(|t| builders.contains(t)).collect();
            assert!(wrong.is_empty(), "{} imports {wrong:?}", m.join("::"));
        }
    }
}

#[test]
fn the_check_finds_a_cycle_and_only_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let write = |path: &str, text: &str| {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "lib.rs",
        "pub mod a;\npub mod b;\npub mod c;\npub mod d;\npub mod leaf;\n",
    );
    // a -> b -> d/e -> a: in a group, inline, and with `super::super`
    write("a.rs", "use crate::{b::B, c, leaf};\npub struct A;\n");
    write("b.rs", "pub struct B(crate::d::e::E);\n");
    // d names its child e, and e uses its parent d: not a cycle
    write("d/mod.rs", "pub mod e;\npub use e::E;\npub struct D;\n");
    write(
        "d/e.rs",
        "use super::super::a::A; // crate::c::C\nuse super::D;\npub struct E(A);\n",
    );
    // a -> c, and what c's comment or test module names is no import
    write(
        "c.rs",
        "use crate::leaf::L;\n// use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n",
    );
    write("leaf.rs", "pub struct L;\n");
    let found = cycles(&src);
    assert_eq!(
        found,
        vec![vec!["src/a.rs", "src/b.rs", "src/d/e.rs"]],
        "{found:?}"
    );
    write("b.rs", "pub struct B;\n");
    assert!(cycles(&src).is_empty(), "{:?}", cycles(&src));
}
