//! A serving rank: what every rank but 0 runs instead of `main`.
//!
//! It waits for rank 0's settings, starts a local [`ProcessPool`] (so a
//! task that crashes takes down one worker process, not the rank), and
//! then relays: jobs from rank 0 into the local pool, results and log
//! events back, in batches. One thread makes every MPI call. It waits for
//! MPI messages by probing, spinning briefly after activity and then
//! sleeping a little longer each time, up to [`IDLE_SLEEP`]; a finished
//! local job wakes it at once.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parpool::remote::ChunkOut;
use parpool::{JobHandle, JobId, ProcessPool, WorkerOutput};
use serde_bytes::ByteBuf;

use crate::comm::{self, Comm, Link, Mpi};
use crate::log::{Forwarder, Gathered};
use crate::pace::{Pacer, busy_ceiling};
use crate::wire::{self, DoneMsg, FromRank, Kind, LogMsg, Outcome, Settings, ToRank};
use parpool::__private::EventsOnly;

/// The longest a serving rank sleeps between probes after [`QUIET_AFTER`]
/// without activity (while busy lately, [`busy_ceiling`] of its jobs'
/// time).
const IDLE_SLEEP: Duration = Duration::from_millis(1);
const QUIET_AFTER: Duration = Duration::from_millis(100);
/// The most bytes of results one message carries.
const MAX_BATCH: usize = 16 << 20;
/// The most messages read in one round, so that results and heartbeats
/// keep flowing under a flood.
const MAX_MESSAGES: usize = 256;

/// Serves rank 0's pool, then exits the process.
pub(crate) fn run() -> ! {
    ignore_sigpipe();
    let code = match serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "parpool-mpi: serving rank (pid {}): {e}",
                std::process::id()
            );
            70
        }
    };
    std::process::exit(code)
}

