//! The shared queue state and the worker loop (design: `README.md` here).

use std::cell::RefCell;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, fence};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam_deque::{Injector, Steal};
use crossbeam_utils::{Backoff, CachePadded};

use super::sleep::Sleep;
use crate::error::JobError;
use crate::handle::JobHandle;
use crate::handle::{HandleTarget, JobState};
use crate::job::{self, CancelToken, Cancellable, JobId};
use crate::lifecycle::Lifecycle;
use crate::panic;
use crate::stats::{Outcome, Tally};
use crate::timer::{self, Expire};

/// A unit of work in the queue.
pub(crate) trait Runnable: Send + Sync {
    /// Runs the job (unless it was cancelled while queued). `running`, if
    /// given, is decremented once, when the job runs no more: as it
    /// resolves its handle (before anyone waiting on it wakes), else when
    /// it returns.
    fn run(self: Arc<Self>, pool: &ThreadShared, running: Option<&AtomicU64>);
    /// Resolves the job with `err` without running it.
    fn abandon(self: Arc<Self>, pool: &ThreadShared, err: JobError);
}

/// A job in the queue: the same allocation its handle points at.
pub(crate) type QueuedJob = Arc<dyn Runnable>;

/// Per-worker counters, each on its own cache line. (Outcomes are counted
/// by whoever resolves a job, in the pool's [`Tally`].)
#[derive(Default)]
pub(crate) struct WorkerCounters {
    /// Jobs taken from the queue.
    pub(crate) taken: AtomicU64,
    /// 1 while the worker runs a job (a job it runs while it waits for
    /// another, `help_until`, is not counted again).
    pub(crate) running: AtomicU64,
}

/// Written by submitters only (workers read it at shutdown).
#[derive(Default)]
struct Submissions {
    /// Submissions between `admit` and the end of their push.
    in_progress: AtomicUsize,
    /// Jobs accepted into the queue.
    accepted: AtomicU64,
    next_id: AtomicU64,
}

pub(crate) struct ThreadShared {
    /// Unique per pool in this process (handles remember it).
    pub(crate) id: u64,
    pub(crate) name: String,
    workers: usize,
    capacity: Option<usize>,
    pub(crate) state: CachePadded<AtomicU8>,
    pub(crate) injector: Injector<QueuedJob>,
    submissions: CachePadded<Submissions>,
    /// Written by workers as they go idle or busy; read on every push.
    sleep: CachePadded<Sleep>,
    /// Jobs accepted and not yet taken, kept only for a bounded queue.
    pending: CachePadded<AtomicUsize>,
    pub(crate) counters: Vec<CachePadded<WorkerCounters>>,
    /// Submissions and outcomes (see `stats.rs`).
    pub(crate) tally: Arc<Tally>,
    space: Mutex<()>,
    space_cv: Condvar,
    blocked_submitters: AtomicUsize,
    /// Async submitters waiting for room (`spawn_async`): each is woken
    /// when room is made or the pool closes, and tries again.
    space_wakers: Mutex<Vec<std::task::Waker>>,
    async_waiting: AtomicUsize,
}

/// Why a submission was not queued.
pub(crate) enum Refused {
    Full,
    Closed,
}

/// A submission admitted into the pool: push its job with [`Admitted::push`].
/// Until it is dropped, workers will not exit, so the job cannot be stranded
/// by a concurrent shutdown.
pub(crate) struct Admitted<'a>(&'a ThreadShared);

impl Admitted<'_> {
    /// Queues the job.
    pub(crate) fn push(self, job: QueuedJob) {
        let shared = self.0;
        shared.submissions.accepted.fetch_add(1, Relaxed);
        shared.injector.push(job);
        shared.sleep.after_push();
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        if shared.submissions.in_progress.fetch_sub(1, SeqCst) == 1 && !shared.is_open() {
            // Workers of a closed pool wait for the last submission to end.
            shared.wake_all();
        }
    }
}

impl ThreadShared {
    pub(crate) fn new(name: String, workers: usize, capacity: Option<usize>) -> Self {
        static NEXT_POOL: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_POOL.fetch_add(1, Relaxed);
        let tally = Arc::new(Tally::default());
        crate::sync::lock(&TALLIES).push((id, Arc::downgrade(&tally)));
        ThreadShared {
            id,
            name,
            workers,
            capacity,
            state: CachePadded::new(AtomicU8::new(Lifecycle::Open as u8)),
            injector: Injector::new(),
            submissions: CachePadded::new(Submissions {
                next_id: AtomicU64::new(1),
                ..Submissions::default()
            }),
            sleep: CachePadded::default(),
            pending: CachePadded::default(),
            counters: (0..workers)
                .map(|_| CachePadded::new(WorkerCounters::default()))
                .collect(),
            tally,
            space: Mutex::new(()),
            space_cv: Condvar::new(),
            blocked_submitters: AtomicUsize::new(0),
            space_wakers: Mutex::new(Vec::new()),
            async_waiting: AtomicUsize::new(0),
        }
    }

