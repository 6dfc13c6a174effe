//! Command templates and GNU parallel's replacement strings.
//!
//! `{}` the input, `{.}` without extension, `{/}` basename, `{//}`
//! directory, `{/.}` basename without extension, `{#}` job number, `{%}`
//! job slot, and `{N}`, `{N.}`, `{N/}`, `{N//}`, `{N/.}` for input source
//! N. Braces around anything else (`awk '{print $1}'`) are literal text;
//! braces holding only those characters in a combination that means
//! nothing (`{..}`, `{0}`) are an error, not silently passed through.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// What a replacement string does to an input value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Whole,
    NoExt,
    Base,
    Dir,
    BaseNoExt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Lit(Vec<u8>),
    /// An input value: `source` is 1-based; `None` means all sources.
    Input {
        source: Option<usize>,
        op: Op,
    },
    Seq,
    Slot,
}

/// A template word: one argument of the command.
pub(crate) type Word = Vec<Piece>;

/// The per-job values a template is filled with.
#[derive(Debug)]
pub(crate) struct Fill<'a> {
    pub(crate) args: &'a [OsString],
    pub(crate) seq: u64,
    pub(crate) slot: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TemplateError {
    #[error(
        "unknown replacement string `{{{0}}}` (known: {{}} {{.}} {{/}} {{//}} {{/.}} {{#}} {{%}} {{N}} {{N.}} {{N/}} {{N//}} {{N/.}})"
    )]
    Unknown(String),
    #[error("replacement string `{{{0}}}` refers to input source {1}, but there are only {2}")]
    NoSuchSource(String, usize, usize),
}

/// Parses one word of the command line.
pub(crate) fn parse_word(word: &OsStr) -> Result<Word, TemplateError> {
    let bytes = word.as_bytes();
    let mut pieces = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{'
            && let Some(len) = bytes[i + 1..].iter().position(|&b| b == b'}')
        {
            let inner = &bytes[i + 1..i + 1 + len];
            let looks_like_one = inner
                .iter()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'/' | b'#' | b'%'));
            if looks_like_one {
                let piece = parse_replacement(inner).ok_or_else(|| {
                    TemplateError::Unknown(String::from_utf8_lossy(inner).into_owned())
                })?;
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(piece);
                i += len + 2;
                continue;
            }
        }
        lit.push(bytes[i]);
        i += 1;
    }
    if !lit.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(pieces)
}

fn parse_replacement(inner: &[u8]) -> Option<Piece> {
    match inner {
        b"#" => return Some(Piece::Seq),
        b"%" => return Some(Piece::Slot),
        _ => {}
    }
    let digits = inner.iter().take_while(|b| b.is_ascii_digit()).count();
    let source = if digits == 0 {
        None
    } else {
        let n: usize = std::str::from_utf8(&inner[..digits]).ok()?.parse().ok()?;
        if n == 0 {
            return None;
        }
        Some(n)
    };
    let op = match &inner[digits..] {
        b"" => Op::Whole,
        b"." => Op::NoExt,
        b"/" => Op::Base,
        b"//" => Op::Dir,
        b"/." => Op::BaseNoExt,
        _ => return None,
    };
    Some(Piece::Input { source, op })
}

/// Whether any word holds a replacement string that takes input.
pub(crate) fn uses_input(words: &[Word]) -> bool {
    words
        .iter()
        .flatten()
        .any(|p| matches!(p, Piece::Input { .. }))
}

/// Checks every `{N}` names an existing source.
pub(crate) fn check_sources(words: &[Word], sources: usize) -> Result<(), TemplateError> {
    for piece in words.iter().flatten() {
        if let Piece::Input {
            source: Some(n),
            op,
        } = piece
            && *n > sources
        {
            let text = format!("{n}{}", op_text(*op));
            return Err(TemplateError::NoSuchSource(text, *n, sources));
        }
    }
    Ok(())
}

fn op_text(op: Op) -> &'static str {
    match op {
        Op::Whole => "",
        Op::NoExt => ".",
        Op::Base => "/",
        Op::Dir => "//",
        Op::BaseNoExt => "/.",
    }
}

/// Fills `word`; `quote` is applied to each input value (shell mode).
pub(crate) fn fill_word(word: &Word, fill: &Fill<'_>, quote: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in word {
        match piece {
            Piece::Lit(b) => out.extend_from_slice(b),
            Piece::Seq => out.extend_from_slice(fill.seq.to_string().as_bytes()),
            Piece::Slot => out.extend_from_slice(fill.slot.to_string().as_bytes()),
            Piece::Input { source, op } => {
                let values: Vec<&OsString> = match source {
                    Some(n) => fill.args.get(n - 1).into_iter().collect(),
                    None => fill.args.iter().collect(),
                };
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    let v = apply(*op, v.as_bytes());
                    if quote {
                        out.extend_from_slice(&shell_quote(&v));
                    } else {
                        out.extend_from_slice(&v);
                    }
                }
            }
        }
    }
    out
}

