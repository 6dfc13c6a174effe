//! `--results`: each job's output saved as GNU parallel saves it: in a
//! tree of directories named by the inputs (`DIR/1/a/2/b/stdout`, the
//! column names with `--header`), or as one table, a row a job (`.csv`,
//! `.tsv`, `.json`; `-.csv` and friends on standard output, which then
//! carries nothing else).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::exec::Outcome;

/// Where the results go.
pub(crate) struct Results {
    kind: Kind,
    /// Each input column's name: its number, or its `--header` name.
    names: Vec<String>,
    /// `--header` was given (the table's value columns are named).
    named: bool,
    /// Values per record (0: a job's values are one record).
    record: usize,
}

enum Kind {
    Tree(PathBuf),
    Table {
        out: Box<dyn Write + Send>,
        format: Format,
        header_written: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Separated(u8),
    Json,
}

impl Results {
    /// `--results SPEC`, with the inputs' column `names` (`--header`).
    pub(crate) fn open(
        spec: &Path,
        names: &[String],
        named: bool,
        record: usize,
    ) -> anyhow::Result<Results> {
        let text = spec.as_os_str().as_bytes().to_ascii_lowercase();
        let format = if text.ends_with(b".csv") {
            Some(Format::Separated(b','))
        } else if text.ends_with(b".tsv") {
            Some(Format::Separated(b'\t'))
        } else if text.ends_with(b".json") {
            Some(Format::Json)
        } else {
            None
        };
        let kind = match format {
            None => Kind::Tree(spec.to_owned()),
            Some(format) => {
                let out: Box<dyn Write + Send> = if spec.as_os_str().as_bytes().starts_with(b"-.") {
                    Box::new(io::stdout())
                } else {
                    let file = File::create(spec).map_err(|e| {
                        anyhow::anyhow!("Cannot open results file `{}': {e}.", spec.display())
                    })?;
                    Box::new(BufWriter::new(file))
                };
                Kind::Table {
                    out,
                    format,
                    header_written: false,
                }
            }
        };
        Ok(Results {
            kind,
            names: names.to_vec(),
            named,
            record,
        })
    }

    fn name(&self, column: usize) -> String {
        self.names
            .get(column)
            .cloned()
            .unwrap_or_else(|| (column + 1).to_string())
    }

    /// Saves one job's outcome.
    pub(crate) fn save(&mut self, o: &mut Outcome) -> io::Result<()> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        match &self.kind {
            Kind::Tree(dir) => {
                let path = dir.join(self.dirname(&o.values));
                std::fs::create_dir_all(&path)?;
                let mut file = File::create(path.join("stdout"))?;
                o.stdout.write_to(&mut file, None)?;
                let mut file = File::create(path.join("stderr"))?;
                o.stderr.write_to(&mut file, None)?;
                return std::fs::write(path.join("seq"), o.seq.to_string());
            }
            Kind::Table { .. } => {
                o.stdout.write_to(&mut stdout, None)?;
                o.stderr.write_to(&mut stderr, None)?;
            }
        }
        let columns: Vec<String> = if self.named {
            (0..o.values.len()).map(|i| self.name(i)).collect()
        } else {
            (1..=o.values.len()).map(|i| format!("V{i}")).collect()
        };
        let Kind::Table {
            out,
            format,
            header_written,
        } = &mut self.kind
        else {
            return Ok(());
        };
        let start = o
            .started
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        let fixed: [Vec<u8>; 8] = [
            o.seq.to_string().into_bytes(),
            o.host.clone().unwrap_or_else(|| ":".into()).into_bytes(),
            format!("{start:.3}").into_bytes(),
            format!("{:.3}", o.runtime.as_secs_f64()).into_bytes(),
            b"0".to_vec(),
            o.received.to_string().into_bytes(),
            o.exit.to_string().into_bytes(),
            o.signal.to_string().into_bytes(),
        ];
        match *format {
            Format::Separated(sep) => {
                if !*header_written {
                    let mut names: Vec<Vec<u8>> = [
                        "Seq",
                        "Host",
                        "Starttime",
                        "JobRuntime",
                        "Send",
                        "Receive",
                        "Exitval",
                        "Signal",
                        "Command",
                    ]
                    .iter()
                    .map(|s| s.as_bytes().to_vec())
                    .collect();
                    names.extend(columns.iter().map(|c| c.as_bytes().to_vec()));
                    names.push(b"Stdout".to_vec());
                    names.push(b"Stderr".to_vec());
                    write_row(out, sep, &names)?;
                    *header_written = true;
                }
                let mut row: Vec<Vec<u8>> = fixed.to_vec();
                row.push(o.command.clone());
                row.extend(o.values.iter().map(|v| v.as_bytes().to_vec()));
                row.push(stdout);
                row.push(stderr);
                write_row(out, sep, &row)?;
            }
            Format::Json => {
                let json = |b: &[u8]| json_quote(b);
                let values: Vec<String> = o
                    .values
                    .iter()
                    .map(|v| format!("\"{}\"", json(v.as_bytes())))
                    .collect();
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                writeln!(
                    out,
                    "{{ \"Seq\": {}, \"Host\": \"{}\", \"Starttime\": {}, \"JobRuntime\": {}, \
                     \"Send\": {}, \"Receive\": {}, \"Exitval\": {}, \"Signal\": {}, \
                     \"Command\": \"{}\", \"V\": [ {} ], \"Stdout\": \"{}\", \"Stderr\": \"{}\" }}",
                    text(&fixed[0]),
                    json(&fixed[1]),
                    text(&fixed[2]),
                    text(&fixed[3]),
                    text(&fixed[4]),
                    text(&fixed[5]),
                    text(&fixed[6]),
                    text(&fixed[7]),
                    json(&o.command),
                    values.join(","),
                    json(&stdout),
                    json(&stderr),
                )?;
            }
        }
        out.flush()
    }

