//! The workspace's shape, checked from its sources:
//! - no untyped JSON (`serde_json::Value`) in what one crate builds and
//!   another reads (public signatures, fields and variants), except a
//!   message's body as JSON text (`Payload`);
//! - no import circle between the files of one crate;
//! - every module crate has the same top-level layout, and its domain
//!   imports neither the platform's command types nor the API's error codes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace root (this crate is `gateway/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Every library crate's `src/`, by name.
fn crates() -> Vec<(String, PathBuf)> {
    let root = root();
    let mut all = vec![
        ("gateway".to_owned(), root.join("gateway/src")),
        ("schema".to_owned(), root.join("schema/src")),
        ("migrations".to_owned(), root.join("migrations/src")),
        ("bench".to_owned(), root.join("bench/src")),
    ];
    for module in modules() {
        all.push((
            module.clone(),
            root.join("modules").join(&module).join("src"),
        ));
    }
    all
}

fn modules() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("modules"))
        .expect("modules/")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The source without comments, string or character contents, or
/// `#[cfg(test)]` items (line breaks kept, so line numbers hold).
fn code(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    // Skips to just past `end`, keeping only line breaks.
    let skip_to = |from: usize, end: &str, out: &mut String| -> usize {
        let stop = source[from..]
            .find(end)
            .map_or(source.len(), |at| from + at + end.len());
        out.extend(source[from..stop].chars().filter(|c| *c == '\n'));
        stop
    };
    while i < bytes.len() {
        let rest = &source[i..];
        if rest.starts_with("//") {
            i = skip_to(i, "\n", &mut out);
        } else if rest.starts_with("/*") {
            i = skip_to(i, "*/", &mut out);
        } else if rest.starts_with("r#\"") {
            out.push_str("\"\"");
            i = skip_to(i + 3, "\"#", &mut out);
        } else if rest.starts_with('"') {
            out.push_str("\"\"");
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                if bytes[j] == b'\n' {
                    out.push('\n');
                }
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
        } else if rest.starts_with("'\\") {
            // An escaped character literal: '\n', '\'', '\u{..}'.
            i = source[i + 2..]
                .find('\'')
                .map_or(source.len(), |at| i + 2 + at + 1);
            if source[i..].starts_with('\'') {
                i += 1;
            }
        } else if rest.len() >= 3
            && rest.starts_with('\'')
            && rest[1..].chars().nth(1) == Some('\'')
        {
            // A one-character literal ('"', '{'); not a lifetime.
            i += 1 + rest[1..].chars().next().map_or(1, char::len_utf8) + 1;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    without_tests(&out)
}

/// Drops each `#[cfg(test)]` item (to the end of its braces or `;`).
fn without_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let end = item_end(after);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Where the item starting `text` ends: its matching `}`, or its `;`.
fn item_end(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            ';' if depth == 0 => return i + 1,
            _ => {}
        }
    }
    text.len()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Places where JSON trees may cross a crate, each with why.
const UNTYPED_ALLOWED: [(&str, &str); 1] = [(
    "schema/src/payload.rs",
    "a message's body as JSON text, decoded by each reader into a contract type \
     (or handed out as it was: the `events` feed)",
)];

/// Public items (signatures, struct fields, enum variants) of the crates
/// others read that hold a JSON tree.
#[test]
fn no_untyped_json_crosses_a_crate() {
    let mut found = Vec::new();
    for (name, src) in crates() {
        if name == "bench" {
            continue;
        }
        for file in rust_files(&src) {
            let path = relative(&file);
            if UNTYPED_ALLOWED.iter().any(|(p, _)| *p == path) {
                continue;
            }
            let code = code(&std::fs::read_to_string(&file).expect("a source file"));
            let value_imported = code.contains("use serde_json::Value")
                || code.contains("use serde_json::{Value")
                || code.contains("serde_json::{json, Value")
                || code.contains(", Value}");
            let mut rest = code.as_str();
            while let Some(at) = rest.find("pub ") {
                let item = &rest[at..];
                // A `pub` item's text up to its body (functions) or its end
                // (structs and enums: fields and variants included).
                let end = if item.starts_with("pub fn") || item.starts_with("pub async fn") {
                    item.find('{').unwrap_or(item.len())
                } else if item.starts_with("pub struct") || item.starts_with("pub enum") {
                    item_end(item)
                } else {
                    item.find([';', '\n']).unwrap_or(item.len())
                };
                let text = &item[..end];
                let untyped = text.contains("serde_json::Value")
                    || (value_imported && words(text).any(|w| w == "Value"));
                if untyped {
                    let line = code[..code.len() - rest.len() + at].lines().count();
                    found.push(format!(
                        "{path}:{line}: {}",
                        text.lines().next().unwrap_or("")
                    ));
                }
                rest = &item[4..];
            }
        }
    }
    assert!(
        found.is_empty(),
        "JSON trees in public items (make them contract types):\n{}",
        found.join("\n")
    );
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
}

/// A file's module path inside its crate (`src/a/b.rs`, `src/a/b/mod.rs`:
/// `[a, b]`; `src/lib.rs`, `src/main.rs`: `[]`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("inside src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// The paths (`crate::…`, `super::…`, `self::…`) a file's code names,
/// with `use` groups expanded: each as its segments after the keyword.
fn named_paths(code: &str) -> Vec<(String, Vec<String>)> {
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    for keyword in ["crate", "super", "self"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(keyword) {
            let at = from + found;
            from = at + keyword.len();
            let before = at.checked_sub(1).map(|i| bytes[i] as char);
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            if before == Some(':') && keyword != "super" {
                continue;
            }
            let rest = &code[from..];
            if !rest.starts_with("::") {
                continue;
            }
            // `super::super::x` is read from its first `super`.
            if keyword == "super" && before == Some(':') {
                continue;
            }
            for tail in expand(&rest[2..]) {
                paths.push((keyword.to_owned(), tail));
            }
        }
    }
    paths
}

/// `a::b::{c, d::e}` as `[a, b, c]` and `[a, b, d, e]` (segments only).
fn expand(text: &str) -> Vec<Vec<String>> {
    let mut segments = Vec::new();
    let mut rest = text.trim_start();
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            let mut out = Vec::new();
            for part in split_top(&group[..end]) {
                for tail in expand(part) {
                    let mut full = segments.clone();
                    full.extend(tail);
                    out.push(full);
                }
            }
            return out;
        }
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        segments.push(rest[..len].to_owned());
        rest = &rest[len..];
        match rest.strip_prefix("::") {
            Some(next) => rest = next.trim_start(),
            None => break,
        }
    }
    vec![segments]
}

