//! Command templates and GNU parallel's replacement strings.
//!
//! `{}` the input, `{.}` without extension, `{/}` basename, `{//}`
//! directory, `{/.}` basename without extension, `{#}` job number, `{%}`
//! job slot, and `{N}`, `{N.}`, `{N/}`, `{N//}`, `{N/.}` for input source
//! N (`{-N}`: counted from the last; `{0}` is `{}`; a source that does not
//! exist is empty). Braces around anything else (`awk '{print $1}'`,
//! `{..}`) are literal text, as in GNU parallel without `--plus`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::perl::Perl;
pub(crate) use super::plus::PlusOp;
use super::plus::plus_op;

/// What a replacement string does to an input value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Whole,
    NoExt,
    Base,
    Dir,
    BaseNoExt,
    /// `--plus`: `{+/}` what comes before the last `/`.
    DirPart,
    /// `--plus`: `{+.}`, `{+..}`, `{+...}` the last 1, 2, 3 extensions.
    Exts(u8),
    /// `--plus`: `{..}`, `{...}` without the last 2, 3 extensions.
    NoExts(u8),
    /// `--plus`: `{/..}`, `{/...}` the basename without 2, 3 extensions.
    BaseNoExts(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Lit(Vec<u8>),
    /// An input value: `source` is 1-based, negative from the last;
    /// `None` means all sources.
    Input {
        source: Option<i64>,
        op: Op,
    },
    Seq,
    Slot,
    /// `--plus`: `{##}` the number of jobs.
    Total,
    /// `--plus`: `{0#}` the job number, zero-padded to `{##}`'s width.
    SeqPadded,
    /// `--plus`: a string that edits an input value (`{%.gz}`,
    /// `{2:-default}`, `{/from/to}`, …); `source` as for `Input`.
    Plus {
        source: Option<i64>,
        op: PlusOp,
    },
    /// `{= perl =}`, `{=N perl =}`: the value perl's code leaves in `$_`;
    /// `id` is the code's number in the run's perl ([`super::perl`]).
    Perl {
        source: Option<i64>,
        code: Vec<u8>,
        id: u32,
    },
}

/// Why a word cannot be run as written, if it cannot: (with `--plus`) an
/// editing string whose regular expression parpool cannot read. Such a
/// word is refused, never run as text.
pub(crate) fn refused(word: &OsStr, plus: bool) -> Option<String> {
    let bytes = word.as_bytes();
    if !plus {
        return None;
    }
    let mut i = 0;
    while let Some(open) = bytes[i..].iter().position(|&b| b == b'{') {
        let from = i + open + 1;
        let Some(len) = bytes[from..].iter().position(|&b| b == b'}') else {
            break;
        };
        let inner = &bytes[from..from + len];
        let sign = usize::from(inner.first() == Some(&b'-'));
        let digits = inner[sign..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let edit = if digits > 0 {
            &inner[sign + digits..]
        } else {
            inner
        };
        if parse_replacement(inner, true).is_none()
            && let Some(Err(why)) = plus_op(edit)
        {
            return Some(why);
        }
        i = from;
    }
    None
}

/// A template word: one argument of the command.
pub(crate) type Word = Vec<Piece>;

/// The per-job values a template is filled with.
#[derive(Debug)]
pub(crate) struct Fill<'a> {
    pub(crate) args: &'a [OsString],
    pub(crate) seq: u64,
    pub(crate) slot: usize,
    /// How many jobs there are, when known (`{##}`).
    pub(crate) total: Option<u64>,
    /// What the job's `{= perl =}` strings gave, and where `args` start
    /// among the job's values (a word repeated per value fills one at a
    /// time).
    pub(crate) perl: Option<&'a super::perl::Evaluated>,
    pub(crate) first: usize,
}

impl<'a> Fill<'a> {
    pub(crate) fn new(args: &'a [OsString], seq: u64, slot: usize, total: Option<u64>) -> Self {
        Fill {
            args,
            seq,
            slot,
            total,
            perl: None,
            first: 0,
        }
    }
}