/// Rust's runtime ignores `SIGPIPE` before `main`, which a serving rank
/// never reaches: without this, writing to a worker process that just
/// crashed would kill the rank.
fn ignore_sigpipe() {
    // SAFETY: sets a signal's disposition to "ignore", which involves no
    // handler code; done first thing, before the rank starts threads.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

fn serve() -> Result<(), String> {
    let mpi = Mpi::start()?;
    let comm = match mpi.parent() {
        Some(parent) => Comm::Inter(parent),
        None => Comm::World(mpi.world()),
    };
    let mut link = Link::new(comm);
    let (result, decided) = match Server::setup(&mut link) {
        Ok(Setup::Serving(server)) => {
            let wait = server.heartbeat * 300;
            match server.serve(&mut link) {
                Ok(Some(decided)) => (Ok(()), decided),
                Ok(None) => (Ok(()), await_finalize(&link, wait)),
                Err(e) => (Err(e), false),
            }
        }
        // The local pool did not start; rank 0 was told and fails its
        // build. Exiting 0 keeps the launcher from ending rank 0 first.
        Ok(Setup::Failed) => (Ok(()), await_finalize(&link, Duration::from_secs(60))),
        // Rank 0's main ended without building a pool (`launch.rs`).
        Ok(Setup::Released(finalize)) => (Ok(()), finalize),
        Err(e) => (Err(e), false),
    };
    let drained = link.drain(Duration::from_secs(5));
    drop(link);
    if decided && drained {
        drop(mpi);
    } else {
        // A rank was lost (finalizing would wait for it forever), rank 0
        // is gone, or a send is stuck: exit with MPI still up, which a
        // launcher that keeps going after a loss accepts.
        std::mem::forget(mpi);
    }
    result
}

/// On rank 0, at exit, when no pool was ever built: starts MPI, tells
/// every serving rank to finalize and exit, and finalizes (see
/// `launch.rs`). Anything that fails leaves MPI as it is.
pub(crate) fn release_from_rank_0() {
    let Ok(mpi) = Mpi::start() else {
        return;
    };
    let world = mpi.world();
    let mut link = Link::new(Comm::World(world));
    let release = wire::encode(&ToRank::Finalize(true));
    for rank in 1..link.comm().peers() {
        if link.send(rank, release.clone()).is_err() {
            std::mem::forget(mpi);
            return;
        }
    }
    if link.drain(Duration::from_secs(10)) {
        drop(link);
        drop(mpi);
    } else {
        std::mem::forget(mpi);
    }
}

/// Waits up to `wait` for rank 0's word on finalizing; `false` without
/// it.
fn await_finalize(link: &Link, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match link.receive() {
            Some((_, bytes)) => {
                if let Ok(ToRank::Finalize(yes)) = postcard::from_bytes::<ToRank<'_>>(&bytes) {
                    return yes;
                }
            }
            None => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    false
}

/// A job in the local pool.
enum Local {
    Single(JobHandle<Vec<u8>>),
    Chunk(JobHandle<ChunkOut<(), ByteBuf>>),
}

impl Local {
    fn id(&self) -> JobId {
        match self {
            Local::Single(h) => h.id(),
            Local::Chunk(h) => h.id(),
        }
    }

    fn cancel(&self) {
        match self {
            Local::Single(h) => h.cancel(),
            Local::Chunk(h) => h.cancel(),
        };
    }
}

struct Running {
    local: Local,
    since: Instant,
}

struct Server {
    pool: ProcessPool,
    jobs: HashMap<u64, Running>,
    /// Local job id → rank 0's id, to tag log events.
    local_ids: HashMap<u64, u64>,
    /// Local ids of jobs that finished in the last round: their log
    /// events may still be on their way, so the ids are forgotten one
    /// round later.
    retired: Vec<u64>,
    /// `(rank 0's id, local id)` of each local job that finished. A
    /// withdrawn job's notice can arrive after rank 0 sent the same job
    /// back: the local id tells the notices apart.
    done_tx: mpsc::Sender<(u64, JobId)>,
    done_rx: mpsc::Receiver<(u64, JobId)>,
    /// Finished jobs taken off `done_rx` while waiting.
    woken: Vec<(u64, JobId)>,
    gathered: Gathered,
    heartbeat: Duration,
    /// The low-latency window (`MpiPoolBuilder::spin`; zero: off).
    spin: Duration,
    last_sent: Instant,
    /// Mean time a job stays on this rank, in nanoseconds.
    mean_nanos: f64,
}

/// How a serving rank's start ended.
enum Setup {
    /// It serves a pool.
    Serving(Box<Server>),
    /// Its local pool did not start; the hello told rank 0 why.
    Failed,
    /// Rank 0 ended without a pool: the rank exits, finalizing MPI if so
    /// told.
    Released(bool),
}

impl Server {
    /// Waits for rank 0's settings, starts the local pool and says hello.
    fn setup(link: &mut Link) -> Result<Setup, String> {
        let settings = match wait_for_settings(link)? {
            Start::Settings(settings) => settings,
            Start::Released(finalize) => return Ok(Setup::Released(finalize)),
        };
        let gathered: Gathered = Arc::new(Mutex::new(Vec::new()));
        let max = settings.log_level;
        let _ = tracing::subscriber::set_global_default(EventsOnly(Forwarder {
            gathered: gathered.clone(),
            max,
            dropped: AtomicU64::new(0),
        }));
        let built = build_pool(&settings);
        let hello = FromRank::Hello {
            host: comm::host_name(),
            pid: std::process::id(),
            workers: built
                .as_ref()
                .map_or(0, |p| u32::try_from(p.workers()).unwrap_or(u32::MAX)),
            error: built.as_ref().err().map(ToString::to_string),
        };
        link.send(0, wire::encode(&hello))?;
        let Ok(pool) = built else {
            return Ok(Setup::Failed);
        };
        let (done_tx, done_rx) = mpsc::channel();
        Ok(Setup::Serving(Box::new(Server {
            pool,
            jobs: HashMap::new(),
            local_ids: HashMap::new(),
            done_tx,
            done_rx,
            woken: Vec::new(),
            gathered,
            retired: Vec::new(),
            heartbeat: Duration::from_nanos(settings.heartbeat_nanos.max(1_000_000)),
            spin: Duration::from_nanos(settings.spin_nanos),
            last_sent: Instant::now(),
            mean_nanos: 0.0,
        })))
    }

    /// Relays jobs and results until rank 0 says exit (`Ok(None)`: then
    /// rank 0's word on finalizing is still to come) or, to a rank it took
    /// for lost, sends its word on finalizing at once (`Ok(Some(_))`).
    fn serve(mut self, link: &mut Link) -> Result<Option<bool>, String> {
        let mut pace = Pacer::new();
        loop {
            let mut active = false;
            let mut received = 0;
            while let Some((_, bytes)) = link.receive() {
                active = true;
                match postcard::from_bytes::<ToRank<'_>>(&bytes) {
                    Ok(ToRank::Exit) => return self.exit(link).map(|()| None),
                    Ok(ToRank::Finalize(yes)) => {
                        self.pool.shutdown_now();
                        return Ok(Some(yes));
                    }
                    Ok(msg) => self.handle(link, msg)?,
                    Err(e) => return Err(format!("a message from rank 0 did not decode: {e}")),
                }
                received += 1;
                if received == MAX_MESSAGES {
                    break;
                }
            }
            active |= self.send_logs(link)?;
            active |= self.send_results(link)?;
            if self.last_sent.elapsed() >= self.heartbeat {
                self.send(link, &FromRank::Heartbeat)?;
            }
            link.progress();
            if active {
                pace.active();
                continue;
            }
            if pace.within(self.spin) {
                pace.idle_spin();
                continue;
            }
            if pace.spin() {
                std::thread::yield_now();
                continue;
            }
            // A finished local job wakes this at once; a message from rank
            // 0 waits at most the sleep.
            let longest = if pace.quiet_for() < QUIET_AFTER {
                busy_ceiling(Duration::from_nanos(self.mean_nanos as u64))
            } else {
                IDLE_SLEEP
            };
            if let Ok(done) = self.done_rx.recv_timeout(pace.sleep(longest)) {
                self.woken.push(done);
                pace.active();
            }
        }
    }

    /// Every job is done (rank 0 says exit only then): says goodbye first,
    /// so that rank 0 does not wait on the workers' exit, then stops them.
    fn exit(&mut self, link: &mut Link) -> Result<(), String> {
        self.send_logs(link)?;
        self.send(link, &FromRank::Bye)?;
        self.pool.shutdown();
        Ok(())
    }

    fn send(&mut self, link: &mut Link, msg: &FromRank) -> Result<(), String> {
        self.last_sent = Instant::now();
        link.send(0, wire::encode(msg))
    }

    fn handle(&mut self, link: &mut Link, msg: ToRank<'_>) -> Result<(), String> {
        match msg {
            ToRank::Jobs(jobs) => {
                for job in jobs {
                    let local = match job.kind {
                        Kind::Single => Local::Single(self.pool.submit_encoded(
                            job.task,
                            job.input.to_vec(),
                            job.timeout_nanos.map(Duration::from_nanos),
                        )),
                        Kind::Chunk(len) => Local::Chunk(self.pool.submit_encoded_chunk(
                            job.task,
                            job.input.to_vec(),
                            len as usize,
                        )),
                    };
                    let tx = self.done_tx.clone();
                    let id = job.id;
                    let local_id = local.id();
                    let notify = move || {
                        let _ = tx.send((id, local_id));
                    };
                    match &local {
                        Local::Single(h) => h.on_done(move |_| notify()),
                        Local::Chunk(h) => h.on_done(move |_| notify()),
                    }
                    self.local_ids.insert(local_id.get(), id);
                    self.jobs.insert(
                        id,
                        Running {
                            local,
                            since: Instant::now(),
                        },
                    );
                }
            }
            ToRank::Cancel(ids) => {
                for id in ids {
                    if let Some(running) = self.jobs.get(&id) {
                        running.local.cancel();
                    }
                }
            }
            ToRank::Revoke(ids) => {
                let mut taken = Vec::new();
                for id in ids {
                    let Some(running) = self.jobs.get(&id) else {
                        continue;
                    };
                    let local_id = running.local.id();
                    if self.pool.withdraw(local_id) {
                        self.jobs.remove(&id);
                        self.local_ids.remove(&local_id.get());
                        taken.push(id);
                    }
                }
                self.send(link, &FromRank::Revoked(taken))?;
            }
            ToRank::Setup(_) | ToRank::Exit | ToRank::Finalize(_) => {}
        }
        Ok(())
    }

    /// Sends the results of the local jobs that finished; `true` if any.
    fn send_results(&mut self, link: &mut Link) -> Result<bool, String> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut any = false;
        let woken = std::mem::take(&mut self.woken);
        let done = woken
            .into_iter()
            .chain(std::iter::from_fn(|| self.done_rx.try_recv().ok()));
        for (id, local_id) in done.collect::<Vec<_>>() {
            // A withdrawn job's handle resolves too: it is no longer
            // listed, or listed again with another local id.
            if self.jobs.get(&id).is_none_or(|r| r.local.id() != local_id) {
                continue;
            }
            let Some(running) = self.jobs.remove(&id) else {
                continue;
            };
            any = true;
            // A single job's time is its stay on this rank; a chunk's is
            // what its worker measured (rank 0 sizes the next chunks by it).
            let mut took = running.since.elapsed();
            self.mean_nanos = 0.9 * self.mean_nanos + 0.1 * took.as_nanos() as f64;
            let (outcome, local_id) = match running.local {
                Local::Single(h) => {
                    let local_id = h.id();
                    let outcome = match h.join() {
                        Ok(bytes) => Outcome::Value(bytes),
                        Err(e) => Outcome::Failed(e),
                    };
                    (outcome, local_id)
                }
                Local::Chunk(h) => {
                    let local_id = h.id();
                    let outcome = match h.join() {
                        Ok(out) => {
                            took = out.took();
                            Outcome::Items(out.into_results())
                        }
                        Err(e) => Outcome::Failed(e),
                    };
                    (outcome, local_id)
                }
            };
            let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            self.retired.push(local_id.get());
            bytes += outcome_size(&outcome);
            batch.push(DoneMsg { id, nanos, outcome });
            if bytes >= MAX_BATCH {
                self.send(link, &FromRank::Done(std::mem::take(&mut batch)))?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.send(link, &FromRank::Done(batch))?;
        }
        Ok(any)
    }

    /// Sends the log events gathered so far; `true` if any.
    fn send_logs(&mut self, link: &mut Link) -> Result<bool, String> {
        let mut logs: Vec<LogMsg> = std::mem::take(&mut *crate::log::parpool_lock(&self.gathered));
        for log in &mut logs {
            // The local pool's job ids mean nothing on rank 0.
            log.job = log
                .job
                .and_then(|local| self.local_ids.get(&local).copied());
        }
        // A job's events are emitted before it finishes: once this round's
        // events are read, those of the jobs that finished before it are.
        for local in self.retired.drain(..) {
            self.local_ids.remove(&local);
        }
        if logs.is_empty() {
            return Ok(false);
        }
        self.send(link, &FromRank::Log(logs))?;
        Ok(true)
    }
}

