//! One supervisor thread per worker slot: starts the worker process, feeds
//! it jobs, reads its replies, and replaces it when it dies.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle as ThreadHandle;
use std::time::{Duration, Instant};

use super::capture::{self, CapturedOutput};
use super::fdpass::{FdStream, TakeFds};
use super::wire::{self, FromWorker, LogLevel, ToWorker, ToWorkerRef};
use super::{Config, ProcJob, Shared, State, WorkerOutput, sys};
use crate::error::{BuildError, ExitStatus, JobError};
use crate::ipc::SharedMem;
use crate::shm::{ObjectId, ReleaseSink, SharedObject};

/// Jobs in flight on one worker are capped so that this much work, at the
/// measured job duration, is queued there: tiny jobs travel in batches,
/// long ones one at a time (so they spread over the workers).
const PIPELINE_TARGET: Duration = Duration::from_micros(500);
const MAX_PIPELINE: usize = 1024;
/// Unanswered request bytes allowed in the socket, well under its buffer
/// (about 200 KiB on Linux). The supervisor writes and reads on one thread:
/// if it could block writing while the worker blocks writing a reply, both
/// would wait forever. Within this budget its writes always fit, so it gets
/// back to reading. A request larger than the budget is sent only to an
/// idle worker, which is reading and drains it.
const PIPELINE_BYTES: usize = 64 * 1024;
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
    /// The job the worker is running now (0: none).
    head: u64,
    /// The job the worker was killed for, if it was killed on purpose.
    killed_for: Option<u64>,
}

impl SlotCtl {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.lock().pid
    }

    /// Kills the worker if it is running `job`.
    pub(crate) fn kill_if_running(&self, job: u64) {
        let mut st = self.lock();
        if st.head == job
            && let Some(pid) = st.pid
        {
            sys::kill(pid);
            st.killed_for = Some(job);
        }
    }

    fn set_head(&self, job: u64) {
        self.lock().head = job;
    }
}

/// Why a worker could not be started.
#[derive(Debug)]
enum StartError {
    /// The process could not be started, or did not say hello.
    Io(io::Error),
    /// Its initializer failed.
    Init(JobError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Io(e) => write!(f, "{e}"),
            StartError::Init(e) => write!(f, "its initializer failed: {e}"),
        }
    }
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Io(e)
    }
}

/// A worker slot: its supervisor thread and its control block.
pub(crate) struct Slot {
    thread: ThreadHandle<()>,
    ctl: Arc<SlotCtl>,
}

impl Slot {
    /// Starts the slot's first worker (failing the build if it cannot) and
    /// its supervisor.
    pub(crate) fn start(shared: Arc<Shared>, index: usize) -> Result<Slot, BuildError> {
        let ctl = Arc::new(SlotCtl::default());
        let conn = Conn::spawn(&shared.config, &ctl).map_err(|e| match e {
            StartError::Io(source) => BuildError::Spawn { index, source },
            StartError::Init(error) => BuildError::Initializer { index, error },
        })?;
        let c = ctl.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{}-sup-{index}", shared.config.name))
            .spawn(move || Supervisor::new(shared, c, conn).run())
            .map_err(|source| BuildError::Spawn { index, source })?;
        Ok(Slot { thread, ctl })
    }

    pub(crate) fn ctl(&self) -> &SlotCtl {
        &self.ctl
    }

    pub(crate) fn join(self) {
        let _ = self.thread.join();
    }
}

/// A live worker process and the two ends of its socket.
struct Conn {
    child: Child,
    reader: BufReader<FdStream>,
    writer: BufWriter<UnixStream>,
    pid: u32,
    jobs_done: u64,
    /// Our descriptors of the worker's capture files (stdout, stderr).
    capture: [Option<File>; 2],
    /// The word in which the worker keeps the id of the job it runs.
    running: Option<SharedMem>,
}

