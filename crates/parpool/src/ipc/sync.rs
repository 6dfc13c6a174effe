//! Process-shared synchronization: [`Mutex`] (robust: a holder's death is
//! reported, not a deadlock), [`Semaphore`] and [`Event`].

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::mem::RegionSeed;
use super::region::{self, HEADER, Kind, Region};
use super::sys::{self, Locked, ProcessId};
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

fixed_region_serde!(Semaphore, Kind::Semaphore, SEM_LEN);
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

// Where a semaphore's parts sit in its payload. Its robust lock guards all
// of them; sleepers read `SEM_SEQ` without it.
const SEM_LOCK: usize = 0;
/// Futex word that waiters sleep on: bumped whenever permits come free.
const SEM_SEQ: usize = 64;
/// The permits it was created with.
const SEM_MAX: usize = 68;
/// Permits free: the maximum less what the holder slots hold. Recomputed
/// from the slots when the lock's previous holder died, perhaps between
/// updating a slot and this word.
const SEM_FREE: usize = 72;
/// Threads asleep on `SEM_SEQ`, so that a release with nobody waiting
/// makes no system call. A waiter that dies asleep leaves it one too high,
/// which costs each release a wake-up call, nothing more.
const SEM_WAITERS: usize = 76;
/// When anyone last checked the holders for liveness (`sys::monotonic_ms`).
const SEM_CHECKED_AT: usize = 80;
/// The holder slots, one per process holding permits:
/// `[pid u32][held u32][start time u64]`.
const SEM_SLOTS: usize = 128;
const SEM_SLOT: usize = 16;
/// How many processes can hold permits at once.
const SEM_HOLDERS: usize = 64;
const SEM_LEN: usize = SEM_SLOTS + SEM_HOLDERS * SEM_SLOT;
/// How often a waiter wakes to check that holders are alive, and at most
/// how often anyone checks (in milliseconds).
const SEM_LIVENESS_MS: u64 = 50;

/// A counting semaphore shared by processes and threads, bounded by the
/// count it was created with (like `multiprocessing.BoundedSemaphore`).
///
/// [`acquire`](Self::acquire) returns a permit that gives itself back when
/// dropped. Permits belong to the process that took them: a permit may be
/// dropped on any thread of that process.
///
/// **A process that ends holding permits gets them returned**, however it
/// ended: killed (`SIGKILL` included), crashed, or exited with permits it
/// forgot. A process that finds no permit free checks whether the
/// processes holding them are still alive, and takes back the permits of
/// those that are gone (a reused pid is told apart by its start time). A
/// waiter repeats that check at least every 50 ms while it waits (the same
/// bounded poll as a [`Barrier`](super::Barrier) wait), so a dead holder's
/// permits reach it within about 100 ms. A semaphore nobody waits on costs
/// nothing, and a live holder's permits are never taken: no more than the
/// maximum is ever handed out. Python's semaphore would lose those permits
/// for good.
///
/// Until someone takes them back, [`available`](Self::available) counts a
/// dead holder's permits as taken. A permit `forget`-ten in a process that
/// goes on living stays taken until that process ends.
///
/// At most 64 processes can hold permits at once, which only matters for a
/// semaphore of more than 64 permits: a 65th process waits as if no permit
/// were free, until some process gives back its last one. The processes
/// sharing a semaphore must see each other's pids (one PID namespace, as a
/// [`ProcessPool`](crate::ProcessPool)'s workers do) and `/proc`.
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

/// How long [`Semaphore::acquire_until`] may wait.
#[derive(Debug, Clone, Copy)]
enum Patience {
    None,
    Until(Instant),
    Forever,
}

/// One holder slot of a semaphore (read and written under its lock).
struct Slot<'a> {
    pid: &'a AtomicU32,
    held: &'a AtomicU32,
    start: &'a AtomicU64,
}

