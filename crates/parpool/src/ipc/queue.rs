//! [`Queue`]: typed messages between processes and threads.
//!
//! A byte ring in shared memory with two robust locks: one taken by the
//! sender writing a message, one by the receiver reading one. So the ring
//! itself has a single writer and a single reader at any moment, and a
//! message larger than the ring simply streams through it in pieces while
//! both hold their locks. Each message is `[length][bytes][trailer]`; the
//! trailer commits it. Positions only grow (`tail` written by the lock's
//! sender, `head` by the receiver) and are taken modulo the capacity.
//!
//! If a sender dies in the middle of a message, the next sender gets the
//! lock as `OwnerDied`, fills the rest of that message and writes an abort
//! trailer: receivers drop it. If a receiver dies in the middle of one,
//! the next receiver skips the rest of it (it was taken, as in Python).

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64, fence};
use std::time::{Duration, Instant, SystemTime};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::mem::RegionSeed;
use super::region::{self, HEADER, Kind, Region};
use super::ring::{Cells, Position, Ring};
use super::sys::{self, Locked};
use super::waiter::Registration;

// Layout of the payload. What the sender writes, what the receiver
// writes, and each futex sit on cache lines of their own (128 bytes apart),
// so the two ends do not take lines from each other.
const WRITE_LOCK: usize = 0;
const READ_LOCK: usize = 64;
// The sender's line.
const TAIL: usize = 128;
/// Where the message being written ends (== `TAIL` when none is).
const WRITE_END: usize = 136;
/// Messages committed (written by the sender holding the lock only).
const SENT: usize = 144;
/// The last `HEAD` the sender read: a lower bound of it, so the sender
/// reads the receiver's line only when this bound leaves too little room.
const HEAD_SEEN: usize = 152;
/// `SENT` before the message being written.
const WRITE_SENT: usize = 160;
// The receiver's line.
const HEAD: usize = 256;
/// Where the message being read ends (== `HEAD` when none is).
const READ_END: usize = 264;
/// Committed messages received (written by the receiver holding the lock).
const RECEIVED: usize = 272;
/// The last `TAIL` the receiver read, a lower bound of it.
const TAIL_SEEN: usize = 280;
/// `RECEIVED` before the message being read.
const READ_RECEIVED: usize = 288;
/// How many waits in a row found the senders streaming (see
/// `recv_into`); written by the receiver holding the lock.
const RECV_STREAK: usize = 296;
const DATA_SEQ: usize = 384;
const READER_WAITING: usize = 388;
const SPACE_SEQ: usize = 512;
const WRITER_WAITING: usize = 516;
// Read-mostly settings.
const CAPACITY: usize = 640;
const MAX_ITEMS: usize = 648;
const CLOSED: usize = 656;
/// Messages marked done (`task_done`); never more than `SENT`.
const DONE: usize = 768;
/// Bumped when `DONE` reaches `SENT`; `join` waits on it.
const JOIN_SEQ: usize = 776;
const DATA: usize = 896;

/// Attempts at an end's lock before sleeping in the kernel for it: the
/// first `LOCK_SPINS` a pause apart, the rest after yielding the CPU.
const LOCK_TRIES: u32 = 20;
const LOCK_SPINS: u32 = 4;
/// How long a waiter spins before it sleeps on the futex, and for how much
/// of that it holds out for more than it needs (see `wait_eager`).
#[derive(Debug, Clone, Copy)]
struct Patience {
    /// Spinning for a message that is microseconds away is cheaper than a
    /// sleep and a wake-up (two system calls, two context switches).
    spin: Duration,
    /// For this long the waiter waits for its `eager` condition: a
    /// receiver for a batch of bytes, a sender for a sixteenth of the ring.
    eager: Duration,
}

/// Senders, and receivers of messages that come one at a time.
const PATIENT: Patience = Patience {
    spin: Duration::from_micros(5),
    eager: Duration::from_micros(2),
};
/// A receiver's batch while patient.
const BATCH: u64 = 512;
/// Receivers while senders stream (`STREAMING` dense waits in a row):
/// larger batches, so fewer polls of the senders' line (each poll stalls
/// the sender's next publish). The last messages of a stream wait up to
/// `eager` longer; messages that come one at a time never do.
const STREAM: Patience = Patience {
    spin: Duration::from_micros(8),
    eager: Duration::from_micros(4),
};
const STREAM_BATCH: u64 = 4096;
const STREAMING: u64 = 8;
/// A waiter's polls yield the CPU once their pauses grow this long (after
/// about a microsecond of polling).
const YIELD_FROM_PAUSES: u32 = 128;

