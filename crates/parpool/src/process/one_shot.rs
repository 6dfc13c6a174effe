//! [`Process`]: one task in a new process of its own, as Python's
//! `multiprocessing.Process`: a pool of one worker that runs one job and
//! never starts a second worker, with the worker's pid and exit status
//! kept for the caller.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{BuildError, ExitStatus, JobError};
use crate::handle::JobHandle;
use crate::sync::lock;
use crate::task::{Executor, Task};

use super::{ProcessPool, ProcessPoolBuilder};

/// What a one-shot pool's slot tells its [`Process`]: the worker's pid
/// once it has started, and how it ended.
#[derive(Default)]
pub(crate) struct OneShot {
    state: Mutex<ShotState>,
    changed: Condvar,
}

#[derive(Default, Clone, Copy)]
struct ShotState {
    pid: Option<u32>,
    ended: Option<ExitStatus>,
}

impl fmt::Debug for OneShot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = *lock(&self.state);
        f.debug_struct("OneShot")
            .field("pid", &st.pid)
            .field("ended", &st.ended)
            .finish()
    }
}

impl OneShot {
    /// The worker started, with `pid`.
    pub(crate) fn started(&self, pid: u32) {
        lock(&self.state).pid = Some(pid);
        self.changed.notify_all();
    }

    /// The worker ended, as `status`.
    pub(crate) fn ended(&self, status: ExitStatus) {
        lock(&self.state).ended = Some(status);
        self.changed.notify_all();
    }

    /// Whether the one worker has been started (so no other may be).
    pub(crate) fn spent(&self) -> bool {
        lock(&self.state).pid.is_some()
    }

    /// How the worker ended, if it has.
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        lock(&self.state).ended
    }

    /// Waits until `done` holds of the state, or `deadline` passes.
    fn wait_until(&self, deadline: Instant, done: impl Fn(&ShotState) -> bool) -> ShotState {
        let mut st = lock(&self.state);
        while !done(&st) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        *st
    }
}

/// One task in a new process of its own, as Python's
/// `multiprocessing.Process(target=f, args=(x,)).start()`: started at
/// once, with its own pid; [`join`](Process::join) waits for it and gives
/// the task's result, where Python gives `None`.
///
/// It is isolated as a [`ProcessPool`]'s jobs are: a panic, a crash, a
/// memory limit or a timeout fails the task with a typed [`JobError`],
/// never the caller. The process runs this program's binary, which finds
/// the task by name (a [`task!`](crate::task!) or a
/// [`call!`](crate::call!) closure), and ends once the task has.
///
/// ```
/// use parpool::{call, Process};
///
/// // Five processes, five pids, none of them ours.
/// let procs: Vec<_> = (0..5u64)
///     .map(|i| Process::start(call!(|i: u64| (i, std::process::id())), i))
///     .collect::<Result<_, _>>()?;
/// let pids: Vec<u32> = procs.iter().filter_map(Process::pid).collect();
/// let mut results = Vec::new();
/// for p in procs {
///     results.push(p.join()?);
/// }
/// let mut distinct = pids.clone();
/// distinct.sort();
/// distinct.dedup();
/// assert_eq!(distinct.len(), 5);
/// assert!(!pids.contains(&std::process::id()));
/// assert_eq!(results.iter().map(|&(_, pid)| pid).collect::<Vec<_>>(), pids);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Dropping a `Process` that has not been joined waits for it, as
/// dropping a pool does (Python joins non-daemon processes at exit);
/// [`kill`](Process::kill) it first not to wait.
pub struct Process<O> {
    pool: ProcessPool,
    handle: JobHandle<O>,
    shot: Arc<OneShot>,
}

