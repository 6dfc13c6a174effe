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

use super::output::{self, Held};
use super::pipepart::Feed;
pub(crate) use super::plan::{Argv, Mode, Plan, shell};
pub(crate) use super::stop::{TermSeq, default_termseq, parse_termseq};
use super::stop::{group_gone_within, kill_group, terminate};
use super::template::{self, Fill, Word};

/// The feeder's result once the job has ended; a feeder still writing
/// after a grace period (a process the job left behind holds its stdin
/// open and does not read) is left to itself, so the job's worker goes on.
fn finish_feeding(
    feeder: std::thread::JoinHandle<std::io::Result<()>>,
) -> Option<std::thread::Result<std::io::Result<()>>> {
    let deadline = Instant::now() + Duration::from_millis(200);
    while !feeder.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Some(feeder.join())
}

/// What became of one job.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) seq: u64,
    /// Its place among the jobs started (0-based).
    pub(crate) order: u64,
    pub(crate) values: Vec<OsString>,
    pub(crate) command: Vec<u8>,
    pub(crate) started: Option<SystemTime>,
    pub(crate) runtime: Duration,
    pub(crate) exit: i32,
    pub(crate) signal: i32,
    pub(crate) stdout: Held,
    pub(crate) stderr: Held,
    /// What prefixes each output line (`--tag`, `--tagstring`).
    pub(crate) tag: Option<Vec<u8>>,
    /// The machine it ran on, if not this one (the joblog's Host).
    pub(crate) host: Option<String>,
    /// Bytes the job wrote to stdout, held or passed on (the joblog's
    /// Receive column, as GNU parallel counts it).
    pub(crate) received: u64,
    pub(crate) timed_out: bool,
    /// The job never ran: halted or interrupted before it started.
    pub(crate) skipped: bool,
}

impl Outcome {
    /// A job that could not start: exit 255, `why` on its stderr.
    pub(crate) fn not_started(seq: u64, values: Vec<OsString>, why: String) -> Outcome {
        Outcome {
            seq,
            values,
            started: Some(SystemTime::now()),
            exit: 255,
            stderr: Held::from_text(format!("parpool: {why}\n")),
            ..Outcome::default()
        }
    }

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

/// `--timeout`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Timeout {
    After(Duration),
    /// A percentage of the median run time of the jobs that succeeded so
    /// far (none yet: no limit), as GNU parallel's.
    Percent(f64),
}

/// What prefixes a job's output lines.
#[derive(Debug)]
pub(crate) enum Tag {
    None,
    /// `--tag`: the job's input.
    Values,
    /// `--tagstring`: a template filled per job.
    Template(Word),
}

/// `--tag`'s prefix for a job's output lines: its input and a tab.
pub(crate) fn tag_prefix(values: &[OsString]) -> Vec<u8> {
    let parts: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    let mut p = parts.join(&b' ');
    p.push(b'\t');
    p
}

