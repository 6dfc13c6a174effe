//! Running one job: its command line, its process group, its timeout, and
//! its output.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
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
    pub(crate) timed_out: bool,
    /// The job never ran: halted or interrupted before it started.
    pub(crate) skipped: bool,
}

impl Outcome {
    pub(crate) fn failed(&self) -> bool {
        !self.skipped && (self.exit != 0 || self.signal != 0)
    }
}

/// Settings every job shares.
#[derive(Debug)]
pub(crate) struct Runner {
    pub(crate) plan: Plan,
    pub(crate) group: bool,
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
            self.attempt(&argv, seq, slot, &mut outcome);
            if !outcome.failed() {
                break;
            }
        }
        outcome.values = values;
        outcome
    }

    fn attempt(&self, argv: &Argv, seq: u64, slot: usize, out: &mut Outcome) {
        let mut cmd = match argv {
            Argv::Direct(words) => {
                let mut c = Command::new(&words[0]);
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
        if self.group {
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
        let result = child.wait_with_output();
        drop(done_tx);
        if let Some(w) = watchdog {
            let _ = w.join();
        }
        self.lock_running().remove(&pgid);
        out.runtime = t0.elapsed();
        out.timed_out = timed_out.load(Ordering::Acquire);
        match result {
            Ok(o) => {
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

/// SIGKILLs process group `pgid`.
fn kill_group(pgid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