impl Conn {
    fn spawn(config: &Config, ctl: &SlotCtl) -> Result<Conn, StartError> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(format!("{} worker", config.name))
            .env(sys::WORKER_ENV, "1")
            .env(sys::PARENT_ENV, sys::pid().to_string())
            .env(sys::MAX_FRAME_ENV, (config.max_payload + 4096).to_string())
            .env(sys::MAX_OUTPUT_ENV, config.max_payload.to_string())
            .stdin(Stdio::from(OwnedFd::from(theirs)));
        let capture = [capture_file(config.stdout)?, capture_file(config.stderr)?];
        cmd.stdout(stdio(config.stdout, &capture[0])?)
            .stderr(stdio(config.stderr, &capture[1])?);
        let which: String = capture
            .iter()
            .zip(["1", "2"])
            .filter_map(|(file, n)| file.as_ref().map(|_| n))
            .collect();
        if !which.is_empty() {
            cmd.env(capture::CAPTURE_ENV, which);
        }
        if let Some(bytes) = config.memory_limit {
            cmd.env(sys::MEMORY_ENV, bytes.to_string());
        }
        for (k, v) in &config.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &config.current_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn()?;
        // Our copy of the worker's end must be closed, or its death would
        // never show as end-of-file here.
        drop(cmd);
        let pid = child.id();
        ours.set_read_timeout(Some(config.start_timeout))?;
        let mut reader = BufReader::with_capacity(64 * 1024, FdStream::new(ours.try_clone()?));
        let hello = wire::read_frame::<_, FromWorker>(&mut reader, 1 << 16, &mut Vec::new());
        match hello {
            Ok(Some(FromWorker::Hello { .. })) => {}
            other => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(StartError::Io(io::Error::other(format!(
                    "the worker process did not start (it said {other:?}, exit status \
                     {status:?}); if this binary's main runs before parpool's constructor, \
                     call parpool::init() first thing in main"
                ))));
            }
        }
        let mut writer = BufWriter::with_capacity(64 * 1024, ours.try_clone()?);
        // Share the "running job" word before any job is sent. Without it
        // (no memory for it) the oldest unanswered job takes the blame.
        let running = SharedMem::new(8).ok().and_then(|mem| {
            let encoded = crate::task::encode(crate::error::CodecStage::EncodeInput, &mem).ok()?;
            let watch = ToWorker::Watch {
                shared: shared_count(&encoded.shared).ok()?,
                input: encoded.bytes,
            };
            wire::write_frame_with_fds(&mut writer, &watch, &encoded.shared).ok()?;
            Some(mem)
        });
        writer.flush()?;
        if let Some((task, Ok(input))) = &config.initializer {
            let init = ToWorker::Init {
                task: (*task).to_owned(),
                shared: shared_count(&input.shared)?,
                input: input.bytes.clone(),
            };
            let mut reply = wire::write_frame_with_fds(&mut writer, &init, &input.shared)
                .and_then(|()| writer.flush())
                .map_err(wire::FrameError::Io)
                .and_then(|()| {
                    wire::read_frame::<_, FromWorker>(&mut reader, 1 << 20, &mut Vec::new())
                });
            // The initializer may log before it answers.
            while let Ok(Some(FromWorker::Log {
                job,
                level,
                target,
                message,
            })) = &reply
            {
                emit_log(pid, *job, *level, target, message);
                reply = wire::read_frame::<_, FromWorker>(&mut reader, 1 << 20, &mut Vec::new());
            }
            let failure = match reply {
                Ok(Some(FromWorker::Done {
                    id: 0,
                    result,
                    output,
                    ..
                })) => {
                    if let Some(output) = output {
                        output.pass_on();
                    }
                    result.err().map(StartError::Init)
                }
                other => Some(StartError::Io(io::Error::other(format!(
                    "the worker did not answer its initializer: {other:?}"
                )))),
            };
            if let Some(failure) = failure {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failure);
            }
        }
        ours.set_read_timeout(None)?;
        let mut st = ctl.lock();
        st.pid = Some(pid);
        st.head = 0;
        st.killed_for = None;
        drop(st);
        Ok(Conn {
            child,
            reader,
            writer,
            pid,
            jobs_done: 0,
            capture,
            running,
        })
    }

    /// What the worker's job wrote before the worker died.
    fn leftover_output(&self) -> Option<CapturedOutput> {
        if self.capture.iter().all(Option::is_none) {
            return None;
        }
        let take = |file: &Option<File>| {
            file.as_ref()
                .and_then(|f| capture::drain(f.as_fd(), u64::MAX).ok())
                .unwrap_or_default()
        };
        Some(CapturedOutput {
            stdout: take(&self.capture[0]),
            stderr: take(&self.capture[1]),
        })
    }
}

