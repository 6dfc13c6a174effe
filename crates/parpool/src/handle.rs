//! [`JobHandle`]: the one handle type every pool returns.
//!
//! # Locked machine
//!
//! A job is resolved exactly once, by whichever comes first: the worker
//! finishing it, [`JobHandle::cancel`], its timeout, or the pool refusing or
//! dropping it. That race is decided by one atomic `flags` byte:
//!
//! * `STARTED`: a worker claimed the job. A worker only runs a job whose
//!   `RESOLVED` bit was clear when it set `STARTED`, so a job cancelled while
//!   queued never starts.
//! * `RESOLVED`: someone won the right to publish the result. Only the thread
//!   that flips this bit from 0 to 1 publishes; later resolvers drop their
//!   value.
//! * `CANCEL`: the cooperative cancel token is tripped (cancel or timeout).
//!
//! Publishing runs the `on_done` callbacks **outside** the lock, with the
//! result held by the publishing thread, then stores the result and wakes the
//! blocked joiner, the future's waker and the `wait`/`as_completed` listeners.
//! A callback added while callbacks run is picked up by the same loop, so each
//! runs exactly once. A callback added after the result was stored borrows
//! the result the same way ("lends" it) and puts it back.
//!
//! The model tests in `tests` (run with `--cfg parpool_loom`, see `./test`) explore completion,
//! cancellation and waker registration racing each other.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::JobError;
use crate::job::{CancelToken, Cancellable, JobId};
use crate::output::CapturedOutput;
use crate::panic;
use crate::stats::{Outcome, Tally};
use crate::sync::{self, AtomicU8, Condvar, Mutex};

const STARTED: u8 = 1;
const RESOLVED: u8 = 2;
const CANCEL: u8 = 4;

type Callback<T> = Box<dyn FnOnce(&Result<T, JobError>) + Send>;

/// What a thread about to block on a handle does first, given the handle's
/// pool and a test of whether the job is done. The thread pool installs
/// one ([`install_helper`]): on its own worker threads it runs queued jobs
/// of that pool while they wait, so a job that joins another of its pool
/// cannot leave every worker blocked with the awaited job still queued.
/// Nothing else blocks differently, so the lowest layer needs no knowledge
/// of any pool.
pub(crate) type Helper = fn(pool: u64, done: &dyn Fn() -> bool);

static HELPER: std::sync::OnceLock<Helper> = std::sync::OnceLock::new();

/// Installs the [`Helper`] (the first install wins; there is one).
pub(crate) fn install_helper(helper: Helper) {
    let _ = HELPER.set(helper);
}

/// The shared state of one job, between its handle and whoever resolves it.
pub(crate) struct JobState<T> {
    id: JobId,
    /// The pool that runs the job (0: none).
    #[cfg_attr(parpool_loom, allow(dead_code))]
    pool: u64,
    /// The pool's counts: the resolver counts the job's outcome there.
    tally: Option<Arc<Tally>>,
    flags: AtomicU8,
    /// How long a joiner polls for the end before it sleeps, in
    /// nanoseconds (a process pool's low-latency mode; 0: briefly).
    #[cfg_attr(parpool_loom, allow(dead_code))]
    join_spin_ns: u32,
    locked: Mutex<Locked<T>>,
    joined: Condvar,
}

/// What a [`JobState`] keeps under its lock.
struct Locked<T> {
    /// Present from publication until taken by `join`/`poll`/`try_result`,
    /// and absent while lent to an `on_done` caller.
    result: Option<Result<T, JobError>>,
    /// The result has been published (it may since have been taken or lent).
    done: bool,
    /// The published result was an error.
    failed: bool,
    /// The published result was `Cancelled`.
    cancelled: bool,
    /// The result was taken out for good.
    taken: bool,
    /// A thread is blocked on `joined`.
    blocked: bool,
    waker: Option<Waker>,
    /// `on_done` callbacks and `wait`/`as_completed` listeners: rare, so
    /// boxed on first use to keep the common job small.
    extra: Option<Box<Extra<T>>>,
}

