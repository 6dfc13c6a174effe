//! ARCHITECTURE.md stays true: every file and folder it names exists in
//! the workspace, and every code item it names in backquotes is still
//! defined (a renamed or removed one fails here, not in a reader's hands).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file and folder of the workspace, as `/`-separated paths from
/// its root (build outputs and git's folder left out).
fn paths(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with("target") {
                continue;
            }
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.push(format!("{rel}/"));
                stack.push(path);
            } else {
                out.push(rel);
            }
        }
    }
    out
}

/// `a/{b,c}.rs` as `a/b.rs` and `a/c.rs`.
fn expand(token: &str) -> Vec<String> {
    match (token.find('{'), token.find('}')) {
        (Some(open), Some(close)) if open < close => token[open + 1..close]
            .split(',')
            .map(|part| format!("{}{part}{}", &token[..open], &token[close + 1..]))
            .collect(),
        _ => vec![token.to_owned()],
    }
}

/// Whether `token` names a file or folder: it holds a `/` or ends with a
/// file extension the workspace uses.
fn is_path(token: &str) -> bool {
    let files = [".rs", ".md", ".toml", ".py", ".sh"];
    (token.contains('/') && !token.contains("::") && !token.starts_with("/dev"))
        || files.iter().any(|ext| token.ends_with(ext))
}

/// The backquoted tokens of the text, and the file names in its code
/// blocks (the room lists).
fn named(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            for word in line.split(|c: char| c.is_whitespace() || c == ',' || c == ':') {
                let word = word.trim_matches(|c| c == '(' || c == ')' || c == ';');
                if is_path(word) && !word.contains('`') {
                    out.push(word.to_owned());
                }
            }
            continue;
        }
        let mut parts = line.split('`');
        parts.next();
        while let Some(inside) = parts.next() {
            out.push(inside.to_owned());
            parts.next();
        }
    }
    out
}

/// Whether the Rust sources define `name`: as a function, module, type,
/// trait, constant, macro, field, variant or binding.
fn defined(sources: &str, name: &str, words: &HashSet<&str>) -> bool {
    if name.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
        return words.contains(name);
    }
    let forms = [
        format!("fn {name}"),
        format!("mod {name}"),
        format!("macro_rules! {name}"),
        format!("{name}: "),
        format!("let {name}"),
        format!("static {name}"),
        format!("const {name}"),
        format!("def {name}"),
        format!("class {name}"),
    ];
    forms.iter().any(|f| sources.contains(f.as_str()))
}

/// Names the text cites from outside the workspace.
const ELSEWHERE: &[&str] = &[
    "PR_SET_PDEATHSIG",
    "par_iter",
    "bytemuck::",
    "serde::",
    "rustix::",
    "libc::",
];

/// Where the text says an item lives, "`Item` (`file.rs`" or "(`file.rs`,
/// `item`)": the file's text names it.
fn placed(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let ticked: Vec<&str> = text.split('`').collect();
    // Odd indexes are inside backquotes; the even one between two says how
    // they are joined.
    for i in (1..ticked.len().saturating_sub(2)).step_by(2) {
        let (a, between, b) = (ticked[i], ticked[i + 1], ticked[i + 2]);
        let file = |s: &str| s.ends_with(".rs") && !s.contains('{');
        let item = |s: &str| {
            s.chars().next().is_some_and(|c| c.is_alphabetic())
                && s.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == ':')
        };
        if between == " (" && item(a) && file(b) {
            out.push((a.to_owned(), b.to_owned()));
        }
        if between == ", " && file(a) && item(b) && ticked[i - 1].ends_with('(') {
            out.push((b.to_owned(), a.to_owned()));
        }
    }
    out
}

#[test]
fn architecture_md_names_only_what_exists() {
    let root = workspace();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let all = paths(&root);
    let mut sources = String::new();
    // The Python package's names too (`parpool.WorkerCrashed`, `_run`).
    for p in all
        .iter()
        .filter(|p| p.ends_with(".rs") || p.ends_with(".py"))
    {
        sources.push_str(&std::fs::read_to_string(root.join(p)).unwrap_or_default());
        sources.push('\n');
    }
    let words: HashSet<&str> = sources
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .collect();
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    let mut missing = Vec::new();
    for token in named(&text) {
        // Options of the command (`--pipe`) and names from the OS or a
        // peer library, cited for comparison.
        if token.starts_with('-') || ELSEWHERE.iter().any(|e| token.starts_with(e)) {
            continue;
        }
        if is_path(&token) {
            for path in expand(&token) {
                let path = path.trim_start_matches("./");
                let found = all.iter().any(|p| {
                    p == path
                        || p.ends_with(&format!("/{path}"))
                        || p.trim_end_matches('/') == path
                        || p.trim_end_matches('/').ends_with(&format!("/{path}"))
                });
                if !found {
                    missing.push(format!("file `{path}`"));
                }
            }
            continue;
        }
        // A Rust name or path (`Type`, `Type::method`, `task!`): each
        // segment after the crate must be defined.
        let name = token.trim_end_matches('!').trim_end_matches("()");
        let segments: Vec<&str> = name.split("::").collect();
        if !segments.iter().all(|s| ident(s)) {
            continue;
        }
        let crates = [
            "std",
            "crate",
            "parpool",
            "parpool_ipc",
            "parpool_mpi",
            "tokio",
            "rayon",
        ];
        for s in segments.iter().filter(|s| !crates.contains(s)) {
            // Words of prose in backquotes (`true`, `main`) are defined
            // somewhere too; a short lowercase word is not checked.
            if s.len() < 4 && s.chars().all(|c| c.is_ascii_lowercase()) {
                continue;
            }
            if !defined(&sources, s, &words) {
                missing.push(format!("item `{s}` (in `{token}`)"));
            }
        }
    }
    for (item, file) in placed(&text) {
        let last = item.rsplit("::").next().unwrap_or(&item);
        let holds = all
            .iter()
            .filter(|p| *p == &file || p.ends_with(&format!("/{file}")))
            .any(|p| {
                let body = std::fs::read_to_string(root.join(p)).unwrap_or_default();
                body.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .any(|w| w == last)
            });
        if !holds {
            missing.push(format!("`{item}` is not in `{file}`"));
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names what the workspace no longer has:\n  {}",
        missing.join("\n  ")
    );
}

/// The modules of the crate whose sources are in `src`, by path from its
/// root (`process::supervisor`), with their source (tests and comments
/// left out).
fn modules(src: &Path) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    for rel in paths(src).iter().filter(|p| p.ends_with(".rs")) {
        let mut segments: Vec<String> = rel
            .trim_end_matches(".rs")
            .split('/')
            .map(str::to_owned)
            .collect();
        if matches!(
            segments.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            segments.pop();
        }
        let text = std::fs::read_to_string(src.join(rel)).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        out.push((segments, code));
    }
    out
}