const COMMIT: u64 = 0x434f_4d4d_4954_2e2e;
const ABORT: u64 = 0x4142_4f52_542e_2e2e;
/// Bytes a message takes besides its payload: length and trailer.
const FRAME: u64 = 16;

/// Bytes a message of `len` payload bytes takes in the ring: its length
/// word, the payload padded to a multiple of 8, and its trailer. The
/// padding keeps every length and trailer word aligned, so each is one
/// load or store and never wraps around the ring. `None` if it overflows.
fn frame_len(len: u64) -> Option<u64> {
    len.checked_next_multiple_of(8)?.checked_add(FRAME)
}

/// A queue of `T`s shared by processes and threads: many senders, many
/// receivers, each message received once, in the order each sender sent
/// its messages. Like `multiprocessing.Queue`, typed and much faster.
///
/// Messages are encoded with postcard into a ring of shared memory,
/// bounded in bytes (the ring's size) and, optionally, in messages. A
/// message larger than the ring is not an error: it streams through.
/// [`close`](Self::close) lets receivers drain what was sent and then see
/// [`RecvError::Disconnected`].
///
/// ```
/// use parpool::ipc::Queue;
/// use parpool::{Executor, ProcessPool};
///
/// parpool::task! {
///     fn produce(args: (Queue<String>, u32)) -> () {
///         for i in 0..args.1 {
///             args.0.send(format!("message {i}")).unwrap();
///         }
///     }
/// }
///
/// let q: Queue<String> = Queue::new()?;
/// let pool = ProcessPool::builder().workers(1).build()?;
/// pool.submit(produce, (q.clone(), 3)).join()?;
/// q.close();
/// let got: Vec<String> = q.iter().collect();
/// assert_eq!(got, ["message 0", "message 1", "message 2"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T> {
    region: Arc<Region>,
    /// The ring's size (fixed at creation, checked when received).
    cap: u64,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            region: self.region.clone(),
            cap: self.cap,
            _t: PhantomData,
        }
    }
}

thread_local! {
    /// Scratch space for encoding and receiving, reused between messages.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Why a send failed; the value is handed back where it was not sent.
#[derive(thiserror::Error)]
pub enum SendError<T> {
    /// The queue was closed.
    #[error("the queue is closed")]
    Closed(T),
    /// No room now (`try_send`), or not within the timeout.
    #[error("the queue is full")]
    Full(T),
    /// The value could not be encoded.
    #[error("the message could not be encoded: {0}")]
    Encode(String),
    /// The shared memory failed (should not happen with a valid queue).
    #[error("queue failure: {0}")]
    Io(io::Error),
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Encode(e) => f.debug_tuple("Encode").field(e).finish(),
            SendError::Io(e) => f.debug_tuple("Io").field(e).finish(),
        }
    }
}

impl<T> SendError<T> {
    /// The value that was not sent, when there is one.
    pub fn into_inner(self) -> Option<T> {
        match self {
            SendError::Closed(v) | SendError::Full(v) => Some(v),
            _ => None,
        }
    }
}

/// [`Queue::task_done`] was called more times than messages were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task_done was called more times than messages were sent")]
pub struct TaskDoneError;

/// Why a receive returned no message.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The queue is closed and everything sent has been received.
    #[error("the queue is closed and drained")]
    Disconnected,
    /// Nothing to receive now (`try_recv`), or not within the timeout.
    #[error("the queue is empty")]
    Empty,
    /// A message arrived but did not decode as the queue's type.
    #[error("a message did not decode: {0}")]
    Decode(String),
    /// The shared memory failed or holds something that is not a message.
    #[error("queue failure: {0}")]
    Io(io::Error),
}

enum Wait {
    Forever,
    Until(Instant),
    No,
}

impl Wait {
    fn from_timeout(timeout: Duration) -> Wait {
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
struct EndLock<'a> {
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

/// The ring's cells in the mapped region.
struct MapCells<'a>(&'a memmap2::MmapRaw);

impl Cells for MapCells<'_> {
    fn put(&self, at: usize, data: &[u8]) {
        sys::copy_in(self.0, HEADER + DATA + at, data);
    }
    fn take(&self, at: usize, out: &mut [u8]) {
        sys::copy_out(self.0, HEADER + DATA + at, out);
    }
    fn append(&self, at: usize, n: usize, out: &mut Vec<u8>) {
        sys::copy_out_append(self.0, HEADER + DATA + at, n, out);
    }
}

