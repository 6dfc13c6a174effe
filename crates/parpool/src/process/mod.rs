//! [`ProcessPool`]: registered tasks in separate worker processes.
//!
//! Design notes are in `README.md` beside this file.

mod capture;
mod child;
mod control;
mod events;
mod fdpass;
#[macro_use]
mod limits;
mod one_shot;
mod os;
pub(crate) mod pod;
pub(crate) mod registry;
mod reply_log;
mod ring;
mod slot;
mod submission;
mod supervisor;
mod wire;

pub use child::with_worker_state;
pub use events::{EventSink, EventsOnly};
pub use limits::WorkerLimits;

/// What the fuzz targets (`fuzz/`, `cargo fuzz`) reach: both ends' frame
/// decoding, fed arbitrary bytes. Neither may panic, hang or misbehave.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzz {
    use std::io::BufReader;
    use std::sync::Arc;

    use super::wire::{self, FromWorker, ToWorker};

    /// Feeds `bytes` to a worker's request loop, as if its parent had sent
    /// them (no descriptors come with them).
    pub fn worker_reads(bytes: &[u8]) {
        let out = Arc::new(super::child::Replies::new(Vec::new()));
        let limits = super::child::Limits {
            max_frame: 1 << 20,
            max_output: 1 << 20,
            sharing: super::registry::Sharing::Descriptors,
            spin: std::time::Duration::ZERO,
        };
        let streams = super::capture::Streams::default();
        let _ = super::child::serve(BufReader::new(bytes), &out, limits, &streams);
    }

    /// Decodes `bytes` as a stream of frames from a worker (and as one
    /// from a parent), and each reply's payload as a map chunk's results,
    /// as a supervisor would.
    pub fn supervisor_reads(bytes: &[u8]) {
        let mut buf = Vec::new();
        let mut stream = bytes;
        while let Ok(Some(frame)) =
            wire::read_frame::<_, FromWorker>(&mut stream, 1 << 20, &mut buf)
        {
            if let FromWorker::Done {
                result: Ok(out), ..
            } = frame
            {
                let _ = crate::codec::decode::<Vec<Result<u64, crate::JobError>>>(
                    crate::error::CodecStage::DecodeOutput,
                    &out.0,
                    Vec::new(),
                );
            }
        }
        let mut stream = bytes;
        while let Ok(Some(_)) = wire::read_frame::<_, ToWorker>(&mut stream, 1 << 20, &mut buf) {}
    }
}
pub use one_shot::Process;
pub use pod::{PodMapError, PodPar};

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::codec::{decode, encode};
use crate::error::{BuildError, CodecStage, JobError, Payload};
use crate::handle::{JobState, JobHandle};
use crate::job::{JobId, JobOptions};
use crate::lifecycle::Lifecycle;
use crate::map::{ChunkIn, ChunkOut};
use crate::stats::{Stats, Tally};
use crate::task::{Executor, Task, sealed};
use submission::{Chunk, ProcCell, ProcJob, Single, Work};
use parpool_ipc::transfer::Encoded;
use registry::Sharing;

/// Where a worker's standard output or error goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WorkerOutput {
    /// The parent's (default).
    #[default]
    Inherit,
    /// Discarded. A panic's message still reaches the job's handle.
    Null,
    /// Captured per job: what each job writes is kept apart from other
    /// jobs' output and read with [`JobHandle::captured_output`] or
    /// [`JobHandle::join_captured`]. Output of `map` chunks, which have no
    /// handle of their own, and of initializers is written to this
    /// process's own stream, one job's output in one piece. Output is held
    /// in memory until its job ends, up to `max_payload` bytes per job.
    ///
    /// [`JobHandle::captured_output`]: crate::JobHandle::captured_output
    /// [`JobHandle::join_captured`]: crate::JobHandle::join_captured
    Capture,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) name: String,
    pub(crate) limits: WorkerLimits,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) current_dir: Option<PathBuf>,
    pub(crate) stdout: WorkerOutput,
    pub(crate) stderr: WorkerOutput,
    pub(crate) start_timeout: Duration,
    /// How workers write shared objects in outputs.
    pub(crate) sharing: Sharing,
    /// Task name and encoded input run once in each new worker.
    pub(crate) initializer: Option<(&'static str, Result<Encoded, JobError>)>,
    /// For a [`Process`]: one worker, never replaced, whose pid and end
    /// are reported here.
    pub(crate) one_shot: Option<Arc<one_shot::OneShot>>,
    /// The program workers start as, if not this executable.
    pub(crate) worker_command: Option<WorkerCommand>,
    /// How long waiters poll before they sleep (`spin`; zero: off).
    pub(crate) spin: Duration,
}