/// Settings every job shares.
#[derive(Debug)]
pub(crate) struct Runner {
    pub(crate) plan: Plan,
    pub(crate) output: OutputMode,
    pub(crate) tag: Tag,
    /// `--fifo`: a job's block goes through the named pipe its first
    /// value names, not its stdin.
    pub(crate) fifo: bool,
    /// `--termseq`: how a job past its timeout, or every job when the run
    /// is stopped, is killed.
    pub(crate) termseq: TermSeq,
    /// `--memfree`, `--load`, `--noswap`.
    pub(crate) limits: super::limits::Limits,
    /// `--delay`: at least this long between job starts.
    pub(crate) delay: Option<Duration>,
    /// `--nice N`: local jobs run at niceness N (through `nice -n N`).
    pub(crate) nice: Option<i32>,
    /// `--tmpdir DIR`: the jobs' `$TMPDIR` (and where output is spooled).
    pub(crate) tmpdir: Option<std::path::PathBuf>,
    pub(crate) next_start: Mutex<Option<Instant>>,
    pub(crate) timeout: Option<Timeout>,
    /// Run times of the jobs that succeeded (for `--timeout P%`).
    pub(crate) succeeded: Mutex<Vec<Duration>>,
    /// The machines jobs run on (`:` alone without `-S`).
    pub(crate) hosts: Vec<super::remote::Host>,
    /// Which machine each job slot (less one) is on.
    pub(crate) slot_host: Vec<usize>,
    /// `--transferfile`, `--return` (filled per job), `--cleanup`.
    pub(crate) transfer: Vec<Word>,
    pub(crate) returns: Vec<Word>,
    pub(crate) cleanup: bool,
    /// `--env`: variables set on other machines as they are here.
    pub(crate) env: Vec<String>,
    pub(crate) tries: u32,
    /// Process groups of running jobs, to kill on a second interrupt or
    /// `--halt now`.
    pub(crate) running: Mutex<HashSet<i32>>,
    /// Set when no new job may start.
    pub(crate) stop: AtomicBool,
    /// Set when running jobs must die too (`--halt now`, a second
    /// interrupt).
    pub(crate) kill: AtomicBool,
    /// Set when parpool's own stdout was closed (a reader such as `head`
    /// went away): everything stops, and parpool dies of `SIGPIPE`.
    pub(crate) output_closed: AtomicBool,
    /// Set by an interrupt (SIGINT, SIGTERM): the exit status is 255.
    pub(crate) interrupted: AtomicBool,
    /// How many jobs there are (`{##}`); `u64::MAX` while unknown.
    pub(crate) total: std::sync::atomic::AtomicU64,
    /// `-k` with `--line-buffer`: how many jobs, in order, have been
    /// reported; the next one's lines pass on as they come.
    pub(crate) turn: Option<std::sync::atomic::AtomicU64>,
    /// The `perl` that evaluates `{= perl =}` strings, if any is used.
    pub(crate) perl: Option<super::perl::Perl>,
    /// Values per record for perl's `@arg` (0: all of a job's).
    pub(crate) record: usize,
}

impl Runner {
    pub(crate) fn total(&self) -> Option<u64> {
        let total = self.total.load(Ordering::Relaxed);
        (total != u64::MAX).then_some(total)
    }

    /// Every word a job fills: the command's, the tag's, the files sent
    /// and fetched.
    fn all_words(&self) -> impl Iterator<Item = &Word> {
        let tag = match &self.tag {
            Tag::Template(word) => Some(word),
            _ => None,
        };
        self.plan
            .words
            .iter()
            .chain(tag)
            .chain(&self.transfer)
            .chain(&self.returns)
    }

    /// Evaluates the job's `{= perl =}` strings (none: `None`), each
    /// once per value it stands for. Called for jobs in the order they
    /// start, as GNU parallel evaluates them.
    pub(crate) fn evaluate(
        &self,
        seq: u64,
        values: &[OsString],
        slot: usize,
    ) -> std::io::Result<Option<super::perl::Evaluated>> {
        let Some(perl) = &self.perl else {
            return Ok(None);
        };
        let mut wants = Vec::new();
        let mut seen = HashSet::new();
        for piece in self.all_words().flatten() {
            if let template::Piece::Perl { source, id, .. } = piece {
                for at in template::perl_indexes(values.len(), *source) {
                    if seen.insert((*id, at)) {
                        wants.push((*id, at));
                    }
                }
            }
        }
        let job = super::perl::Job {
            seq,
            slot,
            total: self.total(),
            record: self.record,
        };
        perl.evaluate(job, values, &wants).map(Some)
    }

