//! What a pool reports about itself ([`Stats`]), the same for every pool,
//! and the [`Tally`] that counts each job once, when it is resolved.
//!
//! A job's outcome is counted by whoever resolves its handle, at the
//! moment of resolving it and before anyone waiting on the handle wakes
//! (`handle.rs`, `JobState::resolve_flags`): a worker publishing a value, a
//! cancel, a timeout, a crash, a shutdown. (A process job's state holds
//! its pool's tally; a thread job's resolver finds it, so that the
//! thread pool's hot path clones no pointer per job: `thread/worker.rs`.) Exactly
//! one resolver wins, so each job is counted exactly once and in the
//! category of the result its handle holds. Submissions are counted when
//! the handle is made. So at rest `submitted` is the sum of the four
//! outcomes, and at every moment each counter is the number of handles in
//! that state.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crossbeam_utils::CachePadded;

use crate::error::JobError;

/// A snapshot of a pool's counters.
///
/// `submitted` counts every handle the pool gave out (refused submissions
/// and `map` chunks included: a chunk is one job); the four outcome
/// counters count each of those handles once, when it is resolved. At
/// rest (nothing queued or running, every handle resolved),
/// `submitted == completed + failed + cancelled + timed_out`.
///
/// ```
/// use parpool::ThreadPool;
///
/// let pool = ThreadPool::builder().workers(2).build()?;
/// let ok = pool.spawn(|| 1);
/// let bad = pool.spawn(|| -> u32 { panic!("no") });
/// ok.join()?;
/// bad.join().unwrap_err();
/// let s = pool.stats();
/// assert_eq!((s.submitted, s.completed, s.failed), (2, 1, 1));
/// assert_eq!(s.finished(), s.submitted);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Jobs given to the pool: every handle it returned.
    pub submitted: u64,
    /// Jobs accepted and not yet started (on a process pool this includes
    /// jobs sent ahead into a busy worker's pipeline). A job cancelled
    /// while queued counts here too until the pool takes it off its queue
    /// (it never starts); it counts as cancelled from the moment it is.
    pub queued: u64,
    /// Jobs a worker is running right now: never more than the workers. A
    /// job no longer counts here once its handle has resolved, except one
    /// cancelled or timed out while it runs: a thread job counts until its
    /// body returns (it still holds its thread), a process job until its
    /// worker has been killed.
    pub running: u64,
    /// Jobs resolved with their value.
    pub completed: u64,
    /// Jobs resolved with an error of their own: a panic, a crash, a codec
    /// or size error, an unknown task, a lost worker, no worker to run it.
    pub failed: u64,
    /// Jobs resolved [`Cancelled`](JobError::Cancelled) (by `cancel`,
    /// `cancel_on_drop` or `shutdown_now`) or refused with
    /// [`Shutdown`](JobError::Shutdown).
    pub cancelled: u64,
    /// Jobs resolved [`TimedOut`](JobError::TimedOut).
    pub timed_out: u64,
}

impl Stats {
    /// Jobs resolved so far: completed, failed, cancelled and timed out.
    pub fn finished(&self) -> u64 {
        self.completed + self.failed + self.cancelled + self.timed_out
    }
}

/// How many stripes a [`Tally`] spreads its counts over: threads that
/// resolve jobs at the same time mostly write different cache lines.
const STRIPES: usize = 8;

/// How a job was resolved, as the stats count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl Outcome {
    pub(crate) fn of<T>(result: &Result<T, JobError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Completed,
            Err(JobError::Cancelled | JobError::Shutdown) => Outcome::Cancelled,
            Err(JobError::TimedOut { .. }) => Outcome::TimedOut,
            Err(_) => Outcome::Failed,
        }
    }
}

/// One stripe of outcome counts.
#[derive(Debug, Default)]
struct Counts {
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    timed_out: AtomicU64,
}

/// A pool's counts of submitted and resolved jobs, shared by the pool and
/// the state of each of its jobs (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    submitted: CachePadded<AtomicU64>,
    stripes: [CachePadded<Counts>; STRIPES],
}

/// This thread's stripe.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
    }
    STRIPE.try_with(|s| *s).unwrap_or(0)
}

impl Tally {
    /// Counts `n` submissions.
    pub(crate) fn submitted(&self, n: u64) {
        self.submitted.fetch_add(n, Relaxed);
    }

    /// Counts one job resolved so.
    pub(crate) fn count(&self, outcome: Outcome) {
        let c = &self.stripes[stripe()];
        let counter = match outcome {
            Outcome::Completed => &c.completed,
            Outcome::Failed => &c.failed,
            Outcome::Cancelled => &c.cancelled,
            Outcome::TimedOut => &c.timed_out,
        };
        // Release: a snapshot that reads this count also sees the
        // submission it follows.
        counter.fetch_add(1, Release);
    }

    /// The counts, with `queued` and `running` as the pool knows them.
    ///
    /// The outcomes are read before `submitted`, so that a snapshot never
    /// shows more jobs resolved than submitted.
    pub(crate) fn snapshot(&self, queued: u64, running: u64) -> Stats {
        let mut s = Stats {
            queued,
            running,
            ..Stats::default()
        };
        for c in &self.stripes {
            s.completed += c.completed.load(Acquire);
            s.failed += c.failed.load(Acquire);
            s.cancelled += c.cancelled.load(Acquire);
            s.timed_out += c.timed_out.load(Acquire);
        }
        s.submitted = self.submitted.load(Relaxed);
        s
    }
}
