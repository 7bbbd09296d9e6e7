//! The supervisor's layering, checked from its source so it cannot silently rot.
//!
//! Reads every `supervisor/src/**/*.rs`, collects the `crate::…` and
//! `super::…` paths it names outside comments (in `use` lines and inline),
//! resolves each to the file that defines it, and folds files into top-level
//! modules (`api`, `models`, `store`, …). Two rules, from `docs/architecture.md`:
//!
//! 1. No cycles between top-level modules.
//! 2. Arrows point down: faces (`api`, `cli`, `config`, and the crate root
//!    `lib.rs`/`main.rs`, the binaries' entry points) on top, subsystems below,
//!    leaves at the bottom. No module imports one of a higher layer, so nothing
//!    but a face imports `api`, `cli` or `config`.
//!
//! To see the graph (files and modules, cycles, upward imports):
//! `cargo test --release -p llm-node --test layers -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layer of each top-level module: 0 = face, 1 = subsystem, 2 = leaf.
/// A module missing here fails the test, so a new one must be placed.
const LAYERS: &[(&str, u8)] = &[
    ("lib", 0),
    ("main", 0),
    ("api", 0),
    ("cli", 0),
    ("config", 0),
    ("logging", 0),
    ("models", 1),
    ("store", 1),
    ("router", 1),
    ("cloud", 1),
    ("worker", 1),
    ("policy", 2),
    ("gpu", 2),
    ("metrics", 2),
    ("logbuf", 2),
    ("net", 2),
    ("paths", 2),
    ("request_id", 2),
    ("tls", 2),
    ("otel", 2),
    ("build_info", 2),
    // Test-only helpers (`#[cfg(test)]`): may reach anything.
    ("testing", 0),
    // The modules of the tree before issue #10, so the "before" figures can be taken.
    ("app", 0),
    ("model", 1),
    ("registry", 1),
    ("supervision", 1),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `api/error.rs` → `[api, error]`, `store/mod.rs` → `[store]`,
/// `lib.rs` → `[]` (the crate root).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] {
        parts.clear();
    }
    parts
}