/// A program and its arguments that serve as a pool's worker
/// ([`ProcessPoolBuilder::worker_command`]).
#[derive(Debug, Clone)]
pub(crate) struct WorkerCommand {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
}

/// Configures and builds a [`ProcessPool`].
#[derive(Debug, Clone)]
pub struct ProcessPoolBuilder {
    config: Config,
    workers: Option<usize>,
}

impl Default for ProcessPoolBuilder {
    fn default() -> Self {
        ProcessPoolBuilder {
            workers: None,
            config: Config {
                workers: 0,
                name: "parpool-proc".to_owned(),
                limits: WorkerLimits::default(),
                env: Vec::new(),
                current_dir: None,
                stdout: WorkerOutput::Inherit,
                stderr: WorkerOutput::Inherit,
                start_timeout: Duration::from_secs(30),
                sharing: Sharing::Descriptors,
                initializer: None,
                one_shot: None,
                worker_command: None,
                spin: Duration::ZERO,
            },
        }
    }
}

/// The longest low-latency window ([`ProcessPoolBuilder::spin`]): past a
/// second, polling only burns a core that sleeping would not.
const MAX_SPIN: Duration = Duration::from_secs(1);

impl ProcessPoolBuilder {
    /// Number of worker processes (default: the machine's available
    /// parallelism).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// A name for the pool's supervisor threads and log events.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Sets an environment variable for the workers.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.config
            .env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The workers' working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.current_dir = Some(dir.into());
        self
    }

    /// Where the workers' standard output goes.
    pub fn stdout(mut self, output: WorkerOutput) -> Self {
        self.config.stdout = output;
        self
    }

    /// Where the workers' standard error goes.
    pub fn stderr(mut self, output: WorkerOutput) -> Self {
        self.config.stderr = output;
        self
    }

    /// Starts each worker as `program` with `args`, instead of as this
    /// executable. The program serves the pool by calling
    /// [`serve_worker`] (a Rust binary does so in `main`; parpool's Python
    /// package runs the interpreter on its worker module, which does the
    /// same), and must know the tasks the pool submits: the same binary
    /// started another way, or another one linking the same `task!`s. It
    /// learns which pool it serves from its environment, so its command
    /// line is free.
    ///
    /// Everything else holds as for the default workers: a worker that
    /// crashes fails its job alone and is replaced by the same command, and
    /// timeouts, cancels and limits apply. A command that cannot start, or
    /// ends without serving, fails [`build`](Self::build) with
    /// [`BuildError::Spawn`].
    ///
    /// ```no_run
    /// use parpool::{Executor, ProcessPool};
    ///
    /// parpool::task!(fn double(x: u64) -> u64 { x * 2 });
    ///
    /// fn main() {
    ///     if std::env::args().any(|a| a == "--serve") {
    ///         // Started by the pool below: serve it, then end.
    ///         parpool::serve_worker().expect("serve the pool");
    ///         return;
    ///     }
    ///     let me = std::env::current_exe().unwrap();
    ///     let pool = ProcessPool::builder()
    ///         .worker_command(me, ["--serve"])
    ///         .build()
    ///         .unwrap();
    ///     assert_eq!(pool.submit(double, 21).join(), Ok(42));
    /// }
    /// ```
    pub fn worker_command<I, S>(mut self, program: impl AsRef<OsStr>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.config.worker_command = Some(WorkerCommand {
            program: program.as_ref().to_owned(),
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
        });
        self
    }

    /// Runs `task` on `input` once in every worker process as it starts
    /// (replacements included), before it takes any job. The task's output
    /// stays in the worker as its state, reachable from tasks with
    /// [`with_worker_state`] (like mpire's
    /// `worker_state`). If it fails, [`build`](Self::build) fails with
    /// [`BuildError::Initializer`].
    pub fn initializer<T: Task>(mut self, task: T, input: T::Input) -> Self {
        let _ = task;
        let bytes = encode_input(&input);
        self.config.initializer = Some((T::NAME, bytes));
        self
    }

    /// Turns on the low-latency mode: an idle worker polls for its next
    /// request, and the pool's supervisor threads for replies and new
    /// jobs, for up to `window` before they sleep; a thread joining one of
    /// the pool's jobs polls as long for its end. Requests and replies that
    /// carry no shared-memory descriptor then travel through rings in
    /// shared memory rather than the socket. A job and its reply cross
    /// without a wake-up or a system call on either side: a round trip of
    /// a tiny job takes about an eighth of its time without (6–8 µs against
    /// 55–60 µs on a 2-core machine; the `process` suite of the benches).
    ///
    /// Off by default (`Duration::ZERO`), because it costs CPU: up to one
    /// core per worker, and one per supervisor, busy for `window` after
    /// each job, whether or not another comes. It pays where jobs are
    /// small and come one after another, on a machine with a core for
    /// each worker, its supervisor and the submitting thread; where they
    /// share cores, the spinners give their core away between probes, and
    /// the gain shrinks. Idle for longer than `window`, a pool uses no CPU,
    /// as without the mode. A `window` of 50 to 200 µs covers most
    /// gaps between one job and the next of a tight loop; one longer than
    /// a second is taken as a second.
    ///
    /// ```
    /// use std::time::Duration;
    /// use parpool::{Executor, ProcessPool};
    ///
    /// parpool::task! {
    ///     fn inc(x: u64) -> u64 { x + 1 }
    /// }
    ///
    /// let pool = ProcessPool::builder()
    ///     .workers(1)
    ///     .spin(Duration::from_micros(100))
    ///     .build()?;
    /// assert_eq!(pool.submit(inc, 1).join()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spin(mut self, window: Duration) -> Self {
        self.config.spin = window.min(MAX_SPIN);
        self
    }

    /// How long a new worker may take to start and say hello (default 30
    /// s; `build` fails past it), and how long a pool with no worker at
    /// all keeps its queued jobs waiting while it retries starting one
    /// (the operating system refusing processes or descriptors): past it,
    /// they fail with [`JobError::NoWorker`]. A pool with a live worker
    /// never fails a job for want of another.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.config.start_timeout = timeout;
        self
    }

    /// Has the workers write outputs by value, for a pool whose parent
    /// forwards them to another machine: a `SharedBytes` is copied inline
    /// and an `ipc` object fails its job with [`JobError::Unsendable`]. For
    /// [`ProcessPool::submit_encoded`]; not part of the API.
    #[doc(hidden)]
    pub fn outputs_by_value(mut self) -> Self {
        self.config.sharing = Sharing::ByValue;
        self
    }

    __worker_limit_setters!(config.limits);

    /// Sets every limit at once, as parpool-mpi's ranks receive them; not
    /// part of the API.
    #[doc(hidden)]
    pub fn worker_limits(mut self, limits: WorkerLimits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Starts the workers and waits until each has said hello.
    pub fn build(self) -> Result<ProcessPool, BuildError> {
        let mut config = self.config;
        config.workers = BuildError::worker_count(self.workers)?;
        config.limits.check()?;
        if os::started_as_worker() {
            // A worker that reached user code: the constructor did not run.
            // Refusing here prevents a runaway chain of processes.
            return Err(BuildError::InvalidSetting {
                setting: "ProcessPool",
                reason: "this process is a parpool worker and may not start workers of its \
                         own; call parpool::init() at the top of main"
                    .into(),
            });
        }
        // Keeps the object file with the worker constructor in the link.
        std::hint::black_box(child::constructor_linked());
        if let Some((_, Err(error))) = &config.initializer {
            return Err(BuildError::Initializer {
                index: 0,
                error: error.clone(),
            });
        }
        crate::panic::install_hook();
        let shared = Arc::new(ProcShared {
            config,
            queue: Mutex::new(JobQueue {
                jobs: VecDeque::new(),
                state: Lifecycle::Open,
                waiting: 0,
            }),
            ready: Condvar::new(),
            next_id: AtomicU64::new(1),
            counters: PoolCounters::default(),
            tally: Arc::default(),
            live_workers: AtomicUsize::new(0),
        });
        // Each supervisor thread starts its own worker (and every
        // replacement): a worker dies with the thread that started it, and
        // these threads live as long as the pool. They start in parallel.
        let mut slots = Vec::new();
        let mut failure = None;
        for index in 0..shared.config.workers {
            match supervisor::Slot::start(shared.clone(), index) {
                Ok(slot) => slots.push(slot),
                Err(source) => {
                    failure = Some(source);
                    break;
                }
            }
        }
        for slot in &slots {
            if let Err(source) = slot.started() {
                failure.get_or_insert(source);
            }
        }
        if let Some(source) = failure {
            shared.close(Lifecycle::Cancelling);
            for s in slots {
                s.join();
            }
            return Err(source);
        }
        tracing::debug!(pool = %shared.config.name, workers = slots.len(), "process pool started");
        Ok(ProcessPool {
            shared,
            slots: Mutex::new(slots),
            pod_buffers: pod::Buffers::default(),
        })
    }
}