struct Extra<T> {
    callbacks: Vec<Callback<T>>,
    listeners: Vec<(u64, Waker)>,
}

impl<T> Locked<T> {
    fn extra(&mut self) -> &mut Extra<T> {
        self.extra.get_or_insert_with(|| {
            Box::new(Extra {
                callbacks: Vec::new(),
                listeners: Vec::new(),
            })
        })
    }

    fn take_callbacks(&mut self) -> Vec<Callback<T>> {
        self.extra
            .as_mut()
            .map(|e| mem::take(&mut e.callbacks))
            .unwrap_or_default()
    }

    fn take_listeners(&mut self) -> Vec<(u64, Waker)> {
        self.extra
            .as_mut()
            .map(|e| mem::take(&mut e.listeners))
            .unwrap_or_default()
    }
}

impl<T> JobState<T> {
    pub(crate) fn new(id: JobId, pool: u64) -> Self {
        Self::with_tally(id, pool, None)
    }

    /// A job of a pool that keeps `tally`: counted as submitted now, and
    /// by outcome when it is resolved.
    pub(crate) fn counted(id: JobId, pool: u64, tally: &Arc<Tally>) -> Self {
        tally.submitted(1);
        Self::with_tally(id, pool, Some(tally.clone()))
    }

    /// Has a thread that joins the job poll for its end for up to
    /// `window` before it sleeps (a process pool's low-latency mode).
    #[cfg(all(feature = "process", target_os = "linux"))]
    pub(crate) fn join_spin(mut self, window: Duration) -> Self {
        self.join_spin_ns = u32::try_from(window.as_nanos()).unwrap_or(u32::MAX);
        self
    }

    fn with_tally(id: JobId, pool: u64, tally: Option<Arc<Tally>>) -> Self {
        JobState {
            id,
            pool,
            tally,
            flags: AtomicU8::new(0),
            join_spin_ns: 0,
            locked: Mutex::new(Locked {
                result: None,
                done: false,
                failed: false,
                cancelled: false,
                taken: false,
                blocked: false,
                waker: None,
                extra: None,
            }),
            joined: Condvar::new(),
        }
    }

    pub(crate) fn id(&self) -> JobId {
        self.id
    }

    /// Claims the job for running. `false`: it was resolved (cancelled) while
    /// queued and must not run.
    pub(crate) fn try_start(&self) -> bool {
        self.flags.fetch_or(STARTED, sync::AcqRel) & RESOLVED == 0
    }

    /// The pool that runs the job (0: none).
    #[cfg_attr(parpool_loom, allow(dead_code))]
    pub(crate) fn pool(&self) -> u64 {
        self.pool
    }

    /// Publishes `result` unless the job was already resolved; returns
    /// whether this call resolved it.
    pub(crate) fn resolve(&self, result: Result<T, JobError>) -> bool {
        self.resolve_flags(result, RESOLVED, |_| {})
    }

    /// [`resolve`](Self::resolve), counting the outcome with `count` if
    /// this call resolved the job (before anyone waiting wakes).
    pub(crate) fn resolve_counted(
        &self,
        result: Result<T, JobError>,
        count: impl FnOnce(Outcome),
    ) -> bool {
        self.resolve_flags(result, RESOLVED, count)
    }

    /// Resolves with `err` and trips the cancel token; returns whether this
    /// call resolved the job.
    pub(crate) fn resolve_cancel(&self, err: JobError) -> bool {
        self.resolve_flags(Err(err), RESOLVED | CANCEL, |_| {})
    }

    /// [`resolve_cancel`](Self::resolve_cancel), counting as
    /// [`resolve_counted`](Self::resolve_counted) does.
    pub(crate) fn resolve_cancel_counted(
        &self,
        err: JobError,
        count: impl FnOnce(Outcome),
    ) -> bool {
        self.resolve_flags(Err(err), RESOLVED | CANCEL, count)
    }

