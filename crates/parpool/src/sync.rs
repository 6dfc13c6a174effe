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

use std::time::Duration;

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