/// Parses one word of the command line.
/// Starts perl and compiles the `{= perl =}` strings of `words`, giving
/// each its number; `None` when no word has one. Code perl cannot compile
/// stops the run before any job, with perl's words.
pub(crate) fn compile_perl<'a>(
    words: impl IntoIterator<Item = &'a mut Word>,
    slots: usize,
) -> anyhow::Result<Option<Perl>> {
    let mut perl = None;
    let mut known: Vec<Vec<u8>> = Vec::new();
    for piece in words.into_iter().flatten() {
        let Piece::Perl { code, id, .. } = piece else {
            continue;
        };
        if let Some(at) = known.iter().position(|k| k == code) {
            *id = at as u32;
            continue;
        }
        let p = match &mut perl {
            Some(p) => p,
            None => perl.insert(Perl::start(slots)?),
        };
        *id = p.compile(code)?.map_err(|why| {
            anyhow::anyhow!("Cannot use {}: {why}", String::from_utf8_lossy(code))
        })?;
        known.push(code.clone());
    }
    Ok(perl)
}

#[cfg(test)]
pub(crate) fn parse_word(word: &OsStr) -> Word {
    parse_word_with(word, b"{}", false)
}

/// Parses one word, with `whole` standing for the whole input instead of
/// `{}` (`-I`; `{}` is then plain text), and `--plus`'s replacement
/// strings if `plus`.
pub(crate) fn parse_word_with(word: &OsStr, whole: &[u8], plus: bool) -> Word {
    let bytes = word.as_bytes();
    let mut pieces = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    let default = whole == b"{}";
    while i < bytes.len() {
        if let Some(found) = super::rpl::perl_at(bytes, i) {
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Perl {
                source: found.source,
                code: found.code,
                id: 0,
            });
            i = found.end;
            continue;
        }
        if !whole.is_empty() && bytes[i..].starts_with(whole) {
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Input {
                source: None,
                op: Op::Whole,
            });
            i += whole.len();
            continue;
        }
        if bytes[i] == b'{'
            && let Some(len) = bytes[i + 1..].iter().position(|&b| b == b'}')
            && (default || len > 0)
            && let Some(piece) = parse_replacement(&bytes[i + 1..i + 1 + len], plus)
        {
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(piece);
            i += len + 2;
            continue;
        }
        lit.push(bytes[i]);
        i += 1;
    }
    if !lit.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    pieces
}

fn parse_replacement(inner: &[u8], plus: bool) -> Option<Piece> {
    match inner {
        b"#" => return Some(Piece::Seq),
        b"%" => return Some(Piece::Slot),
        b"##" if plus => return Some(Piece::Total),
        b"0#" if plus => return Some(Piece::SeqPadded),
        _ => {}
    }
    let sign = usize::from(inner.first() == Some(&b'-'));
    let digits = inner[sign..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let source = if digits == 0 {
        if sign == 1 {
            return None;
        }
        None
    } else {
        let n: i64 = std::str::from_utf8(&inner[..sign + digits])
            .ok()?
            .parse()
            .ok()?;
        // `{0}` is every input, as `{}`.
        (n != 0).then_some(n)
    };
    let op = match &inner[sign + digits..] {
        b"" => Op::Whole,
        b"." => Op::NoExt,
        b"/" => Op::Base,
        b"//" => Op::Dir,
        b"/." => Op::BaseNoExt,
        b"+/" if plus => Op::DirPart,
        b"+." if plus => Op::Exts(1),
        b"+.." if plus => Op::Exts(2),
        b"+..." if plus => Op::Exts(3),
        b".." if plus => Op::NoExts(2),
        b"..." if plus => Op::NoExts(3),
        b"/.." if plus => Op::BaseNoExts(2),
        b"/..." if plus => Op::BaseNoExts(3),
        edit if plus => {
            return plus_op(edit)
                .and_then(Result::ok)
                .map(|op| Piece::Plus { source, op });
        }
        _ => return None,
    };
    Some(Piece::Input { source, op })
}

/// Whether any word holds a replacement string (then the inputs are not
/// appended, even if none of them takes input: `{#}` alone is enough).
pub(crate) fn has_replacement(words: &[Word]) -> bool {
    words.iter().flatten().any(|p| !matches!(p, Piece::Lit(_)))
}

/// Fills `word`; `quote` is applied to each input value (shell mode).
pub(crate) fn fill_word(word: &Word, fill: &Fill<'_>, quote: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in word {
        match piece {
            Piece::Lit(b) => out.extend_from_slice(b),
            Piece::Seq => out.extend_from_slice(fill.seq.to_string().as_bytes()),
            Piece::Slot => out.extend_from_slice(fill.slot.to_string().as_bytes()),
            Piece::Total => {
                if let Some(total) = fill.total {
                    out.extend_from_slice(total.to_string().as_bytes());
                }
            }
            Piece::SeqPadded => {
                let width = fill.total.map_or(1, |t| t.to_string().len());
                out.extend_from_slice(format!("{:0width$}", fill.seq).as_bytes());
            }
            Piece::Plus { source, op } => {
                push_values(&mut out, &values(fill, *source), quote, |v| op.apply(v));
            }
            Piece::Input { source, op } => {
                push_values(&mut out, &values(fill, *source), quote, |v| apply(*op, v));
            }
            Piece::Perl { source, id, .. } => {
                for (n, at) in perl_indexes(fill.args.len(), *source).enumerate() {
                    if n > 0 {
                        out.push(b' ');
                    }
                    let got = fill.perl.and_then(|e| e.get(*id, fill.first + at));
                    let (v, unquoted) =
                        got.map_or((&[][..], false), |v| (&v.bytes[..], v.unquoted));
                    if quote && !unquoted {
                        out.extend_from_slice(&shell_quote(v));
                    } else {
                        out.extend_from_slice(v);
                    }
                }
            }
        }
    }
    out
}