    pub(crate) fn next_id(&self) -> JobId {
        JobId(self.submissions.next_id.fetch_add(1, Relaxed))
    }

    /// A fresh job state for this pool, counted as submitted. (Its state
    /// holds no pointer to the tally: see [`count_in_pool`].)
    pub(crate) fn new_job<R>(&self) -> JobState<R> {
        self.tally.submitted(1);
        JobState::new(self.next_id(), self.id)
    }

    /// A handle refused at once with `err` (the pool is shut down), counted.
    pub(crate) fn refused<R: Send + 'static>(&self, err: JobError) -> JobHandle<R> {
        JobHandle::ready_counted(self.next_id(), &self.tally, Err(err))
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state.load(SeqCst) == Lifecycle::Open as u8
    }

    /// Jobs accepted and not yet taken by a worker.
    pub(crate) fn queued(&self) -> usize {
        let taken: u64 = self.counters.iter().map(|c| c.taken.load(Relaxed)).sum();
        let accepted = self.submissions.accepted.load(Relaxed);
        usize::try_from(accepted.saturating_sub(taken)).unwrap_or(usize::MAX)
    }

    /// Admits one submission: waits for room in a bounded queue if `block`.
    ///
    /// The submission is counted *before* the pool's state is checked, and
    /// workers of a closed pool exit only once no submission is in progress
    /// (see `README.md`): a submission racing `shutdown` is either refused or
    /// seen by the workers.
    pub(crate) fn admit(&self, block: bool) -> Result<Admitted<'_>, Refused> {
        self.submissions.in_progress.fetch_add(1, SeqCst);
        let admitted = Admitted(self);
        if let Some(cap) = self.capacity {
            self.take_room(cap, block)?;
        }
        if !self.is_open() {
            if self.capacity.is_some() {
                self.give_room();
            }
            return Err(Refused::Closed);
        }
        Ok(admitted)
    }

    fn take_room(&self, cap: usize, block: bool) -> Result<(), Refused> {
        loop {
            let p = self.pending.load(SeqCst);
            if p < cap {
                if self
                    .pending
                    .compare_exchange_weak(p, p + 1, SeqCst, SeqCst)
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            if !self.is_open() {
                return Err(Refused::Closed);
            }
            if !block {
                return Err(Refused::Full);
            }
            let g = crate::sync::lock(&self.space);
            self.blocked_submitters.fetch_add(1, SeqCst);
            fence(SeqCst);
            let g = if self.pending.load(SeqCst) >= cap && self.is_open() {
                crate::sync::wait(&self.space_cv, g)
            } else {
                g
            };
            self.blocked_submitters.fetch_sub(1, SeqCst);
            drop(g);
        }
    }

    /// Frees a place in a bounded queue (a job was taken, or a submission
    /// refused) and wakes a blocked submitter, and every async one (any of
    /// them may have been dropped since, so none is counted on alone).
    fn give_room(&self) {
        self.pending.fetch_sub(1, SeqCst);
        fence(SeqCst);
        if self.blocked_submitters.load(SeqCst) > 0 {
            let _g = crate::sync::lock(&self.space);
            self.space_cv.notify_one();
        }
        if self.async_waiting.load(SeqCst) > 0 {
            self.wake_async_submitters();
        }
    }

    /// Admits one submission without blocking, or registers `waker` to be
    /// woken when there may be room (`None`: try again then).
    pub(crate) fn admit_or_wake(
        &self,
        waker: &std::task::Waker,
    ) -> Option<Result<Admitted<'_>, Refused>> {
        match self.admit(false) {
            Err(Refused::Full) => {}
            done => return Some(done),
        }
        {
            let mut wakers = crate::sync::lock(&self.space_wakers);
            if !wakers.iter().any(|w| w.will_wake(waker)) {
                wakers.push(waker.clone());
                self.async_waiting.fetch_add(1, SeqCst);
            }
        }
        fence(SeqCst);
        // Room made (or the pool closed) between the try and the
        // registration would wake nobody: look again.
        let full = self
            .capacity
            .is_some_and(|cap| self.pending.load(SeqCst) >= cap);
        if !full || !self.is_open() {
            waker.wake_by_ref();
        }
        None
    }

    fn wake_async_submitters(&self) {
        let wakers = std::mem::take(&mut *crate::sync::lock(&self.space_wakers));
        self.async_waiting.fetch_sub(wakers.len(), SeqCst);
        for w in wakers {
            w.wake();
        }
    }

    /// Called by a worker that just went from idle to busy: if jobs remain
    /// queued and no worker is searching, nobody else will look for them.
    fn pass_on_wake(&self) {
        self.sleep.pass_on(|| self.has_work());
    }

    /// Closes the pool to new jobs and wakes every sleeper.
    pub(crate) fn close(&self, state: Lifecycle) {
        // Cancelling wins over draining; never reopen.
        self.state.fetch_max(state as u8, SeqCst);
        self.wake_all();
        {
            let _g = crate::sync::lock(&self.space);
            self.space_cv.notify_all();
        }
        self.wake_async_submitters();
    }

    fn wake_all(&self) {
        self.sleep.wake_all();
    }

    fn has_work(&self) -> bool {
        !self.injector.is_empty()
    }

    /// Closed, no submission in progress, nothing queued: workers may exit.
    fn finished(&self) -> bool {
        !self.is_open() && self.submissions.in_progress.load(SeqCst) == 0 && !self.has_work()
    }

    /// Takes the oldest queued job.
    pub(crate) fn find_job(&self) -> Option<QueuedJob> {
        loop {
            match self.injector.steal() {
                Steal::Success(job) => return Some(job),
                Steal::Retry => continue,
                Steal::Empty => return None,
            }
        }
    }

    /// Runs (or, when cancelling, abandons) a job taken from the queue.
    /// `nested`: the worker runs it while it waits for another job.
    pub(crate) fn execute(&self, job: QueuedJob, counters: &WorkerCounters, nested: bool) {
        counters.taken.fetch_add(1, Relaxed);
        if self.capacity.is_some() {
            self.give_room();
        }
        if Lifecycle::from_u8(self.state.load(SeqCst)) == Lifecycle::Cancelling {
            job.abandon(self, JobError::Cancelled);
            return;
        }
        if nested {
            job.run(self, None);
        } else {
            counters.running.fetch_add(1, Relaxed);
            job.run(self, Some(&counters.running));
        }
    }

    /// Blocks until there may be work or the pool is finished.
    fn sleep(&self) {
        self.sleep.sleep(|| self.has_work() || self.finished());
    }

    /// Whether the calling thread is one of this pool's workers.
    pub(crate) fn is_own_worker(&self) -> bool {
        WORKER.with(|w| w.borrow().as_ref().is_some_and(|(s, _)| s.id == self.id))
    }
}

