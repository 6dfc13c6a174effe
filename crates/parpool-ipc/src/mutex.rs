//! [`Mutex`]: a robust lock around a plain-data value, shared by processes
//! and threads (a holder's death is reported, not a deadlock).

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::mem::RegionSeed;
use super::region::{self, HEADER, Kind, Region};
use super::sys::{self, Locked};

/// Where a mutex's value starts in its payload (after the lock itself).
const VALUE_AT: usize = 64;

/// A mutual-exclusion lock around a plain-data value, shared by every
/// process and thread that has a handle to it.
///
/// Unlike Python's `multiprocessing.Lock`, a process that dies holding the
/// lock does not leave the others waiting forever: the next `lock` gets
/// [`LockError::OwnerDied`] with the guard, so it can check the value,
/// repair it, and go on. The lock is usable again afterwards.
///
/// ```
/// use parpool_ipc::Mutex;
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

/// Why [`Mutex::lock`] did not simply lock.
#[derive(thiserror::Error)]
pub enum LockError<'a, T: Pod> {
    /// The previous holder died holding the lock. The lock is held now
    /// (by this guard); the value is whatever the holder left.
    #[error("the previous holder of the lock died holding it; the value may need repair")]
    OwnerDied(MutexGuard<'a, T>),
    /// The timeout passed first.
    #[error("the lock was not free within the timeout")]
    TimedOut,
    /// The system refused (this should not happen with a valid lock).
    #[error("locking failed: {0}")]
    Io(#[from] io::Error),
}

impl<T: Pod> fmt::Debug for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::TimedOut => f.write_str("TimedOut"),
            LockError::Io(e) => f.debug_tuple("Io").field(e).finish(),
        }
    }
}

impl<'a, T: Pod> LockError<'a, T> {
    /// The guard, when the lock is held despite the error (`OwnerDied`).
    pub fn into_guard(self) -> Option<MutexGuard<'a, T>> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            _ => None,
        }
    }
}

impl<T: Pod> Mutex<T> {
    /// A new unlocked mutex holding `value`.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn new(value: T) -> io::Result<Self> {
        const { assert!(sys::MUTEX_SIZE <= VALUE_AT) };
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
    /// [`LockError::OwnerDied`] (with the guard) if the previous holder
    /// died holding the lock.
    pub fn lock(&self) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        self.lock_until(None)
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockError::TimedOut`] when the lock stayed taken; `OwnerDied` as
    /// for [`lock`](Self::lock).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        self.lock_until(Some(SystemTime::now() + timeout))
    }

    fn lock_until(
        &self,
        deadline: Option<SystemTime>,
    ) -> Result<MutexGuard<'_, T>, LockError<'_, T>> {
        // SAFETY: the region's payload starts with a mutex initialized by
        // `new` (in whichever process created it); `self` keeps it mapped.
        let locked = unsafe { sys::mutex_lock(self.region.payload(), deadline)? };
        let guard = MutexGuard {
            mutex: self,
            _not_send: PhantomData,
        };
        match locked {
            Locked::Yes => Ok(guard),
            Locked::OwnerDied => Err(LockError::OwnerDied(guard)),
            Locked::TimedOut => Err(LockError::TimedOut),
        }
    }

    fn value_ptr(&self) -> *mut T {
        self.region.payload().wrapping_add(VALUE_AT).cast::<T>()
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
