//! How a queue's ends wait: for an end's lock (a few spins, then yields,
//! then a sleep in the kernel), for data or room (batch-aware spinning,
//! then a futex sleep), and without a thread for async callers
//! ([`Change`]); and how an end that publishes a position wakes the other.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU32, fence};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Queue;
use crate::region::HEADER;
use crate::sys::{self, Locked};
use crate::wait::Registration;

/// Attempts at an end's lock before sleeping in the kernel for it: the
/// first `LOCK_SPINS` a pause apart, the rest after yielding the CPU.
const LOCK_TRIES: u32 = 20;
const LOCK_SPINS: u32 = 4;
/// How long a waiter spins before it sleeps on the futex, and for how much
/// of that it holds out for more than it needs (see `wait_eager`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Patience {
    /// Spinning for a message that is microseconds away is cheaper than a
    /// sleep and a wake-up (two system calls, two context switches).
    spin: Duration,
    /// For this long the waiter waits for its `eager` condition: a
    /// receiver for a batch of bytes, a sender for a sixteenth of the ring.
    eager: Duration,
    /// The longest pause between two polls, in spin-loop hints: long
    /// pauses keep a streaming writer's lines quiet, short ones see a
    /// single message sooner.
    max_pauses: u32,
}

/// Senders, and receivers of messages that come one at a time.
pub(super) const PATIENT: Patience = Patience {
    spin: Duration::from_micros(5),
    eager: Duration::from_micros(2),
    max_pauses: 256,
};
/// A receiver's batch while patient.
pub(super) const BATCH: u64 = 512;
/// Receivers of requests and replies ([`Queue::prompt`]): the first
/// message at once, and a longer spin, as the answer to a request usually
/// comes within tens of microseconds and a sleep and a wake-up cost more
/// than that spin on both sides.
pub(super) const PROMPT: Patience = Patience {
    spin: Duration::from_micros(50),
    eager: Duration::ZERO,
    max_pauses: 32,
};
/// Receivers while senders stream (`STREAMING` dense waits in a row):
/// larger batches, so fewer polls of the senders' line (each poll stalls
/// the sender's next publish). The last messages of a stream wait up to
/// `eager` longer; messages that come one at a time never do.
pub(super) const STREAM: Patience = Patience {
    spin: Duration::from_micros(8),
    eager: Duration::from_micros(4),
    max_pauses: 256,
};
pub(super) const STREAM_BATCH: u64 = 4096;
pub(super) const STREAMING: u64 = 8;
/// A waiter's polls yield the CPU once their pauses grow this long (after
/// about a microsecond of polling).
const YIELD_FROM_PAUSES: u32 = 128;
/// Or once they have polled this often.
const YIELD_FROM_POLLS: u32 = 100;

pub(super) enum Wait {
    Forever,
    Until(Instant),
    No,
}

impl Wait {
    pub(super) fn from_timeout(timeout: Duration) -> Wait {
        Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until)
    }
    fn lock_deadline(&self) -> Option<SystemTime> {
        match self {
            Wait::Forever => None,
            Wait::Until(at) => {
                Some(SystemTime::now() + at.saturating_duration_since(Instant::now()))
            }
            Wait::No => Some(SystemTime::now()),
        }
    }
}

/// A lock on one end of the ring; unlocks on drop.
pub(super) struct EndLock<'a> {
    mutex: *mut u8,
    _q: PhantomData<&'a ()>,
}

