//! [`Mutex`]: a robust lock around a plain-data value, shared by processes
//! and threads (a holder's death is reported, not a deadlock).

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::mem::RegionSeed;
use super::region::{self, HEADER, Kind, Region};
use super::sys::{self, Locked};

/// Where a mutex's value starts in its payload (after the lock itself).
const VALUE_AT: usize = 64;
/// Where the poison word sits: nonzero once a holder died, until cleared.
const POISON_AT: usize = VALUE_AT - 4;

/// A mutual-exclusion lock around a plain-data value, shared by every
/// process and thread that has a handle to it.
///
/// Unlike Python's `multiprocessing.Lock`, a process that dies holding the
/// lock does not leave the others waiting forever. The mutex is
/// *poisoned* instead, as a `std::sync::Mutex` is by a panic: every
/// [`lock`](Self::lock), in every process, fails with
/// [`LockError::OwnerDied`] until someone takes it with
/// [`lock_for_repair`](Self::lock_for_repair), checks or repairs the
/// value, and calls [`clear_poison`](Self::clear_poison). The error owns
/// nothing (it is `Send + Sync + 'static`), so `mutex.lock()?` works in a
/// function returning `anyhow::Result` or `Box<dyn Error>`.
///
/// Acquiring follows one shape across this crate: the blocking call waits
/// as long as it takes, `try_` does not wait, `_timeout` waits at most so
/// long; each returns `Result` when more than "not now" can go wrong (a
/// mutex: a dead holder), and `Option` when "not now" is the only failure
/// (a [`Semaphore`](crate::Semaphore), whose dead holders' permits come
/// back on their own).
///
/// ```
/// use parpool::ipc::Mutex;
/// use parpool::{Executor, ProcessPool};
///
/// parpool::task! {
///     fn add(counter: Mutex<u64>) -> () {
///         *counter.lock().unwrap() += 1;
///     }
/// }
///
/// let counter = Mutex::new(0u64)?;
/// let pool = ProcessPool::builder().workers(2).build()?;
/// let hs: Vec<_> = (0..20).map(|_| pool.submit(add, counter.clone())).collect();
/// for h in hs {
///     h.join()?;
/// }
/// assert_eq!(*counter.lock().unwrap(), 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Mutex<T> {
    region: Arc<Region>,
    _t: PhantomData<T>,
}

impl<T> Clone for Mutex<T> {
    fn clone(&self) -> Self {
        Mutex {
            region: self.region.clone(),
            _t: PhantomData,
        }
    }
}

/// A [`Mutex`] that guards no value: a plain lock.
pub type Lock = Mutex<()>;

/// Why a [`Mutex`] was not locked. It owns nothing, so `?` carries it
/// into any error type (`anyhow::Error`, `Box<dyn Error + Send + Sync>`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// A holder died holding the lock, and nobody has cleared the poison
    /// since: the value may be half-updated. The lock is free.
    #[error(
        "a holder of the lock died holding it, so the value may be inconsistent; \
         take it with `lock_for_repair`, check the value, then `clear_poison`"
    )]
    OwnerDied,
    /// The lock stayed taken for the whole timeout.
    #[error("the lock was not free within the timeout")]
    TimedOut,
    /// The lock was taken and `try_lock` does not wait.
    #[error("the lock is taken")]
    WouldBlock,
    /// [`Lock::unlock`] or [`RLock::unlock`](crate::RLock::unlock) by a
    /// thread that does not hold the lock.
    #[error("this thread does not hold the lock, so it cannot release it")]
    NotHeld,
    /// The system refused (this should not happen with a valid lock).
    #[error("locking failed: {0}")]
    Io(#[from] io::Error),
}

