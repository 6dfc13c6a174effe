//! `--plus`'s editing strings (`{%.gz}`, `{#pre}`, `{:-default}`,
//! `{/from/to}`, `{^a}`, …), applied as GNU parallel's Perl definitions of
//! them apply, their patterns read as regular expressions.

/// One of `--plus`'s editing strings, with its text (two are equal when
/// their text is).
#[derive(Debug, Clone)]
pub(crate) struct PlusOp {
    text: Vec<u8>,
    edit: Edit,
}

impl PartialEq for PlusOp {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for PlusOp {}

/// What a `--plus` editing string does, as GNU parallel's definitions of
/// them in Perl do.
#[derive(Debug, Clone)]
enum Edit {
    /// `{:-str}`: `str` where the value is empty (or `0`, as Perl's `||=`).
    Default(Vec<u8>),
    /// `{:n}`: without its first `n` bytes.
    Skip(usize),
    /// `{:n:m}`: `m` bytes from byte `n`.
    Substr(usize, usize),
    /// `{#re}`: without the shortest prefix `re` matches.
    PrefixShortest(regex::bytes::Regex),
    /// `{##re}`: without what `re` matches at the start.
    PrefixLongest(regex::bytes::Regex),
    /// `{%re}`: without the shortest suffix `re` matches.
    SuffixShortest(regex::bytes::Regex),
    /// `{%%re}`: without what `re` matches at the end.
    SuffixLongest(regex::bytes::Regex),
    /// `{/re/str}`, `{//re/str}`: the first (every) match replaced by `str`.
    Replace {
        re: regex::bytes::Regex,
        with: Vec<u8>,
        all: bool,
    },
    /// `{^re}`, `{^^re}`, `{,re}`, `{,,re}`: what `re` matches at the
    /// start (everywhere), in upper (lower) case.
    Case {
        re: regex::bytes::Regex,
        all: bool,
        upper: bool,
    },
}

/// The `--plus` editing string `{inner}`, if it is one: `Err` when it is
/// one whose regular expression parpool cannot read (then the run is
/// refused rather than the string passed on as text).
pub(crate) fn plus_op(inner: &[u8]) -> Option<Result<PlusOp, String>> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let re = |pattern: &[u8], wrap: &dyn Fn(&str) -> String| {
        let pattern = std::str::from_utf8(pattern).map_err(|_| "not UTF-8".to_owned())?;
        regex::bytes::Regex::new(&wrap(pattern)).map_err(|e| e.to_string())
    };
    let whole = |p: &str| format!("^(?:{p})$");
    let start = |p: &str| format!("^(?:{p})");
    let end = |p: &str| format!("(?:{p})$");
    let anywhere = |p: &str| format!("(?:{p})");
    let digits = |b: &[u8]| -> Option<usize> {
        (!b.is_empty() && b.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(b).ok()?.parse().ok())
            .flatten()
    };
    let edit: Result<Edit, String> = if let Some(rest) = inner.strip_prefix(b":-") {
        if rest.is_empty() {
            return None;
        }
        Ok(Edit::Default(rest.to_vec()))
    } else if let Some(rest) = inner.strip_prefix(b":") {
        let mut parts = rest.splitn(2, |&b| b == b':');
        let n = digits(parts.next()?)?;
        match parts.next() {
            None => Ok(Edit::Skip(n)),
            Some(m) => Ok(Edit::Substr(n, digits(m)?)),
        }
    } else if let Some(rest) = inner.strip_prefix(b"##") {
        if rest.is_empty() {
            return None;
        }
        re(rest, &start).map(Edit::PrefixLongest)
    } else if let Some(rest) = inner.strip_prefix(b"#") {
        if rest.is_empty() || rest[0] == b'#' {
            return None;
        }
        re(rest, &whole).map(Edit::PrefixShortest)
    } else if let Some(rest) = inner.strip_prefix(b"%%") {
        if rest.is_empty() {
            return None;
        }
        re(rest, &end).map(Edit::SuffixLongest)
    } else if let Some(rest) = inner.strip_prefix(b"%") {
        re(rest, &whole).map(Edit::SuffixShortest)
    } else if inner.first() == Some(&b'/') {
        let (all, rest) = match inner.strip_prefix(b"//") {
            Some(rest) => (true, rest),
            None => (false, &inner[1..]),
        };
        // `{/re/str}`: `re` is at least one byte, up to the first `/`.
        let at = rest.iter().skip(1).position(|&b| b == b'/')? + 1;
        let with = rest[at + 1..].to_vec();
        re(&rest[..at], &anywhere).map(|re| Edit::Replace { re, with, all })
    } else {
        let (upper, all, rest) = if let Some(r) = inner.strip_prefix(b"^^") {
            (true, true, r)
        } else if let Some(r) = inner.strip_prefix(b"^") {
            (true, false, r)
        } else if let Some(r) = inner.strip_prefix(b",,") {
            (false, true, r)
        } else if let Some(r) = inner.strip_prefix(b",") {
            (false, false, r)
        } else {
            return None;
        };
        if rest.is_empty() {
            return None;
        }
        let wrap: &dyn Fn(&str) -> String = if all { &anywhere } else { &start };
        re(rest, wrap).map(|re| Edit::Case { re, all, upper })
    };
    Some(
        edit.map(|edit| PlusOp {
            text: inner.to_vec(),
            edit,
        })
        .map_err(|e| {
            format!(
                "--plus: `{{{}}}`: its regular expression cannot be read here ({e})",
                text(inner)
            )
        }),
    )
}

impl PlusOp {
    /// The value, edited.
    pub(crate) fn apply(&self, v: &[u8]) -> Vec<u8> {
        match &self.edit {
            Edit::Default(d) => {
                if v.is_empty() || v == b"0" {
                    d.clone()
                } else {
                    v.to_vec()
                }
            }
            Edit::Skip(n) => v.get(*n..).unwrap_or_default().to_vec(),
            Edit::Substr(n, m) => match v.get(*n..) {
                Some(rest) => rest[..(*m).min(rest.len())].to_vec(),
                None => Vec::new(),
            },
            Edit::PrefixShortest(re) => (0..=v.len())
                .find(|&p| re.is_match(&v[..p]))
                .map_or_else(|| v.to_vec(), |p| v[p..].to_vec()),
            Edit::SuffixShortest(re) => (0..=v.len())
                .find(|&n| re.is_match(&v[v.len() - n..]))
                .map_or_else(|| v.to_vec(), |n| v[..v.len() - n].to_vec()),
            Edit::PrefixLongest(re) | Edit::SuffixLongest(re) => match re.find(v) {
                Some(m) => [&v[..m.start()], &v[m.end()..]].concat(),
                None => v.to_vec(),
            },
            Edit::Replace { re, with, all } => {
                let limit = if *all { 0 } else { 1 };
                re.replacen(v, limit, regex::bytes::NoExpand(with))
                    .into_owned()
            }
            Edit::Case { re, all, upper } => {
                let limit = if *all { 0 } else { 1 };
                re.replacen(v, limit, |c: &regex::bytes::Captures<'_>| {
                    if *upper {
                        c[0].to_ascii_uppercase()
                    } else {
                        c[0].to_ascii_lowercase()
                    }
                })
                .into_owned()
            }
        }
    }
}
