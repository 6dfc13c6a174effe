//! Synchronisation primitives, swapped for loom's under `cfg(parpool_loom)`.
//!
//! Only the types whose interleavings matter to the job state machine are
//! shimmed (mutex, condvar, atomics). `Arc` stays std's in both builds: loom's
//! `Arc` cannot be unsized to a trait object, and reference counting is not
//! what the models explore.

#[cfg(parpool_loom)]
pub(crate) use loom::sync::atomic::AtomicU8;
#[cfg(parpool_loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

#[cfg(not(parpool_loom))]
pub(crate) use std::sync::atomic::AtomicU8;
#[cfg(not(parpool_loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning.
///
/// Every critical section in this crate leaves its data consistent before any
/// code that can panic runs (user callbacks run outside locks), so a poisoned
/// lock carries no broken invariant.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Waits on `cv`, ignoring poisoning (see [`lock`]).
pub(crate) fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    match cv.wait(guard) {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Waits on `cv` for at most `dur`, ignoring poisoning (see [`lock`]).
pub(crate) fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    dur: std::time::Duration,
) -> MutexGuard<'a, T> {
    match cv.wait_timeout(guard, dur) {
        Ok((g, _)) => g,
        Err(poisoned) => poisoned.into_inner().0,
    }
}

pub(crate) use std::sync::atomic::Ordering::{AcqRel, Acquire};
