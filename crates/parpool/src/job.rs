//! What a running job can see of itself: its id and its cancel token.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A job's id, unique within its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub(crate) u64);

impl JobId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job#{}", self.0)
    }
}

/// Per-job settings for `spawn_with` / `submit_with`.
///
/// ```
/// use std::time::Duration;
/// let opts = parpool::JobOptions::new().timeout(Duration::from_secs(5));
/// assert_eq!(opts.get_timeout(), Some(Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOptions {
    pub(crate) timeout: Option<Duration>,
}

impl JobOptions {
    /// Default options: no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolve the job as [`JobError::TimedOut`](crate::JobError::TimedOut) if
    /// it has not finished `timeout` after it **started running** (time spent
    /// queued does not count). A thread job's cancel token is tripped so it can
    /// stop early; its eventual value is discarded.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The timeout, if one is set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

pub(crate) trait Cancellable: Send + Sync {
    fn is_cancelled(&self) -> bool;
}

/// A cooperative cancellation flag, tripped when the job is cancelled or
/// times out. Cheap to clone and to check; hand it to helper threads.
#[derive(Clone)]
pub struct CancelToken(pub(crate) Arc<dyn Cancellable>);

impl CancelToken {
    /// Whether the job has been cancelled (or has timed out).
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// The job running on the current thread, seen from inside it.
#[derive(Debug, Clone)]
pub struct JobContext {
    id: JobId,
    token: CancelToken,
}

impl JobContext {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }
    /// Whether the job has been cancelled or has timed out: a long job should
    /// check this now and then and return early when it is `true`.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
    /// The job's cancel token, to pass to code that does not know about parpool.
    pub fn token(&self) -> &CancelToken {
        &self.token
    }
}

thread_local! {
    static CURRENT: RefCell<Option<JobContext>> = const { RefCell::new(None) };
}

/// The job running on this thread, or `None` outside a pool job.
///
/// ```
/// use parpool::ThreadPool;
///
/// let pool = ThreadPool::builder().workers(1).build()?;
/// let stopped_early = pool
///     .spawn(|| {
///         let job = parpool::current_job().expect("inside a job");
///         for _ in 0..1_000_000 {
///             if job.is_cancelled() {
///                 return true;
///             }
///             std::thread::yield_now();
///         }
///         false
///     });
/// stopped_early.cancel();
/// assert!(parpool::current_job().is_none());
/// # Ok::<(), parpool::BuildError>(())
/// ```
pub fn current_job() -> Option<JobContext> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Marks `ctx` as the current job until the guard drops.
pub(crate) fn enter(id: JobId, token: CancelToken) -> EnterGuard {
    let previous = CURRENT.with(|c| c.borrow_mut().replace(JobContext { id, token }));
    EnterGuard { previous }
}

pub(crate) struct EnterGuard {
    previous: Option<JobContext>,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}
