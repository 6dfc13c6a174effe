//! One supervisor thread per worker slot: it starts the worker process
//! (and every replacement), feeds it jobs, reads its replies, takes back
//! jobs stranded behind a running one, and replaces the worker when it
//! dies.
//!
//! - `spawn.rs`: starting a worker (command, handshake, control block,
//!   initializer);
//! - this file: the slot, the loop, the pipeline's bookkeeping and tuning;
//! - `feed.rs`: taking jobs and writing their requests;
//! - `read.rs`: reading replies, taking back stranded requests;
//! - `blame.rs`: what a worker's death does to the jobs it had.

mod blame;
mod feed;
mod read;
mod spawn;

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle as ThreadHandle;
use std::time::{Duration, Instant};

use super::job::ProcJob;
use super::wire::{self, LogLevel, ToWorker};
use super::{ProcShared, os};
use crate::error::BuildError;
use crate::lifecycle::Lifecycle;
use crate::sync::lock;
use parpool_ipc::transfer::{ObjectId, ReleaseSink};
use spawn::{Conn, StartError};

pub(crate) use blame::KillReason;

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
/// Unanswered request bytes allowed in the socket, well under its buffer
/// (about 200 KiB on Linux). The supervisor writes and reads on one thread:
/// if it could block writing while the worker blocks writing a reply, both
/// would wait forever. Within this budget its writes always fit, so it gets
/// back to reading. A request larger than the budget is sent only to an
/// idle worker, which is reading and drains it. Revoked requests stay
/// counted until the pipeline empties (the worker still has to read them).
const PIPELINE_BYTES: usize = 64 * 1024;
/// What one write costs the socket's buffer beyond its bytes: the kernel
/// accounts each write's buffer (`skb`) at its true size, about 1 KiB more
/// than a small payload. Counted against [`PIPELINE_BYTES`], so that many
/// small writes cannot fill the socket while few bytes are in flight.
const WRITE_COST: usize = 1024;
/// At most this many ids in one `Release` frame (about 1 KiB).
const RELEASE_BATCH: usize = 64;
/// An idle supervisor whose worker keeps shared objects looks for
/// releases at least this often, in case a wake-up raced with its wait.
const RELEASE_POLL: Duration = Duration::from_millis(50);

/// What other threads may do to a slot: read its worker's pid, and kill the
/// worker if it is running a given job (cancel, timeout).
#[derive(Debug, Default)]
pub(crate) struct SlotCtl {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    pid: Option<u32>,
    /// Readable once the worker exited.
    pidfd: Option<std::os::fd::OwnedFd>,
    /// The job at the head of the worker's pipeline (0: none).
    head: u64,
    /// Why the pool killed the worker, and for which job, if it did.
    killed: Option<(u64, KillReason)>,
}

impl SlotCtl {
    /// The worker's pid, unless it has exited.
    pub(crate) fn live_pid(&self) -> Option<u32> {
        let st = lock(&self.state);
        let exited = st
            .pidfd
            .as_ref()
            .is_some_and(|fd| os::readable(fd.as_fd(), None));
        st.pid.filter(|_| !exited)
    }

    /// Kills the worker if it is running `job`.
    pub(crate) fn kill_if_running(&self, job: u64, why: KillReason) {
        let mut st = lock(&self.state);
        if st.head == job
            && let Some(pid) = st.pid
        {
            os::kill(pid);
            st.killed = Some((job, why));
        }
    }

    /// Kills the worker because of what it did.
    fn kill(&self, why: KillReason) {
        let mut st = lock(&self.state);
        if let Some(pid) = st.pid {
            os::kill(pid);
            st.killed = Some((st.head, why));
        }
    }

    fn set_head(&self, job: u64) {
        lock(&self.state).head = job;
    }

    fn attach(&self, conn: &mut Conn) {
        let mut st = lock(&self.state);
        st.pid = Some(conn.pid);
        st.pidfd = conn.pidfd.take();
        st.head = 0;
        st.killed = None;
    }

    /// Forgets the worker (gone); returns why the pool killed it, if it did.
    fn detach(&self) -> Option<(u64, KillReason)> {
        let mut st = lock(&self.state);
        st.pid = None;
        st.pidfd = None;
        st.head = 0;
        st.killed.take()
    }
}

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
                let mut conn = match Conn::spawn(&shared.config) {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = tell.send(Err(match e {
                            StartError::Io(source) => BuildError::Spawn { index, source },
                            StartError::Init(error) => BuildError::Initializer { index, error },
                        }));
                        return;
                    }
                };
                c.attach(&mut conn);
                let _ = tell.send(Ok(()));
                Supervisor::new(shared, c, conn).run();
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
    bytes: usize,
}

