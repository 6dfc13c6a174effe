//! Running one job: its command line, its process group, its timeout, and
//! its output.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::template::{self, Fill, Word};

/// How the command is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The words are the program and its arguments; no shell.
    Direct,
    /// The words, with input values shell-quoted, are run by `sh -c`.
    Shell,
    /// No command was given: each input is a shell command.
    InputIsCommand,
}

/// The command template and how to run it.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) words: Vec<Word>,
    pub(crate) mode: Mode,
    /// No replacement string takes input: the values are appended.
    pub(crate) append: bool,
    /// The program's path, found in `PATH` once for all jobs when the
    /// program name is the same for every job.
    pub(crate) program: Option<std::path::PathBuf>,
}

impl Plan {
    pub(crate) fn new(words: Vec<Word>, mode: Mode, append: bool) -> Plan {
        let program = match (mode, words.first().map(Vec::as_slice)) {
            (Mode::Direct, Some([template::Piece::Lit(name)])) => find_in_path(name),
            _ => None,
        };
        Plan {
            words,
            mode,
            append,
            program,
        }
    }
}

/// Where `execvp` would find `name`: the first executable file of that name
/// in a `PATH` directory. `None` for names with a slash, or not found (the
/// spawn then searches, and reports what it finds).
fn find_in_path(name: &[u8]) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.is_empty() || name.contains(&b'/') {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(std::ffi::OsStr::from_bytes(name)))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A command ready to start.
#[derive(Debug)]
pub(crate) enum Argv {
    Direct(Vec<OsString>),
    Shell(Vec<u8>),
}

impl Argv {
    /// The command as a shell would read it (for `--dry-run`, joblogs).
    pub(crate) fn display(&self) -> Vec<u8> {
        match self {
            Argv::Direct(words) => {
                let quoted: Vec<Vec<u8>> = words
                    .iter()
                    .map(|w| template::shell_quote(w.as_bytes()))
                    .collect();
                quoted.join(&b' ')
            }
            Argv::Shell(s) => s.clone(),
        }
    }
}

impl Plan {
    pub(crate) fn argv(&self, fill: &Fill<'_>) -> Argv {
        match self.mode {
            Mode::InputIsCommand => {
                let parts: Vec<&[u8]> = fill.args.iter().map(|a| a.as_bytes()).collect();
                Argv::Shell(parts.join(&b' '))
            }
            Mode::Shell => {
                let mut words: Vec<Vec<u8>> = self
                    .words
                    .iter()
                    .map(|w| template::fill_word(w, fill, true))
                    .collect();
                if self.append {
                    words.extend(
                        fill.args
                            .iter()
                            .map(|a| template::shell_quote(a.as_bytes())),
                    );
                }
                Argv::Shell(words.join(&b' '))
            }
            Mode::Direct => {
                let mut words: Vec<OsString> = self
                    .words
                    .iter()
                    .map(|w| template::os(template::fill_word(w, fill, false)))
                    .collect();
                if self.append {
                    words.extend(fill.args.iter().cloned());
                }
                Argv::Direct(words)
            }
        }
    }
}

/// What became of one job.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) seq: u64,
    pub(crate) values: Vec<OsString>,
    pub(crate) command: Vec<u8>,
    pub(crate) started: Option<SystemTime>,
    pub(crate) runtime: Duration,
    pub(crate) exit: i32,
    pub(crate) signal: i32,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    /// Bytes the job wrote, held or passed on (`--line-buffer`).
    pub(crate) received: usize,
    pub(crate) timed_out: bool,
    /// The job never ran: halted or interrupted before it started.
    pub(crate) skipped: bool,
}

impl Outcome {
    pub(crate) fn failed(&self) -> bool {
        !self.skipped && (self.exit != 0 || self.signal != 0)
    }
}

/// How a job's output reaches the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputMode {
    /// Held, then written in one piece when the job ends (the default).
    Group,
    /// Passed on a whole line at a time as the job writes it.
    Lines,
    /// The job writes straight to parpool's own stdout and stderr.
    Ungroup,
}

/// `--tag`'s prefix for a job's output lines: its input and a tab.
pub(crate) fn tag_prefix(values: &[OsString]) -> Vec<u8> {
    let parts: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    let mut p = parts.join(&b' ');
    p.push(b'\t');
    p
}

/// Writes `bytes` to `w`, each line after `prefix` if there is one.
pub(crate) fn write_tagged(
    w: &mut dyn Write,
    prefix: Option<&[u8]>,
    bytes: &[u8],
) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    match prefix {
        None => w.write_all(bytes)?,
        Some(p) => {
            let mut buf = Vec::with_capacity(bytes.len() + p.len() * 4);
            for line in bytes.split_inclusive(|&b| b == b'\n') {
                buf.extend_from_slice(p);
                buf.extend_from_slice(line);
            }
            w.write_all(&buf)?;
        }
    }
    w.flush()
}

/// Settings every job shares.
#[derive(Debug)]
pub(crate) struct Runner {
    pub(crate) plan: Plan,
    pub(crate) output: OutputMode,
    pub(crate) tag: bool,
    /// `--delay`: at least this long between job starts.
    pub(crate) delay: Option<Duration>,
    pub(crate) next_start: Mutex<Option<Instant>>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) tries: u32,
    /// Process groups of running jobs, to kill on a second interrupt or
    /// `--halt now`.
    pub(crate) running: Mutex<HashSet<i32>>,
    /// Set when no new job may start.
    pub(crate) stop: AtomicBool,
    /// Set when running jobs must die too (`--halt now`, a second
    /// interrupt).
    pub(crate) kill: AtomicBool,
}

