//! [`Barrier`]: processes and threads wait until all parties arrive; a
//! party that dies breaks it for the others instead of hanging them.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::layout::LockLine;
use super::mem::RegionSeed;
use super::region::{self, HEADER, Kind, Region};
use super::sys::{self, Locked};

/// Where a barrier's parts sit in its payload: the barrier's own lock, its
/// words (guarded by that lock; waiters sleep on `generation` without it),
/// then one lock per party, held by the process that took the place, each
/// on a line of its own.
#[repr(C)]
struct Layout {
    lock: LockLine,
    generation: AtomicU32,
    arrived: AtomicU32,
    parties: AtomicU32,
    broken: AtomicU32,
    /// The generation whose waiters a [`Barrier::reset`] released as broken.
    reset_gen: AtomicU32,
    places: [LockLine; 0],
}

shared_layout!(Layout {
    LOCK = lock @ 0,
    GENERATION = generation @ 64,
    ARRIVED = arrived @ 68,
    PARTIES = parties @ 72,
    BROKEN = broken @ 76,
    RESET_GEN = reset_gen @ 80,
    SLOTS = places @ 128,
});
const SLOT: usize = std::mem::size_of::<LockLine>();
/// How often a waiter checks that every party is still alive.
const LIVENESS_CHECK: Duration = Duration::from_millis(50);

/// A barrier for a fixed number of parties in any processes and threads,
/// like `multiprocessing.Barrier`.
///
/// A party first takes a place with [`party`](Self::party) (a process that
/// will wait takes one before the work that may fail), then calls
/// [`Party::wait`] each round. If a process dies holding a place, the
/// barrier is **broken**: every waiter, now and later, gets
/// [`BarrierError::Broken`] instead of waiting forever. A wait that times
/// out breaks it too, as in Python.
///
/// ```
/// use parpool::ipc::Barrier;
///
/// let barrier = Barrier::new(2)?;
/// let other = barrier.clone();
/// let t = std::thread::spawn(move || {
///     let me = other.party().unwrap();
///     me.wait().unwrap()
/// });
/// let me = barrier.party().unwrap();
/// let leader_here = me.wait().unwrap();
/// let leader_there = t.join().unwrap();
/// assert!(leader_here != leader_there, "exactly one party leads each round");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    region: Arc<Region>,
    parties: u32,
}

/// Why a barrier wait did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    /// A party died or timed out: the barrier will not complete again.
    #[error("the barrier is broken: a party died or gave up waiting")]
    Broken,
    /// This wait timed out (and broke the barrier for everyone).
    #[error("the barrier wait timed out")]
    TimedOut,
    /// Every place is taken.
    #[error("all {0} places of the barrier are taken")]
    Full(u32),
    /// The system refused (should not happen with a valid barrier).
    #[error("barrier failure: {0}")]
    Io(#[from] io::Error),
}

