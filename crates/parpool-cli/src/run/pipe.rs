//! `--pipe`: standard input cut into blocks of about `--block` bytes at
//! record boundaries, each block one job's standard input, as GNU
//! parallel cuts them.
//!
//! A block is at most `--block` bytes and ends at the last record
//! boundary within them: after `--recend` (newline by default) and before
//! `--recstart` (nothing by default). A record longer than a block grows
//! the block, with a warning. With `-N n` a block is `n` records instead,
//! whatever their size. With `--header`, what the header matches at the
//! start of the input is taken once and put before every block.

use std::io::{self, Read};
use std::sync::Arc;

/// The largest block: 2 GiB less one, as GNU parallel's.
const MOST_BLOCK: usize = (1 << 31) - 1;

/// How input is cut.
#[derive(Debug, Clone)]
pub(crate) struct Cut {
    pub(crate) block: usize,
    pub(crate) recstart: Vec<u8>,
    pub(crate) recend: Vec<u8>,
    /// `-N n`: `n` records a block, whatever their size.
    pub(crate) records: Option<usize>,
    /// `--header`: the header at the start of the input, put before every
    /// block.
    pub(crate) header: Option<Header>,
}

/// What `--header` takes from the start of `--pipe`'s input.
#[derive(Debug, Clone)]
pub(crate) enum Header {
    /// `--header :`: the first line.
    FirstLine,
    /// `--header REGEX`: what the regular expression matches there.
    Pattern(regex::bytes::Regex),
}

impl Header {
    /// `--header`'s value: `:` for the first line, else a regular
    /// expression matched at the start of the input.
    pub(crate) fn parse(value: &str) -> Result<Header, String> {
        if value == ":" {
            return Ok(Header::FirstLine);
        }
        regex::bytes::Regex::new(&format!("^(?:{value})"))
            .map(Header::Pattern)
            .map_err(|e| format!("`{value}` is not a regular expression: {e}"))
    }

    /// How many bytes at the start of `input` the header takes (`None`:
    /// not known yet, more input may change it).
    fn len(&self, input: &[u8], eof: bool) -> Option<usize> {
        match self {
            Header::FirstLine => match input.iter().position(|&b| b == b'\n') {
                Some(i) => Some(i + 1),
                None => eof.then_some(input.len()),
            },
            Header::Pattern(re) => match re.find(input) {
                Some(m) if m.end() < input.len() || eof => Some(m.end()),
                _ if eof => Some(0),
                _ => None,
            },
        }
    }
}

impl Default for Cut {
    fn default() -> Self {
        Cut {
            block: 1 << 20,
            recstart: Vec::new(),
            recend: b"\n".to_vec(),
            records: None,
            header: None,
        }
    }
}

/// The name `--cat`'s files of this run start with.
fn cat_prefix() -> String {
    format!("parpool-cat-{}-", std::process::id())
}

/// Writes `block` to a new file for `--cat` (job `n`'s, in `--tmpdir` or
/// `$TMPDIR`); its path. The job's `{}` names it; it is removed once the
/// job is done.
pub(crate) fn cat_file(block: &[u8], n: u64) -> io::Result<std::path::PathBuf> {
    let dir = super::output::spool_dir();
    let path = dir.join(format!("{}{n}", cat_prefix()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("--cat: {}: {e}", path.display())))?;
    io::Write::write_all(&mut file, block)?;
    Ok(path)
}

/// Makes the named pipe for `--fifo` (job `n`'s, beside `--cat`'s files);
/// its path. The job's `{}` names it; the block is written into it once
/// the job opens it, and it is removed once the job is done.
pub(crate) fn fifo_file(n: u64) -> io::Result<std::path::PathBuf> {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    let path = super::output::spool_dir().join(format!("{}{n}", cat_prefix()));
    mknodat(CWD, &path, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0)
        .map_err(|e| io::Error::new(e.kind(), format!("--fifo: {}: {e}", path.display())))?;
    Ok(path)
}

/// Removes the `--cat` files of this run still there (their jobs never ran).
pub(crate) fn remove_cat_files() {
    let dir = super::output::spool_dir();
    let prefix = cat_prefix();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// `--block`'s size: a number with an optional suffix, `k` 1000 and `K`
/// 1024 (and so on up the scale), as GNU parallel reads it.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("`{s}` is not a size (e.g. 10k, 1M, 1048576)");
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let size = (n * scale).round();
    if !(1.0..=f64::from(u32::MAX) * 16.0).contains(&size) {
        return Err(bad());
    }
    Ok(size as usize)
}

