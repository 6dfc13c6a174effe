//! Replacement strings written in perl: where a `{= perl =}` string is in
//! a word, and `--rpl`'s shorthands, which become `{= =}` strings before
//! the words are read (as GNU parallel expands them).

use regex::bytes::{Captures, Regex};

/// A `{= perl =}` string found in a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Where the string ends (past `=}`).
    pub(crate) end: usize,
    /// `{=N perl =}`: input source N (negative from the last).
    pub(crate) source: Option<i64>,
    /// The perl code.
    pub(crate) code: Vec<u8>,
}

/// The `{= … =}` string starting at `at`, if one does: the shortest,
/// holding no other `{=`, as GNU parallel matches them.
pub(crate) fn perl_at(bytes: &[u8], at: usize) -> Option<Found> {
    if !bytes[at..].starts_with(b"{=") {
        return None;
    }
    let body_start = at + 2;
    let close = body_start + find(&bytes[body_start..], b"=}")?;
    let body = &bytes[body_start..close];
    if find(body, b"{=").is_some() {
        return None;
    }
    let sign = usize::from(body.first() == Some(&b'-'));
    let digits = body[sign..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let position = (digits > 0)
        .then(|| {
            std::str::from_utf8(&body[..sign + digits])
                .ok()?
                .parse::<i64>()
                .ok()
        })
        .flatten();
    let (source, rest) = match position {
        // `{=0 =}` is the last value, as in GNU parallel.
        Some(0) => (Some(-1), &body[sign + digits..]),
        Some(n) => (Some(n), &body[sign + digits..]),
        None => (None, body),
    };
    let blanks = rest.iter().take_while(|&&b| b == b' ').count();
    Some(Found {
        end: close + 2,
        source,
        code: rest[blanks..].to_vec(),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Joins command words that a `{= … =}` string spans (`{=`, `s/a/b/`,
/// `=}` given unquoted), with one space between, as GNU parallel reads
/// its command as one line.
pub(crate) fn join_spanning(words: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(words.len());
    let mut open = false;
    for word in words {
        let bytes = word.as_bytes();
        match out.last_mut() {
            Some(last) if open => {
                last.push(b' ');
                last.extend_from_slice(bytes);
            }
            _ => out.push(bytes.to_vec()),
        }
        open = out.last().is_some_and(|w| unclosed(w));
    }
    out.into_iter().map(std::ffi::OsString::from_vec).collect()
}

/// Whether `w` has a `{=` with no `=}` after it.
fn unclosed(w: &[u8]) -> bool {
    match (rfind(w, b"{="), rfind(w, b"=}")) {
        (Some(open), Some(close)) => open > close || close == open + 1,
        (Some(_), None) => true,
        _ => false,
    }
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// One `--rpl 'TAG PERL'`.
#[derive(Debug, Clone)]
pub(crate) struct Rpl {
    tag_len: usize,
    perl: String,
    /// Matches the tag (its `(regex)` part, if any, capturing).
    tag: Regex,
    /// Matches `{N` + the tag's rest, where the tag starts with `{`.
    positional: Option<Regex>,
}

impl Rpl {
    /// Reads `--rpl`'s value: the tag, white space, the perl code. The tag
    /// may hold one `(regex)` part between a fixed start and end.
    pub(crate) fn parse(value: &str) -> Result<Rpl, String> {
        let Some((tag, perl)) = value.split_once(char::is_whitespace) else {
            return Err(format!(
                "`{value}`: expected a tag, a space and perl code (e.g. '{{..}} s:\\.[^.]+$::')"
            ));
        };
        let (prefix, group, postfix) = match (tag.find('('), tag.rfind(')')) {
            (Some(open), Some(close)) if open < close => {
                (&tag[..open], &tag[open..=close], &tag[close + 1..])
            }
            (None, None) => (tag, "", ""),
            _ => return Err(format!("`{tag}`: a tag's (regex) part is not closed")),
        };
        let compile = |re: String| {
            Regex::new(&re)
                .map_err(|e| format!("`{tag}`: parpool cannot read this regular expression ({e})"))
        };
        let esc = regex::escape;
        let tag_re = compile(format!("{}{group}{}", esc(prefix), esc(postfix)))?;
        let positional = match prefix.strip_prefix('{') {
            Some(rest) => Some(compile(format!(
                r"\{{(-?\d+)\s*{}{group}{}",
                esc(rest),
                esc(postfix)
            ))?),
            None => None,
        };
        Ok(Rpl {
            tag_len: tag.len(),
            perl: perl.to_owned(),
            tag: tag_re,
            positional,
        })
    }

    /// `--plus`'s strings that GNU parallel defines in perl.
    pub(crate) fn plus() -> Vec<Rpl> {
        [
            "{choose_k} for $t (2..$#arg){ if($arg[$t-1] ge $arg[$t]) { skip() } }",
            "{uniq} if(::uniq(@arg) != @arg) { skip(); }",
            r#"{0%} 1 $f=1+int((log($Global::max_jobs_running||1)/log(10))); $_=sprintf("%0${f}d",slot())"#,
        ]
        .into_iter()
        .map(|r| Rpl::parse(r).expect("a valid built-in --rpl"))
        .collect()
    }

    /// The perl code for one match: the groups set first (`$$1` reads
    /// the first).
    fn code(&self, caps: &Captures<'_>, first_group: usize) -> Vec<u8> {
        let mut code = Vec::new();
        let mut n = 0;
        for i in first_group..caps.len() {
            let Some(group) = caps.get(i) else { break };
            n += 1;
            code.extend_from_slice(format!("$_pAr_gRp{n} = \"").as_bytes());
            for &b in group.as_bytes() {
                if matches!(b, b'\\' | b'"' | b'$' | b'@') {
                    code.push(b'\\');
                }
                code.push(b);
            }
            code.extend_from_slice(b"\";");
        }
        let mut perl = self.perl.as_bytes();
        while let Some(at) = find(perl, b"$$") {
            let digits = perl[at + 2..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            code.extend_from_slice(&perl[..at]);
            if digits == 0 {
                code.extend_from_slice(b"$$");
            } else {
                code.extend_from_slice(b"$_pAr_gRp");
                code.extend_from_slice(&perl[at + 2..at + 2 + digits]);
            }
            perl = &perl[at + 2 + digits..];
        }
        code.extend_from_slice(perl);
        code
    }
}

/// `word` with every `--rpl` tag (longest first) replaced by its
/// `{= perl =}` string, outside the `{= =}` strings already there.
pub(crate) fn expand(word: &[u8], rpls: &[Rpl]) -> Vec<u8> {
    let mut order: Vec<&Rpl> = rpls.iter().collect();
    order.sort_by_key(|r| std::cmp::Reverse(r.tag_len));
    let mut word = word.to_vec();
    for rpl in order {
        word = outside_perl(&word, |text| {
            let text = rpl.tag.replace_all(text, |c: &Captures<'_>| {
                [b"{=".as_slice(), &rpl.code(c, 1), b"=}"].concat()
            });
            match &rpl.positional {
                Some(re) => re
                    .replace_all(&text, |c: &Captures<'_>| {
                        [b"{=".as_slice(), &c[1], &rpl.code(c, 2), b"=}"].concat()
                    })
                    .into_owned(),
                None => text.into_owned(),
            }
        });
    }
    word
}

/// Applies `edit` to the parts of `word` that are not `{= =}` strings.
fn outside_perl(word: &[u8], mut edit: impl FnMut(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(word.len());
    let mut from = 0;
    let mut at = 0;
    while at < word.len() {
        match perl_at(word, at) {
            Some(found) => {
                out.extend(edit(&word[from..at]));
                out.extend_from_slice(&word[at..found.end]);
                at = found.end;
                from = at;
            }
            None => at += 1,
        }
    }
    out.extend(edit(&word[from..]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_one(word: &str, rpls: &[&str]) -> String {
        let rpls: Vec<Rpl> = rpls.iter().map(|r| Rpl::parse(r).unwrap()).collect();
        String::from_utf8(expand(word.as_bytes(), &rpls)).unwrap()
    }

    #[test]
    fn perl_strings_are_found_as_gnu_parallel_finds_them() {
        let f = perl_at(b"a{= s/x/y/ =}b", 1).unwrap();
        assert_eq!(
            (f.end, f.source, f.code.as_slice()),
            (13, None, b"s/x/y/ ".as_slice())
        );
        let f = perl_at(b"{=2 s/c/X/ =}", 0).unwrap();
        assert_eq!(
            (f.source, f.code.as_slice()),
            (Some(2), b"s/c/X/ ".as_slice())
        );
        let f = perl_at(b"{=-1 $_.=1=}", 0).unwrap();
        assert_eq!(f.source, Some(-1));
        // The innermost pair: the outer `{=` is text.
        assert!(perl_at(b"{={=1=}=}", 0).is_none());
        assert_eq!(perl_at(b"{={=1=}=}", 2).unwrap().end, 7);
        assert!(perl_at(b"{= no end", 0).is_none());
        assert_eq!(perl_at(b"{==}", 0).unwrap().code, b"");
    }

    #[test]
    fn words_a_perl_string_spans_are_joined() {
        let words = ["echo", "{=", "s/a/b/", "=}", "x", "{==}"]
            .map(std::ffi::OsString::from)
            .to_vec();
        let joined = join_spanning(words);
        assert_eq!(joined, ["echo", "{= s/a/b/ =}", "x", "{==}"]);
    }

    #[test]
    fn rpl_tags_become_perl_strings() {
        assert_eq!(expand_one("x{r}y", &["{r} s/x/R/"]), "x{=s/x/R/=}y");
        assert_eq!(expand_one("{2r}", &["{r} s/x/R/"]), "{=2s/x/R/=}");
        // Groups reach the code as $$1, $$2, quoted for perl.
        assert_eq!(
            expand_one("{/a$/b}", &["{/(.+?)/(.*?)} s/$$1/$$2/g;"]),
            r#"{=$_pAr_gRp1 = "a\$";$_pAr_gRp2 = "b";s/$_pAr_gRp1/$_pAr_gRp2/g;=}"#
        );
        // Never inside a perl string, and the longest tag first.
        assert_eq!(expand_one("{= {r} =}", &["{r} 1"]), "{= {r} =}");
        assert_eq!(expand_one("{rr}{r}", &["{r} a", "{rr} b"]), "{=b=}{=a=}");
        assert!(Rpl::parse("{r}").is_err());
        assert!(Rpl::parse("{a(b} 1").is_err());
    }
}