/// A pool of worker processes running registered [`Task`]s.
///
/// The process-backed counterpart of Python's `ProcessPoolExecutor`, with
/// the same API as [`ThreadPool`](crate::ThreadPool) through [`Executor`].
/// A job that panics, aborts, segfaults, exits, runs out of memory or past
/// its timeout fails **alone** with a typed [`JobError`]; the pool replaces
/// the worker and every other job carries on. In a
/// [`map_task`](Executor::map_task), that is the one item that crashed: the
/// items of its chunk that finished keep their results, and the others run
/// on.
///
/// Jobs that wait for each other are normal use: tiny jobs are sent ahead
/// to busy workers in batches, but a job sent ahead that has not started
/// within about a millisecond (the job ahead of it blocks, on an
/// [`ipc`](crate::ipc) object or anything else) is taken back and run by
/// the next free worker, and never runs twice. Workers belong to the pool,
/// not to the thread that built it, and die with this process.
///
/// Workers re-execute the current binary, which parpool diverts into its
/// worker loop before `main` runs; only registered tasks run in them.
///
/// Large data travels without copies: a [`SharedBytes`](crate::SharedBytes)
/// or an [`ipc`](crate::ipc) object in a job's input or output crosses as a
/// file descriptor. A worker maps each such object once and keeps it
/// mapped while this process still holds a handle to it, so data handed
/// to job after job is mapped, and faulted in, only the first time.
///
/// No setup in `main` is needed (see [`init`] for the rare exception):
///
/// ```
/// use parpool::{Executor, ProcessPool};
///
/// parpool::task!(fn cube(x: i64) -> i64 { x * x * x });
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let pool = ProcessPool::builder().workers(2).build()?;
///     assert_eq!(pool.submit(cube, 3).join()?, 27);
///     let cubes: Vec<i64> = pool.map_task(cube, 0..4).collect::<Result<_, _>>()?;
///     assert_eq!(cubes, [0, 1, 8, 27]);
///     Ok(())
/// }
/// ```
pub struct ProcessPool {
    shared: Arc<ProcShared>,
    slots: Mutex<Vec<supervisor::Slot>>,
    /// Shared memory kept from one `par` map for the next.
    pod_buffers: pod::Buffers,
}