    fn resolve_flags(
        &self,
        result: Result<T, JobError>,
        bits: u8,
        count: impl FnOnce(Outcome),
    ) -> bool {
        if self.flags.fetch_or(bits, sync::AcqRel) & RESOLVED != 0 {
            return false;
        }
        let outcome = Outcome::of(&result);
        if let Some(tally) = &self.tally {
            tally.count(outcome);
        }
        count(outcome);
        self.settle(result, true);
        true
    }

    /// Runs pending callbacks with `result`, then stores it. `publish` is
    /// true the first time (marks done and wakes everyone waiting).
    fn settle(&self, result: Result<T, JobError>, publish: bool) {
        loop {
            let mut st = sync::lock(&self.locked);
            let callbacks = st.take_callbacks();
            if callbacks.is_empty() {
                if publish {
                    st.done = true;
                    st.failed = result.is_err();
                    st.cancelled = matches!(result, Err(JobError::Cancelled));
                }
                st.result = Some(result);
                let blocked = st.blocked;
                let waker = st.waker.take();
                let listeners = st.take_listeners();
                drop(st);
                if blocked {
                    self.joined.notify_all();
                }
                if let Some(w) = waker {
                    w.wake();
                }
                for (_, w) in listeners {
                    w.wake();
                }
                return;
            }
            drop(st);
            for cb in callbacks {
                run_callback(self.id, cb, &result);
            }
        }
    }

    fn on_done(&self, cb: Callback<T>) {
        let mut st = sync::lock(&self.locked);
        if st.taken {
            tracing::debug!(job = %self.id, "on_done after the result was taken: callback dropped");
            return;
        }
        match st.result.take() {
            Some(result) => {
                drop(st);
                run_callback(self.id, cb, &result);
                self.settle(result, false);
            }
            // Not published yet, or lent to another `on_done` caller whose
            // `settle` loop will run this callback.
            None => st.extra().callbacks.push(cb),
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        sync::lock(&self.locked).done
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.flags.load(sync::Acquire) & CANCEL != 0
    }

    /// Whether a worker has claimed the job (it may be resolved since).
    pub(crate) fn is_started(&self) -> bool {
        self.flags.load(sync::Acquire) & STARTED != 0
    }

    /// Whether the job was resolved as cancelled.
    pub(crate) fn resolved_cancelled(&self) -> bool {
        sync::lock(&self.locked).cancelled
    }

    /// `Some(failed)` once published.
    pub(crate) fn outcome(&self) -> Option<bool> {
        let st = sync::lock(&self.locked);
        st.done.then_some(st.failed)
    }

    /// Registers `waker` to be woken once when the job is published; wakes it
    /// at once if it already is.
    pub(crate) fn add_listener(&self, key: u64, waker: Waker) {
        let mut st = sync::lock(&self.locked);
        if st.done {
            drop(st);
            waker.wake();
        } else {
            st.extra().listeners.push((key, waker));
        }
    }

    pub(crate) fn remove_listener(&self, key: u64) {
        if let Some(e) = sync::lock(&self.locked).extra.as_mut() {
            e.listeners.retain(|(k, _)| *k != key);
        }
    }

    fn take_now(&self) -> Option<Result<T, JobError>> {
        let mut st = sync::lock(&self.locked);
        let r = st.result.take();
        st.taken |= r.is_some();
        r
    }

    fn join_until(&self, deadline: Option<Instant>) -> Option<Result<T, JobError>> {
        #[cfg(not(parpool_loom))]
        {
            if let Some(help) = HELPER.get() {
                help(self.pool, &|| self.is_finished());
            }
            self.spin_until_resolved();
        }
        let mut st = sync::lock(&self.locked);
        loop {
            if let Some(r) = st.result.take() {
                st.taken = true;
                return Some(r);
            }
            assert!(
                !st.taken,
                "JobHandle: result already taken by polling the handle"
            );
            st.blocked = true;
            st = match deadline {
                None => sync::wait(&self.joined, st),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    sync::wait_timeout(&self.joined, st, d - now)
                }
            };
        }
    }