/// The source without comments (doc links name modules without importing them) and
/// without its `#[cfg(test)] mod tests` (test fixtures may reach anywhere).
fn strip_comments(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal is rare in this crate; URLs are in strings
            // only after `"`, so keep lines whose `//` follows a quote.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path that starts at `text` (just after `crate::` or `super::`), expanding
/// `{a, b::{c, d}}` groups: `model::{A, B}` → `[model::A, model::B]`.
fn paths_at(text: &str) -> Vec<Vec<String>> {
    fn parse(chars: &[char], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        loop {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
            if *i < chars.len() && chars[*i] == '{' {
                *i += 1;
                loop {
                    parse(chars, i, path.clone(), out);
                    while *i < chars.len() && chars[*i].is_whitespace() {
                        *i += 1;
                    }
                    match chars.get(*i) {
                        Some(',') => *i += 1,
                        Some('}') => {
                            *i += 1;
                            break;
                        }
                        _ => break,
                    }
                    while *i < chars.len() && chars[*i].is_whitespace() {
                        *i += 1;
                    }
                    if chars.get(*i) == Some(&'}') {
                        *i += 1;
                        break;
                    }
                }
                return;
            }
            let start = *i;
            while *i < chars.len() && is_ident(chars[*i]) {
                *i += 1;
            }
            if *i == start {
                break;
            }
            path.push(chars[start..*i].iter().collect());
            if chars.get(*i) == Some(&':') && chars.get(*i + 1) == Some(&':') {
                *i += 2;
                continue;
            }
            // `x as y`, `self`, trailing items: the path ends here.
            while *i < chars.len() && !matches!(chars[*i], ',' | '}' | ';') {
                if chars[*i] == '(' || chars[*i] == '\n' || chars[*i] == ')' {
                    break;
                }
                *i += 1;
            }
            break;
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    parse(&chars, &mut i, Vec::new(), &mut out);
    out
}

struct Graph {
    /// File (module path joined by `::`, `crate` for the root) → files it imports.
    files: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn read() -> Graph {
        let src = src_dir();
        let mut all = Vec::new();
        rust_files(&src, &mut all);
        let modules: BTreeSet<Vec<String>> = all
            .iter()
            .map(|p| module_of(p.strip_prefix(&src).unwrap()))
            .collect();
        let mut files = BTreeMap::new();
        for path in &all {
            let me = module_of(path.strip_prefix(&src).unwrap());
            let text = strip_comments(&std::fs::read_to_string(path).unwrap());
            let mut deps = BTreeSet::new();
            // `super` of `a/b.rs` (module `a::b`) and of `a/b/mod.rs` (module `a::b`) is `a`.
            let parent = me[..me.len().saturating_sub(1)].to_vec();
            for (marker, base) in [("crate::", Vec::new()), ("super::", parent)] {
                let mut rest = text.as_str();
                while let Some(at) = rest.find(marker) {
                    let preceded = rest[..at].chars().last().is_some_and(is_ident);
                    rest = &rest[at + marker.len()..];
                    if preceded {
                        continue;
                    }
                    // `super::super::x`
                    let mut base = base.clone();
                    let mut tail = rest;
                    while marker == "super::" && tail.starts_with("super::") {
                        base.pop();
                        tail = &tail["super::".len()..];
                    }
                    for p in paths_at(tail) {
                        let mut full = base.clone();
                        full.extend(p);
                        // The longest prefix that is a file.
                        let target = (0..=full.len())
                            .rev()
                            .map(|n| full[..n].to_vec())
                            .find(|m| modules.contains(m))
                            .unwrap_or_default();
                        if target != me && !target.is_empty() {
                            deps.insert(name(&target));
                        }
                    }
                }
            }
            files.insert(name(&me), deps);
        }
        Graph { files }
    }

    fn top(file: &str) -> String {
        match file {
            "crate" => "lib".into(),
            f => f.split("::").next().unwrap().to_string(),
        }
    }

    fn modules(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (file, deps) in &self.files {
            let from = Self::top(file);
            let entry = out.entry(from.clone()).or_default();
            for d in deps {
                let to = Self::top(d);
                if to != from {
                    entry.insert(to);
                }
            }
        }
        out
    }
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Strongly connected components with more than one node (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(deps) = t.g.get(v) {
            for w in deps {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("module `{module}` has no layer in tests/layers.rs LAYERS"))
}

/// `(from file, to file)` for every import that points to a higher layer.
fn upward(graph: &Graph) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, deps) in &graph.files {
        let from = Graph::top(file);
        for d in deps {
            let to = Graph::top(d);
            if to != from && layer(&to) < layer(&from) {
                out.push((file.clone(), d.clone()));
            }
        }
    }
    out
}

fn report(graph: &Graph) -> (usize, usize, usize) {
    let modules = graph.modules();
    let module_cycles = cycles(&modules);
    let file_cycles = cycles(&graph.files);
    let up = upward(graph);
    println!("modules ({}):", modules.len());
    for (m, deps) in &modules {
        println!(
            "  {m} -> {}",
            deps.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    println!("module cycles: {}", module_cycles.len());
    for c in &module_cycles {
        println!("  {}", c.join(" <-> "));
    }
    println!("file cycles: {}", file_cycles.len());
    for c in &file_cycles {
        println!("  ({} files) {}", c.len(), c.join(", "));
    }
    println!("upward imports: {}", up.len());
    for (from, to) in &up {
        println!("  {from} -> {to}");
    }
    (module_cycles.len(), file_cycles.len(), up.len())
}

#[test]
fn arrows_point_one_way() {
    let graph = Graph::read();
    let (module_cycles, _file_cycles, upward) = report(&graph);
    assert_eq!(
        module_cycles, 0,
        "cycles between top-level modules (see output)"
    );
    assert_eq!(upward, 0, "imports that point up a layer (see output)");
}

#[test]
fn path_groups_are_expanded() {
    let got = paths_at("model::{Acquire, GetStatus as S}, registry::Models};");
    assert_eq!(
        got,
        vec![
            vec!["model".to_string(), "Acquire".into()],
            vec!["model".into(), "GetStatus".into()]
        ]
    );
    let got = paths_at("{api::{self, error::ApiError}, config}");
    assert_eq!(
        got,
        vec![
            vec!["api".to_string(), "self".into()],
            vec!["api".into(), "error".into(), "ApiError".into()],
            vec!["config".into()],
        ]
    );
}