/// Where the `}` closing a group whose `{` was just passed is.
fn matching_brace(text: &str) -> usize {
    // The group with its `{` put back ends one past its `}`.
    item_end(&format!("{{{text}")).saturating_sub(2)
}

fn split_top(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// A file's `use` statements: each path's keyword (`crate`, `super`,
/// `self`; `self` too for a path from a child module or another crate),
/// its segments after it, and whether the statement re-exports (`pub use`).
fn uses(code: &str) -> Vec<(bool, String, Vec<String>)> {
    let mut uses = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("use ") {
        let at = from + found;
        from = at + 4;
        let before = code[..at].trim_end();
        let exported = before.ends_with("pub") || before.ends_with("pub(crate)");
        if !exported
            && before
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let mut path = code[from..].trim_start().trim_start_matches("::");
        let mut keyword = "self";
        for named in ["crate", "super", "self"] {
            if let Some(rest) = path.strip_prefix(named).and_then(|r| r.strip_prefix("::")) {
                // `super::super::x` keeps its second `super` as a segment.
                (keyword, path) = (named, rest);
                break;
            }
        }
        let end = path.find(';').unwrap_or(path.len());
        for segments in expand(&path[..end]) {
            uses.push((exported, keyword.to_owned(), segments));
        }
    }
    uses
}

/// `keyword::segments` named in the module at `own`, as a path from the
/// crate's root.
fn absolute(own: &[String], keyword: &str, segments: Vec<String>) -> Vec<String> {
    let mut base = match keyword {
        "crate" => Vec::new(),
        "self" => own.to_vec(),
        // `super` of `a/b.rs` is `a`; of `a/b/mod.rs` also `a`.
        _ => own[..own.len().saturating_sub(1)].to_vec(),
    };
    let mut segments = segments.into_iter().peekable();
    while segments.peek().is_some_and(|s| s == "super") {
        segments.next();
        base.pop();
    }
    base.extend(segments);
    base
}

/// The file that defines what `path` (from the crate's root) names: the
/// deepest module file it reaches, or, where it names an item that file
/// re-exports, the file the re-export comes from.
fn defining_file(
    path: &[String],
    by_path: &BTreeMap<Vec<String>, String>,
    exports: &BTreeMap<String, BTreeMap<String, Vec<String>>>,
    hops: usize,
) -> Option<String> {
    let mut target = by_path.get(&Vec::new()).cloned();
    for depth in 1..=path.len() {
        match by_path.get(&path[..depth]) {
            Some(file) => target = Some(file.clone()),
            None => {
                let reexported = target
                    .as_ref()
                    .and_then(|file| exports.get(file))
                    .and_then(|names| names.get(&path[depth - 1]));
                if let Some(source) = reexported
                    && hops < 8
                {
                    // Another crate's item re-exported: no file of this one.
                    let from = defining_file(source, by_path, exports, hops + 1);
                    return from.filter(|from| Some(from) != target.as_ref());
                }
                break;
            }
        }
    }
    target
}

/// Which files of one crate each file refers to: the file that defines
/// what each of its paths names (through re-exports).
fn file_graph(src: &Path, files: &[PathBuf]) -> BTreeMap<String, BTreeSet<String>> {
    let by_path: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|f| (module_path(src, f), relative(f)))
        .collect();
    // Every file's paths, from the crate's root, and its re-exports by name.
    let mut named = BTreeMap::new();
    let mut exports: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for file in files {
        let own = module_path(src, file);
        let name = relative(file);
        let code = code(&std::fs::read_to_string(file).expect("a source file"));
        let mut paths: Vec<Vec<String>> = named_paths(&code)
            .into_iter()
            .map(|(keyword, segments)| absolute(&own, &keyword, segments))
            .collect();
        for (exported, keyword, segments) in uses(&code) {
            let path = absolute(&own, &keyword, segments);
            if exported && let Some(item) = path.last() {
                exports
                    .entry(name.clone())
                    .or_default()
                    .insert(item.clone(), path.clone());
            }
            paths.push(path);
        }
        named.insert(name, paths);
    }
    named
        .into_iter()
        .map(|(name, paths)| {
            let targets = paths
                .iter()
                .filter_map(|path| defining_file(path, &by_path, &exports, 0))
                .filter(|target| *target != name)
                .collect();
            (name, targets)
        })
        .collect()
}

