//! Synchronisation primitives, swapped for loom's under `cfg(parpool_loom)`,
//! and the one way this crate locks and waits: ignoring poisoning.
//!
//! Only the types whose interleavings the loom models explore are shimmed
//! (mutex, condvar, atomics, fences): the job state machine's and the
//! thread pool's sleep protocol's. `Arc` stays std's in both builds: loom's
//! `Arc` cannot be unsized to a trait object, and reference counting is not
//! what the models explore.
//!
//! Every critical section in this crate leaves its data consistent before any
//! code that can panic runs (user callbacks run outside locks), so a poisoned
//! lock carries no broken invariant: [`lock`], [`wait`] and [`wait_timeout`]
//! take std's and loom's types alike and ignore poisoning.

#[cfg(parpool_loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicUsize, fence};
#[cfg(parpool_loom)]
pub(crate) use loom::sync::{Condvar, Mutex};

#[cfg(not(parpool_loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicUsize, fence};
#[cfg(not(parpool_loom))]
pub(crate) use std::sync::{Condvar, Mutex};

use std::time::{Duration, Instant};

/// A mutex that can be locked ignoring poisoning.
pub(crate) trait Lock {
    /// Its guard.
    type Guard<'a>
    where
        Self: 'a;
    /// Locks it.
    fn lock_ignoring_poison(&self) -> Self::Guard<'_>;
}

/// A condition variable whose waits, with guard `G`, ignore poisoning.
pub(crate) trait Wait<G> {
    /// Waits for a notification.
    fn wait_ignoring_poison(&self, guard: G) -> G;
    /// Waits for a notification or `dur`.
    fn wait_timeout_ignoring_poison(&self, guard: G, dur: Duration) -> G;
}

impl<T: ?Sized> Lock for std::sync::Mutex<T> {
    type Guard<'a>
        = std::sync::MutexGuard<'a, T>
    where
        T: 'a;
    fn lock_ignoring_poison(&self) -> Self::Guard<'_> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<'a, T> Wait<std::sync::MutexGuard<'a, T>> for std::sync::Condvar {
    fn wait_ignoring_poison(
        &self,
        guard: std::sync::MutexGuard<'a, T>,
    ) -> std::sync::MutexGuard<'a, T> {
        self.wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn wait_timeout_ignoring_poison(
        &self,
        guard: std::sync::MutexGuard<'a, T>,
        dur: Duration,
    ) -> std::sync::MutexGuard<'a, T> {
        match self.wait_timeout(guard, dur) {
            Ok((g, _)) => g,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }
}

#[cfg(parpool_loom)]
impl<T> Lock for loom::sync::Mutex<T> {
    type Guard<'a>
        = loom::sync::MutexGuard<'a, T>
    where
        T: 'a;
    fn lock_ignoring_poison(&self) -> Self::Guard<'_> {
        match self.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(parpool_loom)]
impl<'a, T> Wait<loom::sync::MutexGuard<'a, T>> for loom::sync::Condvar {
    fn wait_ignoring_poison(
        &self,
        guard: loom::sync::MutexGuard<'a, T>,
    ) -> loom::sync::MutexGuard<'a, T> {
        match self.wait(guard) {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
    fn wait_timeout_ignoring_poison(
        &self,
        guard: loom::sync::MutexGuard<'a, T>,
        dur: Duration,
    ) -> loom::sync::MutexGuard<'a, T> {
        match self.wait_timeout(guard, dur) {
            Ok((g, _)) => g,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }
}

/// Locks `m`, ignoring poisoning (see the module docs).
pub(crate) fn lock<M: Lock + ?Sized>(m: &M) -> M::Guard<'_> {
    m.lock_ignoring_poison()
}

/// Waits on `cv`, ignoring poisoning (see the module docs).
pub(crate) fn wait<G, C: Wait<G> + ?Sized>(cv: &C, guard: G) -> G {
    cv.wait_ignoring_poison(guard)
}

/// Waits on `cv` for at most `dur`, ignoring poisoning (see the module
/// docs).
pub(crate) fn wait_timeout<G, C: Wait<G> + ?Sized>(cv: &C, guard: G, dur: Duration) -> G {
    cv.wait_timeout_ignoring_poison(guard, dur)
}

pub(crate) use std::sync::atomic::Ordering::{AcqRel, Acquire, SeqCst};

/// Probes between two looks at the clock (and two offers of the core to
/// another thread): a few microseconds.
const PROBES_PER_CHECK: u32 = 16;

/// Polls `ready` until it says yes (`true`) or `window` has passed
/// (`false`): the low-latency mode of a process pool
/// (`process/README.md`, "Waiting without sleeping"). Between looks at
/// the clock it gives the core away once, so that on a machine with fewer
/// cores than spinners the thread it waits for gets to run.
pub(crate) fn spin_until(window: Duration, mut ready: impl FnMut() -> bool) -> bool {
    if window.is_zero() {
        return ready();
    }
    let start = Instant::now();
    loop {
        for _ in 0..PROBES_PER_CHECK {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= window {
            return ready();
        }
        std::thread::yield_now();
    }
}

#[cfg(all(test, not(parpool_loom)))]
mod spin_tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn spinning_returns_when_ready_or_when_the_window_closes() {
        let mut calls = 0;
        assert!(spin_until(Duration::from_secs(60), || {
            calls += 1;
            calls == 500
        }));
        let start = Instant::now();
        assert!(!spin_until(Duration::from_millis(20), || false));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(20), "{took:?}");
        assert!(!spin_until(Duration::ZERO, || false));
    }
}
