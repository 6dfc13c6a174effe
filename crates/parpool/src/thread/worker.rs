//! The shared queue state and the worker loop (design: `README.md` here).

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, fence};
use std::cell::RefCell;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use crossbeam_utils::{Backoff, CachePadded};

use crate::error::JobError;
use crate::handle::Inner;
use crate::job::{self, CancelToken, JobId};
use crate::panic;
use crate::timer::{self, Expire};

pub(crate) const RUNNING: u8 = 0;
pub(crate) const DRAINING: u8 = 1;
pub(crate) const CANCELLING: u8 = 2;

/// A unit of work in the queue.
pub(crate) trait Runnable: Send {
    /// Runs the job (unless it was cancelled while queued).
    fn run(self: Box<Self>, pool: &Shared) -> Outcome;
    /// Resolves the job with `err` without running it.
    fn abandon(self: Box<Self>, err: JobError);
}

pub(crate) type Job = Box<dyn Runnable>;

/// What became of a job a worker took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Failed,
    Skipped,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) running: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

pub(crate) struct Shared {
    /// Unique per pool in this process (handles remember it).
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) injector: Injector<Job>,
    pub(crate) stealers: Vec<Stealer<Job>>,
    pub(crate) state: AtomicU8,
    pub(crate) pending: AtomicUsize,
    pub(crate) capacity: Option<usize>,
    pub(crate) next_id: AtomicU64,
    pub(crate) counters: Vec<CachePadded<Counters>>,
    /// Cancelled by the submitting side (before any worker took them).
    pub(crate) refused: AtomicU64,
    sleep: Mutex<()>,
    sleep_cv: Condvar,
    sleepers: AtomicUsize,
    space: Mutex<()>,
    space_cv: Condvar,
    blocked_submitters: AtomicUsize,
}

/// Why a submission was not queued.
pub(crate) enum Refused {
    Full,
    Closed,
}

impl Shared {
    pub(crate) fn new(
        name: String,
        stealers: Vec<Stealer<Job>>,
        capacity: Option<usize>,
    ) -> Self {
        let workers = stealers.len();
        static NEXT_POOL: AtomicU64 = AtomicU64::new(1);
        Shared {
            id: NEXT_POOL.fetch_add(1, Relaxed),
            name,
            injector: Injector::new(),
            stealers,
            state: AtomicU8::new(RUNNING),
            pending: AtomicUsize::new(0),
            capacity,
            next_id: AtomicU64::new(1),
            counters: (0..workers).map(|_| CachePadded::new(Counters::default())).collect(),
            refused: AtomicU64::new(0),
            sleep: Mutex::new(()),
            sleep_cv: Condvar::new(),
            sleepers: AtomicUsize::new(0),
            space: Mutex::new(()),
            space_cv: Condvar::new(),
            blocked_submitters: AtomicUsize::new(0),
        }
    }

    pub(crate) fn next_id(&self) -> JobId {
        JobId(self.next_id.fetch_add(1, Relaxed))
    }

    /// A fresh job state for this pool.
    pub(crate) fn new_job<R>(&self) -> Inner<R> {
        Inner::new(self.next_id(), self.id)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state.load(SeqCst) == RUNNING
    }

    /// Reserves a place in the queue: blocking while full if `block`.
    pub(crate) fn reserve(&self, block: bool) -> Result<(), Refused> {
        match self.capacity {
            None => {
                self.pending.fetch_add(1, SeqCst);
            }
            Some(cap) => loop {
                let p = self.pending.load(SeqCst);
                if p < cap {
                    if self.pending.compare_exchange_weak(p, p + 1, SeqCst, SeqCst).is_ok() {
                        break;
                    }
                    continue;
                }
                if !self.is_open() {
                    return Err(Refused::Closed);
                }
                if !block {
                    return Err(Refused::Full);
                }
                let g = self.space.lock().unwrap_or_else(|p| p.into_inner());
                self.blocked_submitters.fetch_add(1, SeqCst);
                fence(SeqCst);
                let g = if self.pending.load(SeqCst) >= cap && self.is_open() {
                    self.space_cv.wait(g).unwrap_or_else(|p| p.into_inner())
                } else {
                    g
                };
                self.blocked_submitters.fetch_sub(1, SeqCst);
                drop(g);
            },
        }
        if !self.is_open() {
            self.release();
            return Err(Refused::Closed);
        }
        Ok(())
    }

    /// Gives back a place taken by `reserve` (a job was taken for running, or
    /// a submission was refused).
    fn release(&self) {
        let before = self.pending.fetch_sub(1, SeqCst);
        if self.capacity.is_some() {
            fence(SeqCst);
            if self.blocked_submitters.load(SeqCst) > 0 {
                let _g = self.space.lock().unwrap_or_else(|p| p.into_inner());
                self.space_cv.notify_one();
            }
        }
        if before == 1 && !self.is_open() {
            self.wake_all();
        }
    }

    /// Queues a job that `reserve` made room for.
    pub(crate) fn push(&self, job: Job) {
        self.injector.push(job);
        fence(SeqCst);
        if self.sleepers.load(SeqCst) > 0 {
            let _g = self.sleep.lock().unwrap_or_else(|p| p.into_inner());
            self.sleep_cv.notify_one();
        }
    }

    /// Closes the pool to new jobs and wakes every sleeper.
    pub(crate) fn close(&self, state: u8) {
        // CANCELLING wins over DRAINING; never reopen.
        self.state.fetch_max(state, SeqCst);
        self.wake_all();
        let _g = self.space.lock().unwrap_or_else(|p| p.into_inner());
        self.space_cv.notify_all();
    }