struct Supervisor {
    shared: Arc<ProcShared>,
    ctl: Arc<SlotCtl>,
    conn: Option<Conn>,
    /// In the order written; the worker answers in that order.
    in_flight: VecDeque<Sent>,
    /// Request bytes written and not yet known to be read.
    in_flight_bytes: usize,
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
    fn new(shared: Arc<ProcShared>, ctl: Arc<SlotCtl>, conn: Conn) -> Self {
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
            conn: Some(conn),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            held: false,
            avg_ns: f64::INFINITY,
            head_since: Instant::now(),
            buf: Vec::new(),
        }
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
            if self.conn.is_none() && !self.respawn() {
                return;
            }
            let recycle = self.shared.config.max_jobs_per_worker.is_some_and(|max| {
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
            self.wait_for_reply();
            self.read_one();
        }
    }

    /// Puts jobs back at the front of the queue, in their order.
    fn requeue_front(&self, jobs: VecDeque<Arc<dyn ProcJob>>) {
        if jobs.is_empty() {
            return;
        }
        let mut q = self.shared.lock();
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
        self.in_flight.push_back(sent);
        if self.in_flight.len() == 1 {
            self.start_head();
        }
    }

    /// The job at the head of the pipeline is the one the worker runs
    /// next (or now): cancel and timeout kill the worker for it.
    fn start_head(&mut self) {
        self.head_since = Instant::now();
        match self.in_flight.front() {
            Some(sent) => {
                self.ctl.set_head(sent.job.id());
                self.shared.counters.running.fetch_add(1, Relaxed);
                sent.job.clone().arm_timeout();
            }
            None => self.ctl.set_head(0),
        }
    }

    /// Removes the head of the pipeline (answered, or settled otherwise).
    fn finish_head(&mut self) -> Option<Arc<dyn ProcJob>> {
        let sent = self.in_flight.pop_front()?;
        self.shared.counters.in_flight.fetch_sub(1, Relaxed);
        self.shared.counters.running.fetch_sub(1, Relaxed);
        self.in_flight_bytes = if self.in_flight.is_empty() {
            // Nothing in flight: the worker has no reply to write, so it
            // reads whatever is still in the socket (`Release` frames,
            // revoked requests) and the budget starts afresh.
            self.held = false;
            0
        } else {
            self.in_flight_bytes.saturating_sub(sent.bytes)
        };
        Some(sent.job)
    }

    /// Starts a replacement worker. `false`: the pool is closing and has
    /// nothing left to run, so the slot can stop.
    fn respawn(&mut self) -> bool {
        let mut delay = Duration::from_millis(10);
        loop {
            {
                let q = self.shared.lock();
                if q.state != Lifecycle::Open && q.jobs.is_empty() && self.in_flight.is_empty() {
                    return false;
                }
            }
            match Conn::spawn(&self.shared.config) {
                Ok(mut conn) => {
                    self.ctl.attach(&mut conn);
                    self.conn = Some(conn);
                    self.avg_ns = f64::INFINITY;
                    self.held = false;
                    // A new worker keeps nothing yet.
                    self.kept.clear();
                    return true;
                }
                Err(e) => {
                    // Fail one queued job with the reason, so that a pool
                    // that cannot start workers reports it instead of hanging.
                    let job = self.shared.lock().jobs.pop_front();
                    if let Some(job) = job {
                        let detail = Some(format!("could not start a worker: {e}"));
                        if job.abandon(crate::error::JobError::Crashed {
                            status: crate::error::ExitStatus::Unknown,
                            detail,
                        }) {
                            self.shared.counters.failed.fetch_add(1, Relaxed);
                        }
                    }
                    tracing::error!(error = %e, "could not start a worker process; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Asks the worker to exit and reaps it.
    fn retire_worker(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = wire::write_frame(&mut conn.writer, &ToWorker::Exit);
            let _ = conn.writer.flush();
            // An idle worker exits at once on `Exit`; poll with a growing
            // pause, and kill it if it has not gone within five seconds.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut pause = Duration::from_micros(20);
            loop {
                match conn.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = conn.child.kill();
                        let _ = conn.child.wait();
                        break;
                    }
                    Ok(None) => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(5));
                    }
                }
            }
            if let Some(output) = conn.leftover_output() {
                output.pass_on();
            }
            self.ctl.detach();
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