/// A place at a [`Barrier`]; waits happen through it. Freed when dropped.
/// It belongs to the thread that took it (the place is a lock that thread
/// holds), so it is not `Send`.
pub struct Party<'a> {
    barrier: &'a Barrier,
    slot: u32,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Barrier {
    /// A barrier for `parties` parties (1 to 4096).
    ///
    /// # Errors
    /// When `parties` is out of range, or the shared memory cannot be made.
    pub fn new(parties: u32) -> io::Result<Self> {
        if !(1..=4096).contains(&parties) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a barrier needs 1 to 4096 parties, not {parties}"),
            ));
        }
        let region = Region::create(Kind::Barrier, Self::payload_len(parties))?;
        for i in 0..=parties as usize {
            let at = if i == 0 { LOCK } else { SLOTS + (i - 1) * SLOT };
            // SAFETY: each lock has 64 aligned bytes of the new payload,
            // which nobody else has yet.
            unsafe { sys::mutex_init(region.payload().wrapping_add(at))? };
        }
        let b = Barrier {
            region: Arc::new(region),
            parties,
        };
        b.word(PARTIES).store(parties, SeqCst);
        b.word(RESET_GEN).store(u32::MAX, SeqCst);
        Ok(b)
    }

    fn payload_len(parties: u32) -> usize {
        SLOTS + parties as usize * SLOT
    }

    fn word(&self, at: usize) -> &AtomicU32 {
        sys::atomic_at(self.region.map(), HEADER + at).expect("barrier words are in bounds")
    }

    fn lock_at(&self, at: usize) -> *mut u8 {
        self.region.payload().wrapping_add(at)
    }

    /// How many parties each round needs.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// How many parties are waiting in the current round now.
    pub fn waiting(&self) -> u32 {
        self.word(ARRIVED).load(SeqCst)
    }

    /// Whether a party died, a wait timed out, or [`abort`](Self::abort)
    /// was called.
    pub fn is_broken(&self) -> bool {
        self.word(BROKEN).load(SeqCst) != 0
    }

    /// Breaks the barrier, as Python's `Barrier.abort()`: every party
    /// waiting now, and every wait from now on, gets
    /// [`BarrierError::Broken`] — for instance to release the others when
    /// this party cannot go on. In every process that shares it.
    ///
    /// ```
    /// use parpool::ipc::{Barrier, BarrierError};
    ///
    /// let barrier = Barrier::new(2)?;
    /// let waiting = barrier.clone();
    /// let t = std::thread::spawn(move || waiting.party().unwrap().wait());
    /// barrier.abort();
    /// assert!(matches!(t.join().unwrap(), Err(BarrierError::Broken)));
    /// assert!(barrier.is_broken());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn abort(&self) {
        self.break_it();
    }

    /// Returns the barrier to its first state, as Python's
    /// `Barrier.reset()`: the parties waiting now get
    /// [`BarrierError::Broken`], and the barrier — broken or not — works
    /// again for the parties that wait from now on. Places left by
    /// processes that died are freed.
    ///
    /// ```
    /// use parpool::ipc::{Barrier, BarrierError};
    ///
    /// let barrier = Barrier::new(2)?;
    /// barrier.abort();
    /// assert!(barrier.is_broken());
    /// barrier.reset()?;
    /// assert!(!barrier.is_broken());
    /// let other = barrier.clone();
    /// let t = std::thread::spawn(move || other.party().unwrap().wait());
    /// let here = barrier.party().unwrap().wait();
    /// assert!(here.is_ok() && t.join().unwrap().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`BarrierError::Io`] when the system refuses the lock.
    pub fn reset(&self) -> Result<(), BarrierError> {
        let lock = self.lock_at(LOCK);
        // SAFETY: initialized by `new`; held only for these few lines.
        unsafe { sys::mutex_lock(lock, None)? };
        // Places whose holders died: free again (the lock was made
        // consistent when taken).
        for slot in 0..self.parties {
            let place = self.lock_at(SLOTS + slot as usize * SLOT);
            // SAFETY: as in `party`.
            if let Some(Locked::Yes | Locked::OwnerDied) = unsafe { sys::mutex_trylock(place)? } {
                // SAFETY: this thread just locked the place.
                unsafe { sys::mutex_unlock(place) };
            }
        }
        let generation = self.word(GENERATION).load(SeqCst);
        if self.word(ARRIVED).load(SeqCst) > 0 {
            // Those waiting on this generation leave as broken.
            self.word(RESET_GEN).store(generation, SeqCst);
        }
        self.word(ARRIVED).store(0, SeqCst);
        self.word(BROKEN).store(0, SeqCst);
        self.word(GENERATION).fetch_add(1, SeqCst);
        sys::futex_wake(self.word(GENERATION), sys::WAKE_ALL);
        // SAFETY: this thread holds the lock.
        unsafe { sys::mutex_unlock(lock) };
        Ok(())
    }

    fn break_it(&self) {
        self.word(BROKEN).store(1, SeqCst);
        self.word(GENERATION).fetch_add(1, SeqCst);
        sys::futex_wake(self.word(GENERATION), sys::WAKE_ALL);
    }

    /// Takes a place at the barrier for this thread.
    ///
    /// # Errors
    /// [`BarrierError::Full`] when every place is taken;
    /// [`BarrierError::Broken`] if the place was left by a process that
    /// died (the barrier is broken).
    pub fn party(&self) -> Result<Party<'_>, BarrierError> {
        for slot in 0..self.parties {
            // SAFETY: slot locks were initialized by `new`; `self` keeps
            // the region mapped.
            match unsafe { sys::mutex_trylock(self.lock_at(SLOTS + slot as usize * SLOT))? } {
                Some(Locked::Yes) => {
                    return Ok(Party {
                        barrier: self,
                        slot,
                        _not_send: std::marker::PhantomData,
                    });
                }
                Some(Locked::OwnerDied) => {
                    self.break_it();
                    // SAFETY: this thread just locked the slot.
                    unsafe { sys::mutex_unlock(self.lock_at(SLOTS + slot as usize * SLOT)) };
                    return Err(BarrierError::Broken);
                }
                Some(Locked::TimedOut) | None => {}
            }
        }
        Err(BarrierError::Full(self.parties))
    }

    /// Checks the other places: a place whose holder died breaks the
    /// barrier. `true` if it is broken.
    fn check_parties(&self, mine: u32) -> io::Result<bool> {
        for slot in (0..self.parties).filter(|&s| s != mine) {
            let lock = self.lock_at(SLOTS + slot as usize * SLOT);
            // SAFETY: as in `party`.
            match unsafe { sys::mutex_trylock(lock)? } {
                Some(Locked::OwnerDied) => {
                    self.break_it();
                    // SAFETY: this thread just locked the slot.
                    unsafe { sys::mutex_unlock(lock) };
                    return Ok(true);
                }
                // A free place: nobody has taken it (yet); unlock it again.
                Some(_) => {
                    // SAFETY: this thread just locked the slot.
                    unsafe { sys::mutex_unlock(lock) };
                }
                None => {}
            }
        }
        Ok(self.is_broken())
    }
}