/// The files on a circle of `graph`, if any: one circle, in order.
fn a_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        trail: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = trail.iter().position(|n| n == node).unwrap_or(0);
                let mut circle = trail[from..].to_vec();
                circle.push(node.to_owned());
                return Some(circle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        trail.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, marks, trail) {
                return Some(circle);
            }
        }
        trail.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(circle);
        }
    }
    None
}

#[test]
fn no_two_files_of_a_crate_import_each_other() {
    let mut circles = Vec::new();
    for (name, src) in crates() {
        let files: Vec<PathBuf> = rust_files(&src)
            .into_iter()
            // A binary of the gateway is a crate of its own.
            .filter(|f| !(name == "gateway" && f.ends_with("main.rs")))
            .collect();
        if let Some(circle) = a_circle(&file_graph(&src, &files)) {
            circles.push(format!("{name}: {}", circle.join(" -> ")));
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

/// The file graph of a crate made of `files` (path under `src/`, text),
/// written to a directory of its own (`name`) for the time of the reading.
fn graph_of(name: &str, files: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
    let dir = std::env::temp_dir().join(format!("structure-{name}-{}", std::process::id()));
    let src = dir.join("src");
    for (path, text) in files {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().expect("a folder")).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let graph = file_graph(&src, &rust_files(&src));
    std::fs::remove_dir_all(&dir).ok();
    graph
}

/// The checker finds a circle where there is one (so its silence means
/// something): two files naming each other, through a `use` group.
#[test]
fn the_circle_check_sees_a_circle() {
    let graph = graph_of(
        "use",
        &[
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a.rs", "mod inner;\nuse crate::{b::B, x};\n"),
            (
                "a/inner.rs",
                "// crate::b, in a comment\npub fn g() { super::super::a::h(\"crate::b\") }\n",
            ),
            ("b.rs", "pub struct B;\nfn f() { super::a::inner::g() }\n"),
        ],
    );
    let circle = a_circle(&graph).expect("a circle");
    // a -> b -> a/inner -> a, closed: four entries, three files.
    assert_eq!(circle.len(), 4, "{circle:?}");
    assert_eq!(circle.first(), circle.last());
    let files: BTreeSet<&str> = circle.iter().map(String::as_str).collect();
    assert_eq!(files.len(), 3, "{circle:?}");
}

/// A circle through a re-export is seen (a file naming `crate::Item` uses
/// the file that defines it, not the root that re-exports it), and one
/// through another crate's item re-exported is not.
#[test]
fn the_circle_check_follows_re_exports() {
    let graph = graph_of(
        "re-export",
        &[
            (
                "lib.rs",
                "mod codec;\nmod reply;\nmod other;\npub use reply::{Reply, x as y};\npub use codec::Codec;\npub use serde::Serialize;\n",
            ),
            ("codec.rs", "pub struct Codec(crate::Reply);\n"),
            ("reply.rs", "use crate::Codec;\npub struct Reply;\n"),
            ("other.rs", "pub fn f(_: impl crate::Serialize) {}\n"),
        ],
    );
    let circle = a_circle(&graph).expect("a circle");
    let files: BTreeSet<&str> = circle.iter().map(String::as_str).collect();
    let between = |f: &String| f.contains("codec") || f.contains("reply");
    assert!(files.len() == 2 && circle.iter().all(between), "{circle:?}");
    let other = graph
        .iter()
        .find(|(file, _)| file.ends_with("other.rs"))
        .expect("other.rs");
    assert!(other.1.is_empty(), "{other:?}");
}

#[test]
fn every_module_has_the_same_shape_and_a_pure_domain() {
    let root = root();
    let mut problems = Vec::new();
    for module in modules().into_iter().filter(|m| m != "platform") {
        let src = root.join("modules").join(&module).join("src");
        for part in ["lib.rs", "domain.rs", "application.rs", "infrastructure.rs"] {
            if !src.join(part).is_file() {
                problems.push(format!("{module}: no src/{part}"));
            }
        }
        let mut domain = vec![src.join("domain.rs")];
        if src.join("domain").is_dir() {
            domain.extend(rust_files(&src.join("domain")));
        }
        for file in domain.iter().filter(|f| f.is_file()) {
            let code = code(&std::fs::read_to_string(file).expect("a source file"));
            if code.contains("platform::commands") {
                problems.push(format!("{}: names platform::commands", relative(file)));
            }
            for banned in [
                "ErrorCode",
                "CommandError",
                "DomainError",
                "Accepted",
                "Envelope",
                "Outbox",
            ] {
                if words(&code).any(|w| w == banned) {
                    problems.push(format!("{}: names {banned}", relative(file)));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
