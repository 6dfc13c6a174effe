//! One supervisor thread per worker slot: it starts the worker process
//! (and every replacement), feeds it jobs, reads its replies, takes back
//! jobs stranded behind a running one, and replaces the worker when it
//! dies.
//!
//! - `spawn.rs`: starting a worker (command, handshake, control block,
//!   initializer);
//! - this file: the slot, the loop, the pipeline's bookkeeping and tuning;
//! - `outbox.rs`: writing without ever blocking, and why that makes the
//!   supervisor and its worker deadlock-free;
//! - `feed.rs`: taking jobs and queueing their requests;
//! - `read.rs`: waiting for and reading replies, taking back stranded
//!   requests;
//! - `blame.rs`: what a worker's death does to the jobs it had.

mod blame;
mod feed;
mod outbox;
mod read;
mod spawn;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle as ThreadHandle;
use std::time::{Duration, Instant};

use super::submission::ProcJob;
use super::wire::{LogLevel, ToWorker};
use super::{ProcShared, os};
use crate::error::{BuildError, ExitStatus, JobError};
use crate::lifecycle::Lifecycle;
use crate::sync::lock;
use parpool_ipc::transfer::{ObjectId, ReleaseSink};
use spawn::{Conn, StartError};

pub(crate) use super::slot::{KillReason, SlotCtl};

/// Jobs in flight on one worker are capped so that this much work, at the
/// measured job duration, is queued there: tiny jobs travel in batches,
/// long ones one at a time (so they spread over the workers).
const PIPELINE_TARGET: Duration = Duration::from_micros(500);
pub(crate) const MAX_PIPELINE: usize = 1024;
/// A request the worker has not claimed this long after it was written is
/// taken back and put at the front of the pool's queue, where any free
/// worker takes it: no job waits behind a running one for longer. Twice
/// [`PIPELINE_TARGET`], so a batch that runs as measured is never touched.
const REVOKE_AFTER: Duration = Duration::from_millis(1);
/// Descriptors (shared objects) in the requests a worker has not answered,
/// beyond those of the job at the head. The kernel limits descriptors in
/// flight in Unix sockets per user (to its `RLIMIT_NOFILE`, `ETOOMANYREFS`
/// past it), and every worker's socket counts: this keeps a large pool of
/// jobs that each carry an object well under it.
const FD_BUDGET: usize = 32;
/// At most this many ids in one `Release` frame (about 1 KiB).
const RELEASE_BATCH: usize = 64;
/// An idle supervisor whose worker keeps shared objects looks for
/// releases at least this often, in case a wake-up raced with its wait.
const RELEASE_POLL: Duration = Duration::from_millis(50);

/// A worker slot: its supervisor thread and its control block.
pub(crate) struct Slot {
    thread: ThreadHandle<()>,
    ctl: Arc<SlotCtl>,
    started: mpsc::Receiver<Result<(), BuildError>>,
}

impl Slot {
    /// Starts the slot's supervisor thread, which starts the first worker.
    pub(crate) fn start(shared: Arc<ProcShared>, index: usize) -> Result<Slot, BuildError> {
        let ctl = Arc::new(SlotCtl::default());
        let (tell, started) = mpsc::channel();
        let c = ctl.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{}-sup-{index}", shared.config.name))
            .spawn(move || {
                let conn = match Conn::spawn(&shared.config) {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = tell.send(Err(match e {
                            StartError::Io(source) => BuildError::Spawn { index, source },
                            StartError::Init(error) => BuildError::Initializer { index, error },
                        }));
                        return;
                    }
                };
                let mut sup = Supervisor::new(shared, c);
                sup.attach(conn);
                let _ = tell.send(Ok(()));
                sup.run();
            })
            .map_err(|source| BuildError::Spawn { index, source })?;
        Ok(Slot {
            thread,
            ctl,
            started,
        })
    }

    /// Waits until the slot's first worker has started (or failed to).
    pub(crate) fn started(&self) -> Result<(), BuildError> {
        self.started.recv().unwrap_or_else(|_| {
            Err(BuildError::InvalidSetting {
                setting: "ProcessPool",
                reason: "a supervisor thread ended before its worker started".into(),
            })
        })
    }

    pub(crate) fn ctl(&self) -> &SlotCtl {
        &self.ctl
    }

    pub(crate) fn join(self) {
        let _ = self.thread.join();
    }
}

/// Shared objects sent to one slot's worker whose last handle in this
/// process is gone: the worker may stop keeping them mapped
/// ([`Kept`](parpool_ipc::transfer::Kept)).
struct Releases {
    ids: Mutex<Vec<ObjectId>>,
    /// To wake the supervisor when it waits for jobs.
    pool: Weak<ProcShared>,
}

impl ReleaseSink for Releases {
    fn released(&self, id: ObjectId) {
        lock(&self.ids).push(id);
        // Without the queue's lock, which the dropping thread may hold
        // (`ProcShared::close` drops cancelled jobs under it). A wake-up lost
        // to that race is made up by the supervisor's `RELEASE_POLL`.
        if let Some(pool) = self.pool.upgrade() {
            pool.ready.notify_all();
        }
    }
}