pub(crate) struct JobQueue {
    pub(crate) jobs: VecDeque<Arc<dyn ProcJob>>,
    pub(crate) state: Lifecycle,
    /// Supervisors blocked on `ready` (a notify with nobody waiting still
    /// costs a syscall).
    pub(crate) waiting: usize,
}

#[derive(Default)]
pub(crate) struct PoolCounters {
    /// Jobs heading a worker's pipeline: the one it runs (at most one per
    /// worker).
    pub(crate) running: AtomicU64,
    /// Jobs written to workers and not answered, the running ones
    /// included; the others wait in a worker's pipeline.
    pub(crate) in_flight: AtomicU64,
    pub(crate) respawns: AtomicU64,
}

pub(crate) struct ProcShared {
    pub(crate) config: Config,
    pub(crate) queue: Mutex<JobQueue>,
    pub(crate) ready: Condvar,
    next_id: AtomicU64,
    pub(crate) counters: PoolCounters,
    /// Submissions and outcomes (see `stats.rs`).
    pub(crate) tally: Arc<Tally>,
    /// Slots with a worker attached.
    pub(crate) live_workers: AtomicUsize,
}

impl ProcShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, JobQueue> {
        crate::sync::lock(&self.queue)
    }

    /// The queue, if nobody holds its lock now.
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, JobQueue>> {
        match self.queue.try_lock() {
            Ok(q) => Some(q),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn close(&self, state: Lifecycle) {
        let mut q = self.lock();
        q.state = q.state.max(state);
        let dropped: Vec<_> = if state == Lifecycle::Cancelling {
            q.jobs.drain(..).collect()
        } else {
            Vec::new()
        };
        drop(q);
        self.ready.notify_all();
        // Resolved outside the lock: their callbacks may use the pool.
        for job in dropped {
            job.abandon(JobError::Cancelled);
        }
    }

    /// Queues a job, or resolves it `Shutdown` if the pool is closed.
    fn push(&self, job: Arc<dyn ProcJob>) {
        let mut q = self.lock();
        if q.state != Lifecycle::Open {
            drop(q);
            job.abandon(JobError::Shutdown);
            return;
        }
        q.jobs.push_back(job);
        let waiting = q.waiting > 0;
        drop(q);
        if waiting {
            self.ready.notify_one();
        }
    }
}

impl ProcessPool {
    /// A builder with default settings.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::default()
    }

    /// Number of worker processes.
    pub fn workers(&self) -> usize {
        self.shared.config.workers
    }

    /// The low-latency window the pool was built with
    /// ([`ProcessPoolBuilder::spin`]; zero: off). A binding that waits for
    /// the pool's jobs its own way polls as long before it sleeps.
    pub fn spin(&self) -> Duration {
        self.shared.config.spin
    }

    /// The pids of the live worker processes (a crashed worker's
    /// replacement has a new pid; a worker that died is left out at once,
    /// before its replacement starts).
    pub fn worker_pids(&self) -> Vec<u32> {
        let slots = crate::sync::lock(&self.slots);
        slots.iter().filter_map(|s| s.ctl().live_pid()).collect()
    }

    /// Kills every worker now (`SIGKILL`); each job it had fails or is
    /// retried as after a crash.
    pub(crate) fn kill_workers(&self) {
        for slot in crate::sync::lock(&self.slots).iter() {
            slot.ctl().kill(self::slot::KillReason::Cancelled);
        }
    }

    /// How many worker processes were replaced after a crash, a kill
    /// (cancel, timeout) or reaching `max_jobs_per_worker`.
    pub fn respawns(&self) -> u64 {
        self.shared.counters.respawns.load(Relaxed)
    }

    fn submit_work<O, W>(
        &self,
        task: &'static str,
        payload: Result<Encoded, JobError>,
        timeout: Option<Duration>,
        work: W,
    ) -> JobHandle<O>
    where
        O: Send + 'static,
        W: Work<O>,
    {
        let id = JobId(self.shared.next_id.fetch_add(1, Relaxed));
        let payload = match payload {
            Ok(p) if p.bytes.len() as u64 > self.shared.config.limits.max_payload => {
                Err(JobError::TooLarge {
                    what: Payload::Input,
                    size: p.bytes.len() as u64,
                    limit: self.shared.config.limits.max_payload,
                })
            }
            other => other,
        };
        let payload = match payload {
            Ok(p) => p,
            Err(e) => return JobHandle::ready_counted(id, &self.shared.tally, Err(e)),
        };
        let timeout = timeout.or(self.shared.config.limits.job_timeout);
        let cell = Arc::new(ProcCell::new(
            JobState::counted(id, 0, &self.shared.tally).join_spin(self.shared.config.spin),
            task,
            payload,
            timeout,
            work,
        ));
        self.shared.push(cell.clone());
        JobHandle::from_cell(cell)
    }

    /// Runs the task registered as `task` on its encoded input, for a
    /// pool that forwards jobs it received encoded (an MPI rank serving
    /// another's pool). The output comes back encoded. A name no task is
    /// registered under resolves [`JobError::UnknownTask`]. Not part of the
    /// API.
    #[doc(hidden)]
    pub fn submit_encoded(
        &self,
        task: &str,
        input: Vec<u8>,
        timeout: Option<Duration>,
    ) -> JobHandle<Vec<u8>> {
        let Some(name) = self.registered(task) else {
            return self.unknown(task);
        };
        let payload = Ok(Encoded {
            bytes: input,
            shared: Vec::new(),
        });
        let work = Single::new(|bytes: &[u8], _fds: Vec<OwnedFd>| Ok(bytes.to_vec()));
        self.submit_work(name, payload, timeout, work)
    }

    /// Runs the task registered as `task` over an encoded `Vec` of `len`
    /// inputs, as a `map` chunk: one result per item, each output encoded
    /// (see [`ProcessPoolBuilder::outputs_by_value`], which such a pool
    /// needs). Not part of the API.
    #[doc(hidden)]
    pub fn submit_encoded_chunk(
        &self,
        task: &str,
        input: Vec<u8>,
        len: usize,
    ) -> JobHandle<ChunkOut<(), serde_bytes::ByteBuf>> {
        let Some(name) = self.registered(task) else {
            return self.unknown(task);
        };
        let payload = Ok(Encoded {
            bytes: input,
            shared: Vec::new(),
        });
        self.submit_work(name, payload, None, Chunk::new(len, Vec::new(), Ok))
    }

    /// Takes job `id` back if it waits in the pool's queue and no worker
    /// ran any of it (a crashed job waiting for its retry stays); `true`
    /// if it did. Its handle resolves [`JobError::Cancelled`], and the
    /// caller runs it elsewhere. Not part of the API.
    #[doc(hidden)]
    pub fn withdraw(&self, id: JobId) -> bool {
        let mut q = self.shared.lock();
        let Some(at) = q.jobs.iter().position(|j| j.id() == id.get()) else {
            return false;
        };
        if q.jobs[at].attempted() {
            return false;
        }
        let job = q.jobs.remove(at);
        drop(q);
        job.is_some_and(|job| job.abandon(JobError::Cancelled))
    }

    fn registered(&self, task: &str) -> Option<&'static str> {
        registry::TaskEntry::find(task).map(|entry| entry.name())
    }

    fn unknown<O: Send + 'static>(&self, task: &str) -> JobHandle<O> {
        let id = JobId(self.shared.next_id.fetch_add(1, Relaxed));
        JobHandle::ready_counted(
            id,
            &self.shared.tally,
            Err(JobError::UnknownTask {
                name: task.to_owned(),
            }),
        )
    }

    /// Runs a task that takes nothing, as Python's `executor.submit(fn)`:
    /// a [`call!`](crate::call!) closure or a [`task!`](crate::task!)
    /// without parameters. (A process runs tasks, which it finds by name,
    /// not closures: a closure here is a compile error that says so.)
    ///
    /// ```
    /// use parpool::{call, ProcessPool};
    ///
    /// let pool = ProcessPool::builder().workers(1).build()?;
    /// let pid = pool.spawn(call!(|| std::process::id())).join()?;
    /// assert_ne!(pid, std::process::id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// ```compile_fail
    /// let pool = parpool::ProcessPool::builder().workers(1).build().unwrap();
    /// pool.spawn(|| std::process::id());
    /// ```
    pub fn spawn<T: Task<Input = ()>>(&self, task: T) -> JobHandle<T::Output> {
        self.submit(task, ())
    }

    /// Stops accepting jobs, runs the queued ones, and waits for the
    /// workers to exit. Jobs submitted afterwards resolve as
    /// [`JobError::Shutdown`]. Called by `Drop`.
    pub fn shutdown(&self) {
        self.shared.close(Lifecycle::Draining);
        self.join_slots();
    }

    /// Stops accepting jobs and returns at once, as Python's
    /// `shutdown(wait=False)`: queued and running jobs still run and their
    /// handles resolve as usual; each worker exits once the queue is
    /// empty, and dropping the pool no longer waits for them. Jobs
    /// submitted afterwards resolve as [`JobError::Shutdown`].
    pub fn close(&self) {
        self.shared.close(Lifecycle::Draining);
        // Detached: each supervisor retires its worker once the queue is
        // drained, and ends.
        drop(std::mem::take(&mut *crate::sync::lock(&self.slots)));
    }

    /// [`shutdown`](Self::shutdown) for async code: stops accepting jobs
    /// at once and resolves when the queued and running jobs have finished
    /// and the workers have exited, without blocking a runtime thread.
    ///
    /// ```
    /// use parpool::{call, ProcessPool};
    ///
    /// let pool = ProcessPool::builder().workers(1).build()?;
    /// let job = pool.spawn(call!(|| 7));
    /// futures::executor::block_on(pool.shutdown_async());
    /// assert!(pool.worker_pids().is_empty());
    /// assert_eq!(job.try_result().ok(), Some(Ok(7)));
    /// # Ok::<(), parpool::BuildError>(())
    /// ```
    pub fn shutdown_async(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shared.close(Lifecycle::Draining);
        let slots = std::mem::take(&mut *crate::sync::lock(&self.slots));
        crate::lifecycle::joined_async(move || {
            for s in slots {
                s.join();
            }
        })
    }

    /// Stops accepting jobs, resolves queued ones as
    /// [`JobError::Cancelled`], waits for running ones, and stops the
    /// workers.
    pub fn shutdown_now(&self) {
        self.shared.close(Lifecycle::Cancelling);
        self.join_slots();
    }

    fn join_slots(&self) {
        let slots = std::mem::take(&mut *crate::sync::lock(&self.slots));
        for s in slots {
            s.join();
        }
    }

    /// A snapshot of the pool's counters (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let queued = self.shared.lock().jobs.len() as u64;
        let running = c.running.load(Relaxed);
        // Jobs sent ahead to a busy worker have not started either.
        let pipelined = c.in_flight.load(Relaxed).saturating_sub(running);
        self.shared
            .tally
            .snapshot(queued.saturating_add(pipelined), running)
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPool")
            .field("name", &self.shared.config.name)
            .field("workers", &self.shared.config.workers)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A task's output from the reply: decoded in the form it crossed in, then
