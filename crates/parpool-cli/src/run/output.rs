//! A job's output: read as it comes while the job runs, held in memory up
//! to [`SPOOL_AFTER`] bytes and past that in an unlinked temporary file
//! (so a job printing gigabytes costs disk, not memory, as GNU parallel's
//! spooling does), and ended when the job's process ends, not when the
//! last holder of its pipes lets go (a daemon it leaves behind keeps them
//! open forever).

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, ExitStatus};

use rustix::event::{PollFd, PollFlags, poll};

/// Bytes held in memory before the rest goes to a file.
pub(crate) const SPOOL_AFTER: usize = 1 << 20;

/// Output held for a job.
#[derive(Debug, Default)]
pub(crate) struct Held {
    mem: Vec<u8>,
    file: Option<File>,
    /// `--compress`: what goes to the file goes through this program.
    compressor: Option<(std::process::Child, std::process::ChildStdin)>,
    len: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        // A compressor whose output was never read back: let it end.
        if let Some((mut child, stdin)) = self.compressor.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// `--compress`: the programs that compress spooled output and read it
/// back (each reads stdin and writes stdout, run by `sh -c`).
pub(crate) static COMPRESS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// GNU parallel's choice of compressor: the first of its list on `PATH`,
/// run with `-c -1` (and `-dc` to read back); `cat` where there is none.
pub(crate) fn compression_programs() -> (String, String) {
    const PROGRAMS: &[&str] = &[
        "pzstd", "lbzip2", "pbzip2", "zstd", "pixz", "lz4", "pigz", "lzop", "plzip", "lzip",
        "gzip", "lrz", "pxz", "bzip2", "lzma", "xz", "clzip",
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for p in PROGRAMS {
        if std::env::split_paths(&path).any(|dir| dir.join(p).is_file()) {
            return (format!("{p} -c -1"), format!("{p} -dc"));
        }
    }
    ("cat".into(), "cat".into())
}

/// Starts `program` (through `sh -c`) with its stdin a pipe and its stdout
/// `to`.
fn compressor(
    program: &str,
    to: &File,
) -> io::Result<(std::process::Child, std::process::ChildStdin)> {
    use std::os::unix::process::CommandExt;
    // In a group of its own: a Ctrl-C meant for the jobs spares it.
    let mut child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(program)
        .process_group(0)
        .stdin(std::process::Stdio::piped())
        .stdout(to.try_clone()?)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("--compress-program `{program}`: {e}")))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("the compressor has no stdin"))?;
    Ok((child, stdin))
}

impl Held {
    /// Held bytes from `text` (parpool's own messages).
    pub(crate) fn from_text(text: String) -> Held {
        let mem = text.into_bytes();
        Held {
            len: mem.len() as u64,
            mem,
            file: None,
            compressor: None,
        }
    }

    /// Everything held, read back once; kept in memory after, so it can
    /// still be written (`--sqlworker` stores a job's output, then prints
    /// it).
    pub(crate) fn contents(&mut self) -> io::Result<Vec<u8>> {
        if self.file.is_none() && self.compressor.is_none() {
            return Ok(self.mem.clone());
        }
        let mut all = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        self.write_to(&mut all, None)?;
        *self = Held {
            len: all.len() as u64,
            mem: all.clone(),
            file: None,
            compressor: None,
        };
        Ok(all)
    }

    /// How many bytes are held.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `bytes`, spilling to a file past [`SPOOL_AFTER`].
    pub(crate) fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.len += bytes.len() as u64;
        if self.file.is_none() && self.mem.len() + bytes.len() <= SPOOL_AFTER {
            self.mem.extend_from_slice(bytes);
            return Ok(());
        }
        if self.file.is_none() {
            let mut file = spool_file()?;
            match COMPRESS.get() {
                Some((program, _)) => {
                    let (child, mut stdin) = compressor(program, &file)?;
                    stdin.write_all(&self.mem)?;
                    self.compressor = Some((child, stdin));
                }
                None => file.write_all(&self.mem)?,
            }
            self.mem = Vec::new();
            self.file = Some(file);
        }
        match (self.compressor.as_mut(), self.file.as_mut()) {
            (Some((_, stdin)), _) => stdin.write_all(bytes),
            (None, Some(file)) => file.write_all(bytes),
            (None, None) => Ok(()),
        }
    }

    /// Writes everything held to `w`, each line after `prefix` if there
    /// is one; a file is read back in pieces.
    pub(crate) fn write_to(&mut self, w: &mut dyn Write, prefix: Option<&[u8]>) -> io::Result<()> {
        let mut tagger = Tagger {
            prefix,
            at_line_start: true,
        };
        if let Some((mut child, stdin)) = self.compressor.take() {
            use std::os::unix::process::CommandExt;
            // All of it compressed into the file; read back through the
            // decompressor.
            drop(stdin);
            let status = child.wait()?;
            if !status.success() {
                return Err(io::Error::other(format!(
                    "the --compress-program failed: {status}"
                )));
            }
            let file = self
                .file
                .as_mut()
                .ok_or_else(|| io::Error::other("no spool file"))?;
            file.rewind()?;
            let program = COMPRESS.get().map_or("cat", |(_, d)| d.as_str());
            let mut child = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(program)
                .process_group(0)
                .stdin(file.try_clone()?)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("--decompress-program `{program}`: {e}"))
                })?;
            let mut out = child
                .stdout
                .take()
                .ok_or_else(|| io::Error::other("no stdout"))?;
            let mut buf = vec![0; 256 << 10];
            loop {
                let n = out.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                tagger.write(w, &buf[..n])?;
            }
            let status = child.wait()?;
            if !status.success() {
                return Err(io::Error::other(format!(
                    "the --decompress-program failed: {status}"
                )));
            }
            return w.flush();
        }
        match self.file.as_mut() {
            None => tagger.write(w, &self.mem)?,
            Some(file) => {
                file.rewind()?;
                let mut buf = vec![0; 256 << 10];
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    tagger.write(w, &buf[..n])?;
                }
            }
        }
        w.flush()
    }

    /// The bytes held in memory (all of them unless spooled).
    #[cfg(test)]
    pub(crate) fn in_memory(&self) -> &[u8] {
        &self.mem
    }
}