/// Backslash escapes in `--recstart`/`--recend`: `\n`, `\t`, `\r`, `\0`
/// and `\\`.
pub(crate) fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(other) => out.extend_from_slice(&[b'\\', other]),
            None => out.push(b'\\'),
        }
    }
    out
}

/// The blocks of a reader.
pub(crate) struct Blocks<R> {
    reader: R,
    cut: Cut,
    /// Read and not yet handed out.
    carry: Vec<u8>,
    eof: bool,
    /// The header, once taken (`--header`).
    header: Option<Vec<u8>>,
}

impl<R: Read> Blocks<R> {
    pub(crate) fn new(reader: R, cut: Cut) -> Self {
        Blocks {
            reader,
            cut,
            carry: Vec::new(),
            eof: false,
            header: None,
        }
    }

    /// Takes the header from the start of the input, once.
    fn take_header(&mut self) -> io::Result<()> {
        let Some(spec) = self.cut.header.clone() else {
            return Ok(());
        };
        if self.header.is_some() {
            return Ok(());
        }
        let mut want = 64 << 10;
        loop {
            self.fill(want)?;
            if let Some(len) = spec.len(&self.carry, self.eof || self.carry.len() < want) {
                let rest = self.carry.split_off(len);
                self.header = Some(std::mem::replace(&mut self.carry, rest));
                return Ok(());
            }
            want = want.saturating_mul(2);
        }
    }

    /// Where the `n`th record boundary in `carry` is (not at 0), if there
    /// are that many.
    fn nth_boundary(&self, n: usize) -> Option<usize> {
        let (end, start) = (&self.cut.recend, &self.cut.recstart);
        (1..=self.carry.len())
            .filter(|&p| {
                self.carry[..p].ends_with(end)
                    && (start.is_empty() || self.carry[p..].starts_with(start))
            })
            .nth(n.max(1) - 1)
    }

    /// The next block of `n` records.
    fn next_records(&mut self, n: usize) -> io::Result<Option<Vec<u8>>> {
        let mut want = self.cut.block.max(4096);
        loop {
            self.fill(want)?;
            if self.carry.is_empty() {
                return Ok(None);
            }
            // With `--recstart`, a boundary is before a record's start, so
            // one at the very end of what was read is not known yet.
            let known = |p: usize| p < self.carry.len() || self.cut.recstart.is_empty();
            match self.nth_boundary(n) {
                Some(p) if known(p) || self.eof => {
                    let rest = self.carry.split_off(p);
                    return Ok(Some(std::mem::replace(&mut self.carry, rest)));
                }
                _ if self.eof => return Ok(Some(std::mem::take(&mut self.carry))),
                _ => want = want.saturating_mul(2),
            }
        }
    }

    /// `block` with the header before it, if there is one.
    fn with_header(&self, block: Vec<u8>) -> Arc<Vec<u8>> {
        match &self.header {
            Some(h) if !h.is_empty() => {
                let mut out = Vec::with_capacity(h.len() + block.len());
                out.extend_from_slice(h);
                out.extend_from_slice(&block);
                Arc::new(out)
            }
            _ => Arc::new(block),
        }
    }