impl Slot<'_> {
    fn owner(&self) -> ProcessId {
        ProcessId {
            pid: self.pid.load(Ordering::Relaxed),
            start: self.start.load(Ordering::Relaxed),
        }
    }
}

impl Semaphore {
    /// A semaphore with `permits` permits, all free.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn new(permits: u32) -> io::Result<Self> {
        const { assert!(sys::MUTEX_SIZE <= SEM_SEQ) };
        let region = Region::create(Kind::Semaphore, SEM_LEN)?;
        // SAFETY: the payload starts 64-byte aligned, has room for the
        // mutex before `SEM_SEQ`, and nobody else has the region yet.
        unsafe { sys::mutex_init(region.payload().wrapping_add(SEM_LOCK))? };
        let s = Semaphore {
            region: Arc::new(region),
        };
        s.word(SEM_MAX).store(permits, Ordering::Relaxed);
        s.word(SEM_FREE).store(permits, Ordering::Release);
        Ok(s)
    }

    fn word(&self, at: usize) -> &AtomicU32 {
        sys::atomic_at(self.region.map(), HEADER + at).expect("semaphore words are in bounds")
    }

    fn checked_at(&self) -> &AtomicU64 {
        sys::atomic_at(self.region.map(), HEADER + SEM_CHECKED_AT)
            .expect("semaphore words are in bounds")
    }

    fn slot(&self, i: usize) -> Slot<'_> {
        let at = HEADER + SEM_SLOTS + i * SEM_SLOT;
        let map = self.region.map();
        Slot {
            pid: sys::atomic_at(map, at).expect("slots are in bounds"),
            held: sys::atomic_at(map, at + 4).expect("slots are in bounds"),
            start: sys::atomic_at(map, at + 8).expect("slots are in bounds"),
        }
    }

    fn max(&self) -> u32 {
        self.word(SEM_MAX).load(Ordering::Relaxed)
    }

    fn lock(&self) -> io::Result<SemLocked<'_>> {
        // SAFETY: the payload starts with the mutex that `new` initialized
        // (in whichever process created it); `self` keeps it mapped.
        let locked =
            unsafe { sys::mutex_lock(self.region.payload().wrapping_add(SEM_LOCK), None)? };
        let mut held = SemLocked {
            semaphore: self,
            wake: 0,
        };
        if locked == Locked::OwnerDied {
            held.recount();
        }
        Ok(held)
    }

    fn lock_or_panic(&self) -> SemLocked<'_> {
        self.lock().unwrap_or_else(|e| {
            panic!("the semaphore's lock failed (is its shared memory corrupted?): {e}")
        })
    }

    /// Permits free now. A dead holder's permits count as taken until an
    /// acquirer takes them back.
    pub fn available(&self) -> u32 {
        self.word(SEM_FREE).load(Ordering::Acquire)
    }

    /// Takes a permit if one is free (checking first, when none is, whether
    /// a dead holder's can be taken back).
    ///
    /// # Panics
    /// If the semaphore's lock fails, which only a corrupted region causes.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        self.acquire_until(Patience::None)
    }

    /// Takes a permit, waiting as long as it takes.
    ///
    /// # Panics
    /// As [`try_acquire`](Self::try_acquire).
    pub fn acquire(&self) -> Permit<'_> {
        loop {
            if let Some(p) = self.acquire_until(Patience::Forever) {
                return p;
            }
        }
    }

    /// Takes a permit, waiting at most `timeout`; `None` if none came free.
    ///
    /// # Panics
    /// As [`try_acquire`](Self::try_acquire).
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<Permit<'_>> {
        let until = Instant::now().checked_add(timeout);
        self.acquire_until(until.map_or(Patience::Forever, Patience::Until))
    }

    fn acquire_until(&self, patience: Patience) -> Option<Permit<'_>> {
        let me = sys::this_process();
        let period = Duration::from_millis(SEM_LIVENESS_MS);
        let mut asleep = false;
        // At most one liveness check between two sleeps, whatever the
        // clocks of other processes say.
        let mut may_check = true;
        loop {
            let mut locked = self.lock_or_panic();
            if std::mem::take(&mut asleep) {
                locked.stop_waiting();
            }
            if locked.take(me) {
                return Some(Permit { semaphore: self });
            }
            let suspects = if may_check {
                locked.liveness_check_due(me)
            } else {
                None
            };
            if let Some(suspects) = suspects {
                may_check = false;
                drop(locked);
                // Read `/proc` without the lock; take back under it.
                let dead: Vec<ProcessId> = suspects
                    .into_iter()
                    .filter(|&p| sys::process_gone(p))
                    .collect();
                if !dead.is_empty() {
                    self.lock_or_panic().reclaim(&dead);
                }
                continue;
            }
            let timeout = match patience {
                Patience::None => return None,
                Patience::Forever => period,
                Patience::Until(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(period),
                    _ => return None,
                },
            };
            let seen = locked.start_waiting();
            drop(locked);
            asleep = true;
            may_check = true;
            sys::futex_wait(self.word(SEM_SEQ), seen, Some(timeout));
        }
    }

    fn release(&self) {
        let me = sys::this_process();
        // A lock that fails (a corrupted region) has nothing to give back
        // to; a drop must not panic.
        if let Ok(mut locked) = self.lock() {
            locked.give_back(me);
        }
    }

    /// The slot that `me` holds its permits in, or (with `claim`) the
    /// first free one if it holds none.
    fn find_slot(&self, me: ProcessId, claim: bool) -> Option<usize> {
        let mut free = None;
        for i in 0..SEM_HOLDERS {
            let slot = self.slot(i);
            if slot.owner() == me {
                return Some(i);
            }
            if claim && free.is_none() && slot.held.load(Ordering::Relaxed) == 0 {
                free = Some(i);
            }
        }
        free
    }
}

