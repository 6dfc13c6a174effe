//! [`RLock`]: a robust reentrant lock shared by processes and threads.

use std::fmt;
use std::hash::BuildHasher;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mutex::{LockError, Mutex, MutexGuard};

/// A lock the thread holding it may take again, as Python's
/// `multiprocessing.RLock`: it is free again once every guard taken has
/// been dropped, in any order. Shared by every process and thread that has
/// a handle, and robust as [`Mutex`] is: a thread or process that dies
/// holding it poisons it ([`LockError::OwnerDied`] for every locker until
/// repaired), never a deadlock.
///
/// ```
/// use parpool::ipc::RLock;
/// use parpool::{Executor, ProcessPool};
///
/// parpool::task! {
///     /// Takes the lock, then takes it again in a helper.
///     fn nested(lock: RLock) -> usize {
///         let _outer = lock.lock().unwrap();
///         let _inner = lock.lock().unwrap();
///         lock.depth()
///     }
/// }
///
/// let lock = RLock::new()?;
/// let pool = ProcessPool::builder().workers(2).build()?;
/// assert_eq!(pool.submit(nested, lock.clone()).join()?, 2);
/// assert_eq!(lock.depth(), 0);
/// assert!(lock.try_lock().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RLock {
    /// The lock; its value is the holder's token (word 0) and how many
    /// guards it holds (word 1), written only by the holder, atomically.
    inner: Mutex<[u64; 2]>,
}

/// Word 0: the holding thread's token (0: none).
const OWNER: usize = 0;
/// Word 1: how many guards the holder has.
const DEPTH: usize = 1;

impl RLock {
    /// A new, free lock.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn new() -> io::Result<Self> {
        Ok(RLock {
            inner: Mutex::new([0; 2])?,
        })
    }

    /// Takes the lock, waiting as long as it takes (at once if this
    /// thread holds it already).
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] when a holder died holding it (see
    /// [`Mutex::lock`]).
    pub fn lock(&self) -> Result<RLockGuard<'_>, LockError> {
        self.acquire(|| self.inner.lock())
    }

    /// Takes the lock, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockError::TimedOut`], or as [`lock`](Self::lock).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>, LockError> {
        self.acquire(|| self.inner.lock_timeout(timeout))
    }

    /// Takes the lock if it is free now or this thread holds it.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] when another thread holds it, or as
    /// [`lock`](Self::lock).
    pub fn try_lock(&self) -> Result<RLockGuard<'_>, LockError> {
        self.acquire(|| self.inner.try_lock())
    }

    /// Takes the lock; if a holder died holding it, first calls `repair`
    /// (with the lock held) and clears the poison — as
    /// [`Mutex::lock_or_repair`].
    ///
    /// # Errors
    /// [`LockError::Io`] only, when the system refuses.
    pub fn lock_or_repair(&self, repair: impl FnOnce()) -> Result<RLockGuard<'_>, LockError> {
        self.acquire(|| self.inner.lock_or_repair(|_| repair()))
    }

    /// Takes the lock whether or not it is poisoned, waiting at most
    /// `timeout`: the way to look at, and repair, what a dead holder left
    /// (then [`clear_poison`](Self::clear_poison)), as
    /// [`Mutex::lock_for_repair`].
    ///
    /// # Errors
    /// [`LockError::TimedOut`] when another thread held it throughout;
    /// `Io` when the system refuses.
    pub fn lock_for_repair_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>, LockError> {
        self.acquire(|| self.inner.lock_for_repair_timeout(timeout))
    }

    /// How many guards this thread holds (0: it does not hold the lock).
    pub fn depth(&self) -> usize {
        if self.word(OWNER).load(Relaxed) == token() {
            usize::try_from(self.word(DEPTH).load(Relaxed)).unwrap_or(usize::MAX)
        } else {
            0
        }
    }

    /// Whether a holder died holding the lock and nobody has cleared the
    /// poison since (see [`Mutex::is_poisoned`]).
    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Clears the poison a dead holder left, for every process.
    pub fn clear_poison(&self) {
        self.inner.clear_poison();
    }

    /// Gives back one hold this thread has without a guard: for a binding
    /// whose taking and releasing are separate calls (Python's
    /// `rlock.acquire()` … `rlock.release()`), which
    /// [`forget`](std::mem::forget)s each guard it takes. The lock is free
    /// once every hold is given back.
    ///
    /// ```
    /// use parpool::ipc::{LockError, RLock};
    ///
    /// let lock = RLock::new()?;
    /// std::mem::forget(lock.lock()?);
    /// std::mem::forget(lock.lock()?);
    /// lock.unlock()?;
    /// assert_eq!(lock.depth(), 1);
    /// lock.unlock()?;
    /// assert_eq!(lock.depth(), 0);
    /// assert!(matches!(lock.unlock(), Err(LockError::NotHeld)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`LockError::NotHeld`] when this thread does not hold it: nothing
    /// changes.
    pub fn unlock(&self) -> Result<(), LockError> {
        self.release_one()
    }

    /// Drops one of this thread's holds; the last unlocks.
    fn release_one(&self) -> Result<(), LockError> {
        // Only the holding thread writes its token (see `acquire`).
        if self.word(OWNER).load(Relaxed) != token() {
            return Err(LockError::NotHeld);
        }
        if self.word(DEPTH).fetch_sub(1, Relaxed) == 1 {
            self.word(OWNER).store(0, Relaxed);
            // SAFETY: this thread took the lock (its token was the owner),
            // forgot that guard, and this was its last hold.
            unsafe { self.inner.unlock_forgotten() };
        }
        Ok(())
    }

    fn acquire<'a>(
        &'a self,
        take: impl FnOnce() -> Result<MutexGuard<'a, [u64; 2]>, LockError>,
    ) -> Result<RLockGuard<'a>, LockError> {
        let me = token();
        // Only this thread ever writes its own token, so reading it back
        // means this thread holds the lock: no other can change it now.
        if self.word(OWNER).load(Relaxed) == me {
            self.word(DEPTH).fetch_add(1, Relaxed);
        } else {
            // The lock is released by the last guard, not by this one.
            std::mem::forget(take()?);
            // What a dead holder left here is overwritten.
            self.word(DEPTH).store(1, Relaxed);
            self.word(OWNER).store(me, Relaxed);
        }
        Ok(RLockGuard {
            lock: self,
            _not_send: PhantomData,
        })
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        self.inner.word(index)
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("depth_here", &self.depth())
            .finish_non_exhaustive()
    }
}