    /// The job's directory under the tree: for each record, its columns
    /// (sorted by name, numbers first, as GNU parallel sorts them) as
    /// name/value pairs, `\`, tab, NUL and `/` in values escaped.
    fn dirname(&self, values: &[OsString]) -> PathBuf {
        let per = if self.record == 0 {
            values.len().max(1)
        } else {
            self.record
        };
        let mut path = PathBuf::new();
        for record in values.chunks(per) {
            let mut columns: Vec<usize> = (0..record.len()).collect();
            columns.sort_by(|&a, &b| {
                let (na, nb) = (self.name(a), self.name(b));
                let num = |s: &str| s.trim().parse::<f64>().unwrap_or(0.0);
                num(&na)
                    .partial_cmp(&num(&nb))
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then_with(|| na.cmp(&nb))
            });
            for c in columns {
                path.push(self.name(c));
                let mut escaped = Vec::new();
                for &b in record[c].as_bytes() {
                    match b {
                        b'\\' => escaped.extend_from_slice(b"\\\\"),
                        b'\t' => escaped.extend_from_slice(b"\\t"),
                        0 => escaped.extend_from_slice(b"\\0"),
                        b'/' => escaped.extend_from_slice(b"\\_"),
                        _ => escaped.push(b),
                    }
                }
                path.push(std::ffi::OsStr::from_bytes(&escaped));
            }
        }
        path
    }
}

/// One row, each field quoted as GNU parallel quotes it: when it holds a
/// quote (doubled), white space, the separator or a NUL.
fn write_row(out: &mut dyn Write, sep: u8, fields: &[Vec<u8>]) -> io::Result<()> {
    let mut line = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(sep);
        }
        let quote = field
            .iter()
            .any(|&b| b == b'"' || b == sep || b == 0 || b.is_ascii_whitespace() || b == 0x0b);
        if quote {
            line.push(b'"');
            for &b in field {
                if b == b'"' {
                    line.push(b'"');
                }
                line.push(b);
            }
            line.push(b'"');
        } else {
            line.extend_from_slice(field);
        }
    }
    line.push(b'\n');
    out.write_all(&line)
}

/// A JSON string's inside, as GNU parallel writes it (control bytes as
/// `\u00XX`).
fn json_quote(bytes: &[u8]) -> String {
    let mut out = String::new();
    for ch in String::from_utf8_lossy(bytes).chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}