impl Runner {
    /// Runs job `seq` on `values`, retrying up to `tries` times in all.
    pub(crate) fn run(&self, seq: u64, values: Vec<OsString>, slot: usize) -> Outcome {
        let fill = Fill {
            args: &values,
            seq,
            slot,
        };
        let argv = self.plan.argv(&fill);
        let mut outcome = Outcome {
            seq,
            command: argv.display(),
            ..Outcome::default()
        };
        for _ in 0..self.tries.max(1) {
            if self.stop.load(Ordering::Acquire) {
                outcome.skipped = outcome.started.is_none();
                break;
            }
            self.attempt(&argv, &values, seq, slot, &mut outcome);
            if !outcome.failed() {
                break;
            }
        }
        outcome.values = values;
        outcome
    }

    /// Waits until `--delay` allows the next job to start.
    fn pace(&self) {
        let Some(delay) = self.delay else { return };
        let wait = {
            let mut next = self.next_start.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + delay);
            at - now
        };
        std::thread::sleep(wait);
    }

    fn attempt(&self, argv: &Argv, values: &[OsString], seq: u64, slot: usize, out: &mut Outcome) {
        self.pace();
        let mut cmd = match argv {
            Argv::Direct(words) => {
                let mut c = match &self.plan.program {
                    Some(path) => {
                        let mut c = Command::new(path);
                        c.arg0(&words[0]);
                        c
                    }
                    None => Command::new(&words[0]),
                };
                c.args(&words[1..]);
                c
            }
            Argv::Shell(line) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(template::os(line.clone()));
                c
            }
        };
        cmd.stdin(Stdio::null())
            .env("PARALLEL_SEQ", seq.to_string())
            .env("PARALLEL_JOBSLOT", slot.to_string())
            // Its own process group: a timeout or an interrupt kills the
            // job and everything it started.
            .process_group(0);
        if self.output != OutputMode::Ungroup {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        out.started = Some(SystemTime::now());
        let t0 = Instant::now();
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let program = match argv {
                    Argv::Direct(w) => w[0].to_string_lossy().into_owned(),
                    Argv::Shell(_) => "sh".into(),
                };
                out.stderr = format!("parpool: cannot run `{program}`: {e}\n").into_bytes();
                out.exit = if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                out.runtime = t0.elapsed();
                return;
            }
        };
        let pgid = child.id() as i32;
        self.lock_running().insert(pgid);
        // `kill_all` sets `kill` before it reads the set: if it missed this
        // job, this job sees the flag.
        if self.kill.load(Ordering::SeqCst) {
            kill_group(pgid);
        }
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let timed_out = Arc::new(AtomicBool::new(false));
        let watchdog = self.timeout.map(|limit| {
            let timed_out = timed_out.clone();
            std::thread::spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(limit) {
                    timed_out.store(true, Ordering::Release);
                    kill_group(pgid);
                }
            })
        });
        let result = match self.output {
            OutputMode::Lines => {
                let prefix = self.tag.then(|| tag_prefix(values));
                pass_lines(child, prefix.as_deref())
            }
            OutputMode::Group | OutputMode::Ungroup => child.wait_with_output().map(|o| {
                let received = o.stdout.len() + o.stderr.len();
                (o, received)
            }),
        };
        drop(done_tx);
        if let Some(w) = watchdog {
            let _ = w.join();
        }
        self.lock_running().remove(&pgid);
        out.runtime = t0.elapsed();
        out.timed_out = timed_out.load(Ordering::Acquire);
        match result {
            Ok((o, received)) => {
                out.received = received;
                out.exit = o.status.code().unwrap_or(-1);
                out.signal = o.status.signal().unwrap_or(0);
                if out.signal != 0 {
                    out.exit = -1;
                }
                out.stdout = o.stdout;
                out.stderr = o.stderr;
            }
            Err(e) => {
                out.exit = -1;
                out.stderr = format!("parpool: lost the job: {e}\n").into_bytes();
            }
        }
        if out.timed_out {
            let limit = self.timeout.unwrap_or_default();
            out.stderr.extend_from_slice(
                format!("parpool: job {seq} timed out after {limit:?}\n").as_bytes(),
            );
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops new jobs and kills every running job's process group.
    pub(crate) fn kill_all(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.kill.store(true, Ordering::SeqCst);
        for &pgid in self.lock_running().iter() {
            kill_group(pgid);
        }
    }
}

/// Passes the child's output on a whole line at a time, its stdout and
/// stderr each to parpool's own, and waits for it. Nothing is held: the
/// returned output is empty, with the number of bytes passed on.
fn pass_lines(mut child: Child, prefix: Option<&[u8]>) -> std::io::Result<(Output, usize)> {
    fn relay(from: impl Read, to: &mut dyn Write, prefix: Option<&[u8]>) -> usize {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        let mut total = 0;
        while let Ok(n) = reader.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            total += n;
            let _ = write_tagged(to, prefix, &line);
            line.clear();
        }
        total
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let err_prefix = prefix.map(<[u8]>::to_vec);
    let err_thread = std::thread::spawn(move || {
        stderr.map_or(0, |e| {
            relay(e, &mut std::io::stderr(), err_prefix.as_deref())
        })
    });
    let out_bytes = stdout.map_or(0, |o| relay(o, &mut std::io::stdout(), prefix));
    let err_bytes = err_thread.join().unwrap_or(0);
    let status = child.wait()?;
    let output = Output {
        status,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    Ok((output, out_bytes + err_bytes))
}

/// SIGKILLs process group `pgid`.
fn kill_group(pgid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