/// The tallies of the live thread pools, by pool id. A thread job's state
/// holds its pool's id, not its tally (an `Arc` per job would cost every
/// submission two contended reference counts); the rare resolvers that are
/// not the pool's own threads (a cancel, a timeout) find it here.
static TALLIES: std::sync::Mutex<Vec<(u64, std::sync::Weak<Tally>)>> =
    std::sync::Mutex::new(Vec::new());

/// Counts a job of pool `pool` resolved by a thread that is not one of
/// the pool's (nothing if the pool is gone).
fn count_in_pool(pool: u64, outcome: Outcome) {
    let tally = crate::sync::lock(&TALLIES)
        .iter()
        .find(|(id, _)| *id == pool)
        .and_then(|(_, t)| t.upgrade());
    if let Some(tally) = tally {
        tally.count(outcome);
    }
}

impl Drop for ThreadShared {
    fn drop(&mut self) {
        crate::sync::lock(&TALLIES).retain(|(id, _)| *id != self.id);
    }
}

thread_local! {
    /// The pool and index of the worker running on this thread.
    static WORKER: RefCell<Option<(Arc<ThreadShared>, usize)>> = const { RefCell::new(None) };
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
    let Some((shared, index)) = WORKER.with(|w| {
        w.borrow()
            .as_ref()
            .filter(|(s, _)| s.id == pool_id)
            .cloned()
    }) else {
        return;
    };
    while !done() {
        match shared.find_job() {
            Some(job) => shared.execute(job, &shared.counters[index], true),
            None => return,
        }
    }
}