    /// Reads until `carry` holds `want` bytes or the input ends, straight
    /// into `carry`.
    fn fill(&mut self, want: usize) -> io::Result<()> {
        self.carry.reserve(want.saturating_sub(self.carry.len()));
        while !self.eof && self.carry.len() < want {
            let room = (want - self.carry.len()) as u64;
            match (&mut self.reader).take(room).read_to_end(&mut self.carry) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The last record boundary in `carry[..limit]` (not at 0).
    fn boundary(&self, limit: usize) -> Option<usize> {
        let (end, start) = (&self.cut.recend, &self.cut.recstart);
        let limit = limit.min(self.carry.len());
        (1..=limit).rev().find(|&p| {
            self.carry[..p].ends_with(end)
                && (start.is_empty() || self.carry[p..].starts_with(start))
        })
    }
}

impl<R: Read> Iterator for Blocks<R> {
    type Item = io::Result<Arc<Vec<u8>>>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.take_header() {
            return Some(Err(e));
        }
        if let Some(n) = self.cut.records {
            return self
                .next_records(n)
                .map(|b| b.map(|b| self.with_header(b)))
                .transpose();
        }
        let mut block = self.cut.block.max(1);
        loop {
            if let Err(e) = self.fill(block + self.cut.recstart.len()) {
                return Some(Err(e));
            }
            if self.carry.is_empty() {
                return None;
            }
            let cut_at = if self.eof && self.carry.len() <= block {
                Some(self.carry.len())
            } else {
                self.boundary(block)
            };
            match cut_at {
                Some(p) => {
                    let rest = self.carry.split_off(p);
                    let out = std::mem::replace(&mut self.carry, rest);
                    return Some(Ok(self.with_header(out)));
                }
                None if self.eof => {
                    // No boundary left: the rest is one record.
                    let out = std::mem::take(&mut self.carry);
                    return Some(Ok(self.with_header(out)));
                }
                None if block >= MOST_BLOCK => {
                    // A record past the largest block: what is read goes
                    // as one block rather than waiting for a boundary.
                    let out = std::mem::take(&mut self.carry);
                    return Some(Ok(self.with_header(out)));
                }
                None => {
                    // As GNU parallel: the block size grows for good, by
                    // 30% and a byte, up to 2 GiB less one.
                    let grown = ((block as f64 * 1.3 + 1.0).ceil() as usize).min(MOST_BLOCK);
                    eprintln!(
                        "parpool: Warning: A record was longer than {block}. Increasing to \
                         --blocksize {grown}."
                    );
                    block = grown;
                    self.cut.block = grown;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(input: &[u8], cut: Cut) -> Vec<Vec<u8>> {
        Blocks::new(input, cut)
            .map(|b| b.unwrap().to_vec())
            .collect()
    }

    #[test]
    fn blocks_end_at_the_last_record_end_within_the_size() {
        let input: Vec<u8> = (1..=20)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let cut = Cut {
            block: 10,
            ..Cut::default()
        };
        let lines: Vec<usize> = blocks(&input, cut)
            .iter()
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .collect();
        // As GNU parallel cuts `seq 20` with --block 10.
        assert_eq!(lines, [5, 4, 3, 3, 3, 2]);
        assert_eq!(blocks(b"", Cut::default()), Vec::<Vec<u8>>::new());
        assert_eq!(
            blocks(b"no newline", Cut::default()),
            [b"no newline".to_vec()]
        );
    }

    #[test]
    fn records_may_start_with_a_marker_and_long_ones_grow_the_block() {
        let cut = Cut {
            block: 5,
            recstart: b"HDR".to_vec(),
            recend: b"\n".to_vec(),
            ..Cut::default()
        };
        let got = blocks(b"HDRa\n1\nHDRb\n2\n3\n", cut);
        assert_eq!(got, [b"HDRa\n1\n".to_vec(), b"HDRb\n2\n3\n".to_vec()]);
    }

    #[test]
    fn n_records_a_block_with_the_header_before_each() {
        let lines = |blocks: Vec<Vec<u8>>| -> Vec<String> {
            blocks
                .into_iter()
                .map(|b| String::from_utf8(b).unwrap())
                .collect()
        };
        // As GNU parallel: seq 7 | parallel --pipe -N3
        let cut = Cut {
            records: Some(3),
            ..Cut::default()
        };
        assert_eq!(
            lines(blocks(b"1\n2\n3\n4\n5\n6\n7\n", cut)),
            ["1\n2\n3\n", "4\n5\n6\n", "7\n"]
        );
        // FASTA records: --recstart '>' -N1
        let cut = Cut {
            records: Some(1),
            recstart: b">".to_vec(),
            recend: Vec::new(),
            ..Cut::default()
        };
        assert_eq!(
            lines(blocks(b">a\nAC\nGT\n>b\nTT\n>c\nGG\n", cut)),
            [">a\nAC\nGT\n", ">b\nTT\n", ">c\nGG\n"]
        );
        // --header : -N2
        let cut = Cut {
            records: Some(2),
            header: Some(Header::parse(":").unwrap()),
            ..Cut::default()
        };
        assert_eq!(
            lines(blocks(b"h\n1\n2\n3\n4\n5\n", cut)),
            ["h\n1\n2\n", "h\n3\n4\n", "h\n5\n"]
        );
        // --header with a pattern: two lines.
        let cut = Cut {
            header: Some(Header::parse("(.*\n){2}").unwrap()),
            ..Cut::default()
        };
        assert_eq!(lines(blocks(b"h\n1\n2\n", cut)), ["h\n1\n2\n"]);
        // A header and no more input: no block.
        let cut = Cut {
            header: Some(Header::FirstLine),
            ..Cut::default()
        };
        assert!(blocks(b"h\n", cut).is_empty());
    }

    #[test]
    fn sizes_and_escapes_read_as_gnu_parallel_s() {
        assert_eq!(parse_size("10k"), Ok(10_000));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2"), Ok(2));
        assert!(parse_size("x").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(unescape("0\\n"), b"0\n");
        assert_eq!(unescape("a\\tb\\\\"), b"a\tb\\");
    }
}
