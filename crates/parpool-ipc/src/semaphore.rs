//! [`Semaphore`]: a bounded counting semaphore shared by processes and
//! threads, which takes back the permits of a holder that died.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::layout::{Line, LockLine};
use super::mem::RegionSeed;
use super::region::{self, HEADER, Kind, Region, fixed_region_serde};
use super::sys::{self, Locked, ProcessId};

/// Where a semaphore's parts sit in its payload. Its robust lock guards
/// all of them; sleepers read `seq` without it.
#[repr(C)]
struct Layout {
    lock: LockLine,
    /// Futex word that waiters sleep on: bumped whenever permits come free.
    seq: AtomicU32,
    /// The permits it was created with.
    max: AtomicU32,
    /// Permits free: the maximum less what the holder slots hold.
    /// Recomputed from the slots when the lock's previous holder died,
    /// perhaps between updating a slot and this word.
    free: AtomicU32,
    /// Threads asleep on `seq`, so that a release with nobody waiting
    /// makes no system call. A waiter that dies asleep leaves it one too
    /// high, which costs each release a wake-up call, nothing more.
    waiters: AtomicU32,
    /// When anyone last checked the holders for liveness
    /// (`sys::monotonic_ms`).
    checked_at: AtomicU64,
    /// One slot per process holding permits.
    holders: Line<[HolderSlot; SEM_HOLDERS]>,
}

/// A process holding permits, and how many.
#[repr(C)]
struct HolderSlot {
    pid: AtomicU32,
    held: AtomicU32,
    /// The holder's start time, so that a reused pid is not taken for it.
    start: AtomicU64,
}

shared_layout!(Layout {
    SEM_LOCK = lock @ 0,
    SEM_SEQ = seq @ 64,
    SEM_MAX = max @ 68,
    SEM_FREE = free @ 72,
    SEM_WAITERS = waiters @ 76,
    SEM_CHECKED_AT = checked_at @ 80,
    SEM_SLOTS = holders @ 128,
});
const SEM_SLOT: usize = std::mem::size_of::<HolderSlot>();
const SLOT_HELD: usize = std::mem::offset_of!(HolderSlot, held);
const SLOT_START: usize = std::mem::offset_of!(HolderSlot, start);
/// How many processes can hold permits at once.
const SEM_HOLDERS: usize = 64;
const SEM_LEN: usize = std::mem::size_of::<Layout>();
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
/// parpool's `ProcessPool` workers do) and `/proc`.
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

