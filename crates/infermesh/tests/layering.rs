//! The workspace's layering rule, checked: no two modules of a crate import each other, directly
//! or around a circle (a module that holds a part never imports its holder back), and no source
//! file outgrows the size a reader takes in at once. Reads the `use crate::…`/`super::…` paths of
//! every source file (tests and `#[cfg(test)]` blocks aside).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: &[&str] = &["state", "mesh", "backend", "api", "deck", "infermesh"];
/// The brief's "no file over ~600 lines", with the tolerance "~" allows.
const MAX_LINES: usize = 650;

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `a/b.rs` → `[a, b]`, `a/mod.rs` → `[a]`, `lib.rs`/`main.rs` → `[]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code a reader of the module sees: comments and the unit tests at the end dropped.
fn code(src: &str) -> String {
    let body = src.split("#[cfg(test)]").next().unwrap_or_default();
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_path(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) if r.starts_with(|c: char| c.is_alphabetic() || c == '_') => rest = r,
            _ => break,
        }
    }
    out
}

/// Every module path named after `crate::` or `super::` (a `{a, b::c}` group yields each item).
fn referenced(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (marker, base) in [
        ("crate::", Vec::new()),
        ("super::", me[..me.len().saturating_sub(1)].to_vec()),
    ] {
        for (i, _) in code.match_indices(marker) {
            let prev = code[..i].chars().next_back();
            if prev.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let after = &code[i + marker.len()..];
            let head = ident_path(after);
            let mut prefix = base.clone();
            prefix.extend(head.iter().cloned());
            let tail = after
                .get(head.iter().map(|h| h.len() + 2).sum::<usize>()..)
                .unwrap_or_default();
            if head.is_empty() || tail.starts_with('{') {
                let group = if head.is_empty() { after } else { tail };
                if let Some(inner) = group.strip_prefix('{').and_then(|g| g.split('}').next()) {
                    for item in inner.split(',') {
                        let mut p = prefix.clone();
                        p.extend(ident_path(item.trim().trim_start_matches('{')));
                        out.push(p);
                    }
                }
            }
            out.push(prefix);
        }
    }
    out
}

struct Crate {
    /// Module path → file, relative to `src`.
    files: BTreeMap<Vec<String>, String>,
    /// File → files it imports.
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn load(name: &str) -> (Crate, Vec<String>) {
    let src = crate_src(name);
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let mut files = BTreeMap::new();
    let mut texts = BTreeMap::new();
    let mut too_long = Vec::new();
    for p in paths {
        let rel = p.strip_prefix(&src).unwrap().to_path_buf();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines = text.lines().count();
        if lines > MAX_LINES {
            too_long.push(format!("{name}/src/{} has {lines} lines", rel.display()));
        }
        let rel_s = rel.display().to_string();
        // `#[path]` test files are the tests of the module that names them.
        if rel_s.ends_with("_tests.rs") {
            continue;
        }
        files.insert(module_of(&rel), rel_s.clone());
        texts.insert(rel_s, text);
    }
    let mut edges = BTreeMap::new();
    for (module, file) in &files {
        let mut deps = BTreeSet::new();
        for path in referenced(&code(&texts[file]), module) {
            let target = (1..=path.len()).rev().find_map(|n| files.get(&path[..n]));
            if let Some(t) = target.filter(|t| *t != file) {
                deps.insert(t.clone());
            }
        }
        edges.insert(file.clone(), deps);
    }
    (Crate { files, edges }, too_long)
}

/// One circle through `graph`, if any, as the nodes along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut circle = stack[at..].to_vec();
            circle.push(n.to_string());
            return Some(circle);
        }
        if !done.insert(n.to_string()) {
            return None;
        }
        stack.push(n.to_string());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut done, &mut Vec::new()))
}

/// Files grouped by their top module (`route/mod.rs` and `route/proxy.rs` are `route`).
fn by_top_module(c: &Crate) -> BTreeMap<String, BTreeSet<String>> {
    let top = |file: &str| {
        c.files
            .iter()
            .find(|(_, f)| f.as_str() == file)
            .and_then(|(m, _)| m.first().cloned())
            .unwrap_or_else(|| "(crate root)".to_string())
    };
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, deps) in &c.edges {
        for to in deps {
            let (a, b) = (top(from), top(to));
            // The crate root declares every module; declaring is not depending.
            if a != b && a != "(crate root)" {
                g.entry(a).or_default().insert(b);
            }
        }
    }
    g
}

#[test]
fn no_module_imports_its_holder_and_no_file_is_too_long() {
    let mut problems = Vec::new();
    for name in CRATES {
        let (c, too_long) = load(name);
        problems.extend(too_long);
        if let Some(circle) = find_cycle(&c.edges) {
            problems.push(format!(
                "{name}: files import each other: {}",
                circle.join(" → ")
            ));
        }
        if let Some(circle) = find_cycle(&by_top_module(&c)) {
            problems.push(format!(
                "{name}: modules import each other: {}",
                circle.join(" → ")
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_checker_sees_a_circle_and_a_group_import() {
    let me = vec!["a".to_string()];
    let refs = referenced(
        "use crate::{b::C, d};\nuse super::e;\nlet x = crate::f::g();",
        &me,
    );
    for want in [vec!["b", "C"], vec!["d"], vec!["e"], vec!["f", "g"]] {
        assert!(refs.iter().any(|r| r == &want), "{want:?} not in {refs:?}");
    }
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    let circle = find_cycle(&g).expect("a → b → c → a");
    assert_eq!(circle.first(), circle.last());
    assert_eq!(circle.len(), 4);
    let acyclic: BTreeMap<String, BTreeSet<String>> =
        [("a".to_string(), ["b".to_string()].into())].into();
    assert_eq!(find_cycle(&acyclic), None);
}