    /// Spins for a few microseconds waiting for the job to be resolved:
    /// a short job is then collected without the joiner going to sleep and
    /// being woken (two context switches).
    #[cfg(not(parpool_loom))]
    fn spin_until_resolved(&self) {
        if self.join_spin_ns > 0 {
            let window = Duration::from_nanos(u64::from(self.join_spin_ns));
            sync::spin_until(window, || self.flags.load(sync::Acquire) & RESOLVED != 0);
            return;
        }
        let backoff = crossbeam_utils::Backoff::new();
        while !backoff.is_completed() {
            if self.flags.load(sync::Acquire) & RESOLVED != 0 {
                return;
            }
            backoff.snooze();
        }
    }

    fn poll_result(&self, cx: &mut Context<'_>) -> Poll<Result<T, JobError>> {
        let mut st = sync::lock(&self.locked);
        if let Some(r) = st.result.take() {
            st.taken = true;
            return Poll::Ready(r);
        }
        assert!(!st.taken, "JobHandle polled after it returned its result");
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T: Send> Cancellable for JobState<T> {
    fn is_cancelled(&self) -> bool {
        JobState::is_cancelled(self)
    }
}

/// The allocation a handle points at: a job's state, usually stored in one
/// allocation together with the job's closure (see `thread::worker`).
pub(crate) trait HandleTarget<T>: Cancellable {
    fn state(&self) -> &JobState<T>;

    /// Cancels the job, resolving it with `err` ([`JobError::Cancelled`],
    /// or [`JobError::TimedOut`] from its deadline) and tripping its cancel
    /// token; `true` if this call resolved it. A process job first settles
    /// with its worker whether it may still start or finish (see
    /// `process/submission.rs`); this default is a thread job's.
    fn cancel(&self, err: JobError) -> bool {
        self.state().resolve_cancel(err)
    }

    /// What the job wrote to stdout and stderr, if its pool captured it.
    fn captured_output(&self) -> Option<CapturedOutput> {
        None
    }

    /// Whether a worker runs the job now: this default is a thread job's
    /// (claimed by a worker thread, not yet resolved); a process job asks
    /// its worker's claim cell.
    fn is_running(&self) -> bool {
        let state = self.state();
        state.is_started() && !state.is_finished()
    }
}

impl<T: Send> HandleTarget<T> for JobState<T> {
    fn state(&self) -> &JobState<T> {
        self
    }
}

fn run_callback<T>(id: JobId, cb: Callback<T>, result: &Result<T, JobError>) {
    if let Err(p) = panic::catch(|| cb(result)) {
        tracing::error!(job = %id, panic = %p, "an on_done callback panicked; the panic was contained");
    }
}

/// A handle to a submitted job: wait for it, poll it, cancel it, attach
/// callbacks, or `.await` it from any async runtime.
///
/// Every pool returns this same type. Dropping the handle detaches the job:
/// it still runs, and its result is dropped.
///
/// ```
/// use parpool::ThreadPool;
///
/// let pool = ThreadPool::builder().workers(2).build()?;
/// let handle = pool.spawn(|| 6 * 7);
/// assert_eq!(handle.join(), Ok(42));
/// # Ok::<(), parpool::BuildError>(())
/// ```
pub struct JobHandle<T> {
    cell: Arc<dyn HandleTarget<T>>,
}

impl<T: Send + 'static> JobHandle<T> {
    pub(crate) fn from_cell(cell: Arc<dyn HandleTarget<T>>) -> Self {
        JobHandle { cell }
    }

    /// A handle that is already resolved with `result`.
    #[cfg(all(feature = "process", target_os = "linux"))]
    pub(crate) fn ready(id: JobId, result: Result<T, JobError>) -> Self {
        Self::ready_with(JobState::new(id, 0), result)
    }

    /// A handle of a pool that keeps `tally`, already resolved with
    /// `result` (a refused submission), and counted.
    pub(crate) fn ready_counted(
        id: JobId,
        tally: &Arc<Tally>,
        result: Result<T, JobError>,
    ) -> Self {
        Self::ready_with(JobState::counted(id, 0, tally), result)
    }

    fn ready_with(state: JobState<T>, result: Result<T, JobError>) -> Self {
        state.resolve(result);
        JobHandle {
            cell: Arc::new(state),
        }
    }

    pub(crate) fn state(&self) -> &JobState<T> {
        self.cell.state()
    }

    /// The job's id, unique within its pool.
    pub fn id(&self) -> JobId {
        self.state().id
    }

    /// Blocks until the job is resolved and returns its value or error.
    pub fn join(self) -> Result<T, JobError> {
        match self.state().join_until(None) {
            Some(r) => r,
            None => unreachable!("join without a deadline returned without a result"),
        }
    }

    /// Blocks for at most `timeout`. On time-out the handle comes back
    /// unharmed in `Err`, the job still running.
    ///
    /// ```
    /// use std::time::Duration;
    /// use parpool::ThreadPool;
    ///
    /// let pool = ThreadPool::builder().workers(1).build()?;
    /// let slow = pool.spawn(|| { std::thread::sleep(Duration::from_millis(200)); 1 });
    /// let slow = slow.join_timeout(Duration::from_millis(1)).expect_err("still running");
    /// assert_eq!(slow.join(), Ok(1));
    /// # Ok::<(), parpool::BuildError>(())
    /// ```
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<T, JobError>, Self> {
        let deadline = Instant::now().checked_add(timeout);
        match self.state().join_until(deadline) {
            Some(r) => Ok(r),
            None => Err(self),
        }
    }

    /// Returns the result if the job is resolved, without blocking; otherwise
    /// gives the handle back in `Err`.
    pub fn try_result(self) -> Result<Result<T, JobError>, Self> {
        match self.state().take_now() {
            Some(r) => Ok(r),
            None => Err(self),
        }
    }

    /// Whether the job is resolved (its value or error is ready).
    pub fn is_finished(&self) -> bool {
        self.state().is_finished()
    }

    /// Whether a worker is running the job now, as Python's
    /// `Future.running()`: from when a worker starts it until it is
    /// resolved. A job waiting in the pool's queue, or on a process pool in
    /// a worker's pipeline behind another, is not running; a finished one
    /// is not either. (On an `MpiPool`: from when it is sent to a rank,
    /// which may still hold it in its pipeline.)
    ///
    /// ```
    /// use parpool::{Executor, ThreadPool};
    ///
    /// let pool = ThreadPool::builder().workers(1).build()?;
    /// let (open, gate) = std::sync::mpsc::channel::<()>();
    /// let busy = pool.spawn(move || gate.recv().ok());
    /// let queued = pool.spawn(|| 42);
    /// while !busy.is_running() {
    ///     std::thread::yield_now();
    /// }
    /// assert!(!queued.is_running());
    /// open.send(()).unwrap();
    /// assert_eq!(queued.join(), Ok(42));
    /// assert!(!busy.is_running() && busy.is_finished());
    /// # Ok::<(), parpool::BuildError>(())
    /// ```
    pub fn is_running(&self) -> bool {
        self.cell.is_running()
    }

    /// Whether the job was cancelled: resolved as [`JobError::Cancelled`]
    /// (by [`cancel`](Self::cancel), a dropped [`CancelOnDrop`], or
    /// `shutdown_now` while it waited), as Python's `Future.cancelled()`.
    /// A job that timed out is not cancelled ([`JobError::TimedOut`]), nor
    /// one refused because the pool was shutting down
    /// ([`JobError::Shutdown`]).
    ///
    /// ```
    /// use parpool::{Executor, ThreadPool};
    ///
    /// let pool = ThreadPool::builder().workers(1).build()?;
    /// let (open, gate) = std::sync::mpsc::channel::<()>();
    /// let busy = pool.spawn(move || gate.recv().ok());
    /// let queued = pool.spawn(|| 42);
    /// assert!(queued.cancel());
    /// assert!(queued.is_cancelled() && queued.is_finished());
    /// assert!(!busy.is_cancelled());
    /// open.send(()).unwrap();
    /// assert!(busy.join().is_ok());
    /// # Ok::<(), parpool::BuildError>(())
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.state().resolved_cancelled()
    }