fn capture_file(o: WorkerOutput) -> io::Result<Option<File>> {
    match o {
        WorkerOutput::Capture => capture::create().map(Some),
        WorkerOutput::Inherit | WorkerOutput::Null => Ok(None),
    }
}

fn stdio(o: WorkerOutput, capture: &Option<File>) -> io::Result<Stdio> {
    Ok(match (o, capture) {
        (WorkerOutput::Capture, Some(file)) => Stdio::from(file.try_clone()?),
        (WorkerOutput::Null, _) => Stdio::null(),
        _ => Stdio::inherit(),
    })
}

/// Shared objects sent to one slot's worker whose last handle in this
/// process is gone: the worker may stop keeping them mapped
/// ([`Kept`](crate::shm::Kept)).
struct Releases {
    ids: Mutex<Vec<ObjectId>>,
    /// To wake the supervisor when it waits for jobs.
    pool: Weak<Shared>,
}

impl Releases {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ObjectId>> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ReleaseSink for Releases {
    fn released(&self, id: ObjectId) {
        self.lock().push(id);
        // Without the queue's lock, which the dropping thread may hold
        // (`Shared::close` drops cancelled jobs under it). A wake-up lost
        // to that race is made up by the supervisor's `RELEASE_POLL`.
        if let Some(pool) = self.pool.upgrade() {
            pool.ready.notify_all();
        }
    }
}

struct Supervisor {
    shared: Arc<Shared>,
    ctl: Arc<SlotCtl>,
    conn: Option<Conn>,
    in_flight: VecDeque<Arc<dyn ProcJob>>,
    /// Request bytes sent and not yet answered.
    in_flight_bytes: usize,
    head_started: Instant,
    /// Moving average of a job's duration on this worker, in nanoseconds.
    avg_ns: f64,
    buf: Vec<u8>,
    releases: Arc<Releases>,
    /// `releases`, as the objects sent to the worker see it.
    release_sink: Arc<dyn ReleaseSink>,
    /// The shared objects sent to the worker and not released since: what
    /// it may keep mapped.
    kept: HashSet<ObjectId>,
}

impl Supervisor {
    fn new(shared: Arc<Shared>, ctl: Arc<SlotCtl>, conn: Conn) -> Self {
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
            head_started: Instant::now(),
            avg_ns: f64::INFINITY,
            buf: Vec::new(),
        }
    }

    fn depth(&self) -> usize {
        if !self.avg_ns.is_finite() {
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
            self.read_one();
        }
    }