/// Applies a replacement string's operation to a value.
pub(crate) fn apply(op: Op, v: &[u8]) -> Vec<u8> {
    match op {
        Op::Whole => v.to_vec(),
        Op::NoExt => no_ext(v).to_vec(),
        Op::Base => base(v).to_vec(),
        Op::Dir => dir(v).to_vec(),
        Op::BaseNoExt => no_ext(base(v)).to_vec(),
    }
}

fn base(v: &[u8]) -> &[u8] {
    match v.iter().rposition(|&b| b == b'/') {
        Some(i) => &v[i + 1..],
        None => v,
    }
}

fn dir(v: &[u8]) -> &[u8] {
    match v.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/",
        Some(i) => &v[..i],
        None => b".",
    }
}

/// Strips the extension: the last `.` of the last path component, unless
/// that component starts with it (`.bashrc` keeps its name).
fn no_ext(v: &[u8]) -> &[u8] {
    let start = v.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    match v[start..].iter().rposition(|&b| b == b'.') {
        Some(0) | None => v,
        Some(i) => &v[..start + i],
    }
}

/// Quotes `v` for a POSIX shell: plain words stay as they are, anything
/// else goes in single quotes.
pub(crate) fn shell_quote(v: &[u8]) -> Vec<u8> {
    // As GNU parallel quotes: plain words as they are, anything else in
    // single quotes, a single quote as '"'"'.
    let plain = !v.is_empty()
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./+".contains(b));
    if plain {
        return v.to_vec();
    }
    let mut out = vec![b'\''];
    for &b in v {
        if b == b'\'' {
            out.extend_from_slice(b"'\"'\"'");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// Bytes to an `OsString` (Unix: any bytes).
pub(crate) fn os(bytes: Vec<u8>) -> OsString {
    OsString::from_vec(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill1(word: &str, arg: &str) -> String {
        let w = parse_word(OsStr::new(word)).unwrap();
        let args = [OsString::from(arg)];
        let f = Fill {
            args: &args,
            seq: 7,
            slot: 2,
        };
        String::from_utf8(fill_word(&w, &f, false)).unwrap()
    }

    #[test]
    fn replacement_strings_follow_gnu_parallel() {
        let p = "dir.d/sub/file.tar.gz";
        assert_eq!(fill1("{}", p), p);
        assert_eq!(fill1("{.}", p), "dir.d/sub/file.tar");
        assert_eq!(fill1("{/}", p), "file.tar.gz");
        assert_eq!(fill1("{//}", p), "dir.d/sub");
        assert_eq!(fill1("{/.}", p), "file.tar");
        assert_eq!(fill1("{#}-{%}", p), "7-2");
        assert_eq!(fill1("x{1}y", "v"), "xvy");
        assert_eq!(fill1("{.}", "dir.d/noext"), "dir.d/noext");
        assert_eq!(fill1("{.}", ".bashrc"), ".bashrc");
        assert_eq!(fill1("{//}", "plain"), ".");
        assert_eq!(fill1("{//}", "/top"), "/");
    }

    #[test]
    fn other_braces_are_literal_and_bad_ones_are_errors() {
        assert_eq!(fill1("{print $1}", "x"), "{print $1}");
        assert_eq!(fill1("a{b", "x"), "a{b");
        assert!(matches!(
            parse_word(OsStr::new("{..}")),
            Err(TemplateError::Unknown(_))
        ));
        assert!(parse_word(OsStr::new("{0}")).is_err());
        let w = vec![parse_word(OsStr::new("{3}")).unwrap()];
        assert!(check_sources(&w, 2).is_err());
        assert!(check_sources(&w, 3).is_ok());
    }

    #[test]
    fn quoting_is_gnu_parallel_s_and_survives_the_shell() {
        assert_eq!(shell_quote(b"plain-1.txt"), b"plain-1.txt");
        assert_eq!(shell_quote(b"a/b+c_d"), b"a/b+c_d");
        assert_eq!(shell_quote(b"a b"), b"'a b'");
        assert_eq!(shell_quote(b"a:b"), b"'a:b'");
        assert_eq!(shell_quote(b"it's"), b"'it'\"'\"'s'");
        assert_eq!(shell_quote(b""), b"''");
        for v in [
            "it's",
            "a b",
            "$HOME",
            "*",
            "back\\slash",
            "new\nline",
            "",
            "-n",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(os(
                    [b"printf %s ".as_slice(), &shell_quote(v.as_bytes())].concat()
                ))
                .output()
                .unwrap();
            assert_eq!(out.stdout, v.as_bytes(), "{v:?}");
        }
    }
}