/// Where spool files go: `--tmpdir`, else `$TMPDIR` (or `/tmp`).
pub(crate) static SPOOL_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// The directory for parpool's temporary files: `--tmpdir`, else
/// `$TMPDIR` (or `/tmp`).
pub(crate) fn spool_dir() -> std::path::PathBuf {
    SPOOL_DIR.get().cloned().unwrap_or_else(std::env::temp_dir)
}

/// An unlinked temporary file in the spool directory.
fn spool_file() -> io::Result<File> {
    let dir = spool_dir();
    for attempt in 0..100u32 {
        let path = dir.join(format!(
            "parpool-spool-{}-{}-{attempt}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free name for a spool file"))
}

/// Puts a prefix before each line, across writes.
struct Tagger<'a> {
    prefix: Option<&'a [u8]>,
    at_line_start: bool,
}

impl Tagger<'_> {
    fn write(&mut self, w: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
        let Some(prefix) = self.prefix else {
            return w.write_all(bytes);
        };
        let mut buf = Vec::with_capacity(bytes.len() + prefix.len() * 4);
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            if self.at_line_start {
                buf.extend_from_slice(prefix);
            }
            buf.extend_from_slice(line);
            self.at_line_start = line.ends_with(b"\n");
        }
        w.write_all(&buf)
    }
}

/// Reads the child's stdout and stderr into [`Held`] while it runs, and
/// reaps it. Once the child has exited, what it wrote is read (it is all
/// in the pipes by then) and reading stops, whoever else holds the pipes.
pub(crate) fn collect(child: &mut Child) -> io::Result<(ExitStatus, Held, Held)> {
    let (mut held_out, mut held_err) = (Held::default(), Held::default());
    let status = pump(child, |stream, bytes| match stream {
        Stream::Out => held_out.push(bytes),
        Stream::Err => held_err.push(bytes),
    })?;
    Ok((status, held_out, held_err))
}

/// Passes the child's output on a whole line at a time (`--line-buffer`),
/// stdout to `out` and stderr to `err`, each line after `prefix`; reaps
/// the child as [`collect`] does. Returns its status and the bytes it
/// wrote to stdout. An error writing (the reader went away) ends it, the
/// child still running: the caller stops and reaps it.
pub(crate) fn relay_lines(
    child: &mut Child,
    out: &mut dyn Write,
    err: &mut dyn Write,
    prefix: Option<&[u8]>,
) -> io::Result<(ExitStatus, u64)> {
    let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut received = 0u64;
    let status = pump(child, |stream, bytes| {
        let (i, to): (usize, &mut dyn Write) = match stream {
            Stream::Out => {
                received += bytes.len() as u64;
                (0, &mut *out)
            }
            Stream::Err => (1, &mut *err),
        };
        partial[i].extend_from_slice(bytes);
        if let Some(end) = partial[i].iter().rposition(|&b| b == b'\n') {
            let rest = partial[i].split_off(end + 1);
            let lines = std::mem::replace(&mut partial[i], rest);
            let mut tagger = Tagger {
                prefix,
                at_line_start: true,
            };
            tagger.write(to, &lines)?;
            to.flush()?;
        }
        Ok(())
    })?;
    // What is left is a last line without its newline.
    let tail = |to: &mut dyn Write, rest: &[u8]| -> io::Result<()> {
        if rest.is_empty() {
            return Ok(());
        }
        let mut tagger = Tagger {
            prefix,
            at_line_start: true,
        };
        tagger.write(to, rest)?;
        to.flush()
    };
    tail(out, &partial[0])?;
    tail(err, &partial[1])?;
    Ok((status, received))
}