impl Drop for EndLock<'_> {
    fn drop(&mut self) {
        // SAFETY: this thread locked the mutex (in `lock_end`) and holds it;
        // the region is kept mapped by the `Queue` this borrows.
        unsafe { sys::mutex_unlock(self.mutex) };
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    pub(super) fn lock_end(
        &self,
        at: usize,
        wait: &Wait,
    ) -> io::Result<Option<(EndLock<'_>, bool)>> {
        let mutex = self.region.payload().wrapping_add(at);
        let lock = |locked| {
            let guard = EndLock {
                mutex,
                _q: PhantomData,
            };
            match locked {
                Locked::Yes => Some((guard, false)),
                Locked::OwnerDied => Some((guard, true)),
                Locked::TimedOut => None,
            }
        };
        // A holder keeps an end for a few hundred nanoseconds: try a few
        // times before sleeping in the kernel (glibc's robust mutex does
        // not spin by itself). Past the first tries, yield between them:
        // with more processes than cores the holder may be waiting for
        // this very core, and spinning only delays it (eight processes on
        // two cores moved 400k messages a third faster than with 64
        // spinning tries). On an idle core a yield returns at once.
        for attempt in 0..LOCK_TRIES {
            // SAFETY: the lock at `at` was initialized by `with_capacity`;
            // the region stays mapped while `self` lives.
            if let Some(locked) = unsafe { sys::mutex_trylock(mutex)? } {
                return Ok(lock(locked));
            }
            if matches!(wait, Wait::No) {
                break;
            }
            if attempt < LOCK_SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: as above.
        let locked = unsafe { sys::mutex_lock(mutex, wait.lock_deadline())? };
        Ok(lock(locked))
    }

    /// Waits on futex word `seq` until `ready` or the deadline; `false`
    /// when the deadline passed first. Spins a little before sleeping.
    pub(super) fn wait_for(
        &self,
        seq: usize,
        waiting: usize,
        wait: &Wait,
        ready: impl Fn() -> bool,
    ) -> bool {
        self.wait_eager(seq, waiting, wait, PATIENT, &ready, &ready)
            .is_some()
    }

    /// As [`wait_for`](Self::wait_for), but for the first `patience.eager`
    /// of its spin it waits for `eager`, a condition stronger than `ready`.
    /// How long it waited (zero: not at all; `Duration::MAX`: it slept), or
    /// `None` when the deadline passed first.
    ///
    /// This is what keeps a busy queue fast. An end that waits for just
    /// the next message (or the room for it) works in lockstep with the
    /// other: each cache line of the ring, and the line holding the
    /// positions, moves between the two cores once per message. Holding
    /// out a moment for a batch puts the two ends lines apart, and each
    /// line then moves once. Measured across two processes: 150 to 200 ns
    /// a message in lockstep, about 80 ns with the patient batch, about
    /// 60 ns with the streaming one (`recv_into`).
    pub(super) fn wait_eager(
        &self,
        seq: usize,
        waiting: usize,
        wait: &Wait,
        patience: Patience,
        eager: &dyn Fn() -> bool,
        ready: &dyn Fn() -> bool,
    ) -> Option<Duration> {
        if ready() {
            return Some(Duration::ZERO);
        }
        if matches!(wait, Wait::No) {
            return None;
        }
        // Poll with growing pauses: polling the other end's line too
        // often slows the very writes it waits for. Past the first
        // microsecond, yield the CPU before each pause, in case the other
        // end waits for this core (more processes than cores).
        let start = Instant::now();
        let mut pauses = 16.min(patience.max_pauses);
        let mut polls = 0u32;
        loop {
            // Past its first microsecond (or, polling often, its first
            // hundred polls), a wait yields the CPU before each pause.
            polls += 1;
            if pauses >= YIELD_FROM_PAUSES || polls > YIELD_FROM_POLLS {
                std::thread::yield_now();
            }
            for _ in 0..pauses {
                std::hint::spin_loop();
            }
            let now = Instant::now();
            let spun = now - start;
            if if spun < patience.eager {
                eager()
            } else {
                ready()
            } {
                return Some(spun);
            }
            let late = matches!(wait, Wait::Until(at) if now >= *at);
            if spun >= patience.spin || late {
                break;
            }
            pauses = (pauses * 2).min(patience.max_pauses);
        }
        loop {
            if ready() {
                return Some(Duration::MAX);
            }
            let timeout = match wait {
                Wait::No => return None,
                Wait::Forever => None,
                Wait::Until(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return None,
                },
            };
            let count = self.word32(waiting);
            count.fetch_add(1, SeqCst);
            // Pairs with the fence in `bump`: either the other end sees us
            // waiting, or we see what it published.
            fence(SeqCst);
            let seen = self.word32(seq).load(SeqCst);
            if !ready() {
                sys::futex_wait(self.word32(seq), seen, timeout);
            }
            count.fetch_sub(1, SeqCst);
        }
    }

    /// After publishing a position: wakes the other end if it waits. Costs
    /// one fence and one load when nobody does.
    pub(super) fn bump(&self, seq: usize, waiting: usize) {
        fence(SeqCst);
        self.wake_waiter(seq, waiting);
    }

    /// Wakes one waiter on futex word `seq` if `waiting` counts any; for
    /// after a `SeqCst` barrier that follows the publish.
    fn wake_waiter(&self, seq: usize, waiting: usize) {
        if self.word32(waiting).load(SeqCst) > 0 {
            self.word32(seq).fetch_add(1, SeqCst);
            sys::futex_wake(self.word32(seq), 1);
        }
    }

    /// Publishes position `at` (`TAIL` or `HEAD`) as `pos` and wakes the
    /// other end if it waits: as a position store and [`bump`](Self::bump),
    /// with the `SeqCst` swap as the fence (one barrier instead of two).
    pub(super) fn publish(&self, at: usize, pos: u64, seq: usize, waiting: usize) {
        // Pairs with the waiter's count increment and fence in
        // `wait_eager`: the swap and that fence are ordered one way or
        // the other, so either this load sees the waiter counted or the
        // waiter's re-check sees `pos`.
        self.word(at).swap(pos, SeqCst);
        self.wake_waiter(seq, waiting);
    }
}

/// Waits, without a thread, until `ready` holds for one end of a queue.
/// While it waits it counts as a waiter of that end, so the other end
/// bumps the futex word it watches.
pub(super) struct Change<'a, T, F> {
    queue: &'a Queue<T>,
    seq: usize,
    waiting: usize,
    ready: F,
    counted: bool,
    registration: Registration,
}

impl<'a, T: Serialize + DeserializeOwned, F: Fn() -> bool> Change<'a, T, F> {
    pub(super) fn new(queue: &'a Queue<T>, seq: usize, waiting: usize, ready: F) -> Self {
        Change {
            queue,
            seq,
            waiting,
            ready,
            counted: false,
            registration: Registration::default(),
        }
    }
}

impl<T, F> Drop for Change<'_, T, F> {
    fn drop(&mut self) {
        if self.counted {
            sys::atomic_at::<AtomicU32>(self.queue.region.map(), HEADER + self.waiting)
                .expect("queue words are in bounds")
                .fetch_sub(1, SeqCst);
        }
    }
}

impl<T: Serialize + DeserializeOwned, F: Fn() -> bool + Unpin> Future for Change<'_, T, F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.counted {
            self.queue.word32(self.waiting).fetch_add(1, SeqCst);
            self.counted = true;
            // As in `wait_for`: pairs with the fence in `bump`.
            fence(SeqCst);
        }
        let seen = self.queue.word32(self.seq).load(SeqCst);
        if (self.ready)() {
            return Poll::Ready(());
        }
        let region = self.queue.region.clone();
        let at = self.seq;
        self.registration.wait(&region, at, seen, cx.waker());
        Poll::Pending
    }
}