/// A request written to the worker and not answered.
struct Sent {
    job: Arc<dyn ProcJob>,
    /// Its claim cell's sequence number.
    seq: u64,
    at: Instant,
    /// Descriptors it carried.
    fds: usize,
}

struct Supervisor {
    shared: Arc<ProcShared>,
    ctl: Arc<SlotCtl>,
    conn: Option<Conn>,
    /// Which of the slot's workers `conn` is (see [`SlotCtl::attach`]).
    worker: u64,
    /// Its pid (kept after it is gone, for log events read late).
    worker_pid: u32,
    /// In the order written; the worker answers in that order (every
    /// request but those taken back, which leave this list at once).
    in_flight: VecDeque<Sent>,
    /// Descriptors carried by the requests in flight.
    fds_in_flight: usize,
    /// How many requests at the front of `in_flight` are known to have
    /// left *offered* (see `read.rs`, `oldest_unclaimed`).
    passed: usize,
    /// Whether the head of the pipeline is counted in `running`.
    head_counted: bool,
    /// Set when requests were taken back: nothing more is pipelined
    /// behind the running job until the pipeline empties.
    held: bool,
    /// Moving average of a job's duration on this worker, in nanoseconds.
    avg_ns: f64,
    /// When the head of the pipeline became the head.
    head_since: Instant,
    buf: Vec<u8>,
    releases: Arc<Releases>,
    /// `releases`, as the objects sent to the worker see it.
    release_sink: Arc<dyn ReleaseSink>,
    /// The shared objects sent to the worker and not released since: what
    /// it may keep mapped.
    kept: HashSet<ObjectId>,
}

impl Supervisor {
    fn new(shared: Arc<ProcShared>, ctl: Arc<SlotCtl>) -> Self {
        let releases = Arc::new(Releases {
            ids: Mutex::new(Vec::new()),
            pool: Arc::downgrade(&shared),
        });
        Supervisor {
            release_sink: releases.clone(),
            releases,
            kept: HashSet::new(),
            shared,
            ctl,
            conn: None,
            worker: 0,
            worker_pid: 0,
            in_flight: VecDeque::new(),
            fds_in_flight: 0,
            passed: 0,
            head_counted: false,
            held: false,
            avg_ns: f64::INFINITY,
            head_since: Instant::now(),
            buf: Vec::new(),
        }
    }

    /// A one-shot pool's worker has come and gone: no other starts, and a
    /// job still queued (its worker died before taking it) fails with how
    /// that worker ended.
    fn one_shot_spent(&self) -> bool {
        let Some(shot) = &self.shared.config.one_shot else {
            return false;
        };
        if !shot.spent() {
            return false;
        }
        let status = shot.exit_status().unwrap_or(ExitStatus::Unknown);
        let stranded: Vec<_> = {
            let mut q = self.shared.lock();
            q.state = q.state.max(Lifecycle::Draining);
            q.jobs.drain(..).collect()
        };
        for job in stranded {
            job.abandon(JobError::Crashed {
                status,
                detail: Some("the process ended before it began the task".into()),
            });
        }
        true
    }

    /// Takes `conn` as the slot's worker.
    fn attach(&mut self, conn: Conn) {
        if let Some(shot) = &self.shared.config.one_shot {
            shot.started(conn.pid);
        }
        self.worker = self.ctl.attach(conn.pid);
        self.worker_pid = conn.pid;
        self.conn = Some(conn);
        self.shared.live_workers.fetch_add(1, Relaxed);
        self.avg_ns = f64::INFINITY;
        self.held = false;
        // A new worker keeps nothing yet.
        self.kept.clear();
    }

    /// Lets the worker go (it is gone, or about to be reaped).
    fn detach(&mut self) -> Option<(u64, KillReason)> {
        self.shared.live_workers.fetch_sub(1, Relaxed);
        self.ctl.detach()
    }

    fn depth(&self) -> usize {
        if self.held || !self.avg_ns.is_finite() {
            return 1;
        }
        let n = PIPELINE_TARGET.as_nanos() as f64 / self.avg_ns.max(1.0);
        (n as usize).clamp(1, MAX_PIPELINE)
    }

    fn run(mut self) {
        loop {
            if self.conn.is_none() && self.one_shot_spent() {
                return;
            }
            if self.conn.is_none() && !self.respawn() {
                return;
            }
            let recycle = self.shared.config.limits.max_jobs_per_worker.is_some_and(|max| {
                self.conn
                    .as_ref()
                    .is_some_and(|c| c.jobs_done + self.in_flight.len() as u64 >= max)
            });
            if !recycle && !self.feed() {
                // Closed and drained: say goodbye to the worker and stop.
                self.retire_worker();
                return;
            }
            if self.in_flight.is_empty() {
                if recycle {
                    self.retire_worker();
                    self.shared.counters.respawns.fetch_add(1, Relaxed);
                }
                continue;
            }
            if self.wait_for_reply() {
                self.read_one();
            }
        }
    }