impl<O: Send + 'static> Process<O> {
    /// Starts `task` on `input` in a new process, and returns once that
    /// process is running (or could not be started: then
    /// [`pid`](Process::pid) is `None` and [`join`](Process::join) says
    /// why).
    ///
    /// # Errors
    /// What [`ProcessPoolBuilder::build`] returns.
    pub fn start<T: Task<Output = O>>(task: T, input: T::Input) -> Result<Self, BuildError> {
        Self::start_with(ProcessPool::builder(), task, input)
    }

    /// [`start`](Process::start), with the settings of `builder` that
    /// concern one process: `env`, `current_dir`, `stdout`/`stderr`,
    /// `memory_limit`, `job_timeout`, `initializer`, `start_timeout`,
    /// `max_payload`, `name`. Its worker count, `retries` and
    /// `max_jobs_per_worker` are ignored: one process runs one task once.
    ///
    /// ```
    /// use parpool::{call, JobError, Process, ProcessPool};
    /// use std::time::Duration;
    ///
    /// let settings = ProcessPool::builder().job_timeout(Duration::from_millis(100));
    /// let p = Process::start_with(settings, call!(|| std::thread::sleep(Duration::from_secs(60))), ())?;
    /// assert!(matches!(p.join(), Err(JobError::TimedOut { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// What [`ProcessPoolBuilder::build`] returns.
    pub fn start_with<T: Task<Output = O>>(
        builder: ProcessPoolBuilder,
        task: T,
        input: T::Input,
    ) -> Result<Self, BuildError> {
        let shot = Arc::new(OneShot::default());
        let mut builder = builder.workers(1).max_jobs_per_worker(1).retries(0);
        builder.config.one_shot = Some(shot.clone());
        let start_timeout = builder.config.start_timeout;
        let pool = builder.build()?;
        let handle = pool.submit(task, input);
        // Back once the process runs, or has given up starting (the job
        // then resolves `NoWorker`).
        let deadline = Instant::now() + start_timeout + Duration::from_secs(1);
        let _ = shot.wait_until(deadline, |st| st.pid.is_some() || st.ended.is_some());
        Ok(Process { pool, handle, shot })
    }

    /// The process's id, once it has started (`None` if it could not be).
    pub fn pid(&self) -> Option<u32> {
        lock(&self.shot.state).pid
    }

    /// Whether the process is running: started and not yet ended.
    pub fn is_alive(&self) -> bool {
        let st = *lock(&self.shot.state);
        st.pid.is_some() && st.ended.is_none()
    }

    /// How the process ended (`None` while it runs): `Code(0)` after a
    /// task that returned (`Ok` or `Err`) or panicked, the signal or code
    /// of a crash, `Signal(9)` after [`kill`](Process::kill) or a timeout.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.shot.exit_status()
    }

    /// Waits for the task and returns its result, once the process has
    /// ended.
    ///
    /// # Errors
    /// How the task failed: [`JobError::Panicked`], `Crashed` (with the
    /// exit status), `TimedOut`, `Cancelled` (after
    /// [`kill`](Process::kill)), `NoWorker` (the process could not be
    /// started), and so on.
    pub fn join(self) -> Result<O, JobError> {
        let Process { pool, handle, .. } = self;
        let result = handle.join();
        pool.shutdown();
        result
    }

    /// Waits at most `timeout` for the task: its result, or the process
    /// back if it still runs (Python's `join(timeout)`, then `is_alive()`).
    ///
    /// # Errors
    /// `Err(self)` if the task has not finished within `timeout`.
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<O, JobError>, Self> {
        let Process { pool, handle, shot } = self;
        match handle.join_timeout(timeout) {
            Ok(result) => {
                pool.shutdown();
                Ok(result)
            }
            Err(handle) => Err(Process { pool, handle, shot }),
        }
    }

    /// Stops the task and kills its process (`SIGKILL`; its exit status
    /// is then `Signal(9)`), whether or not the task had begun. The task's
    /// result is [`JobError::Cancelled`]; `false` if it had already
    /// finished (then its result stands).
    pub fn kill(&self) -> bool {
        let cancelled = self.handle.cancel();
        // Killed whether or not it had begun the task, as a signal would.
        self.pool.kill_workers();
        self.pool
            .shared
            .close(crate::lifecycle::Lifecycle::Cancelling);
        cancelled
    }
}

impl<O> fmt::Debug for Process<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = *lock(&self.shot.state);
        f.debug_struct("Process")
            .field("pid", &st.pid)
            .field("exit_status", &st.ended)
            .finish_non_exhaustive()
    }
}
