//! How idle workers sleep and how a push wakes one (design: `README.md`
//! here, "Sleeping"), apart from the queue so that loom can check it.
//!
//! Two flags meet in a Dekker pattern: a pusher publishes its job, issues
//! a `SeqCst` fence and reads `searching`/`sleepers`; a worker going to
//! sleep counts itself in `sleepers`, issues a `SeqCst` fence and looks at
//! the queue again. Whichever fence comes first in the total order, one of
//! the two sees the other: no job is pushed while its only worker sleeps
//! through it. The loom models below fail when either fence is removed.

use crate::sync::{AtomicUsize, Condvar, Mutex, SeqCst, fence};

/// The sleep/wake state of one pool's workers.
#[derive(Default)]
pub(crate) struct Sleep {
    /// Workers asleep (or about to be) on `cv`.
    sleepers: AtomicUsize,
    /// Workers awake and looking for a job: a push need not wake anyone
    /// while one of them exists.
    searching: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Sleep {
    /// After a job was pushed: wakes a sleeper unless a worker is
    /// searching (it will find the job).
    pub(crate) fn after_push(&self) {
        fence(SeqCst);
        if self.searching.load(SeqCst) == 0 {
            self.wake_one();
        }
    }

    /// Called by a worker that went from idle to busy while `has_work`:
    /// if jobs remain and nobody searches, nobody else will look for them.
    pub(crate) fn pass_on(&self, has_work: impl Fn() -> bool) {
        fence(SeqCst);
        if has_work() && self.searching.load(SeqCst) == 0 {
            self.wake_one();
        }
    }

    /// Counts a worker in as searching; returns how many searched before.
    pub(crate) fn start_search(&self) -> usize {
        self.searching.fetch_add(1, SeqCst)
    }

    /// Counts a worker out of the searchers.
    pub(crate) fn end_search(&self) {
        self.searching.fetch_sub(1, SeqCst);
    }

    /// Wakes one sleeping worker, if any sleeps.
    fn wake_one(&self) {
        if self.sleepers.load(SeqCst) > 0 {
            let _g = crate::sync::lock(&self.lock);
            self.cv.notify_one();
        }
    }

    /// Wakes every sleeping worker.
    pub(crate) fn wake_all(&self) {
        let _g = crate::sync::lock(&self.lock);
        self.cv.notify_all();
    }

    /// Blocks until woken, unless `ready` (work queued, or the pool is
    /// done) holds once this worker counts as a sleeper.
    pub(crate) fn sleep(&self, ready: impl Fn() -> bool) {
        let g = crate::sync::lock(&self.lock);
        self.sleepers.fetch_add(1, SeqCst);
        fence(SeqCst);
        let g = if ready() {
            g
        } else {
            crate::sync::wait(&self.cv, g)
        };
        self.sleepers.fetch_sub(1, SeqCst);
        drop(g);
    }
}

#[cfg(all(test, parpool_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    /// A queue as the protocol sees it: a count pushed and looked at with
    /// no ordering of its own (the fences must provide it).
    type Jobs = Arc<loom::sync::atomic::AtomicUsize>;

    /// A thread that pushes one job.
    fn pusher(sleep: &Arc<Sleep>, jobs: &Jobs) -> loom::thread::JoinHandle<()> {
        let (s, j) = (sleep.clone(), jobs.clone());
        loom::thread::spawn(move || {
            j.fetch_add(1, Relaxed);
            s.after_push();
        })
    }

    /// A worker that found nothing sleeps until a job is there.
    fn idle_worker(sleep: &Sleep, jobs: &Jobs) {
        while jobs.load(Relaxed) == 0 {
            sleep.sleep(|| jobs.load(Relaxed) > 0);
        }
    }

    #[test]
    fn a_push_never_leaves_the_only_worker_asleep() {
        loom::model(|| {
            let sleep = Arc::new(Sleep::default());
            let jobs: Jobs = Arc::default();
            let pusher = pusher(&sleep, &jobs);
            idle_worker(&sleep, &jobs);
            pusher.join().unwrap();
        });
    }

    #[test]
    fn a_push_seen_by_a_searcher_that_gives_up_still_wakes_it() {
        loom::model(|| {
            let sleep = Arc::new(Sleep::default());
            let jobs: Jobs = Arc::default();
            let pusher = pusher(&sleep, &jobs);
            // The worker searches once, gives up, and goes to sleep.
            sleep.start_search();
            let found = jobs.load(Relaxed) > 0;
            sleep.end_search();
            if !found {
                idle_worker(&sleep, &jobs);
            }
            pusher.join().unwrap();
        });
    }
}