    /// What the job wrote to its standard output and error, once it has
    /// finished, on a [`ProcessPool`](crate::ProcessPool) built with
    /// [`WorkerOutput::Capture`](crate::WorkerOutput::Capture). `None`
    /// before the job finishes, and for jobs whose output is not captured.
    /// A job that crashed its worker keeps what it wrote before the crash.
    pub fn captured_output(&self) -> Option<CapturedOutput> {
        if !self.is_finished() {
            return None;
        }
        self.cell.captured_output()
    }

    /// Waits for the job, like [`join`](Self::join), and returns its
    /// result with its [captured output](Self::captured_output) (empty
    /// when nothing was captured).
    pub fn join_captured(self) -> (Result<T, JobError>, CapturedOutput) {
        let cell = self.cell.clone();
        let result = self.join();
        (result, cell.captured_output().unwrap_or_default())
    }

    /// Cancels the job. Returns `true` if this call resolved it as
    /// [`JobError::Cancelled`], `false` if it was resolved already or, on a
    /// process pool, if its body has already returned (its value is on the
    /// way; should its worker die before sending it, which the pool's reply
    /// log makes rare, the job is settled as a crash: `Crashed`, or run
    /// again if `retries` allow).
    ///
    /// On every pool, a job cancelled while queued never starts. A running
    /// thread job has its cancel token tripped
    /// ([`current_job`](crate::current_job)`().is_cancelled()`) and its
    /// eventual value is discarded. A running process job's worker is
    /// killed (and replaced), once the replies of the jobs it finished
    /// before have reached the pool; if the body returns first, its value
    /// is discarded and the worker ends. So a process job that resolves
    /// `Cancelled` never ran its body to the end in a worker that lived on.
    pub fn cancel(&self) -> bool {
        self.cell.cancel(JobError::Cancelled)
    }