    /// Sends jobs until the pipeline is full, taking them from the queue
    /// in one batch. Blocks for a job only when nothing is in flight.
    /// `false`: the pool is closed and drained.
    fn feed(&mut self) -> bool {
        self.send_releases();
        let want = self.depth().saturating_sub(self.in_flight.len());
        if want == 0 {
            return true;
        }
        let mut batch: VecDeque<Arc<dyn ProcJob>> = {
            let mut q = self.shared.lock();
            loop {
                if !q.jobs.is_empty() {
                    let n = want.min(q.jobs.len());
                    break q.jobs.drain(..n).collect();
                }
                if q.state != State::Open {
                    if self.in_flight.is_empty() {
                        return false;
                    }
                    break VecDeque::new();
                }
                if !self.in_flight.is_empty() || !self.releases.lock().is_empty() {
                    break VecDeque::new();
                }
                q.waiting += 1;
                q = if !self.kept.is_empty() {
                    match self.shared.ready.wait_timeout(q, RELEASE_POLL) {
                        Ok((q, _)) => q,
                        Err(p) => p.into_inner().0,
                    }
                } else {
                    self.shared.ready.wait(q).unwrap_or_else(|p| p.into_inner())
                };
                q.waiting -= 1;
            }
        };
        // Objects dropped before these jobs were submitted are released
        // before the jobs run: a job never sees one kept past its release.
        self.send_releases();
        let mut wrote = false;
        while let Some(job) = batch.pop_front() {
            if !job.start(&self.ctl) {
                // Cancelled while queued: it never runs.
                self.shared.counters.cancelled.fetch_add(1, Relaxed);
                continue;
            }
            let Some(conn) = self.conn.as_mut() else {
                batch.push_front(job);
                self.requeue_front(batch);
                return true;
            };
            if self.in_flight.is_empty() && matches!(conn.child.try_wait(), Ok(Some(_))) {
                // The worker died while idle (killed from outside, say): it
                // never saw these jobs, so they go back to the front of the
                // queue and nobody is blamed.
                batch.push_front(job);
                self.requeue_front(batch);
                self.worker_lost();
                return true;
            }
            let bytes = request_bytes(job.as_ref());
            if !self.in_flight.is_empty() && self.in_flight_bytes + bytes > PIPELINE_BYTES {
                batch.push_front(job);
                self.requeue_front(batch);
                break;
            }
            let shared = job.shared();
            let msg = ToWorkerRef::Run {
                id: job.id(),
                task: job.task(),
                chunk: job.is_chunk(),
                // At most one descriptor per payload byte, so this fits.
                shared: shared.len() as u32,
                input: job.payload(),
            };
            let sent = wire::write_frame_with_fds(&mut conn.writer, &msg, shared).is_ok();
            if sent && !shared.is_empty() {
                // The worker keeps them mapped until told they are gone.
                for object in shared {
                    if let Some(id) = object.watch(&self.release_sink) {
                        self.kept.insert(id);
                    }
                }
            }
            self.in_flight_bytes += bytes;
            // Even if the write failed the job is counted in flight: the
            // read that follows reports the dead worker and settles it.
            wrote |= sent;
            self.in_flight.push_back(job);
            if self.in_flight.len() == 1 {
                self.start_head();
            }
            if !sent {
                self.requeue_front(batch);
                break;
            }
        }
        if wrote && let Some(conn) = self.conn.as_mut() {
            let _ = conn.writer.flush();
        }
        true
    }

    /// Tells the worker which shared objects it may stop keeping, in
    /// batches, as far as the pipeline's byte budget allows (the rest wait
    /// for the next call).
    fn send_releases(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut wrote = false;
        loop {
            let batch: Vec<ObjectId> = {
                let mut ids = self.releases.lock();
                let n = ids.len().min(RELEASE_BATCH);
                let bytes = n * 24 + 16;
                if n == 0
                    || (!self.in_flight.is_empty() && self.in_flight_bytes + bytes > PIPELINE_BYTES)
                {
                    break;
                }
                // Unanswered, these bytes count until the pipeline empties.
                self.in_flight_bytes += bytes;
                ids.drain(..n).collect()
            };
            for id in &batch {
                self.kept.remove(id);
            }
            wrote = true;
            if wire::write_frame(&mut conn.writer, &ToWorker::Release { ids: batch }).is_err() {
                // The read that follows finds the worker gone.
                break;
            }
        }
        if wrote {
            let _ = conn.writer.flush();
        }
    }