/// `-k` with `--line-buffer`: a job's lines pass on at once while it is
/// the oldest job not yet reported (`turn` has reached `order`), and are
/// held until then (held lines already carry their tag).
pub(crate) struct InTurn<'a> {
    pub(crate) turn: &'a std::sync::atomic::AtomicU64,
    pub(crate) order: u64,
    pub(crate) to: &'a mut dyn Write,
    pub(crate) held: Held,
}

impl InTurn<'_> {
    fn mine(&self) -> bool {
        self.turn.load(std::sync::atomic::Ordering::Acquire) == self.order
    }
}

impl Write for InTurn<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if !self.mine() {
            self.held.push(bytes)?;
            return Ok(bytes.len());
        }
        if self.held.len() > 0 {
            std::mem::take(&mut self.held).write_to(self.to, None)?;
        }
        self.to.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.mine() { self.to.flush() } else { Ok(()) }
    }
}

/// Which of a job's streams bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// Reads the child's stdout and stderr as they come, handing each piece
/// to `sink`, until the child exits (then what is in the pipes is read,
/// and reading stops), and reaps it. An error from `sink` is returned at
/// once, the child still running: the caller stops and reaps it.
fn pump(
    child: &mut Child,
    mut sink: impl FnMut(Stream, &[u8]) -> io::Result<()>,
) -> io::Result<ExitStatus> {
    let mut out = child.stdout.take().map(OwnedFd::from);
    let mut err = child.stderr.take().map(OwnedFd::from);
    for fd in out.iter().chain(err.iter()) {
        rustix::io::ioctl_fionbio(fd, true)?;
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32)
        .ok_or_else(|| io::Error::other("the job has no pid"))?;
    // Readable once the child exits; without pidfds (Linux < 5.3), the
    // pipes' end is the signal.
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok();
    // A quarter of a default pipe a read: two running jobs stay small,
    // for few more reads.
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let mut fds = Vec::with_capacity(3);
        for fd in [out.as_ref(), err.as_ref()].into_iter().flatten() {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        let pid_at = fds.len();
        if let Some(p) = pidfd.as_ref() {
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        if fds.is_empty() {
            break;
        }
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let exited = match fds.get(pid_at) {
            Some(p) if pidfd.is_some() => !p.revents().is_empty(),
            _ => false,
        };
        drop(fds);
        drain(&mut out, Stream::Out, &mut sink, &mut buf)?;
        drain(&mut err, Stream::Err, &mut sink, &mut buf)?;
        if exited || (pidfd.is_none() && out.is_none() && err.is_none()) {
            // Everything the job wrote is in the pipes now: what the
            // drains above left is read here.
            drain(&mut out, Stream::Out, &mut sink, &mut buf)?;
            drain(&mut err, Stream::Err, &mut sink, &mut buf)?;
            break;
        }
    }
    child.wait()
}

/// Reads what `fd` has without blocking into `sink`; closes it at its end.
fn drain(
    fd: &mut Option<OwnedFd>,
    stream: Stream,
    sink: &mut impl FnMut(Stream, &[u8]) -> io::Result<()>,
    buf: &mut [u8],
) -> io::Result<()> {
    let Some(f) = fd.as_ref() else {
        return Ok(());
    };
    loop {
        match rustix::io::read(f.as_fd(), &mut *buf) {
            Ok(0) => {
                *fd = None;
                return Ok(());
            }
            Ok(n) => sink(stream, &buf[..n])?,
            Err(rustix::io::Errno::AGAIN) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn output_past_the_threshold_goes_to_a_file_and_comes_back_whole() {
        let mut held = Held::default();
        let line = b"0123456789abcdef\n";
        let mut want = Vec::new();
        while want.len() < SPOOL_AFTER * 3 {
            held.push(line).unwrap();
            want.extend_from_slice(line);
        }
        assert!(held.file.is_some());
        assert!(held.in_memory().is_empty());
        assert_eq!(held.len(), want.len() as u64);
        let mut back = Vec::new();
        held.write_to(&mut back, None).unwrap();
        assert_eq!(back, want);
        let mut tagged = Vec::new();
        held.write_to(&mut tagged, Some(b"t\t")).unwrap();
        assert_eq!(tagged.len(), want.len() + 2 * (want.len() / line.len()));
        assert!(tagged.starts_with(b"t\t0123"));
    }

    #[test]
    fn a_daemon_holding_the_pipes_does_not_hold_the_job() {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("echo before; (sleep 30; echo late) & echo after")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let (status, out, _) = collect(&mut child).unwrap();
        assert!(status.success());
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        assert_eq!(out.in_memory(), b"before\nafter\n");
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
}