    /// Runs job `seq` (started `order`-th) on `values`, retrying up to
    /// `tries` times in all; `perl` is what [`Runner::evaluate`] gave for
    /// it.
    pub(crate) fn run(
        &self,
        (seq, order): (u64, u64),
        values: Vec<OsString>,
        slot: usize,
        stdin: Option<Feed>,
        perl: Option<super::perl::Evaluated>,
    ) -> Outcome {
        let fill = Fill {
            perl: perl.as_ref(),
            ..Fill::new(&values, seq, slot, self.total())
        };
        let argv = self.plan.argv(&fill);
        let tag = match &self.tag {
            Tag::None => None,
            Tag::Values => Some(tag_prefix(&values)),
            Tag::Template(word) => {
                let mut prefix = template::fill_word(word, &fill, false);
                prefix.push(b'\t');
                Some(prefix)
            }
        };
        let mut outcome = Outcome {
            seq,
            order,
            command: argv.display(),
            tag,
            ..Outcome::default()
        };
        if let Some(why) = perl.as_ref().and_then(|p| p.died.clone()) {
            // The job's perl code died: the job fails, not the run.
            let mut failed = Outcome::not_started(seq, values, format!("{{= perl =}} died: {why}"));
            failed.command = outcome.command;
            failed.tag = outcome.tag;
            return failed;
        }
        if perl.as_ref().is_some_and(|p| p.skip) {
            // `skip()`: not run, logged with exit -2 and counted as a
            // failure, as GNU parallel does.
            outcome.started = Some(SystemTime::now());
            outcome.exit = -2;
            outcome.values = values;
            return outcome;
        }
        let (argv, ssh) = self.where_to_run(argv, seq, slot, &mut outcome);
        let sent: Vec<Vec<u8>> = self
            .transfer
            .iter()
            .map(|w| template::fill_word(w, &fill, false))
            .collect();
        if let Some(ssh) = ssh {
            for path in &sent {
                if let Err(e) = super::remote::send(ssh, path) {
                    outcome.exit = 255;
                    outcome.stderr = Held::from_text(format!("parpool: {e}\n"));
                    outcome.values = values;
                    return outcome;
                }
            }
        }
        for _ in 0..self.tries.max(1) {
            self.limits.wait(&self.stop);
            if self.stop.load(Ordering::Acquire) {
                outcome.skipped = outcome.started.is_none();
                break;
            }
            let fifo = values
                .first()
                .filter(|_| self.fifo)
                .map(std::path::Path::new);
            self.attempt(&argv, (seq, slot), stdin.as_ref(), fifo, &mut outcome);
            if !outcome.failed() {
                break;
            }
        }
        if let Some(ssh) = ssh {
            self.bring_back(ssh, &fill, &sent, &mut outcome);
        }
        outcome.values = values;
        outcome
    }