/// A worker thread's main loop.
///
/// Between jobs a worker is *searching*: it spins briefly, and while it does
/// pushes wake nobody (the searcher will find the job). So whenever a worker
/// goes from idle to busy — found by searching, or right after sleeping —
/// and more jobs are queued with no searcher left, it wakes one sleeper:
/// wake-ups cascade exactly as far as there is work, and no queued job can
/// be left behind sleeping workers.
pub(crate) fn work(shared: &Arc<ThreadShared>, index: usize) {
    WORKER.with(|w| *w.borrow_mut() = Some((shared.clone(), index)));
    let counters = &shared.counters[index];
    let mut was_idle = false;
    loop {
        if let Some(job) = shared.find_job() {
            if was_idle {
                was_idle = false;
                shared.pass_on_wake();
            }
            shared.execute(job, counters, false);
            continue;
        }
        was_idle = true;
        // At most half the workers (at least one) search at a time; the
        // others sleep at once, leaving cores to the threads that submit.
        let max_searchers = (shared.workers / 2).max(1);
        let found = if shared.sleep.start_search() < max_searchers {
            search(shared)
        } else {
            None
        };
        shared.sleep.end_search();
        match found {
            Some(job) => {
                was_idle = false;
                shared.pass_on_wake();
                shared.execute(job, counters, false);
            }
            None if shared.finished() => break,
            None => shared.sleep(),
        }
    }
    WORKER.with(|w| *w.borrow_mut() = None);
}

/// How long an idle worker keeps looking for work before it sleeps.
///
/// Long enough to bridge the gaps of a producer that submits jobs one at a
/// time (sleeping and being woken costs the producer a futex syscall per
/// wake-up), short enough that an idle pool is asleep within a blink.
const SEARCH_TIME: Duration = Duration::from_micros(50);

/// Spins, then yields, looking for a job for up to [`SEARCH_TIME`].
fn search(shared: &ThreadShared) -> Option<QueuedJob> {
    let backoff = Backoff::new();
    let mut started: Option<std::time::Instant> = None;
    loop {
        backoff.snooze();
        if let Some(job) = shared.find_job() {
            return Some(job);
        }
        if backoff.is_completed() {
            let t = *started.get_or_insert_with(std::time::Instant::now);
            if t.elapsed() >= SEARCH_TIME {
                return None;
            }
        }
    }
}

/// A closure job and its handle's state, in one allocation.
///
/// The queue and the handle share it, so a job costs one allocation, made
/// and (usually) freed by the submitting thread: workers free nothing, which
/// keeps them off the allocator's cross-thread path. The closure is taken
/// out exactly once, by the worker that dequeues the job — to run it, or to
/// drop it if the job was resolved meanwhile.
pub(crate) struct ClosureJob<F, R> {
    state: JobState<R>,
    f: Mutex<Option<F>>,
    timeout: Option<Duration>,
}

impl<F, R> ClosureJob<F, R> {
    pub(crate) fn new(state: JobState<R>, f: F, timeout: Option<Duration>) -> Self {
        ClosureJob {
            state,
            f: Mutex::new(Some(f)),
            timeout,
        }
    }

    fn take(&self) -> Option<F> {
        crate::sync::lock(&self.f).take()
    }
}

impl<F: Send, R: Send> Cancellable for ClosureJob<F, R> {
    fn is_cancelled(&self) -> bool {
        self.state.is_cancelled()
    }
}

impl<F: Send, R: Send> HandleTarget<R> for ClosureJob<F, R> {
    fn state(&self) -> &JobState<R> {
        &self.state
    }
    fn cancel(&self, err: JobError) -> bool {
        let pool = self.state.pool();
        self.state
            .resolve_cancel_counted(err, |outcome| count_in_pool(pool, outcome))
    }
}

impl<F: Send, R: Send> Expire for ClosureJob<F, R> {
    fn expire(&self, after: Duration) {
        self.cancel(JobError::TimedOut { after });
    }
}

impl<F, R> Runnable for ClosureJob<F, R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    fn run(self: Arc<Self>, pool: &ThreadShared, running: Option<&AtomicU64>) {
        // Taken once: by the resolution below, or on the way out.
        let running = std::cell::Cell::new(running);
        let stopped = || {
            if let Some(r) = running.take() {
                r.fetch_sub(1, Relaxed);
            }
        };
        let Some(f) = self.take() else {
            stopped();
            return;
        };
        if !self.state.try_start() {
            stopped();
            return;
        }
        if let Some(after) = self.timeout {
            let weak = Arc::downgrade(&self);
            timer::schedule(after, weak);
        }
        let id = self.state.id();
        let _span = tracing::debug_span!("job", pool = %pool.name, job = id.get()).entered();
        let _ctx = job::enter(id, CancelToken(self.clone()));
        let result = panic::catch(f).map_err(JobError::panicked);
        let resolved = self.state.resolve_counted(result, |o| {
            pool.tally.count(o);
            stopped();
        });
        if !resolved {
            tracing::debug!("job finished after it was cancelled or timed out; value dropped");
        }
        stopped();
    }

    fn abandon(self: Arc<Self>, pool: &ThreadShared, err: JobError) {
        drop(self.take());
        self.state
            .resolve_counted(Err(err), |o| pool.tally.count(o));
    }
}