/// Which of `len` values a `{= perl =}` string is evaluated for: as
/// [`value_indexes`], but once (with `$_` undefined) for a job with no
/// values (`--pipe`, `-N0`), as GNU parallel evaluates it.
pub(crate) fn perl_indexes(len: usize, source: Option<i64>) -> std::ops::Range<usize> {
    if len == 0 {
        0..1
    } else {
        value_indexes(len, source)
    }
}

/// Which of `len` values a replacement string for `source` stands for.
pub(crate) fn value_indexes(len: usize, source: Option<i64>) -> std::ops::Range<usize> {
    match source {
        None => 0..len,
        Some(n) => {
            let at = if n > 0 { n - 1 } else { len as i64 + n };
            match usize::try_from(at) {
                Ok(at) if at < len => at..at + 1,
                _ => 0..0,
            }
        }
    }
}

/// Writes `values`, each edited by `edit` (and shell-quoted if `quote`),
/// separated by spaces.
fn push_values(
    out: &mut Vec<u8>,
    values: &[&OsString],
    quote: bool,
    edit: impl Fn(&[u8]) -> Vec<u8>,
) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        let v = edit(v.as_bytes());
        if quote {
            out.extend_from_slice(&shell_quote(&v));
        } else {
            out.extend_from_slice(&v);
        }
    }
}

/// The input values a replacement string stands for: all of them, or
/// source `n` (1-based; negative from the last; none if there is no such
/// source).
fn values<'a>(fill: &Fill<'a>, source: Option<i64>) -> Vec<&'a OsString> {
    fill.args[value_indexes(fill.args.len(), source)]
        .iter()
        .collect()
}

/// Applies a replacement string's operation to a value.
pub(crate) fn apply(op: Op, v: &[u8]) -> Vec<u8> {
    match op {
        Op::Whole => v.to_vec(),
        Op::NoExt => no_ext(v).to_vec(),
        Op::Base => base(v).to_vec(),
        Op::Dir => dir(v).to_vec(),
        Op::BaseNoExt => no_ext(base(v)).to_vec(),
        Op::DirPart => match v.iter().rposition(|&b| b == b'/') {
            Some(i) => v[..i].to_vec(),
            None => Vec::new(),
        },
        Op::Exts(n) => match exts(v, n) {
            Some(at) => v[at + 1..].to_vec(),
            None => Vec::new(),
        },
        Op::NoExts(n) => match exts(v, n) {
            Some(at) => v[..at].to_vec(),
            None => v.to_vec(),
        },
        Op::BaseNoExts(n) => {
            let b = base(v);
            match exts(b, n) {
                Some(at) => b[..at].to_vec(),
                None => b.to_vec(),
            }
        }
    }
}

/// Where the last `n` extensions start (the `.` before them), if the last
/// path component has that many non-empty ones after a non-empty stem.
fn exts(v: &[u8], n: u8) -> Option<usize> {
    let start = v.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let mut at = v.len();
    for _ in 0..n {
        let dot = v[start..at].iter().rposition(|&b| b == b'.')? + start;
        if dot + 1 == at || dot == start {
            return None;
        }
        at = dot;
    }
    Some(at)
}

/// Everything after the last `/` (`a/b/` gives nothing), as GNU
/// parallel's `s:.*/::`.
fn base(v: &[u8]) -> &[u8] {
    match v.iter().rposition(|&b| b == b'/') {
        Some(i) => &v[i + 1..],
        None => v,
    }
}