impl<T: Pod> Mutex<T> {
    /// A new unlocked mutex holding `value`.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn new(value: T) -> io::Result<Self> {
        const { assert!(sys::MUTEX_SIZE <= POISON_AT) };
        // The value sits 64-byte aligned: `T` must need no more.
        const { assert!(std::mem::align_of::<T>() <= 64) };
        let region = Region::create(Kind::Mutex, Self::payload_len())?;
        // SAFETY: the payload starts 64-byte aligned, has room for the
        // mutex before `VALUE_AT`, and nobody else has the region yet.
        unsafe { sys::mutex_init(region.payload())? };
        sys::copy_in(region.map(), HEADER + VALUE_AT, bytemuck::bytes_of(&value));
        Ok(Mutex {
            region: Arc::new(region),
            _t: PhantomData,
        })
    }

    fn payload_len() -> usize {
        VALUE_AT + std::mem::size_of::<T>()
    }

    /// Locks, waiting as long as it takes.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] when the mutex is poisoned: a holder died
    /// holding it (this call may be the one that found out). The lock is
    /// left free; see [`lock_for_repair`](Self::lock_for_repair).
    pub fn lock(&self) -> Result<MutexGuard<'_, T>, LockError> {
        self.checked(self.lock_until(None)?)
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockError::TimedOut`] when the lock stayed taken; `OwnerDied` as
    /// for [`lock`](Self::lock).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard<'_, T>, LockError> {
        self.checked(self.lock_until(Some(SystemTime::now() + timeout))?)
    }

    /// Locks if the lock is free now, without waiting.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] when it is taken; `OwnerDied` as for
    /// [`lock`](Self::lock).
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, LockError> {
        // SAFETY: as in `lock_until`.
        match unsafe { sys::mutex_trylock(self.region.payload())? } {
            None => Err(LockError::WouldBlock),
            Some(locked) => self.checked(self.guard(locked)),
        }
    }

    /// Locks whether or not the mutex is poisoned: the way to look at, and
    /// repair, what a dead holder left. Call
    /// [`clear_poison`](Self::clear_poison) once the value is sound.
    ///
    /// ```
    /// use parpool::ipc::{LockError, Mutex};
    ///
    /// let m = Mutex::new(0u32)?;
    /// if let Err(LockError::OwnerDied) = m.lock() {
    ///     let mut value = m.lock_for_repair()?;
    ///     *value = 0; // whatever makes it sound again
    ///     m.clear_poison();
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`LockError::Io`] only, when the system refuses.
    pub fn lock_for_repair(&self) -> Result<MutexGuard<'_, T>, LockError> {
        let mut guard = self.lock_until(None)?;
        guard.repair = true;
        Ok(guard)
    }

    /// [`lock_for_repair`](Self::lock_for_repair), waiting at most
    /// `timeout`.
    ///
    /// # Errors
    /// [`LockError::TimedOut`] when the lock stayed taken; `Io` as for
    /// `lock_for_repair`.
    pub fn lock_for_repair_timeout(&self, timeout: Duration) -> Result<MutexGuard<'_, T>, LockError> {
        let mut guard = self.lock_until(Some(SystemTime::now() + timeout))?;
        guard.repair = true;
        Ok(guard)
    }

    /// Locks, waiting as long as it takes; if a holder died holding the
    /// lock, first hands the value to `repair` (with the lock held) and
    /// then clears the poison. The common case of a robust lock in one
    /// line — Python's `with lock:` — with the poison still impossible to
    /// miss: what to do about a dead holder is the argument.
    ///
    /// ```
    /// use parpool::ipc::Mutex;
    ///
    /// let total = Mutex::new(0u64)?;
    /// *total.lock_or_repair(|t| *t = 0)? += 5;
    /// assert_eq!(*total.lock()?, 5);
    ///
    /// // A plain lock has nothing to repair.
    /// let lock = parpool::ipc::Lock::new(())?;
    /// let _held = lock.lock_or_repair(|()| {})?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// If `repair` panics, the lock is released and stays poisoned.
    ///
    /// # Errors
    /// [`LockError::Io`] only, when the system refuses.
    pub fn lock_or_repair(
        &self,
        repair: impl FnOnce(&mut T),
    ) -> Result<MutexGuard<'_, T>, LockError> {
        let mut guard = self.lock_until(None)?;
        if self.is_poisoned() {
            repair(&mut guard);
            self.clear_poison();
        }
        Ok(guard)
    }

    /// Locks again after a [`Condvar`](crate::Condvar) wait, as `guard`
    /// had been locked: a guard from `lock_for_repair` keeps the lock while
    /// the mutex is poisoned, any other fails as `lock` does.
    pub(super) fn relock(&self, repair: bool) -> Result<MutexGuard<'_, T>, LockError> {
        if repair {
            self.lock_for_repair()
        } else {
            self.lock()
        }
    }

    /// Whether the mutex is poisoned: a holder died holding it, someone
    /// has locked it since (which is when the death is found out), and
    /// nobody has cleared the poison.
    pub fn is_poisoned(&self) -> bool {
        self.poison().load(Ordering::Acquire) != 0
    }

    /// Clears the poison a dead holder left, for every process: `lock`
    /// succeeds again.
    pub fn clear_poison(&self) {
        self.poison().store(0, Ordering::Release);
    }

    fn poison(&self) -> &AtomicU32 {
        sys::atomic_at(self.region.map(), HEADER + POISON_AT)
            .expect("the poison word is inside every mutex's payload")
    }

    /// Locks, poisoned or not (a dead previous holder poisons it).
    fn lock_until(&self, deadline: Option<SystemTime>) -> Result<MutexGuard<'_, T>, LockError> {
        // SAFETY: the region's payload starts with a mutex initialized by
        // `new` (in whichever process created it); `self` keeps it mapped.
        match unsafe { sys::mutex_lock(self.region.payload(), deadline)? } {
            Locked::TimedOut => Err(LockError::TimedOut),
            locked => Ok(self.guard(locked)),
        }
    }

    /// The guard for a lock just taken; a dead previous holder poisons.
    fn guard(&self, locked: Locked) -> MutexGuard<'_, T> {
        if locked == Locked::OwnerDied {
            self.poison().store(1, Ordering::Release);
        }
        MutexGuard {
            mutex: self,
            repair: false,
            _not_send: PhantomData,
        }
    }

    /// `guard`, unless the mutex is poisoned: then the lock is released and
    /// the error says why.
    fn checked<'a>(&'a self, guard: MutexGuard<'a, T>) -> Result<MutexGuard<'a, T>, LockError> {
        if self.is_poisoned() {
            drop(guard);
            Err(LockError::OwnerDied)
        } else {
            Ok(guard)
        }
    }

    /// The `index`th 8-byte word of the value, as an atomic: for a lock
    /// built on this one that keeps its own state in the value and never
    /// takes a guard's reference to it ([`RLock`](crate::RLock)).
    pub(crate) fn word(&self, index: usize) -> &std::sync::atomic::AtomicU64 {
        sys::atomic_at(self.region.map(), HEADER + VALUE_AT + 8 * index)
            .expect("the word is inside the mutex's value")
    }

    /// Unlocks a lock whose guard was forgotten (an [`RLock`](crate::RLock)
    /// unlocks when its last guard goes, whichever that is).
    ///
    /// # Safety
    /// The calling thread holds the lock, and no guard of it remains.
    pub(crate) unsafe fn unlock_forgotten(&self) {
        // SAFETY: the caller holds the lock (this function's contract).
        unsafe { sys::mutex_unlock(self.region.payload()) };
    }

    fn value_ptr(&self) -> *mut T {
        self.region.payload().wrapping_add(VALUE_AT).cast::<T>()
    }
}