    /// Runs `callback` with the result once the job is resolved: on the
    /// thread that resolves it, or right away on this thread if it already
    /// is. Each callback runs exactly once; a panic in it is caught and
    /// logged. A callback attached after the result was taken by `.await`ing
    /// the handle never runs (the result is gone).
    pub fn on_done<F>(&self, callback: F)
    where
        F: FnOnce(&Result<T, JobError>) + Send + 'static,
    {
        self.state().on_done(Box::new(callback));
    }

    /// The job's cancel token (tripped by [`cancel`](Self::cancel) and by
    /// timeouts).
    pub fn cancel_token(&self) -> CancelToken {
        CancelToken(self.cell.clone())
    }

    /// This handle, made to [`cancel`](Self::cancel) the job when dropped
    /// unresolved, instead of detaching it. What async code needs when a
    /// `select!` or a `tokio::time::timeout` drops the future it gave up
    /// on: the job stops (a queued one never starts, a running process
    /// job's worker is killed) instead of running on unobserved.
    ///
    /// ```
    /// use parpool::ThreadPool;
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPool::builder().workers(1).build()?;
    /// let blocker = pool.spawn(|| std::thread::sleep(Duration::from_millis(50)));
    /// let queued = pool.spawn(|| 1).cancel_on_drop();
    /// let token = queued.cancel_token();
    /// drop(queued); // gave up: the queued job will never run
    /// assert!(token.is_cancelled());
    /// blocker.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel_on_drop(self) -> CancelOnDrop<T> {
        CancelOnDrop { handle: Some(self) }
    }
}

/// A [`JobHandle`] that cancels its job when dropped before the job is
/// resolved; from [`JobHandle::cancel_on_drop`]. It is a future, and
/// dereferences to the handle for everything else (`id`, `is_finished`,
/// `on_done`, `cancel`…).
#[must_use = "dropping it at once cancels the job"]
pub struct CancelOnDrop<T: Send + 'static> {
    /// `None` only once taken by `join` or `detach`.
    handle: Option<JobHandle<T>>,
}