/// itself again.
fn decode_output<T: Task>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T::Output, JobError> {
    decode(CodecStage::DecodeOutput, bytes, fds).and_then(T::from_wire)
}

fn encode_input<I: serde::Serialize>(input: &I) -> Result<Encoded, JobError> {
    encode(CodecStage::EncodeInput, input)
}

impl sealed::Sealed for ProcessPool {
    fn submit_chunk<T: Task>(
        &self,
        _task: T,
        chunk: ChunkIn<T::Input, T::Output>,
    ) -> JobHandle<ChunkOut<T::Input, T::Output>> {
        let ChunkIn { mut inputs, .. } = chunk;
        let payload = encode_input(&inputs);
        let len = inputs.len();
        inputs.clear();
        self.submit_work(
            T::NAME,
            payload,
            None,
            Chunk::new(len, inputs, T::from_wire),
        )
    }

    fn chunk_time(&self) -> Duration {
        crate::map::PROCESS_CHUNK_TIME
    }
}

impl Executor for ProcessPool {
    fn submit_with<T: Task>(
        &self,
        opts: JobOptions,
        _task: T,
        input: T::Input,
    ) -> JobHandle<T::Output> {
        let payload = encode_input(&input);
        self.submit_work(
            T::NAME,
            payload,
            opts.timeout,
            Single::new(decode_output::<T>),
        )
    }