/// How long a try waits for the semaphore's own lock (held for a few
/// lines at a time by whoever takes or gives permits).
const LOCK_PATIENCE: Duration = Duration::from_millis(10);

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
            held: sys::atomic_at(map, at + SLOT_HELD).expect("slots are in bounds"),
            start: sys::atomic_at(map, at + SLOT_START).expect("slots are in bounds"),
        }
    }

    fn max(&self) -> u32 {
        self.word(SEM_MAX).load(Ordering::Relaxed)
    }

    /// Takes the semaphore's own lock, waiting until `until` at most
    /// (`None`: as long as it takes); `Ok(None)` if it did not come.
    fn lock(&self, until: Option<Instant>) -> io::Result<Option<SemLocked<'_>>> {
        let deadline = until
            .map(|at| std::time::SystemTime::now() + at.saturating_duration_since(Instant::now()));
        // SAFETY: the payload starts with the mutex that `new` initialized
        // (in whichever process created it); `self` keeps it mapped.
        let locked =
            unsafe { sys::mutex_lock(self.region.payload().wrapping_add(SEM_LOCK), deadline)? };
        if locked == Locked::TimedOut {
            return Ok(None);
        }
        let mut held = SemLocked {
            semaphore: self,
            wake: 0,
        };
        if locked == Locked::OwnerDied {
            held.recount();
        }
        Ok(Some(held))
    }

    /// [`lock`](Self::lock) for a waiter: a lock that fails (a corrupted
    /// region) is no permit for a try or a timed wait, and a panic for a
    /// wait without end (which would otherwise spin for ever).
    fn lock_for(&self, patience: Patience, until: Option<Instant>) -> Option<SemLocked<'_>> {
        match self.lock(until) {
            Ok(locked) => locked,
            Err(e) if matches!(patience, Patience::Forever) => {
                panic!("the semaphore's lock failed (is its shared memory corrupted?): {e}")
            }
            Err(_) => None,
        }
    }

    /// Permits free now. A dead holder's permits count as taken until an
    /// acquirer takes them back.
    pub fn available(&self) -> u32 {
        self.word(SEM_FREE).load(Ordering::Acquire)
    }

    /// Takes a permit if one is free (checking first, when none is, whether
    /// a dead holder's can be taken back).
    ///
    /// `None` too if the semaphore's own lock fails, which only a
    /// corrupted region causes.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        self.acquire_until(Patience::None)
    }

    /// Takes a permit, waiting as long as it takes.
    ///
    /// # Panics
    /// If the semaphore's own lock fails, which only a corrupted region
    /// causes (there is no permit to wait for).
    pub fn acquire(&self) -> Permit<'_> {
        loop {
            if let Some(p) = self.acquire_until(Patience::Forever) {
                return p;
            }
        }
    }

    /// Takes a permit, waiting at most `timeout`; `None` if none came free.
    ///
    /// `None` too if the semaphore's own lock fails, as
    /// [`try_acquire`](Self::try_acquire).
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
        // The semaphore's own lock is held only for a few lines, but by any
        // process: one stopped (or a corrupted region) must not make a try
        // or a timed wait wait for ever. A try waits a little for it.
        let lock_until = match patience {
            Patience::Forever => None,
            Patience::None => Some(Instant::now() + LOCK_PATIENCE),
            Patience::Until(at) => Some(at.max(Instant::now() + LOCK_PATIENCE)),
        };
        loop {
            // Not had in time: no permit. (If this call slept, its count
            // among the waiters stays up: every later release then makes a
            // futex wake it could have spared; nothing else changes.)
            let mut locked = self.lock_for(patience, lock_until)?;
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
                    self.lock_for(patience, lock_until)?.reclaim(&dead);
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

    /// Gives back one permit this process holds without a guard: for a
    /// binding whose taking and giving back are separate calls (Python's
    /// `sem.acquire()` … `sem.release()`), which
    /// [`forget`](std::mem::forget)s each [`Permit`] it takes. Permits
    /// belong to the process that took them (that is how a dead holder's
    /// come back), so any thread of it may give one back; `false` when
    /// this process holds none, and nothing changes.
    ///
    /// ```
    /// use parpool::ipc::Semaphore;
    ///
    /// let slots = Semaphore::new(1)?;
    /// std::mem::forget(slots.acquire());
    /// assert_eq!(slots.available(), 0);
    /// assert!(slots.release());
    /// assert_eq!(slots.available(), 1);
    /// assert!(!slots.release(), "nothing left to give back");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn release(&self) -> bool {
        let me = sys::this_process();
        // A lock that fails (a corrupted region) has nothing to give back
        // to; a drop must not panic.
        match self.lock(None) {
            Ok(Some(mut locked)) => locked.give_back(me),
            _ => false,
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

    /// Gives back one of `me`'s permits. Nothing (`false`) if `me` holds
    /// none (its slot was taken back, or this is a forked child): never
    /// more than the maximum.
    fn give_back(&mut self, me: ProcessId) -> bool {
        let s = self.semaphore;
        let Some(i) = s.find_slot(me, false) else {
            return false;
        };
        let slot = s.slot(i);
        let held = slot.held.load(Ordering::Relaxed);
        if held == 0 {
            return false;
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
        true
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

fixed_region_serde!(Semaphore, Kind::Semaphore, SEM_LEN);

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
        let _locked = sem.lock(None).unwrap().unwrap();
        let slot = sem.slot(i);
        slot.pid.store(who.pid, Ordering::Relaxed);
        slot.start.store(who.start, Ordering::Relaxed);
        slot.held.store(held, Ordering::Relaxed);
        let free = sem.word(SEM_FREE);
        free.store(free.load(Ordering::Relaxed) - held, Ordering::Relaxed);
    }

    #[test]
    fn a_permit_without_a_guard_is_given_back_by_any_thread_of_its_process() {
        let s = Semaphore::new(2).unwrap();
        std::mem::forget(s.acquire());
        let other = s.clone();
        assert!(std::thread::spawn(move || other.release()).join().unwrap());
        assert_eq!(s.available(), 2);
        assert!(!s.release(), "none held: nothing given back");
        assert_eq!(s.available(), 2, "never more than the maximum");
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
                let locked = sem.lock(None).unwrap().unwrap();
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

    /// A try and a timed acquire once waited for ever on the semaphore's
    /// own lock while another process held it (stopped, or a corrupted
    /// region).
    #[test]
    fn a_try_and_a_timed_acquire_are_bounded_while_the_lock_is_held() {
        let sem = Semaphore::new(1).unwrap();
        // SAFETY: the semaphore's lock, initialized by `new`; the
        // semaphore outlives the holder (dropped first, below).
        let held = unsafe { sys::HeldLock::hold(sem.region.payload().wrapping_add(SEM_LOCK)) };
        let start = Instant::now();
        assert!(sem.try_acquire().is_none());
        assert!(sem.acquire_timeout(Duration::from_millis(50)).is_none());
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        drop(held);
        assert!(sem.try_acquire().is_some(), "free again once the lock is");
    }
}