/// One hold of an [`RLock`]; the lock is free once its holder's last
/// guard is dropped. Dropped on the thread that locked, so not `Send`.
#[must_use = "the lock is released when the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    _not_send: PhantomData<*const ()>,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        // Not held any more only if this thread released early through
        // `unlock`: then there is nothing of its own left to give back.
        let _ = self.lock.release_one();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard")
            .field("depth", &self.lock.depth())
            .finish()
    }
}

/// This thread's token: nonzero, and with overwhelming likelihood unlike
/// any other thread's in any process, a dead one's included (a reused pid
/// and thread id do not make the same token).
fn token() -> u64 {
    thread_local! {
        static TOKEN: u64 = std::collections::hash_map::RandomState::new()
            .hash_one((std::process::id(), std::thread::current().id()))
            | 1;
    }
    TOKEN.with(|t| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_takes_it_again_others_wait_for_the_last_guard() {
        let lock = RLock::new().unwrap();
        let a = lock.lock().unwrap();
        let b = lock.try_lock().unwrap();
        let c = lock.lock_timeout(Duration::from_millis(1)).unwrap();
        assert_eq!(lock.depth(), 3);
        let other = lock.clone();
        let blocked = std::thread::spawn(move || {
            assert_eq!(other.depth(), 0);
            assert!(matches!(other.try_lock(), Err(LockError::WouldBlock)));
            let _held = other.lock().unwrap();
            other.depth()
        });
        // Dropped out of order: only the last one frees it.
        drop(b);
        drop(a);
        assert_eq!(lock.depth(), 1);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!blocked.is_finished(), "one guard still holds it");
        drop(c);
        assert_eq!(blocked.join().unwrap(), 1);
        assert_eq!(lock.depth(), 0);
    }

    #[test]
    fn holds_without_guards_are_given_back_only_by_their_thread() {
        let lock = RLock::new().unwrap();
        std::mem::forget(lock.lock().unwrap());
        let guard = lock.lock().unwrap();
        let other = lock.clone();
        let refused = std::thread::spawn(move || other.unlock()).join().unwrap();
        assert!(matches!(refused, Err(LockError::NotHeld)));
        assert_eq!(lock.depth(), 2, "a refused release changes nothing");
        lock.unlock().unwrap();
        // Released early: the guard's own release finds nothing to give back.
        lock.unlock().unwrap();
        assert_eq!(lock.depth(), 0);
        let other = lock.clone();
        let holder = std::thread::spawn(move || {
            std::mem::forget(other.lock().unwrap());
            other
        })
        .join()
        .unwrap();
        drop(guard);
        assert!(
            matches!(holder.lock(), Err(LockError::OwnerDied)),
            "a stale guard did not release what a later holder took"
        );
    }

    #[test]
    fn a_holder_that_dies_poisons_it_for_everyone_until_repaired() {
        let lock = RLock::new().unwrap();
        let dying = lock.clone();
        std::thread::spawn(move || {
            std::mem::forget(dying.lock().unwrap());
            std::mem::forget(dying.lock().unwrap());
        })
        .join()
        .unwrap();
        assert!(matches!(lock.lock(), Err(LockError::OwnerDied)));
        assert!(lock.is_poisoned());
        let mut repaired = false;
        let g = lock.lock_or_repair(|| repaired = true).unwrap();
        assert!(repaired);
        assert_eq!(lock.depth(), 1, "the dead holder's depth is not inherited");
        drop(g);
        assert!(lock.lock().is_ok());
    }
}