    fn workers(&self) -> usize {
        self.shared.config.workers
    }

    fn shutdown(&self) {
        ProcessPool::shutdown(self);
    }

    fn shutdown_now(&self) {
        ProcessPool::shutdown_now(self);
    }
}

/// Makes this process serve as a parpool worker if it was started as one.
///
/// Ordinary programs, tests, doc tests and examples do not need it:
/// parpool does this from a constructor that runs before `main`. Call it
/// first thing in `main` only where constructors do not run (a binary
/// linked in a way that drops them); a pool started without either says
/// so when it builds. In an ordinary process it returns at once.
pub fn init() {
    if os::started_as_worker() {
        child::run();
    }
}

/// Serves the pool that started this process as a worker, and returns when
/// the pool lets it go (it shut down, or replaced this worker): the body of
/// a program started by [`ProcessPoolBuilder::worker_command`].
///
/// It runs every job the pool sends on the calling thread, with the tasks
/// this program registered, and answers on the socket the pool passed as
/// standard input (which it then points at `/dev/null`, so that a task
/// reading stdin cannot garble the protocol). Call it once, before the
/// program starts threads of its own if it can: it sets the process's
/// memory limit and its `tracing` subscriber (events go to the pool).
///
/// # Errors
/// At once, serving nothing, in a process that no pool started as a worker
/// command ([`std::io::ErrorKind::InvalidInput`]); later, if the connection to
/// the pool fails.
pub fn serve_worker() -> std::io::Result<()> {
    if !os::started_by_pool() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "serve_worker() serves the ProcessPool that started this process with \
             worker_command(), and none did (its parent is not the pool named in \
             the environment): start this program through a pool's worker_command",
        ));
    }
    if !os::parent_is_pool() {
        // The pool's socket came, but through a process in between (or the
        // pool died): a worker must be the pool's own child, to die with it.
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "this process holds a pool's socket but its parent is not the pool: a \
             worker command must exec the program that calls serve_worker() (a \
             wrapper that forks it, such as a shell script without `exec`, sits \
             in between), or the pool is gone",
        ));
    }
    child::serve_process()
}