    /// The job's command as it runs: here, or on slot `slot`'s machine
    /// through ssh with the job's environment exported first (and that
    /// machine's ssh command, for files to go and come back).
    fn where_to_run<'a>(
        &'a self,
        argv: Argv,
        seq: u64,
        slot: usize,
        outcome: &mut Outcome,
    ) -> (Argv, Option<&'a [String]>) {
        let host = self
            .slot_host
            .get(slot.saturating_sub(1))
            .and_then(|&h| self.hosts.get(h));
        let Some((host, ssh)) = host.and_then(|h| Some((h, h.ssh.as_deref()?))) else {
            return (argv, None);
        };
        let mut exports = format!("export PARALLEL_SEQ={seq} PARALLEL_JOBSLOT={slot}; ");
        // `--env VAR`: this machine's value, there too.
        for var in &self.env {
            if let Some(value) = std::env::var_os(var) {
                let quoted = template::shell_quote(value.as_encoded_bytes());
                exports.push_str(&format!(
                    "export {var}={}; ",
                    String::from_utf8_lossy(&quoted)
                ));
            }
        }
        outcome.host = Some(host.name.clone());
        let line = [exports.as_bytes(), &argv.line].concat();
        let remote = Argv {
            line: argv.line.clone(),
            direct: Some(super::remote::command(ssh, &line)),
        };
        (remote, Some(ssh))
    }

    /// After a job on another machine: `--return`'s files fetched, and
    /// with `--cleanup` what was sent and fetched removed there; problems
    /// on the job's stderr.
    fn bring_back(&self, ssh: &[String], fill: &Fill<'_>, sent: &[Vec<u8>], outcome: &mut Outcome) {
        let fetched: Vec<Vec<u8>> = self
            .returns
            .iter()
            .map(|w| template::fill_word(w, fill, false))
            .collect();
        let mut problems = Vec::new();
        if !outcome.skipped {
            problems.extend(
                fetched
                    .iter()
                    .filter_map(|p| super::remote::fetch(ssh, p).err()),
            );
        }
        if self.cleanup {
            let all: Vec<Vec<u8>> = sent.iter().chain(&fetched).cloned().collect();
            problems.extend(super::remote::remove(ssh, &all).err());
        }
        for p in problems {
            let _ = outcome.stderr.push(format!("parpool: {p}\n").as_bytes());
        }
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

    /// The job's command, ready to spawn: its program run directly, or the
    /// shell (under `nice` with `--nice`), with the job's environment, its
    /// own process group, and pipes as its output mode needs.
    fn command(&self, argv: &Argv, seq: u64, slot: usize, piped_stdin: bool) -> Command {
        let mut cmd = match self.nice.filter(|_| !self.remote(slot)) {
            // `--nice`: the job, and all it starts, at that niceness.
            Some(n) => {
                let mut c = Command::new("nice");
                c.arg("-n").arg(n.to_string());
                match &argv.direct {
                    Some(words) => c.args(words),
                    None => c
                        .arg(&self.plan.shell)
                        .arg("-c")
                        .arg(template::os(argv.line.clone())),
                };
                c
            }
            None => self.program(argv, slot),
        };
        cmd.stdin(if piped_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .env("PARALLEL_SEQ", seq.to_string())
        .envs(self.tmpdir.iter().map(|d| ("TMPDIR", d)))
        .env("PARALLEL_JOBSLOT", slot.to_string())
        // Its own process group: a timeout or an interrupt kills the
        // job and everything it started.
        .process_group(0);
        if self.output != OutputMode::Ungroup {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        cmd
    }

    /// The job's program run directly, or the shell running its line.
    fn program(&self, argv: &Argv, slot: usize) -> Command {
        match &argv.direct {
            Some(words) => {
                let program = self.plan.program.as_ref().filter(|_| !self.remote(slot));
                let mut c = match program {
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
            None => {
                let mut c = Command::new(&self.plan.shell);
                c.arg("-c").arg(template::os(argv.line.clone()));
                c
            }
        }
    }

    fn attempt(
        &self,
        argv: &Argv,
        (seq, slot): (u64, usize),
        stdin: Option<&Feed>,
        fifo: Option<&std::path::Path>,
        out: &mut Outcome,
    ) {
        self.pace();
        let mut cmd = self.command(argv, seq, slot, stdin.is_some() && fifo.is_none());
        out.started = Some(SystemTime::now());
        let t0 = Instant::now();
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let program = match &argv.direct {
                    Some(w) => w[0].to_string_lossy().into_owned(),
                    None => self.plan.shell.display().to_string(),
                };
                out.stderr = Held::from_text(format!("parpool: cannot run `{program}`: {e}\n"));
                out.exit = if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                out.runtime = t0.elapsed();
                return;
            }
        };
        let mut child = child;
        let job_done = Arc::new(AtomicBool::new(false));
        let feeder = super::pipepart::feed(stdin, fifo, child.stdin.take(), job_done.clone());
        let pgid = child.id() as i32;
        self.lock_running().insert(pgid);
        // `kill_all` sets `kill` before it reads the set: if it missed this
        // job, this job sees the flag.
        if self.kill.load(Ordering::SeqCst) {
            kill_group(pgid);
        }
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let timed_out = Arc::new(AtomicBool::new(false));
        let limit = self.limit();
        let watchdog = limit.map(|limit| {
            let timed_out = timed_out.clone();
            let termseq = self.termseq.clone();
            std::thread::spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(limit) {
                    timed_out.store(true, Ordering::Release);
                    terminate(pgid, &termseq, |wait| {
                        done_rx.recv_timeout(wait) != Err(mpsc::RecvTimeoutError::Timeout)
                    });
                }
            })
        });
        let result = self.collect(&mut child, pgid, out);
        job_done.store(true, Ordering::Release);
        drop(done_tx);
        let fed = feeder.and_then(finish_feeding);
        if let Some(w) = watchdog {
            let _ = w.join();
        }
        self.lock_running().remove(&pgid);
        out.runtime = t0.elapsed();
        self.settle(out, result, timed_out.load(Ordering::Acquire));
        // Input that could not be fed: the job saw less than it should.
        if let Some(Ok(Err(e))) = fed {
            let _ = out
                .stderr
                .push(format!("parpool: the job's input could not be fed: {e}\n").as_bytes());
            if out.exit == 0 {
                out.exit = 255;
            }
        }
    }

    /// Waits for the job, its output taken as the output mode says: held
    /// (`--group`), passed on by lines (`--line-buffer`, in turn with
    /// `-k`) or left to it (`-u`); its status, output held, and bytes it
    /// wrote to stdout.
    fn collect(
        &self,
        child: &mut std::process::Child,
        pgid: i32,
        out: &mut Outcome,
    ) -> std::io::Result<(std::process::ExitStatus, Held, Held, u64)> {
        match self.output {
            OutputMode::Lines => {
                let prefix = out.tag.clone();
                let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
                let relayed = match &self.turn {
                    None => output::relay_lines(child, &mut stdout, &mut stderr, prefix.as_deref())
                        .map(|(status, received)| {
                            (status, Held::default(), Held::default(), received)
                        }),
                    Some(turn) => {
                        let order = out.order;
                        let mut o = output::InTurn {
                            turn,
                            order,
                            to: &mut stdout,
                            held: Held::default(),
                        };
                        let mut e = output::InTurn {
                            turn,
                            order,
                            to: &mut stderr,
                            held: Held::default(),
                        };
                        let relayed = output::relay_lines(child, &mut o, &mut e, prefix.as_deref());
                        // What is held is tagged already.
                        out.tag = None;
                        relayed.map(|(status, received)| (status, o.held, e.held, received))
                    }
                };
                relayed.inspect_err(|_| {
                    // Nobody reads what it writes any more (`| head`).
                    self.output_closed.store(true, Ordering::SeqCst);
                    kill_group(pgid);
                    let _ = child.wait();
                })
            }
            OutputMode::Group => match output::collect(child) {
                Ok((status, stdout, stderr)) => {
                    let received = stdout.len();
                    Ok((status, stdout, stderr, received))
                }
                Err(e) => {
                    // Its output cannot be kept (no spool file): stop it.
                    kill_group(pgid);
                    let _ = child.wait();
                    Err(e)
                }
            },
            OutputMode::Ungroup => child
                .wait()
                .map(|status| (status, Held::default(), Held::default(), 0)),
        }
    }

    /// Records how a job ended in `out`: its exit status as GNU parallel
    /// logs it, its output, and GNU's note if its timeout killed it.
    fn settle(
        &self,
        out: &mut Outcome,
        result: std::io::Result<(std::process::ExitStatus, Held, Held, u64)>,
        timed_out: bool,
    ) {
        out.timed_out = timed_out;
        match result {
            Ok((status, stdout, stderr, received)) => {
                out.received = received;
                out.exit = status.code().unwrap_or(-1);
                out.signal = status.signal().unwrap_or(0);
                // As GNU parallel logs it: -1 when parpool killed it
                // (timeout, halt, interrupt), 0 with the signal otherwise.
                if out.signal != 0 {
                    let killed = timed_out || self.kill.load(Ordering::Acquire);
                    out.exit = if killed { -1 } else { 0 };
                }
                // Timed out is failed, however it then ended (a job may
                // catch --termseq's signal and exit 0), as in GNU parallel.
                if timed_out {
                    out.exit = -1;
                }
                out.stdout = stdout;
                out.stderr = stderr;
            }
            Err(e) => {
                out.exit = -1;
                out.stderr = Held::from_text(format!("parpool: lost the job: {e}\n"));
            }
        }
        if !out.failed() {
            self.succeeded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(out.runtime);
        }
        if out.timed_out {
            // GNU parallel's words, which scripts look for.
            let note = format!(
                "parpool: Warning: This job was killed because it timed out:\nparpool: Warning: {}\n",
                String::from_utf8_lossy(&out.command)
            );
            if let Err(e) = out.stderr.push(note.as_bytes()) {
                eprintln!("parpool: {e}");
            }
        }
    }

    /// Whether job slot `slot` is on another machine.
    fn remote(&self, slot: usize) -> bool {
        self.slot_host
            .get(slot.saturating_sub(1))
            .and_then(|&h| self.hosts.get(h))
            .is_some_and(|h| h.ssh.is_some())
    }

    /// This job's time limit, if any.
    fn limit(&self) -> Option<Duration> {
        match self.timeout? {
            Timeout::After(d) => Some(d),
            Timeout::Percent(p) => {
                let mut times = self
                    .succeeded
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if times.is_empty() {
                    return None;
                }
                times.sort_unstable();
                Some(times[times.len() / 2].mul_f64(p / 100.0))
            }
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops new jobs and kills every running job's process group.
    /// Stops every running job by `--termseq` (each group in a thread of
    /// its own, all at once), and any job about to start.
    pub(crate) fn kill_all(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.kill.store(true, Ordering::SeqCst);
        let groups: Vec<i32> = self.lock_running().iter().copied().collect();
        let stoppers: Vec<_> = groups
            .into_iter()
            .map(|pgid| {
                let seq = self.termseq.clone();
                std::thread::spawn(move || {
                    terminate(pgid, &seq, |wait| group_gone_within(pgid, wait))
                })
            })
            .collect();
        for s in stoppers {
            let _ = s.join();
        }
    }
}