    /// Puts unsent jobs back at the front of the queue, in their order.
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

    fn start_head(&mut self) {
        self.head_started = Instant::now();
        match self.in_flight.front() {
            Some(job) => {
                self.ctl.set_head(job.id());
                self.shared.counters.running.fetch_add(1, Relaxed);
                job.clone().arm_timeout();
            }
            None => self.ctl.set_head(0),
        }
    }

    fn finish_head(&mut self) -> Option<Arc<dyn ProcJob>> {
        let job = self.in_flight.pop_front()?;
        self.in_flight_bytes = if self.in_flight.is_empty() {
            // Nothing in flight: the worker has no reply to write, so it
            // reads whatever is still in the socket (`Release` frames) and
            // the budget starts afresh.
            0
        } else {
            self.in_flight_bytes
                .saturating_sub(request_bytes(job.as_ref()))
        };
        self.shared.counters.running.fetch_sub(1, Relaxed);
        Some(job)
    }

    /// Reads one frame from the worker and acts on it.
    fn read_one(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let frame = wire::read_frame::<_, FromWorker>(
            &mut conn.reader,
            self.shared.config.max_payload as usize + 4096,
            &mut self.buf,
        );
        let pid = conn.pid;
        match frame {
            Ok(Some(FromWorker::Done {
                id,
                shared,
                result,
                output,
            })) => {
                let result = match result {
                    Ok(bytes) => match conn.reader.take_fds(shared as usize) {
                        Ok(fds) => Ok((bytes.0, fds)),
                        Err(_) => {
                            // Descriptors lost in transit: the stream is
                            // out of step, so the worker is replaced.
                            self.worker_lost();
                            return;
                        }
                    },
                    Err(e) => Err(e),
                };
                conn.jobs_done += 1;
                let took = self.head_started.elapsed().as_nanos() as f64;
                self.avg_ns = if self.avg_ns.is_finite() {
                    0.8 * self.avg_ns + 0.2 * took
                } else {
                    took
                };
                match self.finish_head() {
                    Some(job) if job.id() == id => {
                        if let Some(output) = output {
                            job.set_output(output);
                        }
                        let counter = if job.complete(result) {
                            &self.shared.counters.completed
                        } else {
                            &self.shared.counters.failed
                        };
                        counter.fetch_add(1, Relaxed);
                        self.start_head();
                    }
                    other => {
                        // Out of order: the stream cannot be trusted.
                        if let Some(job) = other {
                            self.in_flight.push_front(job);
                            self.shared.counters.running.fetch_add(1, Relaxed);
                        }
                        tracing::error!(pid, id, "worker replied out of order; replacing it");
                        sys::kill(pid);
                    }
                }
            }
            Ok(Some(FromWorker::Log {
                job,
                level,
                target,
                message,
            })) => {
                emit_log(pid, job, level, &target, &message);
            }
            Ok(Some(FromWorker::Hello { .. })) => {
                tracing::error!(pid, "worker said hello twice; replacing it");
                sys::kill(pid);
            }
            Ok(None) | Err(_) => self.worker_lost(),
        }
    }

