//! `--joblog` in GNU parallel's format, and reading it back for
//! `--resume` and `--resume-failed`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::UNIX_EPOCH;

use anyhow::Context;

use super::exec::Outcome;

const HEADER: &str = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand";

/// Which jobs a resumed run skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Every job in the log (`--resume`).
    Logged,
    /// Jobs the log shows succeeded (`--resume-failed`).
    Succeeded,
}

/// The job numbers a resumed run skips, from the log at `path` (none if
/// the log does not exist yet).
pub(crate) fn skipped(path: &Path, resume: Resume) -> anyhow::Result<HashSet<u64>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the joblog {}", path.display()));
        }
    };
    let mut skip = HashSet::new();
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.with_context(|| format!("cannot read the joblog {}", path.display()))?;
        if n == 0 || line.is_empty() {
            continue;
        }
        let bad = || {
            anyhow::anyhow!(
                "{} line {}: not a joblog line (Seq, Host, Starttime, JobRuntime, Send, \
                 Receive, Exitval, Signal, Command separated by tabs)",
                path.display(),
                n + 1
            )
        };
        let fields: Vec<&[u8]> = line.splitn(9, |&b| b == b'\t').collect();
        if fields.len() != 9 {
            return Err(bad());
        }
        let number = |i: usize| -> anyhow::Result<i64> {
            std::str::from_utf8(fields[i])
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(bad)
        };
        let seq = u64::try_from(number(0)?).map_err(|_| bad())?;
        let ok = number(6)? == 0 && number(7)? == 0;
        if resume == Resume::Logged || ok {
            skip.insert(seq);
        }
    }
    Ok(skip)
}

/// Where `--joblog` writes: `-` is standard output, `+FILE` appends to
/// FILE, anything else is a file (started afresh unless resuming).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Stdout,
    File {
        path: std::path::PathBuf,
        append: bool,
    },
}

impl Target {
    pub(crate) fn parse(spec: &std::path::Path) -> Target {
        use std::os::unix::ffi::OsStrExt;
        let bytes = spec.as_os_str().as_bytes();
        match bytes {
            b"-" => Target::Stdout,
            [b'+', rest @ ..] if !rest.is_empty() => Target::File {
                path: std::ffi::OsStr::from_bytes(rest).into(),
                append: true,
            },
            _ => Target::File {
                path: spec.to_owned(),
                append: false,
            },
        }
    }

    /// The file read back by `--resume`, if any.
    pub(crate) fn path(&self) -> Option<&Path> {
        match self {
            Target::Stdout => None,
            Target::File { path, .. } => Some(path),
        }
    }
}

/// Opens the log: a new one with its header, or, when appending or
/// resuming, the existing one (a header only if it is empty).
pub(crate) fn open(target: &Target, resuming: bool) -> anyhow::Result<Box<dyn Write + Send>> {
    let (path, append) = match target {
        Target::Stdout => {
            let mut out: Box<dyn Write + Send> = Box::new(io::stdout());
            writeln!(out, "{HEADER}")?;
            out.flush()?;
            return Ok(out);
        }
        Target::File { path, append } => (path, *append || resuming),
    };
    let context = || format!("cannot write the joblog {}", path.display());
    let file = if append {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(context)?
    } else {
        File::create(path).with_context(context)?
    };
    let fresh = file.metadata().with_context(context)?.len() == 0;
    let mut log = BufWriter::new(file);
    if fresh {
        writeln!(log, "{HEADER}")?;
        log.flush()?;
    }
    Ok(Box::new(log))
}

/// One joblog line, as GNU parallel writes it.
pub(crate) fn write(log: &mut dyn Write, o: &Outcome) -> io::Result<()> {
    let start = o
        .started
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    write!(
        log,
        "{}\t{}\t{:14.3}\t{:10.3}\t0\t{}\t{}\t{}\t",
        o.seq,
        o.host.as_deref().unwrap_or(":"),
        start,
        o.runtime.as_secs_f64(),
        o.received,
        o.exit,
        o.signal
    )?;
    log.write_all(&o.command)?;
    log.write_all(b"\n")?;
    log.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_log_says_was_done() {
        let dir = std::env::temp_dir().join(format!("parpool-joblog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        std::fs::write(
            &path,
            format!("{HEADER}\n1\t:\t1.0\t0.1\t0\t0\t0\t0\ttrue\n2\t:\t1.0\t0.1\t0\t0\t1\t0\tfalse\n3\t:\t1.0\t0.1\t0\t0\t-1\t9\tsleep 9\n"),
        )
        .unwrap();
        assert_eq!(
            skipped(&path, Resume::Logged).unwrap(),
            HashSet::from([1, 2, 3])
        );
        assert_eq!(
            skipped(&path, Resume::Succeeded).unwrap(),
            HashSet::from([1])
        );
        assert!(
            skipped(&dir.join("absent"), Resume::Logged)
                .unwrap()
                .is_empty()
        );
        std::fs::write(&path, format!("{HEADER}\nnot a line\n")).unwrap();
        let err = skipped(&path, Resume::Logged).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
