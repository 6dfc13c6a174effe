//! [`Condvar`]: a condition variable for a [`Mutex`](super::Mutex), shared by
//! processes and threads.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::mem::RegionSeed;
use super::mutex::{LockError, MutexGuard};
use super::region::{self, HEADER, Kind, Region, fixed_region_serde};
use super::sys;

/// A condition variable for a [`Mutex`](super::Mutex), shared by processes
/// and threads, like `multiprocessing.Condition`.
///
/// [`wait`](Self::wait) releases the lock, sleeps until notified, and locks
/// again; as with every condition variable, wake-ups may be spurious, so
/// wait in a loop that checks the condition. Waiting holds no state in
/// shared memory: a waiter that dies leaves nothing behind.
///
/// ```
/// use parpool::ipc::{Condvar, Mutex};
///
/// let ready = Mutex::new(0u32)?; // plain data only: 0 or 1 here
/// let changed = Condvar::new()?;
/// let (r, c) = (ready.clone(), changed.clone());
/// std::thread::spawn(move || {
///     *r.lock().unwrap() = 1;
///     c.notify_all();
/// });
/// let mut guard = ready.lock().unwrap();
/// while *guard == 0 {
///     guard = changed.wait(guard).unwrap();
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Condvar {
    region: Arc<Region>,
}

impl Condvar {
    /// A new condition variable.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn new() -> io::Result<Self> {
        Ok(Condvar {
            region: Arc::new(Region::create(Kind::Condvar, 4)?),
        })
    }

    fn seq(&self) -> &AtomicU32 {
        sys::atomic_at(self.region.map(), HEADER).expect("in bounds")
    }

    /// Wakes one waiter, in any process.
    pub fn notify_one(&self) {
        self.seq().fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(self.seq(), 1);
    }

    /// Wakes every waiter, in every process.
    pub fn notify_all(&self) {
        self.seq().fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(self.seq(), sys::WAKE_ALL);
    }

    /// Releases `guard`'s lock, waits for a notification, and locks again.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] if the mutex is poisoned when this locks
    /// again (a holder died holding it); the lock is then left free, as
    /// [`Mutex::lock`](crate::Mutex::lock) leaves it. A guard from
    /// [`Mutex::lock_for_repair`](crate::Mutex::lock_for_repair) locks
    /// again the same way, poisoned or not.
    pub fn wait<'a, T: Pod>(
        &self,
        guard: MutexGuard<'a, T>,
    ) -> Result<MutexGuard<'a, T>, LockError> {
        self.wait_until(guard, None).map(|(g, _)| g)
    }

    /// Like [`wait`](Self::wait), for at most `timeout`; also says whether
    /// the time ran out.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn wait_timeout<'a, T: Pod>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> Result<(MutexGuard<'a, T>, bool), LockError> {
        self.wait_until(guard, Some(timeout))
    }

    fn wait_until<'a, T: Pod>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Option<Duration>,
    ) -> Result<(MutexGuard<'a, T>, bool), LockError> {
        let (mutex, repair) = (guard.mutex, guard.repair);
        // Read before unlocking: a notification after this point changes
        // the word, so the futex wait returns at once.
        let seen = self.seq().load(Ordering::SeqCst);
        drop(guard);
        let started = Instant::now();
        sys::futex_wait(self.seq(), seen, timeout);
        let timed_out = timeout.is_some_and(|t| started.elapsed() >= t);
        mutex.relock(repair).map(|g| (g, timed_out))
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}

fixed_region_serde!(Condvar, Kind::Condvar, 4);