    /// The worker died (or broke the protocol): blame the job it was
    /// running, requeue the ones it had not started, and drop it.
    fn worker_lost(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        sys::kill(conn.pid);
        let status = match conn.child.wait() {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(c), _) => ExitStatus::Code(c),
                (None, Some(sig)) => ExitStatus::Signal(sig),
                _ => ExitStatus::Unknown,
            },
            Err(_) => ExitStatus::Unknown,
        };
        // Read once the worker is gone, so that nothing more is written.
        let leftover = conn.leftover_output();
        let killed_for = {
            let mut st = self.ctl.lock();
            st.pid = None;
            st.head = 0;
            st.killed_for.take()
        };
        self.shared.counters.respawns.fetch_add(1, Relaxed);
        let mut requeue: Vec<Arc<dyn ProcJob>> = Vec::new();
        // Replies are written in batches: jobs the worker finished may have
        // died with their replies unsent. The worker's "running" word says
        // which job it was in: the ones before it finished (they run again,
        // blameless), and if it was in none, nobody is to blame.
        let running = conn
            .running
            .as_ref()
            .and_then(|m| m.atomic_u64(0))
            .map(|w| w.load(std::sync::atomic::Ordering::SeqCst));
        if let Some(id) = running {
            let known = id != 0 && self.in_flight.iter().any(|j| j.id() == id);
            while self
                .in_flight
                .front()
                .is_some_and(|j| !known || j.id() != id)
            {
                if let Some(job) = self.finish_head() {
                    requeue.push(job);
                }
            }
        }
        let head = self.finish_head();
        // What the dead worker's last job wrote belongs to that job.
        match (leftover, &head) {
            (Some(output), Some(job)) => job.set_output(output),
            (Some(output), None) => output.pass_on(),
            (None, _) => {}
        }
        if let Some(head) = head {
            if head.is_resolved() {
                // Cancelled or timed out: the kill was its own.
                self.shared.counters.failed.fetch_add(1, Relaxed);
            } else if killed_for.is_some_and(|k| k != head.id()) {
                // Killed for a job that had just finished: not this one's fault.
                requeue.push(head);
            } else if head.crashed_once() <= self.shared.config.retries {
                tracing::debug!(job = head.id(), %status, "worker crashed; retrying the job");
                requeue.push(head);
            } else {
                let detail = self.describe(status);
                if head.abandon(JobError::Crashed { status, detail }) {
                    self.shared.counters.failed.fetch_add(1, Relaxed);
                }
            }
        }
        requeue.extend(self.in_flight.drain(..));
        self.in_flight_bytes = 0;
        self.requeue_front(requeue.into());
        tracing::debug!(pid = conn.pid, %status, "worker process lost");
    }

    fn describe(&self, status: ExitStatus) -> Option<String> {
        let what = match status {
            ExitStatus::Signal(9) => "SIGKILL: killed, possibly by the out-of-memory killer",
            ExitStatus::Signal(6) if self.shared.config.memory_limit.is_some() => {
                "SIGABRT: aborted, possibly on reaching the memory limit"
            }
            ExitStatus::Signal(6) => "SIGABRT: aborted",
            ExitStatus::Signal(11) => "SIGSEGV: segmentation fault",
            ExitStatus::Signal(7) => "SIGBUS: bus error",
            ExitStatus::Signal(4) => "SIGILL: illegal instruction",
            ExitStatus::Signal(8) => "SIGFPE: arithmetic exception",
            ExitStatus::Code(_) => "the task exited the process",
            _ => return None,
        };
        Some(what.to_owned())
    }

    /// Starts a replacement worker. `false`: the pool is closing and has
    /// nothing left to run, so the slot can stop.
    fn respawn(&mut self) -> bool {
        let mut delay = Duration::from_millis(10);
        loop {
            {
                let q = self.shared.lock();
                if q.state != State::Open && q.jobs.is_empty() && self.in_flight.is_empty() {
                    return false;
                }
            }
            match Conn::spawn(&self.shared.config, &self.ctl) {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.avg_ns = f64::INFINITY;
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
                        if job.abandon(JobError::Crashed {
                            status: ExitStatus::Unknown,
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
            let mut st = self.ctl.lock();
            st.pid = None;
            st.head = 0;
        }
    }
}

fn shared_count(shared: &[SharedObject]) -> io::Result<u32> {
    u32::try_from(shared.len()).map_err(|_| io::Error::other("too many shared segments"))
}

/// About how many bytes a job's request takes on the wire.
fn request_bytes(job: &dyn ProcJob) -> usize {
    job.payload().len() + job.task().len() + 32
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