/// The modules `code` (in module `at`) reaches by `crate::`, `super::` or
/// `self::` paths, other than its own ancestors and itself.
fn reached(at: &[String], code: &str, all: &[Vec<String>]) -> HashSet<Vec<String>> {
    let mut out = HashSet::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        for (i, _) in code.match_indices(start) {
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
                continue;
            }
            let path: Vec<&str> = code[i..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::")
                .filter(|s| !s.is_empty())
                .collect();
            let mut base: Vec<String> = match path[0] {
                "crate" => Vec::new(),
                _ => at.to_vec(),
            };
            let mut rest = &path[1..];
            if path[0] == "super" {
                base.pop();
                while rest.first() == Some(&"super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            // The longest module the path names.
            for k in (0..=rest.len()).rev() {
                let mut m = base.clone();
                m.extend(rest[..k].iter().map(|s| s.to_string()));
                if all.contains(&m) {
                    if m != at && !at.starts_with(&m) {
                        out.insert(m);
                    }
                    break;
                }
            }
        }
    }
    out
}

/// No module of any crate imports from a module that imports from it, by
/// any chain: what the architecture's layers promise.
#[test]
fn no_module_imports_in_a_circle() {
    let root = workspace();
    let mut circles = Vec::new();
    for krate in ["parpool", "parpool-ipc", "parpool-cli", "parpool-mpi"] {
        let src = root.join("crates").join(krate).join("src");
        let mods = modules(&src);
        let names: Vec<Vec<String>> = mods.iter().map(|(m, _)| m.clone()).collect();
        let edges: Vec<HashSet<Vec<String>>> = mods
            .iter()
            .map(|(m, code)| reached(m, code, &names))
            .collect();
        let index = |m: &Vec<String>| names.iter().position(|n| n == m).unwrap();
        // A module is in a circle when it reaches itself.
        for (i, name) in names.iter().enumerate() {
            let mut seen = vec![false; names.len()];
            let mut stack: Vec<usize> = edges[i].iter().map(&index).collect();
            while let Some(j) = stack.pop() {
                if j == i {
                    circles.push(format!("{krate}: {}", name.join("::")));
                    break;
                }
                if !std::mem::replace(&mut seen[j], true) {
                    stack.extend(edges[j].iter().map(&index));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "modules that import from a module importing them back:\n  {}",
        circles.join("\n  ")
    );
}

/// The longest function body a reader should have to scroll through.
const LONGEST_FUNCTION: usize = 120;

/// Functions longer than [`LONGEST_FUNCTION`] lines in `text` (outside its
/// tests): a `fn` line, and the line at the same indent that closes it.
/// A `fn` inside a macro's template, whose end this cannot see, is left
/// out.
fn long_functions(text: &str) -> Vec<(usize, usize)> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let body = line.trim_start();
        let indent = line.len() - body.len();
        let is_fn = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "pub(super) fn ",
            "async fn ",
            "unsafe fn ",
            "const fn ",
        ]
        .iter()
        .any(|p| body.starts_with(p));
        if !is_fn || body.ends_with(';') {
            continue;
        }
        let close = " ".repeat(indent) + "}";
        for (j, later) in lines.iter().enumerate().skip(i + 1) {
            if *later == close {
                if j - i + 1 > LONGEST_FUNCTION {
                    out.push((i + 1, j - i + 1));
                }
                break;
            }
            let shallower =
                !later.trim().is_empty() && later.len() - later.trim_start().len() < indent;
            if shallower {
                break;
            }
        }
    }
    out
}

/// No function outside tests is longer than [`LONGEST_FUNCTION`] lines,
/// in any crate or the benches.
#[test]
fn no_function_needs_scrolling() {
    let root = workspace();
    let mut long = Vec::new();
    for p in paths(&root) {
        let in_code =
            (p.starts_with("crates/") && p.contains("/src/")) || p.starts_with("benches/src/");
        if !in_code || !p.ends_with(".rs") {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&p)).unwrap();
        for (line, len) in long_functions(&text) {
            long.push(format!("{p}:{line}: {len} lines"));
        }
    }
    long.sort();
    assert!(
        long.is_empty(),
        "functions over {LONGEST_FUNCTION} lines:\n  {}",
        long.join("\n  ")
    );
}
