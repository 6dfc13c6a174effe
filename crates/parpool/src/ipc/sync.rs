//! Process-shared synchronization: [`Mutex`] (robust: a holder's death is
//! reported, not a deadlock), [`Semaphore`] and [`Event`].

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::mem::RegionSeed;
use super::region::{self, HEADER, Kind, Region};
use super::sys::{self, Locked};
use super::waiter::Registration;

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
    mutex: &'a Mutex<T>,
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

/// Serde for a region type with a fixed payload size: a descriptor
/// reference on the process wire, an error anywhere else.
macro_rules! fixed_region_serde {
    ($ty:ident, $kind:expr, $len:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                region::serialize(&self.region, $kind, s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::DeserializeSeed;
                let region = RegionSeed {
                    kind: $kind,
                    len: $len,
                }
                .deserialize(d)?;
                Ok($ty { region })
            }
        }
    };
}

fixed_region_serde!(Semaphore, Kind::Semaphore, 8);
fixed_region_serde!(Event, Kind::Event, 4);
fixed_region_serde!(Condvar, Kind::Condvar, 4);

/// Waits on `word` until `ready` says so or `deadline` passes; `false` on
/// timeout.
pub(crate) fn wait_on(
    word: &AtomicU32,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> Option<u32>,
) -> bool {
    loop {
        // `ready` returns the value to sleep on while not ready.
        let Some(seen) = ready() else {
            return true;
        };
        let timeout = match deadline {
            None => None,
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return false,
            },
        };
        sys::futex_wait(word, seen, timeout);
    }
}

/// A counting semaphore shared by processes and threads, bounded by the
/// count it was created with (like `multiprocessing.BoundedSemaphore`).
///
/// [`acquire`](Self::acquire) returns a permit that gives itself back when
/// dropped. A process that dies holding permits does not return them.
///
/// ```
/// use parpool::ipc::Semaphore;
///
/// let slots = Semaphore::new(2)?;
/// let a = slots.acquire();
/// let b = slots.acquire();
/// assert!(slots.try_acquire().is_none());
/// drop(a);
/// assert!(slots.try_acquire().is_some());
/// # drop(b);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    region: Arc<Region>,
}

/// A permit from a [`Semaphore`]; dropping it gives it back.
#[derive(Debug)]
#[must_use = "dropping the permit gives it back at once"]
pub struct Permit<'a> {
    semaphore: &'a Semaphore,
}

impl Semaphore {
    /// A semaphore with `permits` permits, all free.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn new(permits: u32) -> io::Result<Self> {
        let region = Region::create(Kind::Semaphore, 8)?;
        let s = Semaphore {
            region: Arc::new(region),
        };
        s.count().store(permits, Ordering::Release);
        s.max().store(permits, Ordering::Release);
        Ok(s)
    }

    fn count(&self) -> &AtomicU32 {
        sys::atomic_at(self.region.map(), HEADER).expect("in bounds")
    }

    fn max(&self) -> &AtomicU32 {
        sys::atomic_at(self.region.map(), HEADER + 4).expect("in bounds")
    }

    /// Permits free now.
    pub fn available(&self) -> u32 {
        self.count().load(Ordering::Acquire)
    }

    /// Takes a permit if one is free.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let count = self.count();
        let mut c = count.load(Ordering::Acquire);
        while c > 0 {
            match count.compare_exchange_weak(c, c - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Permit { semaphore: self }),
                Err(now) => c = now,
            }
        }
        None
    }

    /// Takes a permit, waiting as long as it takes.
    pub fn acquire(&self) -> Permit<'_> {
        loop {
            if let Some(p) = self.acquire_until(None) {
                return p;
            }
        }
    }

    /// Takes a permit, waiting at most `timeout`; `None` if none came free.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<Permit<'_>> {
        self.acquire_until(Instant::now().checked_add(timeout))
    }

    fn acquire_until(&self, deadline: Option<Instant>) -> Option<Permit<'_>> {
        let mut permit = None;
        wait_on(self.count(), deadline, || {
            permit = self.try_acquire();
            // Not ready: sleep while the count is still 0.
            permit.is_none().then_some(0)
        });
        permit
    }

    fn release(&self) {
        let max = self.max().load(Ordering::Acquire);
        let count = self.count();
        let mut c = count.load(Ordering::Acquire);
        // Bounded: a count at its maximum stays there.
        while c < max {
            match count.compare_exchange_weak(c, c + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    sys::futex_wake(count, 1);
                    return;
                }
                Err(now) => c = now,
            }
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.semaphore.release();
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("available", &self.available())
            .finish_non_exhaustive()
    }
}

