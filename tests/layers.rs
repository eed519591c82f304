//! The module graph, read from the source's own `crate::` paths: no import cycles between
//! files, and every import between top-level modules points down the request path's layers.
//!
//! Run it alone with `cargo test --test layers`. Test code (`#[cfg(test)]` modules, `tests.rs`
//! files) is left out: a test may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the top of the request path to the bottom. A module may import
/// only from modules listed after it (and from itself).
const LAYERS: &[&str] = &[
    "main",
    "fuzzing",
    "cli",
    "app",
    "gateway",
    "routes",
    "snapshot",
    "cloudflare",
    "config",
    "authz",
    "request",
    "error",
    "identity",
    "proxy",
    "emulator",
    "audit",
    "token",
    "http",
    "metrics",
    "log_writer",
    "page_cache",
    "body",
    "secret",
    "untrusted",
    "rfc3339",
    "hex",
    "lib",
];

/// A source file of the library, by module path (`http::server`) and its non-test text.
struct Source {
    module: Vec<String>,
    text: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Vec<String> = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                // Test-only files.
                Some("tests" | "test_support") => return None,
                Some("mod") => {
                    module.pop();
                }
                _ => {}
            }
            let text = std::fs::read_to_string(&path).unwrap();
            Some(Source {
                module,
                text: without_tests(&text),
            })
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The text before the file's `#[cfg(test)]` module, which by convention comes last.
fn without_tests(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        // Comments may name modules in prose.
        if !line.trim_start().starts_with("//") {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// Every `crate::a::b::...` path in `text`, as its segments; `crate::a::{b, c::d}` groups
/// are expanded.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    paths_after(text, "crate::", &[])
}

/// Every path in `text` that starts with `anchor` (`crate::`, `super::`), resolved against
/// `base`.
fn paths_after(text: &str, anchor: &str, base: &[String]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for (start, _) in text.match_indices(anchor) {
        let before = text[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        read_tree(&text[start + anchor.len()..], base.to_vec(), &mut paths);
    }
    paths
}

/// Read one path (or `{...}` group) that continues `prefix`; returns the rest of the text.
fn read_tree<'t>(
    mut text: &'t str,
    mut prefix: Vec<String>,
    paths: &mut Vec<Vec<String>>,
) -> &'t str {
    loop {
        if let Some(group) = text.strip_prefix('{') {
            let mut rest = group;
            loop {
                rest = read_tree(rest.trim_start(), prefix.clone(), paths).trim_start();
                match rest.chars().next() {
                    Some(',') => rest = rest[1..].trim_start(),
                    _ => break,
                }
                if let Some(after) = rest.strip_prefix('}') {
                    return after;
                }
            }
            return rest.strip_prefix('}').unwrap_or(rest);
        }
        let end = text
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(text.len());
        if end == 0 {
            break;
        }
        prefix.push(text[..end].to_string());
        match text[end..].strip_prefix("::") {
            Some(next) => text = next,
            None => {
                text = &text[end..];
                break;
            }
        }
    }
    paths.push(prefix);
    text
}

/// The longest known module that `path` starts with.
fn module_of(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
}

fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let sources = sources();
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    let mut edges = BTreeMap::new();
    for source in &sources {
        // `super::` in a file module is its parent; in a `mod.rs` it is the folder's parent.
        let parent = &source.module[..source.module.len().saturating_sub(1)];
        let mut paths = crate_paths(&source.text);
        paths.extend(paths_after(&source.text, "super::", parent));
        let targets: BTreeSet<Vec<String>> = paths
            .iter()
            .filter_map(|path| module_of(path, &modules))
            .filter(|target| *target != source.module)
            // A module's own children are its parts, not a dependency.
            .filter(|target| !target.starts_with(&source.module))
            .collect();
        edges.insert(source.module.clone(), targets);
    }
    edges
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "lib".into()
    } else {
        module.join("::")
    }
}

fn top(module: &[String]) -> &str {
    module.first().map_or("lib", String::as_str)
}

#[test]
fn no_file_imports_a_module_that_imports_it_back() {
    let edges = graph();
    assert!(
        edges.len() > 40,
        "the source tree was not read: {} modules",
        edges.len()
    );
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|n| name(n)).collect();
            cycle.push(name(node));
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn imports_between_top_level_modules_point_down_the_layers() {
    let edges = graph();
    let layer = |module: &str| {
        LAYERS
            .iter()
            .position(|l| *l == module)
            .unwrap_or_else(|| panic!("top-level module `{module}` is missing from LAYERS"))
    };
    let mut upward = Vec::new();
    for (from, targets) in &edges {
        for to in targets {
            let (a, b) = (top(from), top(to));
            if a != b && layer(a) > layer(b) {
                upward.push(format!("{} -> {}", name(from), name(to)));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports running up the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_reader_finds_paths_and_skips_tests_and_comments() {
    let text = "use crate::http::server::Handler;\n// crate::app in prose\nfn f() { crate::metrics::Metrics::new(); }\nuse crate::{body::Body, token::{claims, keys::SigningKey}};\n#[cfg(test)]\nmod tests {\n    use crate::app::App;\n}\n";
    let kept = without_tests(text);
    let paths: Vec<String> = crate_paths(&kept).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "http::server::Handler",
            "metrics::Metrics::new",
            "body::Body",
            "token::claims",
            "token::keys::SigningKey"
        ],
        "{kept}"
    );
}