    fn wake_all(&self) {
        let _g = self.sleep.lock().unwrap_or_else(|p| p.into_inner());
        self.sleep_cv.notify_all();
    }

    fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    fn finished(&self) -> bool {
        !self.is_open() && self.pending.load(SeqCst) == 0
    }

    /// Takes the next job: local deque, then a batch from the injector,
    /// then a peer's deque.
    pub(crate) fn find_job(&self, local: Option<&Worker<Job>>) -> Option<Job> {
        if let Some(job) = local.and_then(Worker::pop) {
            return Some(job);
        }
        loop {
            let mut retry = false;
            let stolen = match local {
                Some(l) => self.injector.steal_batch_and_pop(l),
                None => self.injector.steal(),
            };
            match stolen {
                Steal::Success(job) => return Some(job),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            for s in &self.stealers {
                match s.steal() {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    /// Runs (or, when cancelling, abandons) a job taken from the queue.
    pub(crate) fn execute(&self, job: Job, counters: &Counters) {
        self.release();
        if self.state.load(SeqCst) == CANCELLING {
            job.abandon(JobError::Cancelled);
            counters.cancelled.fetch_add(1, Relaxed);
            return;
        }
        counters.running.fetch_add(1, Relaxed);
        let outcome = job.run(self);
        counters.running.fetch_sub(1, Relaxed);
        let counter = match outcome {
            Outcome::Completed => &counters.completed,
            Outcome::Failed => &counters.failed,
            Outcome::Skipped => &counters.cancelled,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Blocks until there may be work or the pool is finished.
    fn sleep(&self) {
        let g = self.sleep.lock().unwrap_or_else(|p| p.into_inner());
        self.sleepers.fetch_add(1, SeqCst);
        fence(SeqCst);
        let g = if self.has_work() || self.finished() {
            g
        } else {
            self.sleep_cv.wait(g).unwrap_or_else(|p| p.into_inner())
        };
        self.sleepers.fetch_sub(1, SeqCst);
        drop(g);
    }

    /// Whether the calling thread is one of this pool's workers.
    pub(crate) fn is_own_worker(&self) -> bool {
        WORKER.with(|w| w.borrow().as_ref().is_some_and(|(s, _)| s.id == self.id))
    }
}

thread_local! {
    /// The pool and index of the worker running on this thread.
    static WORKER: RefCell<Option<(Arc<Shared>, usize)>> = const { RefCell::new(None) };
}

/// On a worker of pool `pool_id`, runs that pool's queued jobs until `done()`
/// or until none is queued; elsewhere returns at once.
///
/// A worker that blocks on a job of its own pool (a nested `join`, a scope
/// opened inside a job) must do this first: the job it waits for may be
/// sitting in the queue behind it, and with every worker blocked nobody
/// else would run it. Once nothing is queued, what it waits for is running
/// on another thread and blocking is safe.
pub(crate) fn help_until(pool_id: u64, done: &dyn Fn() -> bool) {
    let Some((shared, index)) =
        WORKER.with(|w| w.borrow().as_ref().filter(|(s, _)| s.id == pool_id).cloned())
    else {
        return;
    };
    while !done() {
        match shared.find_job(None) {
            Some(job) => shared.execute(job, &shared.counters[index]),
            None => return,
        }
    }
}

/// A worker thread's main loop.
pub(crate) fn work(shared: &Arc<Shared>, index: usize, local: &Worker<Job>) {
    WORKER.with(|w| *w.borrow_mut() = Some((shared.clone(), index)));
    let counters = &shared.counters[index];
    loop {
        if let Some(job) = shared.find_job(Some(local)) {
            shared.execute(job, counters);
            continue;
        }
        let backoff = Backoff::new();
        let mut found = None;
        while !backoff.is_completed() {
            backoff.snooze();
            found = shared.find_job(Some(local));
            if found.is_some() {
                break;
            }
        }
        match found {
            Some(job) => shared.execute(job, counters),
            None if shared.finished() => break,
            None => shared.sleep(),
        }
    }
    WORKER.with(|w| *w.borrow_mut() = None);
}

/// A closure job and its handle's state.
pub(crate) struct ClosureJob<F, R> {
    pub(crate) f: F,
    pub(crate) inner: Arc<Inner<R>>,
    pub(crate) timeout: Option<Duration>,
}

impl<R: Send + 'static> Expire for Inner<R> {
    fn expire(&self, after: Duration) {
        self.resolve_cancel(JobError::TimedOut { after });
    }
}

impl<F, R> Runnable for ClosureJob<F, R>
where
    F: FnOnce() -> R + Send,
    R: Send + 'static,
{
    fn run(self: Box<Self>, pool: &Shared) -> Outcome {
        let ClosureJob { f, inner, timeout } = *self;
        if !inner.try_start() {
            return Outcome::Skipped;
        }
        if let Some(after) = timeout {
            let weak = Arc::downgrade(&inner);
            timer::schedule(after, weak);
        }
        let id = inner.id();
        let _span = tracing::debug_span!("job", pool = %pool.name, job = id.get()).entered();
        let _ctx = job::enter(id, CancelToken(inner.clone()));
        match panic::catch(f) {
            Ok(value) => {
                if inner.resolve(Ok(value)) {
                    Outcome::Completed
                } else {
                    tracing::debug!("job finished after it was cancelled or timed out; value dropped");
                    Outcome::Failed
                }
            }
            Err(p) => {
                inner.resolve(Err(JobError::Panicked(p)));
                Outcome::Failed
            }
        }
    }

    fn abandon(self: Box<Self>, err: JobError) {
        self.inner.resolve(Err(err));
    }
}