fn outcome_size(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Value(v) => v.len(),
        Outcome::Items(items) => items
            .iter()
            .map(|r| r.as_ref().map_or(64, |b| b.len()))
            .sum(),
        Outcome::Failed(_) => 64,
    }
}

/// Waits for rank 0's [`ToRank::Setup`]. Rank 0 sends it when its program
/// builds the pool, which may be a while after start: the wait sleeps.
/// What rank 0 says first.
enum Start {
    Settings(Settings),
    /// Its `main` ended without a pool; finalize MPI if `true`.
    Released(bool),
}

fn wait_for_settings(link: &mut Link) -> Result<Start, String> {
    let mut sleep = Duration::from_micros(50);
    loop {
        if let Some((_, bytes)) = link.receive() {
            return match postcard::from_bytes::<ToRank<'_>>(&bytes) {
                Ok(ToRank::Setup(settings)) => Ok(Start::Settings(settings)),
                Ok(ToRank::Finalize(finalize)) => Ok(Start::Released(finalize)),
                Ok(ToRank::Exit) => Err("rank 0 said exit before it built an MpiPool".into()),
                Ok(other) => Err(format!("expected the pool's settings, got {other:?}")),
                Err(e) => Err(format!("rank 0's settings did not decode: {e}")),
            };
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(10));
    }
}

fn build_pool(settings: &Settings) -> Result<ProcessPool, parpool::BuildError> {
    let mut builder = ProcessPool::builder()
        .name("parpool-mpi")
        .outputs_by_value()
        .worker_limits(settings.limits.clone());
    if let Some(n) = settings.workers {
        builder = builder.workers(n as usize);
    }
    if settings.spin_nanos > 0 {
        builder = builder.spin(Duration::from_nanos(settings.spin_nanos));
    }
    if settings.quiet {
        builder = builder
            .stdout(WorkerOutput::Null)
            .stderr(WorkerOutput::Null);
    }
    builder.build()
}
