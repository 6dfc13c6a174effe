//! Per-job capture of a worker's standard output and error.
//!
//! With [`WorkerOutput::Capture`](super::WorkerOutput::Capture) the parent
//! gives each worker an anonymous memory file as its stdout (or stderr) and
//! keeps a descriptor of it. Writes never block and never interleave with
//! other workers'. When a job ends, the worker flushes Rust's buffers,
//! takes what the file holds, empties it, and sends it with the job's
//! reply. When a worker dies, the parent reads what its job wrote before
//! the crash from its own descriptor — a crashed job's last words (an
//! `abort` message, a sanitizer report) are kept.

use std::fs::File;
use std::io::{self, Write};

pub(crate) use crate::output::CapturedOutput;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{MemfdFlags, SeekFrom};

/// Environment variable telling a worker which of its streams are
/// capture files: `"1"`, `"2"` or `"12"`.
pub(crate) const CAPTURE_ENV: &str = "PARPOOL_CAPTURE";

/// A new capture file for one stream of one worker.
pub(crate) fn create() -> io::Result<File> {
    let fd = rustix::fs::memfd_create("parpool-output", MemfdFlags::CLOEXEC)?;
    Ok(File::from(fd))
}

/// Takes everything in capture file `fd` (at most `limit` bytes of it; a
/// note says how much was cut) and empties it.
pub(crate) fn drain(fd: BorrowedFd<'_>, limit: u64) -> io::Result<Vec<u8>> {
    let size = rustix::fs::fstat(fd)?.st_size.max(0) as u64;
    if size == 0 {
        return Ok(Vec::new());
    }
    let keep = size.min(limit) as usize;
    let mut out = vec![0u8; keep];
    let mut done = 0;
    while done < keep {
        match rustix::io::pread(fd, &mut out[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    out.truncate(done);
    if size > keep as u64 {
        let _ = write!(
            out,
            "\n[parpool: {} more bytes of output cut]\n",
            size - keep as u64
        );
    }
    rustix::fs::ftruncate(fd, 0)?;
    // The worker's stream and the parent's copy share one file offset.
    rustix::fs::seek(fd, SeekFrom::Start(0))?;
    Ok(out)
}

/// The worker's side: its captured streams.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    stdout: bool,
    stderr: bool,
    limit: u64,
}

impl Streams {
    /// Reads which streams are captured from the environment.
    pub(crate) fn from_env(limit: u64) -> Streams {
        let which = std::env::var(CAPTURE_ENV).unwrap_or_default();
        Streams {
            stdout: which.contains('1'),
            stderr: which.contains('2'),
            limit,
        }
    }

    pub(crate) fn any(&self) -> bool {
        self.stdout || self.stderr
    }

    /// Takes what the job that just ended wrote.
    pub(crate) fn take(&self) -> Option<CapturedOutput> {
        if !self.any() {
            return None;
        }
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        let take = |on: bool, fd: BorrowedFd<'_>| {
            if on {
                drain(fd, self.limit).unwrap_or_else(|e| {
                    format!("[parpool: the captured output could not be read: {e}]\n").into_bytes()
                })
            } else {
                Vec::new()
            }
        };
        Some(CapturedOutput {
            stdout: take(self.stdout, io::stdout().as_fd()),
            stderr: take(self.stderr, io::stderr().as_fd()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_takes_everything_written_and_empties_the_file() {
        let file = create().unwrap();
        (&file).write_all(b"first job\n").unwrap();
        assert_eq!(drain(file.as_fd(), 1 << 20).unwrap(), b"first job\n");
        (&file).write_all(b"second\n").unwrap();
        assert_eq!(drain(file.as_fd(), 1 << 20).unwrap(), b"second\n");
        assert!(drain(file.as_fd(), 1 << 20).unwrap().is_empty());
    }

    #[test]
    fn drain_cuts_at_the_limit_and_says_so() {
        let file = create().unwrap();
        (&file).write_all(&[b'x'; 1000]).unwrap();
        let out = drain(file.as_fd(), 10).unwrap();
        assert!(out.starts_with(b"xxxxxxxxxx\n[parpool: 990 more bytes"));
    }
}