/// The directory, as `dirname`: trailing slashes go, then the last
/// component, then the slashes before it; nothing left is `.`, the root
/// stays `/`.
fn dir(v: &[u8]) -> &[u8] {
    let trim = |s: &[u8]| -> usize { s.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1) };
    let end = trim(v);
    if end == 0 {
        return if v.is_empty() { b"." } else { b"/" };
    }
    match v[..end].iter().rposition(|&b| b == b'/') {
        None => b".",
        Some(slash) => match trim(&v[..slash]) {
            0 => b"/",
            keep => &v[..keep],
        },
    }
}

/// Strips a final `.` and what follows it, if no `/` or `.` does, as GNU
/// parallel's `s:\.[^/.]*$::` (`.bashrc` gives nothing, `a/b.c/d`
/// stays).
fn no_ext(v: &[u8]) -> &[u8] {
    match v.iter().rposition(|&b| b == b'.') {
        Some(i) if !v[i + 1..].contains(&b'/') => &v[..i],
        _ => v,
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

    fn fill(word: &str, args: &[&str]) -> String {
        fill_parsed(&parse_word(OsStr::new(word)), args)
    }

    /// `w` filled with `args` as job 7 of 12 in slot 2.
    fn fill_parsed(w: &Word, args: &[&str]) -> String {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let f = Fill::new(&args, 7, 2, Some(12));
        String::from_utf8(fill_word(w, &f, false)).unwrap()
    }

    fn fill1(word: &str, arg: &str) -> String {
        fill(word, &[arg])
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
        // What GNU parallel 20221122 gives, input by input.
        let table = [
            // input, {.}, {/}, {//}, {/.}
            (".bashrc", "", ".bashrc", ".", ""),
            ("a/.b", "a/", ".b", "a", ""),
            (".", "", ".", ".", ""),
            ("a/b/", "a/b/", "", "a", ""),
            ("a//b.c", "a//b", "b.c", "a", "b"),
            ("/", "/", "", "/", ""),
            ("a.b.c", "a.b", "a.b.c", ".", "a.b"),
            ("a/b.c/d", "a/b.c/d", "d", "a/b.c", "d"),
            ("", "", "", ".", ""),
            ("x.", "x", "x.", ".", "x"),
            ("..", ".", "..", ".", "."),
            ("../x.y", "../x", "x.y", "..", "x"),
        ];
        for (input, no_ext, base, dir, base_no_ext) in table {
            assert_eq!(fill1("{.}", input), no_ext, "{{.}} of {input:?}");
            assert_eq!(fill1("{/}", input), base, "{{/}} of {input:?}");
            assert_eq!(fill1("{//}", input), dir, "{{//}} of {input:?}");
            assert_eq!(fill1("{/.}", input), base_no_ext, "{{/.}} of {input:?}");
        }
    }

    #[test]
    fn positions_count_from_either_end_and_missing_ones_are_empty() {
        assert_eq!(
            fill("{1}|{2}|{-1}|{-2}|{3}|{0}", &["a", "b"]),
            "a|b|b|a||a b"
        );
        assert_eq!(fill("{2.}|{-1/}", &["x/a.b", "y/c.d"]), "y/c|c.d");
    }

    #[test]
    fn plus_replacement_strings_follow_gnu_parallel() {
        let fill = |word: &str, arg: &str| {
            fill_parsed(&parse_word_with(OsStr::new(word), b"{}", true), &[arg])
        };
        let word = "{+/}|{/}|{+.}|{..}|{+..}|{/..}|{##}|{0#}|{...}|{+...}|{/...}";
        assert_eq!(
            fill(word, "a/b.c.d.e"),
            "a|b.c.d.e|e|a/b.c|d.e|b.c|12|07|a/b|c.d.e|b"
        );
        assert_eq!(fill(word, "e.f"), "|e.f|f|e.f||e.f|12|07|e.f||e.f");
        assert_eq!(fill(word, "g"), "|g||g||g|12|07|g||g");
        // Without --plus they are plain text.
        assert_eq!(fill1("{..}{##}", "v"), "{..}{##}");
    }

    #[test]
    fn other_braces_are_literal() {
        assert_eq!(fill1("{print $1}", "x"), "{print $1}");
        assert_eq!(fill1("a{b", "x"), "a{b");
        assert_eq!(fill1("{..}{ }{x}{}}", "v"), "{..}{ }{x}v}");
        assert_eq!(fill1("{-}", "v"), "{-}");
        assert!(!has_replacement(&[parse_word(OsStr::new("{..}"))]));
        assert!(has_replacement(&[parse_word(OsStr::new("{#}"))]));
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