impl Party<'_> {
    /// Waits until every party has arrived; `true` for exactly one party of
    /// each round (the last to arrive).
    ///
    /// # Errors
    /// [`BarrierError::Broken`] if a party died or a wait timed out.
    pub fn wait(&self) -> Result<bool, BarrierError> {
        self.wait_until(None, || true).map(|i| i + 1 == self.barrier.parties)
    }

    /// Waits at most `timeout`. On timeout the barrier breaks, for every
    /// party, as in Python.
    ///
    /// # Errors
    /// [`BarrierError::TimedOut`], or `Broken` as for [`wait`](Self::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, BarrierError> {
        self.wait_until(Instant::now().checked_add(timeout), || true)
            .map(|i| i + 1 == self.barrier.parties)
    }

    /// Python's `Barrier.wait`: waits at most `timeout` (`None`: as long as
    /// it takes) and returns this party's place in the round's arrivals,
    /// 0 for the first to `parties - 1` for the last. The last runs
    /// `action` before any party is released; if it returns `false`, the
    /// barrier breaks instead and every party of the round gets
    /// [`BarrierError::Broken`].
    ///
    /// ```
    /// use parpool::ipc::Barrier;
    ///
    /// let barrier = Barrier::new(1)?;
    /// let me = barrier.party().unwrap();
    /// let mut ran = false;
    /// assert_eq!(me.wait_with(None, || { ran = true; true }).unwrap(), 0);
    /// assert!(ran, "the last to arrive runs the action");
    /// assert!(me.wait_with(None, || false).is_err());
    /// assert!(barrier.is_broken());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`wait_timeout`](Self::wait_timeout).
    pub fn wait_with(
        &self,
        timeout: Option<Duration>,
        action: impl FnOnce() -> bool,
    ) -> Result<u32, BarrierError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.wait_until(deadline, action)
    }

    /// Waits for the round; this party's arrival index (see `wait_with`).
    fn wait_until(
        &self,
        deadline: Option<Instant>,
        action: impl FnOnce() -> bool,
    ) -> Result<u32, BarrierError> {
        let b = self.barrier;
        let lock = b.lock_at(LOCK);
        // The barrier's own lock is held only for a few lines, but by any
        // process: one stopped (or a corrupted region) must not make a
        // wait with a timeout wait for ever.
        let lock_deadline =
            deadline.map(|at| SystemTime::now() + at.saturating_duration_since(Instant::now()));
        // SAFETY: initialized by `new`; held only for these few lines.
        let locked = unsafe { sys::mutex_lock(lock, lock_deadline)? };
        if locked == Locked::TimedOut {
            b.break_it();
            return Err(BarrierError::TimedOut);
        }
        let unlock = || {
            // SAFETY: this thread holds the lock.
            unsafe { sys::mutex_unlock(lock) }
        };
        if locked == Locked::OwnerDied {
            b.break_it();
        }
        if b.is_broken() {
            unlock();
            return Err(BarrierError::Broken);
        }
        let generation = b.word(GENERATION).load(SeqCst);
        let arrived = b.word(ARRIVED).load(SeqCst).saturating_add(1);
        if arrived > b.parties {
            // More arrived than there are parties: a corrupted region.
            // Nobody could complete it; broken, for every party.
            b.break_it();
            unlock();
            return Err(BarrierError::Broken);
        }
        if arrived == b.parties {
            b.word(ARRIVED).store(0, SeqCst);
            // The others sleep until the generation moves: the action runs
            // before any of them is released (under the barrier's lock, so
            // no later round begins meanwhile).
            if !action() {
                b.break_it();
                unlock();
                return Err(BarrierError::Broken);
            }
            b.word(GENERATION).fetch_add(1, SeqCst);
            sys::futex_wake(b.word(GENERATION), sys::WAKE_ALL);
            unlock();
            return Ok(arrived - 1);
        }
        b.word(ARRIVED).store(arrived, SeqCst);
        unlock();
        loop {
            let mut wait = LIVENESS_CHECK;
            if let Some(at) = deadline {
                match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => wait = wait.min(left),
                    _ => {
                        b.break_it();
                        return Err(BarrierError::TimedOut);
                    }
                }
            }
            sys::futex_wait(b.word(GENERATION), generation, Some(wait));
            if b.word(GENERATION).load(SeqCst) != generation {
                return if b.is_broken() || b.word(RESET_GEN).load(SeqCst) == generation {
                    Err(BarrierError::Broken)
                } else {
                    Ok(arrived - 1)
                };
            }
            if b.check_parties(self.slot)? {
                return Err(BarrierError::Broken);
            }
        }
    }
}