/// A flag that processes and threads wait on until another sets it, like
/// `multiprocessing.Event`.
///
/// ```
/// use parpool::ipc::Event;
/// use std::time::Duration;
///
/// let ready = Event::new()?;
/// assert!(!ready.wait_timeout(Duration::from_millis(1)));
/// ready.set();
/// ready.wait();
/// assert!(ready.is_set());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    region: Arc<Region>,
}

impl Event {
    /// A new event, not set.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn new() -> io::Result<Self> {
        Ok(Event {
            region: Arc::new(Region::create(Kind::Event, 4)?),
        })
    }

    fn flag(&self) -> &AtomicU32 {
        sys::atomic_at(self.region.map(), HEADER).expect("in bounds")
    }

    /// Sets the flag and wakes every waiter, in every process.
    pub fn set(&self) {
        self.flag().store(1, Ordering::Release);
        sys::futex_wake(self.flag(), sys::WAKE_ALL);
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.flag().store(0, Ordering::Release);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.flag().load(Ordering::Acquire) != 0
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        wait_on(self.flag(), None, || (!self.is_set()).then_some(0));
    }

    /// Waits at most `timeout`; whether the flag was set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        wait_on(self.flag(), Instant::now().checked_add(timeout), || {
            (!self.is_set()).then_some(0)
        })
    }

    /// Waits until the flag is set, as a future for any async runtime.
    ///
    /// ```
    /// use parpool::ipc::Event;
    ///
    /// let ready = Event::new()?;
    /// let setter = ready.clone();
    /// std::thread::spawn(move || setter.set());
    /// futures::executor::block_on(ready.wait_async());
    /// assert!(ready.is_set());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_async(&self) -> EventWait<'_> {
        EventWait {
            event: self,
            registration: Registration::default(),
        }
    }
}

/// The future of [`Event::wait_async`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct EventWait<'a> {
    event: &'a Event,
    registration: Registration,
}

impl Future for EventWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.is_set() {
            return Poll::Ready(());
        }
        let region = self.event.region.clone();
        self.registration.wait(&region, 0, 0, cx.waker());
        // Set between the check and the registration: the waiter thread
        // sees the changed word at once, but answer now anyway.
        if self.event.is_set() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish_non_exhaustive()
    }
}

/// A condition variable for a [`Mutex`], shared by processes and threads,
/// like `multiprocessing.Condition`.
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
    /// [`LockError::OwnerDied`] (with the guard) if, while this waited, a
    /// holder of the lock died holding it.
    pub fn wait<'a, T: Pod>(
        &self,
        guard: MutexGuard<'a, T>,
    ) -> Result<MutexGuard<'a, T>, LockError<'a, T>> {
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
    ) -> Result<(MutexGuard<'a, T>, bool), LockError<'a, T>> {
        self.wait_until(guard, Some(timeout))
    }

    fn wait_until<'a, T: Pod>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Option<Duration>,
    ) -> Result<(MutexGuard<'a, T>, bool), LockError<'a, T>> {
        let mutex = guard.mutex;
        // Read before unlocking: a notification after this point changes
        // the word, so the futex wait returns at once.
        let seen = self.seq().load(Ordering::SeqCst);
        drop(guard);
        let started = Instant::now();
        sys::futex_wait(self.seq(), seen, timeout);
        let timed_out = timeout.is_some_and(|t| started.elapsed() >= t);
        mutex.lock().map(|g| (g, timed_out))
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}