impl<T: Send + 'static> CancelOnDrop<T> {
    fn handle(&self) -> &JobHandle<T> {
        self.handle
            .as_ref()
            .expect("only `join` and `detach` take the handle, consuming self")
    }

    /// Blocks until the job is resolved, like [`JobHandle::join`].
    pub fn join(mut self) -> Result<T, JobError> {
        self.handle
            .take()
            .expect("a live guard holds its handle")
            .join()
    }

    /// The plain handle back: dropping it then detaches the job again.
    pub fn detach(mut self) -> JobHandle<T> {
        self.handle.take().expect("a live guard holds its handle")
    }
}

impl<T: Send + 'static> std::ops::Deref for CancelOnDrop<T> {
    type Target = JobHandle<T>;

    fn deref(&self) -> &JobHandle<T> {
        self.handle()
    }
}

impl<T: Send + 'static> Future for CancelOnDrop<T> {
    type Output = Result<T, JobError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().handle().state().poll_result(cx)
    }
}

impl<T: Send + 'static> Drop for CancelOnDrop<T> {
    fn drop(&mut self) {
        // A resolved job (the result taken or not) is left alone.
        if let Some(handle) = self.handle.as_ref().filter(|h| !h.is_finished()) {
            handle.cancel();
        }
    }
}

impl<T: Send + 'static> fmt::Debug for CancelOnDrop<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CancelOnDrop").field(&self.handle).finish()
    }
}

impl<T: Send + 'static> Future for JobHandle<T> {
    type Output = Result<T, JobError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.state().poll_result(cx)
    }
}

impl<T> fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.cell.state();
        let st = sync::lock(&inner.locked);
        f.debug_struct("JobHandle")
            .field("id", &inner.id)
            .field("finished", &st.done)
            .field("failed", &(st.done && st.failed))
            .finish()
    }
}

#[cfg(all(test, parpool_loom))]
mod tests {
    use super::*;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct CountWake(loom::sync::Arc<AtomicUsize>);
    impl Wake for CountWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn handle() -> JobHandle<u32> {
        JobHandle::from_cell(Arc::new(JobState::new(JobId(1), 0)))
    }

    #[test]
    fn loom_complete_vs_cancel_resolves_once() {
        loom::model(|| {
            let h = handle();
            let inner = h.cell.clone();
            let worker = loom::thread::spawn(move || {
                let inner = inner.state();
                if inner.try_start() {
                    inner.resolve(Ok(7))
                } else {
                    false
                }
            });
            let cancelled = h.cancel();
            let completed = worker.join().unwrap();
            assert!(cancelled ^ completed, "exactly one resolver wins");
            let r = h.join();
            if cancelled {
                assert_eq!(r, Err(JobError::Cancelled));
            } else {
                assert_eq!(r, Ok(7));
            }
        });
    }

    #[test]
    fn loom_waker_registered_while_completing_is_woken() {
        loom::model(|| {
            let mut h = handle();
            let inner = h.cell.clone();
            let worker = loom::thread::spawn(move || {
                inner.state().resolve(Ok(1));
            });
            let count = loom::sync::Arc::new(AtomicUsize::new(0));
            let waker = Waker::from(Arc::new(CountWake(count.clone())));
            let mut cx = Context::from_waker(&waker);
            let first = Pin::new(&mut h).poll(&mut cx);
            worker.join().unwrap();
            match first {
                Poll::Ready(r) => assert_eq!(r, Ok(1)),
                Poll::Pending => {
                    assert_eq!(
                        count.load(Ordering::SeqCst),
                        1,
                        "pending poll must be woken"
                    );
                    assert_eq!(Pin::new(&mut h).poll(&mut cx), Poll::Ready(Ok(1)));
                }
            }
        });
    }