/// Largest frame built on the stack: payloads of up to 240 bytes.
const SMALL_FRAME: usize = 256;

/// Encodes `value` as a whole frame in `buf` if its payload fits there;
/// the frame's length, or `None` when it does not fit.
fn small_frame<T: Serialize>(
    value: &T,
    buf: &mut [u8; SMALL_FRAME],
) -> Result<Option<usize>, String> {
    let len = match postcard::to_slice(value, &mut buf[8..SMALL_FRAME - 8]) {
        Ok(payload) => payload.len(),
        Err(postcard::Error::SerializeBufferFull) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    // At most 8 + 240 + 8 bytes: 240 is a multiple of 8.
    let need = frame_len(len as u64).map_or(SMALL_FRAME, |n| n as usize);
    buf[..8].copy_from_slice(&(len as u64).to_le_bytes());
    buf[8 + len..need - 8].fill(0);
    buf[need - 8..need].copy_from_slice(&COMMIT.to_le_bytes());
    Ok(Some(need))
}

/// Lets a scratch buffer that grew for a big message go. Up to a few
/// MiB it stays: allocating a big buffer afresh for every message costs
/// more in page faults than copying it does.
fn shrink(buf: &mut Vec<u8>) {
    if buf.capacity() > 4 << 20 {
        *buf = Vec::new();
    }
}

/// Default ring size.
const DEFAULT_CAPACITY: usize = 1 << 20;

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue with a 1 MiB ring and no limit on the number of messages.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn new() -> io::Result<Self> {
        Self::with_capacity(DEFAULT_CAPACITY, None)
    }

    /// A queue whose ring holds `bytes` (rounded up to a power of two, at
    /// least 64) and, if given, at most `max_items` complete messages.
    ///
    /// # Errors
    /// When the system cannot create the shared memory.
    pub fn with_capacity(bytes: usize, max_items: Option<u64>) -> io::Result<Self> {
        let capacity = bytes.max(64).checked_next_power_of_two().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "queue capacity too large")
        })?;
        let region = Region::create(Kind::Queue, DATA + capacity)?;
        for lock in [WRITE_LOCK, READ_LOCK] {
            // SAFETY: each lock has 64 aligned bytes in the new payload,
            // which nobody else has yet.
            unsafe { sys::mutex_init(region.payload().wrapping_add(lock))? };
        }
        let q = Queue {
            region: Arc::new(region),
            cap: capacity as u64,
            _t: PhantomData,
        };
        q.word(CAPACITY).store(capacity as u64, SeqCst);
        q.word(MAX_ITEMS)
            .store(max_items.unwrap_or(u64::MAX), SeqCst);
        Ok(q)
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        sys::atomic_at(self.region.map(), HEADER + at).expect("queue words are in bounds")
    }

    fn word32(&self, at: usize) -> &AtomicU32 {
        sys::atomic_at(self.region.map(), HEADER + at).expect("queue words are in bounds")
    }

    /// Complete messages waiting to be received.
    pub fn len(&self) -> usize {
        let sent = self.word(SENT).load(SeqCst);
        let received = self.word(RECEIVED).load(SeqCst);
        sent.saturating_sub(received) as usize
    }

    /// Whether no complete message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.word32(CLOSED).load(SeqCst) != 0
    }

    /// Closes the queue: sends fail from now on; receivers get what was
    /// sent, then [`RecvError::Disconnected`]. Wakes every waiter.
    pub fn close(&self) {
        self.word32(CLOSED).store(1, SeqCst);
        for seq in [DATA_SEQ, SPACE_SEQ] {
            self.word32(seq).fetch_add(1, SeqCst);
            sys::futex_wake(self.word32(seq), sys::WAKE_ALL);
        }
    }

    /// Sends `value`, waiting for room as long as it takes.
    ///
    /// # Errors
    /// [`SendError::Closed`] with the value if the queue is closed;
    /// [`SendError::Encode`] if it does not encode.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.send_with(value, Wait::Forever)
    }

    /// Sends `value` if there is room for all of it now; otherwise hands
    /// it back as [`SendError::Full`].
    ///
    /// # Errors
    /// As [`send`](Self::send), and `Full`.
    pub fn try_send(&self, value: T) -> Result<(), SendError<T>> {
        self.send_with(value, Wait::No)
    }

    /// Sends `value`, waiting at most `timeout` for room for it (for a
    /// message larger than the ring: for room to start it).
    ///
    /// # Errors
    /// As [`send`](Self::send), and `Full` when the time ran out.
    pub fn send_timeout(&self, value: T, timeout: Duration) -> Result<(), SendError<T>> {
        self.send_with(value, Wait::from_timeout(timeout))
    }

    /// Receives the next message, waiting as long as it takes.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] once the queue is closed and drained.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_with(Wait::Forever)
    }

    /// Receives a message if one is waiting.
    ///
    /// # Errors
    /// [`RecvError::Empty`] if none is; `Disconnected` as for
    /// [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<T, RecvError> {
        self.recv_with(Wait::No)
    }

    /// Receives the next message, waiting at most `timeout` for one to
    /// start arriving.
    ///
    /// # Errors
    /// [`RecvError::Empty`] when the time ran out; `Disconnected` as for
    /// [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        self.recv_with(Wait::from_timeout(timeout))
    }

    /// Receives the next message, as a future for any async runtime.
    ///
    /// Waiting for a message to start takes no thread; a message that is
    /// still streaming in when it starts (one larger than the ring) is read
    /// to its end on the polling thread.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    ///
    /// ```
    /// use parpool::ipc::Queue;
    ///
    /// let q: Queue<u32> = Queue::new()?;
    /// let tx = q.clone();
    /// std::thread::spawn(move || tx.send(7));
    /// assert_eq!(futures::executor::block_on(q.recv_async()).unwrap(), 7);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn recv_async(&self) -> Result<T, RecvError> {
        loop {
            match self.try_recv() {
                Err(RecvError::Empty) => {}
                done => return done,
            }
            let ready = || self.available() >= 8 || self.is_closed();
            Change::new(self, DATA_SEQ, READER_WAITING, ready).await;
        }
    }

    /// Sends `value`, as a future for any async runtime: waiting for room
    /// takes no thread. A message larger than the ring can never fit at
    /// once, so it is sent as [`send`](Self::send) does, on the polling
    /// thread.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_async(&self, value: T) -> Result<(), SendError<T>> {
        let need = match postcard::experimental::serialized_size(&value) {
            Ok(n) => frame_len(n as u64).unwrap_or(u64::MAX),
            Err(e) => return Err(SendError::Encode(e.to_string())),
        };
        if need > self.cap {
            return self.send(value);
        }
        let mut value = value;
        loop {
            match self.try_send(value) {
                Err(SendError::Full(back)) => value = back,
                done => return done,
            }
            let max_items = self.word(MAX_ITEMS).load(SeqCst) as usize;
            let ready = || self.is_closed() || (self.space() >= need && self.len() < max_items);
            Change::new(self, SPACE_SEQ, WRITER_WAITING, ready).await;
        }
    }

    /// Marks one received message as processed, like Python's
    /// `JoinableQueue.task_done`: [`join`](Self::join) returns once every
    /// message sent has been marked.
    ///
    /// # Errors
    /// When called more times than messages were sent (nothing changes).
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        let done = self.word(DONE);
        let mut n = done.load(SeqCst);
        loop {
            if n >= self.word(SENT).load(SeqCst) {
                return Err(TaskDoneError);
            }
            match done.compare_exchange_weak(n, n + 1, SeqCst, SeqCst) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        if n + 1 == self.word(SENT).load(SeqCst) {
            self.word32(JOIN_SEQ).fetch_add(1, SeqCst);
            sys::futex_wake(self.word32(JOIN_SEQ), sys::WAKE_ALL);
        }
        Ok(())
    }

    /// Messages sent and not yet marked done with [`task_done`](Self::task_done).
    pub fn unfinished(&self) -> u64 {
        // `DONE` first: it never passes `SENT`, which only grows.
        let done = self.word(DONE).load(SeqCst);
        self.word(SENT).load(SeqCst).saturating_sub(done)
    }

    /// Waits until every message sent has been marked done with
    /// [`task_done`](Self::task_done), like Python's `JoinableQueue.join`.
    pub fn join(&self) {
        self.join_until(None);
    }

    /// Like [`join`](Self::join), for at most `timeout`; whether every
    /// message was done.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.join_until(Instant::now().checked_add(timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> bool {
        super::sync::wait_on(self.word32(JOIN_SEQ), deadline, || {
            let seen = self.word32(JOIN_SEQ).load(SeqCst);
            (self.unfinished() != 0).then_some(seen)
        })
    }

    /// Receives messages until the queue is closed and drained.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || {
            loop {
                match self.recv() {
                    Ok(v) => return Some(v),
                    // A message of the wrong shape is skipped, not an end.
                    Err(RecvError::Decode(_)) => continue,
                    Err(_) => return None,
                }
            }
        })
    }

    fn lock_end(&self, at: usize, wait: &Wait) -> io::Result<Option<(EndLock<'_>, bool)>> {
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
    fn wait_for(&self, seq: usize, waiting: usize, wait: &Wait, ready: impl Fn() -> bool) -> bool {
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
    fn wait_eager(
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
        let mut pauses = 16;
        loop {
            if pauses >= YIELD_FROM_PAUSES {
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
            pauses = (pauses * 2).min(256);
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
    fn bump(&self, seq: usize, waiting: usize) {
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
    fn publish(&self, at: usize, pos: u64, seq: usize, waiting: usize) {
        // Pairs with the waiter's count increment and fence in
        // `wait_eager`: the swap and that fence are ordered one way or
        // the other, so either this load sees the waiter counted or the
        // waiter's re-check sees `pos`.
        self.word(at).swap(pos, SeqCst);
        self.wake_waiter(seq, waiting);
    }

    /// The ring's positions and bytes (see `ring.rs`).
    fn ring(&self) -> Ring<'_, AtomicU64, MapCells<'_>> {
        Ring {
            tail: self.word(TAIL),
            head: self.word(HEAD),
            cells: MapCells(self.region.map()),
            cap: self.cap,
        }
    }

    fn copy_in(&self, pos: u64, bytes: &[u8]) {
        self.ring().write(pos, bytes);
    }

    fn copy_out(&self, pos: u64, buf: &mut [u8]) {
        self.ring().read(pos, buf);
    }

    /// The 8-byte word at stream position `pos`: one load where it is
    /// aligned, as every length and trailer word is.
    fn read_word(&self, pos: u64) -> u64 {
        let at = HEADER + DATA + (pos % self.cap) as usize;
        match sys::atomic_at::<AtomicU64>(self.region.map(), at) {
            Some(w) => u64::from_le(w.load(Relaxed)),
            None => {
                let mut w = [0u8; 8];
                self.copy_out(pos, &mut w);
                u64::from_le_bytes(w)
            }
        }
    }

    /// Free bytes, read from both positions (for anyone).
    fn space(&self) -> u64 {
        self.ring().space()
    }

    /// Published bytes not yet read, from both positions (for anyone).
    fn available(&self) -> u64 {
        self.ring().available()
    }

    /// For the sender holding the lock: whether `want` bytes are free.
    /// It checks the last `HEAD` it saw first (a lower bound), and reads
    /// the receiver's line only when that bound leaves too little room.
    fn has_room(&self, want: u64) -> bool {
        let tail = self.word(TAIL).load(Relaxed);
        let seen = self.word(HEAD_SEEN);
        let room = |head: u64| self.cap.saturating_sub(tail.saturating_sub(head)) >= want;
        if room(seen.load(Relaxed)) {
            return true;
        }
        let head = self.ring().head.get();
        seen.store(head, Relaxed);
        room(head)
    }

    /// For the receiver holding the lock: whether `want` bytes are
    /// published, checking the last `TAIL` it saw first.
    fn has_data(&self, want: u64) -> bool {
        let head = self.word(HEAD).load(Relaxed);
        let seen = self.word(TAIL_SEEN);
        if seen.load(Relaxed).saturating_sub(head) >= want {
            return true;
        }
        let tail = self.ring().tail.get();
        seen.store(tail, Relaxed);
        tail.saturating_sub(head) >= want
    }

    /// Writes `bytes` at the tail, in pieces as room frees up: a quarter
    /// of the ring at a time, or what is left.
    fn stream_in(&self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let piece = (bytes.len() as u64).min(self.cap / 4);
            self.wait_for(SPACE_SEQ, WRITER_WAITING, &Wait::Forever, || {
                self.has_room(piece)
            });
            let n = (self.space() as usize).min(bytes.len());
            let tail = self.ring().tail.get();
            self.copy_in(tail, &bytes[..n]);
            self.ring().tail.set(tail + n as u64);
            self.bump(DATA_SEQ, READER_WAITING);
            bytes = &bytes[n..];
        }
    }

    /// Writes one 8-byte word at the tail once there is room for all of it.
    fn put_word(&self, word: u64) {
        self.wait_for(SPACE_SEQ, WRITER_WAITING, &Wait::Forever, || {
            self.has_room(8)
        });
        let tail = self.ring().tail.get();
        self.copy_in(tail, &word.to_le_bytes());
        self.ring().tail.set(tail + 8);
        self.bump(DATA_SEQ, READER_WAITING);
    }

    /// After a sender died holding the lock: completes its message as
    /// aborted, so receivers drop it and the stream stays in step, and
    /// takes back its count in `SENT` if it had made it.
    fn recover_sender(&self) {
        let end = self.word(WRITE_END).load(SeqCst);
        let tail = self.ring().tail.get();
        if tail >= end {
            return;
        }
        let filler = end - 8 - tail;
        let zeros = vec![0u8; filler.min(1 << 16) as usize];
        let mut left = filler;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            self.stream_in(&zeros[..n]);
            left -= n as u64;
        }
        let before = self.word(WRITE_SENT).load(SeqCst);
        self.word(SENT).store(before, SeqCst);
        self.put_word(ABORT);
    }

    fn send_with(&self, value: T, wait: Wait) -> Result<(), SendError<T>> {
        // Most messages are small: their frame is built on the stack.
        let mut small = [0u8; SMALL_FRAME];
        if let Some(n) = small_frame(&value, &mut small).map_err(SendError::Encode)? {
            return self.send_frame(value, wait, &small[..n]);
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buf) => {
                let r = self.send_encoded(value, wait, &mut buf);
                shrink(&mut buf);
                r
            }
            // A `Serialize` that sends on a queue itself: no shared scratch.
            Err(_) => self.send_encoded(value, wait, &mut Vec::new()),
        })
    }

    fn send_encoded(&self, value: T, wait: Wait, buf: &mut Vec<u8>) -> Result<(), SendError<T>> {
        // The whole frame in scratch: length, payload, padding, trailer.
        buf.clear();
        buf.extend_from_slice(&[0; 8]);
        match postcard::to_extend(&value, std::mem::take(buf)) {
            Ok(b) => *buf = b,
            Err(e) => return Err(SendError::Encode(e.to_string())),
        }
        let len = (buf.len() - 8) as u64;
        let need = frame_len(len).ok_or_else(|| SendError::Encode("message too large".into()))?;
        buf[..8].copy_from_slice(&len.to_le_bytes());
        buf.resize(need as usize - 8, 0);
        buf.extend_from_slice(&COMMIT.to_le_bytes());
        self.send_frame(value, wait, buf)
    }

    /// Sends `frame`, the encoded `value` (handed back if it is not sent).
    fn send_frame(&self, value: T, wait: Wait, frame: &[u8]) -> Result<(), SendError<T>> {
        let need = frame.len() as u64;
        let Some((_lock, died)) = self.lock_end(WRITE_LOCK, &wait).map_err(SendError::Io)? else {
            return Err(SendError::Full(value));
        };
        if died {
            self.recover_sender();
        }
        // Room for all of it, unless it is larger than the ring and must
        // stream (which `try_send` does not do): then room for its length.
        let start = if need <= self.cap || matches!(wait, Wait::No) {
            need
        } else {
            8
        };
        let max_items = self.word(MAX_ITEMS).load(Relaxed);
        let ready_for = |room: u64| {
            self.is_closed()
                || ((max_items == u64::MAX || self.len() < max_items as usize)
                    && self.has_room(room))
        };
        // A full ring: while it spins, the sender waits for a sixteenth
        // of the ring rather than for one message's room, so that it and
        // the receiver work on lines far apart instead of trading each
        // line back and forth, one message at a time.
        let batch = start.max(self.cap / 16).min(self.cap);
        let (eager, ready) = (|| ready_for(batch), || ready_for(start));
        if self
            .wait_eager(SPACE_SEQ, WRITER_WAITING, &wait, PATIENT, &eager, &ready)
            .is_none()
        {
            return Err(SendError::Full(value));
        }
        if self.is_closed() {
            return Err(SendError::Closed(value));
        }
        // What a sender that finds this one dead needs to undo it: where
        // the message ends and the count before it.
        let tail = self.word(TAIL).load(Relaxed);
        let sent = self.word(SENT).load(Relaxed);
        self.word(WRITE_END).store(tail + need, Release);
        self.word(WRITE_SENT).store(sent, Release);
        // `SENT` counts the message before receivers can see it, so a
        // receiver's `task_done` always finds it counted.
        if self.has_room(need) {
            // The common case: the whole message at once, one publish.
            self.copy_in(tail, frame);
            self.word(SENT).store(sent + 1, Release);
            self.publish(TAIL, tail + need, DATA_SEQ, READER_WAITING);
        } else {
            self.stream_in(&frame[..frame.len() - 8]);
            self.word(SENT).store(sent + 1, Release);
            self.put_word(COMMIT);
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at the head, in pieces as they arrive.
    fn stream_out(&self, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            // A quarter of the ring at a time, or what is left. The sender
            // is not waiting for room meanwhile: it has at least the other
            // three quarters.
            let piece = ((buf.len() - done) as u64).min(self.cap / 4);
            self.wait_for(DATA_SEQ, READER_WAITING, &Wait::Forever, || {
                self.has_data(piece)
            });
            let n = (self.available() as usize).min(buf.len() - done);
            let head = self.ring().head.get();
            self.copy_out(head, &mut buf[done..done + n]);
            self.ring().head.set(head + n as u64);
            self.bump(SPACE_SEQ, WRITER_WAITING);
            done += n;
        }
    }

    /// Reads the 8-byte word at the head once it is all there; `done`
    /// runs before the head moves past it.
    fn take_word(&self, done: impl FnOnce(u64)) -> u64 {
        self.wait_for(DATA_SEQ, READER_WAITING, &Wait::Forever, || {
            self.has_data(8)
        });
        let head = self.ring().head.get();
        let w = self.read_word(head);
        done(w);
        self.ring().head.set(head + 8);
        self.bump(SPACE_SEQ, WRITER_WAITING);
        w
    }

    /// Counts a message received if `trailer` commits it, from the count
    /// before it (so a receiver that recovers a dead one's message counts
    /// it once).
    fn count_received(&self, before: u64, trailer: u64) {
        if trailer == COMMIT {
            self.word(RECEIVED).store(before + 1, Release);
        }
    }

    /// After a receiver died holding the lock: skips the rest of the
    /// message it was reading (it was taken, as in Python).
    fn recover_receiver(&self) {
        let end = self.word(READ_END).load(SeqCst);
        let head = self.ring().head.get();
        if head >= end {
            return;
        }
        let mut left = end - 8 - head;
        let mut sink = vec![0u8; left.min(1 << 16) as usize];
        while left > 0 {
            let n = left.min(sink.len() as u64) as usize;
            self.stream_out(&mut sink[..n]);
            left -= n as u64;
        }
        let before = self.word(READ_RECEIVED).load(SeqCst);
        self.word(RECEIVED).store(before, SeqCst);
        self.take_word(|trailer| self.count_received(before, trailer));
    }

    fn recv_with(&self, wait: Wait) -> Result<T, RecvError> {
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buf) => {
                let r = self.recv_into(wait, &mut buf);
                shrink(&mut buf);
                r
            }
            // A `Deserialize` that receives from a queue itself.
            Err(_) => self.recv_into(wait, &mut Vec::new()),
        })
    }

    fn recv_into(&self, wait: Wait, bytes: &mut Vec<u8>) -> Result<T, RecvError> {
        let Some((_lock, died)) = self.lock_end(READ_LOCK, &wait).map_err(RecvError::Io)? else {
            return Err(RecvError::Empty);
        };
        if died {
            self.recover_receiver();
        }
        loop {
            let drained = || {
                self.is_closed()
                    && self.available() == 0
                    && self.word(WRITE_END).load(SeqCst) <= self.ring().tail.get()
            };
            let ready = || self.has_data(8) || drained();
            // Caught up with the senders: hold out a moment for a few
            // lines' worth, so as not to read each line while a sender
            // still writes the next message into it. Longer, for more,
            // while the senders stream.
            let streak = self.word(RECV_STREAK).load(Relaxed);
            let streaming = streak >= STREAMING;
            let (patience, batch) = if streaming {
                (STREAM, STREAM_BATCH)
            } else {
                (PATIENT, BATCH)
            };
            let eager = || self.has_data(batch) || drained();
            let Some(waited) =
                self.wait_eager(DATA_SEQ, READER_WAITING, &wait, patience, &eager, &ready)
            else {
                return Err(RecvError::Empty);
            };
            if !waited.is_zero() {
                // Senders stream when a patient wait gets its batch; they
                // have stopped when even a streaming wait gets less.
                let dense = self.has_data(BATCH);
                let next = if dense {
                    (streak + 1).min(STREAMING)
                } else {
                    0
                };
                if next != streak {
                    self.word(RECV_STREAK).store(next, Relaxed);
                }
            }
            if !self.has_data(8) {
                return Err(RecvError::Disconnected);
            }
            let head = self.word(HEAD).load(Relaxed);
            let len = self.read_word(head);
            bytes.clear();
            let need = frame_len(len)
                .filter(|&n| usize::try_from(n).is_ok_and(|n| bytes.try_reserve_exact(n).is_ok()));
            let Some(need) = need else {
                return Err(RecvError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a message claims {len} bytes, more than this process can hold"),
                )));
            };
            let received = self.word(RECEIVED).load(Relaxed);
            self.word(READ_END).store(head + need, Release);
            self.word(READ_RECEIVED).store(received, Release);
            let trailer = if self.has_data(need) {
                // The whole message is there: one read, one publish.
                self.ring().read_append(head + 8, len as usize, bytes);
                let trailer = self.read_word(head + need - 8);
                self.count_received(received, trailer);
                self.publish(HEAD, head + need, SPACE_SEQ, WRITER_WAITING);
                trailer
            } else {
                self.ring().head.set(head + 8);
                self.bump(SPACE_SEQ, WRITER_WAITING);
                bytes.resize(len as usize, 0);
                self.stream_out(bytes);
                let pad = (need - FRAME - len) as usize;
                self.stream_out(&mut [0u8; 8][..pad]);
                self.take_word(|trailer| self.count_received(received, trailer))
            };
            match trailer {
                COMMIT => {
                    return postcard::from_bytes(bytes)
                        .map_err(|e| RecvError::Decode(e.to_string()));
                }
                // Its sender died while writing it: drop it, read on.
                ABORT => continue,
                _ => {
                    return Err(RecvError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a message has no valid trailer: the queue's memory is corrupted",
                    )));
                }
            }
        }
    }
}