    /// Puts jobs back at the front of the queue, in their order (or, once
    /// `shutdown_now` was called, resolves them `Cancelled`: they never
    /// started).
    fn requeue_front(&self, jobs: VecDeque<Arc<dyn ProcJob>>) {
        if jobs.is_empty() {
            return;
        }
        let mut q = self.shared.lock();
        if q.state == Lifecycle::Cancelling {
            drop(q);
            for job in jobs {
                job.abandon(JobError::Cancelled);
            }
            return;
        }
        for job in jobs.into_iter().rev() {
            job.requeued();
            q.jobs.push_front(job);
        }
        let waiting = q.waiting > 0;
        drop(q);
        if waiting {
            self.shared.ready.notify_all();
        }
    }

    fn push_sent(&mut self, sent: Sent) {
        self.shared.counters.in_flight.fetch_add(1, Relaxed);
        self.fds_in_flight += sent.fds;
        self.in_flight.push_back(sent);
        if self.in_flight.len() == 1 {
            self.head_changed();
        }
    }

    /// Removes a request from the pipeline's bookkeeping (answered, taken
    /// back, or settled after a death).
    fn forget(&mut self, sent: &Sent) {
        self.shared.counters.in_flight.fetch_sub(1, Relaxed);
        self.fds_in_flight -= sent.fds;
        if self.in_flight.is_empty() {
            self.held = false;
        }
    }

    /// The job at the head of the pipeline is the one the worker runs
    /// next (or now): it counts as running, its timeout starts, and a kill
    /// asked for it happens now.
    fn head_changed(&mut self) {
        self.head_since = Instant::now();
        let head = self.in_flight.front().map(|s| s.job.clone());
        let counted = head.is_some();
        if counted != self.head_counted {
            if counted {
                self.shared.counters.running.fetch_add(1, Relaxed);
            } else {
                self.shared.counters.running.fetch_sub(1, Relaxed);
            }
            self.head_counted = counted;
        }
        match head {
            Some(job) => {
                self.ctl.set_head(job.id());
                job.arm_timeout();
            }
            None => self.ctl.set_head(0),
        }
    }

    /// Removes the head of the pipeline (answered, or settled otherwise).
    fn finish_head(&mut self) -> Option<Arc<dyn ProcJob>> {
        let sent = self.in_flight.pop_front()?;
        self.passed = self.passed.saturating_sub(1);
        self.forget(&sent);
        Some(sent.job)
    }

    /// Starts a replacement worker. `false`: the pool is closing and has
    /// nothing left to run, so the slot can stop.
    ///
    /// While no worker can be started (the descriptor or process limit
    /// reached, say), jobs wait in the queue, where the pool's other
    /// workers take them. If the pool has no worker at all for
    /// `start_timeout`, the queued jobs fail with [`JobError::NoWorker`]:
    /// they never started.
    fn respawn(&mut self) -> bool {
        let mut delay = Duration::from_millis(10);
        let since = Instant::now();
        loop {
            {
                let q = self.shared.lock();
                if q.state != Lifecycle::Open && q.jobs.is_empty() && self.in_flight.is_empty() {
                    return false;
                }
            }
            match Conn::spawn(&self.shared.config) {
                Ok(conn) => {
                    self.attach(conn);
                    return true;
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not start a worker process; retrying");
                    let waited = since.elapsed();
                    if waited >= self.shared.config.start_timeout
                        && self.shared.live_workers.load(Relaxed) == 0
                    {
                        let jobs: Vec<_> = self.shared.lock().jobs.drain(..).collect();
                        for job in jobs {
                            job.abandon(JobError::NoWorker {
                                detail: format!(
                                    "no worker process could be started for {waited:.1?}: {e}"
                                ),
                            });
                        }
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Asks the worker to exit and reaps it.
    fn retire_worker(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let _ = conn.outbox.push(&ToWorker::Exit);
        let _ = conn.flush_all(Duration::from_secs(1));
        // An idle worker exits at once on `Exit`; poll with a growing
        // pause, and kill it if it has not gone within five seconds.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut pause = Duration::from_micros(20);
        while !os::exited(conn.pid) {
            if Instant::now() >= deadline {
                os::kill(conn.pid);
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        // Detached before it is reaped: no kill can reach a reused pid.
        self.detach();
        let status = conn.child.wait();
        if let Some(shot) = &self.shared.config.one_shot {
            shot.ended(blame::exit_status(status));
        }
        if let Some(output) = conn.leftover_output() {
            output.pass_on();
        }
    }
}

/// Re-emits a worker's `tracing` event in this process, tagged with the
/// worker's pid and the job.
fn emit_log(pid: u32, job: Option<u64>, level: LogLevel, origin: &str, message: &str) {
    macro_rules! emit {
        ($lvl:expr) => {
            tracing::event!(
                target: "parpool::worker",
                $lvl,
                worker_pid = pid,
                job = job,
                origin = origin,
                "{message}"
            )
        };
    }
    match level {
        LogLevel::Error => emit!(tracing::Level::ERROR),
        LogLevel::Warn => emit!(tracing::Level::WARN),
        LogLevel::Info => emit!(tracing::Level::INFO),
        LogLevel::Debug => emit!(tracing::Level::DEBUG),
        LogLevel::Trace => emit!(tracing::Level::TRACE),
    }
}