/// A semaphore's lock, held by this thread: what changes the semaphore
/// happens through it. Unlocks when dropped, then wakes `wake` sleepers.
struct SemLocked<'a> {
    semaphore: &'a Semaphore,
    wake: u32,
}

impl SemLocked<'_> {
    /// Takes a permit for `me` if one is free and `me` has (or can claim)
    /// a slot. Each step is one store, and the slots alone say who holds
    /// what, so a holder dying midway leaves no permit counted wrong:
    /// [`recount`](Self::recount) rebuilds `SEM_FREE` from them.
    fn take(&mut self, me: ProcessId) -> bool {
        let s = self.semaphore;
        let free = s.word(SEM_FREE).load(Ordering::Relaxed);
        if free == 0 {
            return false;
        }
        let Some(i) = s.find_slot(me, true) else {
            // Every slot belongs to another process holding permits.
            return false;
        };
        let slot = s.slot(i);
        let held = slot.held.load(Ordering::Relaxed);
        let Some(more) = held.checked_add(1) else {
            return false;
        };
        if held == 0 {
            // Claim the slot: the owner first, then the count that makes it
            // taken.
            slot.pid.store(me.pid, Ordering::Relaxed);
            slot.start.store(me.start, Ordering::Relaxed);
        }
        slot.held.store(more, Ordering::Relaxed);
        s.word(SEM_FREE).store(free - 1, Ordering::Release);
        true
    }

    /// Gives back one of `me`'s permits. Nothing if `me` holds none (its
    /// slot was taken back, or this is a forked child): never more than
    /// the maximum.
    fn give_back(&mut self, me: ProcessId) {
        let s = self.semaphore;
        let Some(i) = s.find_slot(me, false) else {
            return;
        };
        let slot = s.slot(i);
        let held = slot.held.load(Ordering::Relaxed);
        if held == 0 {
            return;
        }
        slot.held.store(held - 1, Ordering::Relaxed);
        let free = s.word(SEM_FREE).load(Ordering::Relaxed);
        s.word(SEM_FREE)
            .store(free.saturating_add(1).min(s.max()), Ordering::Release);
        s.word(SEM_SEQ).fetch_add(1, Ordering::Release);
        if s.word(SEM_WAITERS).load(Ordering::Relaxed) > 0 {
            // Past 64 permits a waiter may lack a slot and be unable to
            // use the permit: wake them all, so that one that can does.
            self.wake = if s.max() as usize > SEM_HOLDERS {
                sys::WAKE_ALL
            } else {
                1
            };
        }
    }

    /// Rebuilds the free count from the slots and wakes every waiter:
    /// after the lock's previous holder died, or after taking permits back.
    fn recount(&mut self) {
        let s = self.semaphore;
        let held: u64 = (0..SEM_HOLDERS)
            .map(|i| u64::from(s.slot(i).held.load(Ordering::Relaxed)))
            .sum();
        let free = u64::from(s.max()).saturating_sub(held);
        s.word(SEM_FREE)
            .store(u32::try_from(free).unwrap_or(0), Ordering::Release);
        s.word(SEM_SEQ).fetch_add(1, Ordering::Release);
        self.wake = sys::WAKE_ALL;
    }

    /// The holders other than `me` to check for liveness, if nobody
    /// checked in the last `SEM_LIVENESS_MS` (this claims the check).
    fn liveness_check_due(&mut self, me: ProcessId) -> Option<Vec<ProcessId>> {
        let s = self.semaphore;
        let now = sys::monotonic_ms();
        let last = s.checked_at().load(Ordering::Relaxed);
        // A time from the future (another time namespace) does not count.
        if now >= last && now - last < SEM_LIVENESS_MS {
            return None;
        }
        s.checked_at().store(now, Ordering::Relaxed);
        Some(
            (0..SEM_HOLDERS)
                .map(|i| s.slot(i))
                .filter(|slot| slot.held.load(Ordering::Relaxed) > 0)
                .map(|slot| slot.owner())
                .filter(|&owner| owner != me)
                .collect(),
        )
    }

    /// Takes back the permits of the slots owned by `dead` (found gone
    /// without the lock). A slot's owner cannot change while it holds
    /// permits, and a process's start time tells a reused pid apart; only
    /// without that time is the pid checked again here, under the lock.
    fn reclaim(&mut self, dead: &[ProcessId]) {
        let s = self.semaphore;
        let mut any = false;
        for i in 0..SEM_HOLDERS {
            let slot = s.slot(i);
            let owner = slot.owner();
            if slot.held.load(Ordering::Relaxed) > 0
                && dead.contains(&owner)
                && (owner.start != 0 || sys::process_gone(owner))
            {
                slot.held.store(0, Ordering::Relaxed);
                any = true;
            }
        }
        if any {
            self.recount();
        }
    }

    /// Counts this thread as asleep; the word to sleep on while unchanged.
    fn start_waiting(&mut self) -> u32 {
        let waiters = self.semaphore.word(SEM_WAITERS);
        waiters.store(
            waiters.load(Ordering::Relaxed).saturating_add(1),
            Ordering::Relaxed,
        );
        self.semaphore.word(SEM_SEQ).load(Ordering::Acquire)
    }

    /// Counts this thread as awake again.
    fn stop_waiting(&mut self) {
        let waiters = self.semaphore.word(SEM_WAITERS);
        waiters.store(
            waiters.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }
}