/// Waits, without a thread, until `ready` holds for one end of a queue.
/// While it waits it counts as a waiter of that end, so the other end
/// bumps the futex word it watches.
struct Change<'a, T, F> {
    queue: &'a Queue<T>,
    seq: usize,
    waiting: usize,
    ready: F,
    counted: bool,
    registration: Registration,
}

impl<'a, T: Serialize + DeserializeOwned, F: Fn() -> bool> Change<'a, T, F> {
    fn new(queue: &'a Queue<T>, seq: usize, waiting: usize, ready: F) -> Self {
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

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.region.len() as u64, SendQueue(&self.region)).serialize(s)
    }
}

struct SendQueue<'a>(&'a Arc<Region>);

impl Serialize for SendQueue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        region::serialize(self.0, Kind::Queue, s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, SeqAccess, Visitor};
        struct V<T>(PhantomData<T>);
        impl<'de, T> Visitor<'de> for V<T> {
            type Value = Queue<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a queue reference")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Queue<T>, A::Error> {
                let len: u64 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let len = usize::try_from(len).map_err(A::Error::custom)?;
                if len < DATA + 64 || !(len - DATA).is_power_of_two() {
                    return Err(A::Error::custom("not a queue's size"));
                }
                let region = seq
                    .next_element_seed(RegionSeed {
                        kind: Kind::Queue,
                        len,
                    })?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                // The capacity word must agree with the region's size.
                let cap = sys::atomic_at::<AtomicU64>(region.map(), HEADER + CAPACITY)
                    .map_or(0, |w| w.load(SeqCst));
                if cap as usize != len - DATA {
                    return Err(A::Error::custom("the queue's header is corrupted"));
                }
                Ok(Queue {
                    region,
                    cap,
                    _t: PhantomData,
                })
            }
        }
        d.deserialize_tuple(2, V(PhantomData))
    }
}
