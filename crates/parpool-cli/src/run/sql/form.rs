//! The command as GNU parallel's table holds it: its words joined by
//! `\257 `, each replacement string as `\257<`perl`\257>` (GNU's own
//! definition of it), so rows cross between GNU's workers and parpool's.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use anyhow::bail;

use crate::run::template::{Op, Piece, Word};

/// GNU parallel's perl for its replacement strings, as its table holds
/// them (positional ones are the source's number and then this).
const GNU_CODE: [(Op, &str); 4] = [
    (Op::NoExt, r"s:\.[^/.]*$::"),
    (Op::Base, "s:.*/::"),
    (
        Op::Dir,
        r#"$Global::use{"File::Basename"} ||= eval "use File::Basename; 1;"; $_ = dirname($_);"#,
    ),
    (Op::BaseNoExt, r"s:.*/::; s:\.[^/.]*$::;"),
];
const GNU_SEQ: &str = "1 $_=$job->seq()";
const GNU_SLOT: &str = "1 $_=$job->slot()";
const GNU_TOTAL: &str = "1 $_=total_jobs()";

/// The command in GNU parallel's table form (see the module's doc): the
/// template's words, then `{}` when no word takes the values; an empty
/// template (the input is the command) is `{}` alone.
pub(crate) fn encode(words: &[Word], append: bool) -> anyhow::Result<Vec<u8>> {
    let whole = vec![Piece::Input {
        source: None,
        op: Op::Whole,
    }];
    let extra = (append || words.is_empty()).then_some(&whole);
    let mut out = Vec::new();
    for (i, word) in words.iter().chain(extra).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\xaf ");
        }
        for piece in word {
            let code = match piece {
                Piece::Lit(text) => {
                    out.extend_from_slice(text);
                    continue;
                }
                Piece::Input { source, op } => {
                    let code = GNU_CODE
                        .iter()
                        .find(|(o, _)| o == op)
                        .map(|(_, c)| *c)
                        .or((*op == Op::Whole).then_some(""));
                    let Some(code) = code else {
                        bail!(unstorable());
                    };
                    positional(*source, code.as_bytes())
                }
                Piece::Seq => GNU_SEQ.as_bytes().to_vec(),
                Piece::Slot => GNU_SLOT.as_bytes().to_vec(),
                Piece::Total => GNU_TOTAL.as_bytes().to_vec(),
                Piece::Perl { source, code, .. } => {
                    let spaced = [b" ".as_slice(), code].concat();
                    positional(*source, if source.is_some() { &spaced } else { code })
                }
                Piece::SeqPadded | Piece::Plus { .. } => bail!(unstorable()),
            };
            out.extend_from_slice(b"\xaf<");
            out.extend_from_slice(&code);
            out.extend_from_slice(b"\xaf>");
        }
    }
    Ok(out)
}

fn unstorable() -> &'static str {
    "--sqlmaster: a --plus replacement string cannot be stored in the table for the \
     workers; write it as {= perl =} (e.g. {%.gz} as {= s/\\.gz$// =})"
}

/// `code` for input source `source`: its number first, as GNU writes it.
fn positional(source: Option<i64>, code: &[u8]) -> Vec<u8> {
    let mut out = source
        .map(|n| n.to_string().into_bytes())
        .unwrap_or_default();
    out.extend_from_slice(code);
    out
}

/// The command words of a row's `Command`, replacement strings back in
/// the form parpool's templates read (GNU's own definitions as the
/// strings they define, anything else as `{= perl =}`); `None` for the
/// input-is-the-command form.
pub(crate) fn decode(command: &[u8]) -> Vec<OsString> {
    let words: Vec<OsString> = split(command, b"\xaf ")
        .into_iter()
        .map(|word| {
            let mut out = Vec::with_capacity(word.len());
            let mut rest = word;
            while let Some(open) = find(rest, b"\xaf<") {
                let inner = &rest[open + 2..];
                let Some(close) = find(inner, b"\xaf>") else {
                    break;
                };
                out.extend_from_slice(&rest[..open]);
                out.extend_from_slice(&replacement(&inner[..close]));
                rest = &inner[close + 2..];
            }
            out.extend_from_slice(rest);
            OsString::from_vec(out)
        })
        .collect();
    if words.len() == 1 && words[0] == "{}" {
        // GNU's form for a run whose input lines are the commands.
        return Vec::new();
    }
    words
}

/// One `\257<code\257>` as a replacement string parpool reads.
fn replacement(code: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(code);
    let sign = usize::from(text.starts_with('-'));
    let digits = text[sign..].bytes().take_while(u8::is_ascii_digit).count();
    let (number, rest) = text.split_at(if digits > 0 { sign + digits } else { 0 });
    let op = if rest.is_empty() {
        Some("")
    } else {
        GNU_CODE
            .iter()
            .find(|(_, c)| *c == rest)
            .map(|(op, _)| match op {
                Op::NoExt => ".",
                Op::Base => "/",
                Op::Dir => "//",
                _ => "/.",
            })
    };
    match (op, text.as_ref()) {
        (_, GNU_SEQ) => b"{#}".to_vec(),
        (_, GNU_SLOT) => b"{%}".to_vec(),
        (Some(op), _) => format!("{{{number}{op}}}").into_bytes(),
        (None, _) => [b"{=".as_slice(), code, b"=}"].concat(),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut text: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = find(text, sep) {
        parts.push(&text[..at]);
        text = &text[at + sep.len()..];
    }
    parts.push(text);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::template::parse_word;

    #[test]
    fn commands_cross_in_gnu_parallel_s_form_and_back() {
        let words: Vec<Word> = [
            "echo", "{}", "{.}", "x{2/}y", "{#}", "{=uc=}", "{%}", "{=2 lc=}",
        ]
        .iter()
        .map(|w| parse_word(std::ffi::OsStr::new(w)))
        .collect();
        let encoded = encode(&words, false).unwrap();
        let gnu = b"echo\xaf \xaf<\xaf>\xaf \xaf<s:\\.[^/.]*$::\xaf>\xaf x\xaf<2s:.*/::\xaf>y\xaf \
                    \xaf<1 $_=$job->seq()\xaf>\xaf \xaf<uc\xaf>\xaf \xaf<1 $_=$job->slot()\xaf>\xaf \
                    \xaf<2 lc\xaf>";
        assert_eq!(encoded, gnu.to_vec());
        assert_eq!(
            decode(&encoded),
            [
                "echo", "{}", "{.}", "x{2/}y", "{#}", "{=uc=}", "{%}", "{=2 lc=}"
            ]
        );
        // No replacement string: the values are appended; no command:
        // the input is the command.
        let echo = [parse_word(std::ffi::OsStr::new("echo"))];
        assert_eq!(
            encode(&echo, true).unwrap(),
            b"echo\xaf \xaf<\xaf>".to_vec()
        );
        assert!(decode(&encode(&[], false).unwrap()).is_empty());
        // GNU's {//} and an unknown perl string.
        assert_eq!(
            decode(
                b"ls \xaf<$Global::use{\"File::Basename\"} ||= eval \"use File::Basename; 1;\"; \
                  $_ = dirname($_);\xaf> \xaf<s/a/b/\xaf>"
            ),
            ["ls {//} {=s/a/b/=}"]
        );
    }

    #[test]
    fn plus_strings_are_refused_not_stored_as_text() {
        let word =
            crate::run::template::parse_word_with(std::ffi::OsStr::new("{%.gz}"), b"{}", true);
        let err = encode(&[word], false).unwrap_err().to_string();
        assert!(err.contains("{= perl =}"), "{err}");
    }
}