impl Drop for Party<'_> {
    fn drop(&mut self) {
        let lock = self.barrier.lock_at(SLOTS + self.slot as usize * SLOT);
        // SAFETY: this thread took the slot in `party` and still holds it.
        unsafe { sys::mutex_unlock(lock) };
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Party<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Party")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.parties, SendBarrier(&self.region)).serialize(s)
    }
}

struct SendBarrier<'a>(&'a Arc<Region>);

impl Serialize for SendBarrier<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        region::serialize(self.0, Kind::Barrier, s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Barrier;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a barrier reference")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Barrier, A::Error> {
                let parties: u32 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                if !(1..=4096).contains(&parties) {
                    return Err(A::Error::custom("not a barrier's party count"));
                }
                let region = seq
                    .next_element_seed(RegionSeed {
                        kind: Kind::Barrier,
                        len: Barrier::payload_len(parties),
                    })?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let b = Barrier { region, parties };
                if b.word(PARTIES).load(SeqCst) != parties {
                    return Err(A::Error::custom("the barrier's header is corrupted"));
                }
                Ok(b)
            }
        }
        d.deserialize_tuple(2, V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each party of a round gets its own arrival index, and the last runs
    /// the action before anyone leaves (every party sees its effect).
    #[test]
    fn a_round_gives_each_party_its_index_and_runs_the_action_first() {
        const PARTIES: u32 = 4;
        let barrier = Barrier::new(PARTIES).unwrap();
        let ran = std::sync::Arc::new(AtomicU32::new(0));
        for round in 1..=3 {
            let threads: Vec<_> = (0..PARTIES)
                .map(|_| {
                    let (barrier, ran) = (barrier.clone(), ran.clone());
                    std::thread::spawn(move || {
                        let me = barrier.party().unwrap();
                        let index = me
                            .wait_with(Some(Duration::from_secs(30)), || {
                                ran.fetch_add(1, SeqCst);
                                true
                            })
                            .unwrap();
                        (index, ran.load(SeqCst))
                    })
                })
                .collect();
            let mut indices: Vec<u32> = threads
                .into_iter()
                .map(|t| {
                    let (index, seen) = t.join().unwrap();
                    assert_eq!(seen, round, "released before the action ran");
                    index
                })
                .collect();
            indices.sort_unstable();
            assert_eq!(indices, (0..PARTIES).collect::<Vec<_>>());
            assert_eq!(barrier.waiting(), 0);
        }
        assert_eq!(barrier.parties(), PARTIES);
    }

    /// A region whose arrival count says more parties arrived than there
    /// are (corrupted; the region fuzz target found it) overflowed the
    /// count: the barrier is broken instead, for every party.
    #[test]
    fn an_impossible_arrival_count_breaks_the_barrier() {
        let barrier = Barrier::new(2).unwrap();
        barrier.word(ARRIVED).store(u32::MAX, SeqCst);
        let party = barrier.party().unwrap();
        assert!(matches!(
            party.wait_timeout(Duration::from_secs(5)),
            Err(BarrierError::Broken)
        ));
        assert!(barrier.is_broken());
    }

    /// A wait with a timeout once waited for ever on the barrier's own
    /// lock, when another process held it (stopped, or a corrupted
    /// region: the fuzz target `region` found it).
    #[test]
    fn a_timed_wait_is_bounded_even_while_the_barrier_s_lock_is_held() {
        let barrier = Barrier::new(2).unwrap();
        // SAFETY: the barrier's lock, initialized by `new`; the barrier
        // outlives the holder (dropped first, below).
        let held = unsafe { sys::HeldLock::hold(barrier.lock_at(LOCK)) };
        let party = barrier.party().unwrap();
        let start = Instant::now();
        assert!(matches!(
            party.wait_timeout(Duration::from_millis(50)),
            Err(BarrierError::TimedOut)
        ));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert!(
            barrier.is_broken(),
            "a timed-out wait breaks it, as in Python"
        );
        drop(held);
    }
}