impl Mutex<()> {
    /// Releases the lock this thread holds without a guard: for a
    /// binding whose taking and releasing are separate calls (Python's
    /// `lock.acquire()` … `lock.release()`), which takes a guard and
    /// [`forget`](std::mem::forget)s it. A plain lock guards no value, so
    /// releasing it early cannot expose one to two threads.
    ///
    /// ```
    /// use parpool::ipc::{Lock, LockError};
    ///
    /// let lock = Lock::new(())?;
    /// std::mem::forget(lock.lock()?);
    /// assert!(lock.try_lock().is_err(), "held past its guard");
    /// lock.unlock()?;
    /// assert!(matches!(lock.unlock(), Err(LockError::NotHeld)));
    /// drop(lock.try_lock()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`LockError::NotHeld`] when this thread does not hold it (another
    /// thread or process does, or nobody): nothing changes.
    pub fn unlock(&self) -> Result<(), LockError> {
        // SAFETY: the region's payload starts with a mutex initialized by
        // `new`; `self` keeps it mapped.
        if unsafe { sys::mutex_unlock_if_held(self.region.payload())? } {
            Ok(())
        } else {
            Err(LockError::NotHeld)
        }
    }
}

impl<T> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex").finish_non_exhaustive()
    }
}

/// Holds a [`Mutex`]; unlocks when dropped. It must be dropped on the
/// thread that locked, so it is not `Send`.
pub struct MutexGuard<'a, T: Pod> {
    pub(super) mutex: &'a Mutex<T>,
    /// Taken with `lock_for_repair`: a `Condvar` wait locks again that way.
    pub(super) repair: bool,
    _not_send: PhantomData<*const ()>,
}

impl<T: Pod> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the value is inside the mapping, aligned (64-byte offset
        // in a 64-aligned payload; `new` asserts `T` needs at most 64), any
        // bit pattern is a valid `T`, and this guard holds the lock that
        // every access takes.
        unsafe { &*self.mutex.value_ptr() }
    }
}

impl<T: Pod> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; the lock makes this the only access.
        unsafe { &mut *self.mutex.value_ptr() }
    }
}

impl<T: Pod> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard's thread locked the mutex and still holds it.
        unsafe { sys::mutex_unlock(self.mutex.region.payload()) };
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MutexGuard").field(&**self).finish()
    }
}

impl<T: Pod> Serialize for Mutex<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        region::serialize(&self.region, Kind::Mutex, s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Mutex<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::DeserializeSeed;
        let region = RegionSeed {
            kind: Kind::Mutex,
            len: Self::payload_len(),
        }
        .deserialize(d)?;
        Ok(Mutex {
            region,
            _t: PhantomData,
        })
    }
}
