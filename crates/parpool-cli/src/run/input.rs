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
    /// `\n`, `\0` with `--null`, or `-d`'s.
    pub(crate) delimiter: u8,
    /// `--colsep`: each line becomes several sources, split where this
    /// regular expression matches.
    pub(crate) colsep: Option<regex::bytes::Regex>,
    /// `--trim`: strip spaces and tabs on the left, the right.
    pub(crate) trim: (bool, bool),
}

impl Split {
    /// One line's values: its columns (or itself), trimmed.
    fn values(&self, v: OsString) -> Values {
        let trim = |b: &[u8]| -> Vec<u8> {
            let blank = |c: &u8| *c == b' ' || *c == b'\t';
            let start = if self.trim.0 {
                b.iter().position(|c| !blank(c)).unwrap_or(b.len())
            } else {
                0
            };
            let end = if self.trim.1 {
                b.iter().rposition(|c| !blank(c)).map_or(start, |i| i + 1)
            } else {
                b.len()
            };
            b[start..end.max(start)].to_vec()
        };
        match &self.colsep {
            None => vec![super::template::os(trim(v.as_bytes()))],
            Some(re) => re
                .split(v.as_bytes())
                .map(|c| super::template::os(trim(c)))
                .collect(),
        }
    }
}

/// Set once a NUL in the input was replaced (one warning per run).
static NUL_SEEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

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
                if self.delimiter != 0 && line.contains(&0) {
                    // No argument can hold a NUL: as GNU parallel, pass it
                    // on as `\0`, and say so once.
                    if !NUL_SEEN.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        eprintln!(
                            "parpool: warning: a NUL in the input was replaced with \\0 \
                             (NUL cannot be passed in an argument; did you mean --null?)"
                        );
                    }
                    line = line
                        .split(|&b| b == 0)
                        .collect::<Vec<_>>()
                        .join(b"\\0".as_slice());
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
        if io::IsTerminal::is_terminal(&io::stdin()) {
            // GNU parallel's hint, word for word (but the name).
            eprint!(
                "parpool: Warning: Input is read from the terminal. You are either an expert\n\
                 parpool: Warning: (in which case: YOU ARE AWESOME!) or maybe you forgot\n\
                 parpool: Warning: ::: or :::: or -a or to pipe data into parpool. If so\n\
                 parpool: Warning: consider going through the tutorial: parpool run --help\n\
                 parpool: Warning: Press CTRL-D to exit.\n"
            );
        }
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

/// What `--header` found: the columns' names, in order.
pub(crate) type Names = Vec<String>;

/// Every job's values, in order, read lazily where they can be.
pub(crate) type Jobs = Box<dyn Iterator<Item = io::Result<Values>> + Send>;

/// All jobs' inputs, in GNU parallel's order (the last source varies
/// fastest). A single source streams: a million lines on stdin are never
/// all in memory. Several sources are read fully first, as they must be
/// to form their combinations. With `header`, each source's first value
/// names its columns instead of being a job. With `link` (`--link`), every
/// source is linked to the others, the shorter ones recycled to the
/// longest's length, as GNU parallel's `--link` does (`:::+` stops at the
/// shortest instead).
pub(crate) fn jobs(
    sources: Vec<Linked>,
    split: &Split,
    header: bool,
    link: bool,
) -> io::Result<(Names, Jobs)> {
    let mut names = Names::new();
    let name_from = |first: Option<OsString>, names: &mut Names| {
        if let Some(first) = first {
            names.extend(
                split
                    .values(first)
                    .iter()
                    .map(|n| n.to_string_lossy().into_owned()),
            );
        }
    };
    let splitter = split.clone();
    let split_cols = move |v: OsString| -> Values { splitter.values(v) };
    if sources.len() <= 1 {
        let source = sources
            .into_iter()
            .next()
            .map_or(Source::File("-".into()), |l| l.source);
        let jobs: Jobs = match source {
            Source::Args(a) => {
                let mut a = a.into_iter();
                if header {
                    name_from(a.next(), &mut names);
                }
                Box::new(a.map(move |v| Ok(split_cols(v))))
            }
            Source::File(path) => {
                let mut lines = open(&path, split.delimiter)?;
                if header {
                    name_from(lines.next().transpose()?, &mut names);
                }
                Box::new(lines.map(move |r| r.map(&split_cols)))
            }
        };
        return Ok((names, jobs));
    }
    // Read every source; a group is a run of linked sources.
    let mut groups: Vec<Vec<Vec<OsString>>> = Vec::new();
    for l in sources {
        let mut values: Vec<OsString> = match l.source {
            Source::Args(a) => a,
            Source::File(path) => open(&path, split.delimiter)?.collect::<io::Result<_>>()?,
        };
        if header && !values.is_empty() {
            name_from(Some(values.remove(0)), &mut names);
        }
        match groups.last_mut() {
            Some(group) if l.linked || link => group.push(values),
            _ => groups.push(vec![values]),
        }
    }
    // Each group zips its sources into rows.
    let rows: Vec<Vec<Values>> = groups
        .into_iter()
        .map(|group| {
            let shortest = group.iter().map(Vec::len).min().unwrap_or(0);
            let n = if link && shortest > 0 {
                group.iter().map(Vec::len).max().unwrap_or(0)
            } else {
                shortest
            };
            (0..n)
                .map(|i| group.iter().map(|s| s[i % s.len()].clone()).collect())
                .collect()
        })
        .collect();
    let jobs = Product::new(rows)
        .map(move |values| Ok(values.into_iter().flat_map(&split_cols).collect()));
    Ok((names, Box::new(jobs)))
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
            trim: (false, false),
        };
        jobs(sources, &split, false, false)
            .unwrap()
            .1
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
    fn columns_split_where_a_regex_matches_and_values_trim() {
        let split = Split {
            delimiter: b'\n',
            colsep: Some(regex::bytes::Regex::new(" +").unwrap()),
            trim: (true, true),
        };
        let cols = split.values(OsString::from("a  b c"));
        assert_eq!(cols, ["a", "b", "c"]);
        let split = Split {
            colsep: None,
            ..split
        };
        assert_eq!(split.values(OsString::from(" \tx y \t")), ["x y"]);
        assert_eq!(split.values(OsString::from("   ")), [""]);
    }
}