    #[test]
    fn loom_callback_runs_exactly_once_against_completion() {
        loom::model(|| {
            let h = handle();
            let inner = h.cell.clone();
            let runs = loom::sync::Arc::new(AtomicUsize::new(0));
            let worker = loom::thread::spawn(move || {
                inner.state().resolve(Ok(3));
            });
            let r2 = runs.clone();
            h.on_done(move |r| {
                assert_eq!(r, &Ok(3));
                r2.fetch_add(1, Ordering::SeqCst);
            });
            worker.join().unwrap();
            assert_eq!(runs.load(Ordering::SeqCst), 1);
            assert_eq!(h.join(), Ok(3));
        });
    }

    #[test]
    fn loom_blocking_join_against_timeout_and_completion() {
        loom::model(|| {
            let h = handle();
            let a = h.cell.clone();
            let b = h.cell.clone();
            let worker = loom::thread::spawn(move || {
                let a = a.state();
                if a.try_start() {
                    a.resolve(Ok(5));
                }
            });
            let timer = loom::thread::spawn(move || {
                b.state().resolve_cancel(JobError::TimedOut {
                    after: Duration::from_millis(1),
                });
            });
            let r = h.join();
            worker.join().unwrap();
            timer.join().unwrap();
            assert!(r == Ok(5) || r.as_ref().is_err_and(JobError::is_timed_out));
        });
    }
}

/// Plain unit tests of the state machine, small enough for Miri
/// (CI runs them under it, `.ci/run`): completion, cancel and callbacks racing on real threads,
/// polling, and the guard that cancels on drop.
#[cfg(all(test, not(parpool_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::task::Wake;

    fn handle() -> (JobHandle<String>, Arc<JobState<String>>) {
        let inner = Arc::new(JobState::new(JobId(1), 0));
        (JobHandle::from_cell(inner.clone()), inner)
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn completion_and_cancel_race_to_one_result() {
        for _ in 0..20 {
            let (h, inner) = handle();
            let calls = Arc::new(AtomicUsize::new(0));
            let c = calls.clone();
            h.on_done(move |_| {
                c.fetch_add(1, SeqCst);
            });
            let worker = std::thread::spawn(move || {
                inner.try_start() && inner.resolve(Ok("value".to_owned()))
            });
            let cancelled = h.cancel();
            let completed = worker.join().unwrap();
            assert!(cancelled ^ completed);
            match h.join() {
                Ok(v) => assert!(completed && v == "value"),
                Err(e) => assert!(cancelled && e.is_cancelled()),
            }
            assert_eq!(calls.load(SeqCst), 1);
        }
    }

    #[test]
    fn a_pending_poll_is_woken_and_a_late_callback_borrows_the_result() {
        let (mut h, inner) = handle();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut h).poll(&mut cx).is_pending());
        let resolver = std::thread::spawn(move || inner.resolve(Ok("late".to_owned())));
        assert!(resolver.join().unwrap());
        assert_eq!(count.0.load(SeqCst), 1);
        let seen = Arc::new(std::sync::Mutex::new(String::new()));
        let s = seen.clone();
        h.on_done(move |r| *s.lock().unwrap() = r.clone().unwrap());
        assert_eq!(*seen.lock().unwrap(), "late");
        assert_eq!(
            Pin::new(&mut h).poll(&mut cx),
            Poll::Ready(Ok("late".to_owned()))
        );
    }

    #[test]
    fn join_timeout_hands_the_handle_back_and_try_result_takes_it() {
        let (h, inner) = handle();
        let h = h.join_timeout(Duration::from_millis(1)).unwrap_err();
        let h = h.try_result().unwrap_err();
        assert!(inner.resolve(Err(JobError::Shutdown)));
        assert_eq!(h.try_result().unwrap(), Err(JobError::Shutdown));
    }

    #[test]
    fn a_guard_dropped_unresolved_cancels_and_a_resolved_one_does_not() {
        let (h, _inner) = handle();
        let token = h.cancel_token();
        drop(h.cancel_on_drop());
        assert!(token.is_cancelled());
        let (h, inner) = handle();
        let token = h.cancel_token();
        inner.resolve(Ok("done".to_owned()));
        let guard = h.cancel_on_drop();
        assert!(guard.is_finished());
        drop(guard);
        assert!(!token.is_cancelled());
    }
}