impl Drop for SemLocked<'_> {
    fn drop(&mut self) {
        let s = self.semaphore;
        // SAFETY: `Semaphore::lock` locked this mutex on this thread, and
        // only this guard unlocks it.
        unsafe { sys::mutex_unlock(s.region.payload().wrapping_add(SEM_LOCK)) };
        if self.wake > 0 {
            sys::futex_wake(s.word(SEM_SEQ), self.wake);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A child process and its identity as a holder slot records it.
    fn child(program: &str, args: &[&str]) -> (std::process::Child, ProcessId) {
        let child = std::process::Command::new(program)
            .args(args)
            .spawn()
            .unwrap();
        let pid = child.id();
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let (_, rest) = text.rsplit_once(')').unwrap();
        let start = rest
            .split_whitespace()
            .nth(22 - 3)
            .unwrap()
            .parse()
            .unwrap();
        (child, ProcessId { pid, start })
    }

    /// Records `who` as holding `held` permits in slot `i`.
    fn forge(sem: &Semaphore, i: usize, who: ProcessId, held: u32) {
        let _locked = sem.lock().unwrap();
        let slot = sem.slot(i);
        slot.pid.store(who.pid, Ordering::Relaxed);
        slot.start.store(who.start, Ordering::Relaxed);
        slot.held.store(held, Ordering::Relaxed);
        let free = sem.word(SEM_FREE);
        free.store(free.load(Ordering::Relaxed) - held, Ordering::Relaxed);
    }

    #[test]
    fn only_the_permits_of_processes_that_are_gone_come_back() {
        let sem = Semaphore::new(4).unwrap();
        let (mut live, live_id) = child("sleep", &["30"]);
        let (mut dead, dead_id) = child("true", &[]);
        dead.wait().unwrap();
        let me = sys::this_process();
        forge(&sem, 0, live_id, 2);
        forge(&sem, 1, dead_id, 1);
        // This pid, another start time: an earlier process with our pid.
        let reused = ProcessId {
            start: me.start + 1,
            ..me
        };
        forge(&sem, 2, reused, 1);
        assert_eq!(sem.available(), 0);
        let a = sem
            .try_acquire()
            .expect("the dead holders' permits came back");
        let b = sem.try_acquire().expect("two of them");
        assert!(sem.acquire_timeout(Duration::from_millis(120)).is_none());
        assert_eq!(sem.slot(0).held.load(Ordering::Relaxed), 2, "live: kept");
        // The live holder ends without giving its permits back.
        live.kill().unwrap();
        let c = sem.acquire_timeout(Duration::from_secs(5)).expect("back");
        let d = sem.try_acquire().expect("both of them");
        assert!(sem.try_acquire().is_none());
        live.wait().unwrap();
        drop((a, b, c, d));
        assert_eq!(sem.available(), 4);
    }

    #[test]
    fn a_lock_holder_that_died_leaves_the_count_rebuilt_from_the_slots() {
        let sem = Semaphore::new(2).unwrap();
        let held = sem.acquire();
        std::thread::scope(|s| {
            s.spawn(|| {
                // Die holding the lock, halfway through an update.
                let locked = sem.lock().unwrap();
                sem.word(SEM_FREE).store(0, Ordering::Relaxed);
                std::mem::forget(locked);
            });
        });
        assert_eq!(sem.available(), 0, "the half-done update");
        // The next locker gets the lock as its owner died and recounts:
        // one permit is held (by `held`), one is free.
        let other = sem.try_acquire().expect("the free permit");
        assert!(sem.try_acquire().is_none());
        drop((held, other));
        assert_eq!(sem.available(), 2);
    }

    #[test]
    fn a_process_holds_its_permits_in_one_slot() {
        let sem = Semaphore::new(5).unwrap();
        let permits: Vec<_> = (0..3).map(|_| sem.acquire()).collect();
        let me = sys::this_process();
        assert_eq!(sem.slot(0).owner(), me);
        assert_eq!(sem.slot(0).held.load(Ordering::Relaxed), 3);
        assert_eq!(sem.slot(1).held.load(Ordering::Relaxed), 0);
        drop(permits);
        assert_eq!(sem.slot(0).held.load(Ordering::Relaxed), 0);
        assert_eq!(sem.available(), 5);
    }
}
