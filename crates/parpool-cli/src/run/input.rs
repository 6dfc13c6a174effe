//! Input sources: `:::` arguments, `::::` files, stdin, and how several
//! combine (`:::` groups: every combination; `:::+`: paired with the
//! source before, stopping at the shorter).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Where one input source's values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Args(Vec<OsString>),
    /// A file of lines; `-` is stdin.
    File(PathBuf),
}

/// A source and whether it pairs with the one before (`:::+`, `::::+`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Linked {
    pub(crate) source: Source,
    pub(crate) linked: bool,
}

/// How lines are split.
#[derive(Debug, Clone)]
pub(crate) struct Split {
    /// `\n`, or `\0` with `--null`.
    pub(crate) delimiter: u8,
    /// `--colsep`: each line becomes several sources.
    pub(crate) colsep: Option<Vec<u8>>,
}

/// Reads lines (without their delimiter) from `r`, lazily.
pub(crate) struct Lines<R> {
    reader: BufReader<R>,
    delimiter: u8,
    what: String,
}

impl<R: Read> Iterator for Lines<R> {
    type Item = io::Result<OsString>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut line = Vec::new();
        match self.reader.read_until(self.delimiter, &mut line) {
            Ok(0) => None,
            Ok(_) => {
                if line.last() == Some(&self.delimiter) {
                    line.pop();
                }
                Some(Ok(super::template::os(line)))
            }
            Err(e) => Some(Err(io::Error::new(
                e.kind(),
                format!("reading {}: {e}", self.what),
            ))),
        }
    }
}

fn open(path: &PathBuf, delimiter: u8) -> io::Result<Lines<Box<dyn Read + Send>>> {
    let (reader, what): (Box<dyn Read + Send>, String) = if path.as_os_str() == "-" {
        (Box::new(io::stdin()), "standard input".into())
    } else {
        let f = File::open(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot read input file {}: {e}", path.display()),
            )
        })?;
        (Box::new(f), path.display().to_string())
    };
    Ok(Lines {
        reader: BufReader::with_capacity(64 * 1024, reader),
        delimiter,
        what,
    })
}

/// One job's input: one value per source.
pub(crate) type Values = Vec<OsString>;

/// All jobs' inputs, in GNU parallel's order (the last source varies
/// fastest). A single source streams: a million lines on stdin are never
/// all in memory. Several sources are read fully first, as they must be
/// to form their combinations.
pub(crate) fn jobs(
    sources: Vec<Linked>,
    split: &Split,
) -> io::Result<Box<dyn Iterator<Item = io::Result<Values>> + Send>> {
    let colsep = split.colsep.clone();
    let split_cols = move |v: OsString| -> Values {
        match &colsep {
            None => vec![v],
            Some(sep) => split_on(v.as_bytes(), sep)
                .into_iter()
                .map(super::template::os)
                .collect(),
        }
    };
    if sources.len() <= 1 {
        let source = sources
            .into_iter()
            .next()
            .map_or(Source::File("-".into()), |l| l.source);
        return Ok(match source {
            Source::Args(a) => Box::new(a.into_iter().map(move |v| Ok(split_cols(v)))),
            Source::File(path) => {
                Box::new(open(&path, split.delimiter)?.map(move |r| r.map(&split_cols)))
            }
        });
    }
    // Read every source; a group is a run of linked sources.
    let mut groups: Vec<Vec<Vec<OsString>>> = Vec::new();
    for l in sources {
        let values: Vec<OsString> = match l.source {
            Source::Args(a) => a,
            Source::File(path) => open(&path, split.delimiter)?.collect::<io::Result<_>>()?,
        };
        match groups.last_mut() {
            Some(group) if l.linked => group.push(values),
            _ => groups.push(vec![values]),
        }
    }
    // Each group zips its sources into rows.
    let rows: Vec<Vec<Values>> = groups
        .into_iter()
        .map(|group| {
            let n = group.iter().map(Vec::len).min().unwrap_or(0);
            (0..n)
                .map(|i| group.iter().map(|s| s[i].clone()).collect())
                .collect()
        })
        .collect();
    Ok(Box::new(Product::new(rows).map(move |values| {
        Ok(values.into_iter().flat_map(&split_cols).collect())
    })))
}

fn split_on(line: &[u8], sep: &[u8]) -> Vec<Vec<u8>> {
    if sep.is_empty() {
        return vec![line.to_vec()];
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= line.len() {
        if &line[i..i + sep.len()] == sep {
            out.push(line[start..i].to_vec());
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(line[start..].to_vec());
    out
}

/// The cartesian product of groups of rows, generated lazily.
struct Product {
    rows: Vec<Vec<Values>>,
    index: Vec<usize>,
    done: bool,
    /// Combinations not yet yielded.
    left: usize,
}

impl Product {
    fn new(rows: Vec<Vec<Values>>) -> Self {
        let left = rows
            .iter()
            .try_fold(1usize, |n, r| n.checked_mul(r.len()))
            .unwrap_or(usize::MAX);
        Product {
            index: vec![0; rows.len()],
            done: left == 0,
            rows,
            left,
        }
    }
}

impl Iterator for Product {
    type Item = Values;
    fn next(&mut self) -> Option<Values> {
        if self.done {
            return None;
        }
        self.left = self.left.saturating_sub(1);
        let item = self
            .rows
            .iter()
            .zip(&self.index)
            .flat_map(|(group, &i)| group[i].iter().cloned())
            .collect();
        // Advance like an odometer: the last group fastest.
        let mut k = self.rows.len();
        loop {
            if k == 0 {
                self.done = true;
                break;
            }
            k -= 1;
            self.index[k] += 1;
            if self.index[k] < self.rows[k].len() {
                break;
            }
            self.index[k] = 0;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Linked {
        Linked {
            source: Source::Args(v.iter().map(OsString::from).collect()),
            linked: false,
        }
    }

    fn all(sources: Vec<Linked>) -> Vec<Vec<String>> {
        let split = Split {
            delimiter: b'\n',
            colsep: None,
        };
        jobs(sources, &split)
            .unwrap()
            .map(|v| {
                v.unwrap()
                    .into_iter()
                    .map(|s| s.into_string().unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn groups_combine_and_linked_sources_pair() {
        let got = all(vec![args(&["a", "b"]), args(&["1", "2"])]);
        assert_eq!(got, [["a", "1"], ["a", "2"], ["b", "1"], ["b", "2"]]);
        let mut linked = args(&["1", "2", "3"]);
        linked.linked = true;
        let got = all(vec![args(&["a", "b"]), linked]);
        assert_eq!(got, [["a", "1"], ["b", "2"]]);
        assert!(all(vec![args(&["a"]), args(&[])]).is_empty());
    }

    #[test]
    fn columns_split_on_a_separator() {
        assert_eq!(split_on(b"a,b,,c", b","), [&b"a"[..], b"b", b"", b"c"]);
        assert_eq!(split_on(b"abc", b"::"), [&b"abc"[..]]);
    }
}
