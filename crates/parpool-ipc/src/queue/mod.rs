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
//! trailer: receivers drop it. A receive already inside that message does
//! not wait for a next sender: it looks every 100 ms whether the message's
//! sender still holds its lock, and if it died, completes the message as
//! aborted in place (both positions jump over the filler nobody will
//! write) and goes on. If nobody holds that lock and the message's bytes
//! still have not come, the memory says a message is longer than anything
//! sent: the receive fails with an I/O error instead of waiting for ever.
//! If a receiver dies in the middle of one, the next receiver skips the
//! rest of it (it was taken, as in Python); a sender streaming a message
//! then waits for that next receiver, as it waits for any reader of a full
//! ring. Completing a dead sender's message, or skipping a dead receiver's,
//! waits only as the send or receive that does it may wait (`try_` ones
//! not at all): one that gives up leaves the positions saying what is
//! left, and the next send or receive goes on with it. Positions that are
//! impossible (a head past the tail, more unread bytes than the ring
//! holds) are memory nobody wrote: an I/O error, never a read outside the
//! ring.
//!
//! The parts: `layout.rs` (where everything sits in the region, and typed
//! access to it), `frame.rs` (the send and receive paths: frames,
//! streaming), `wait.rs` (waiting for an end's lock, for data or room, and
//! for async callers; waking the other end), `recover.rs` (finishing a
//! message whose sender or receiver died) and `ring.rs` (the byte ring's
//! positions and wrapped copies, checked under loom).

mod frame;
mod layout;
mod recover;
mod ring;
mod wait;

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::mem::RegionSeed;
use super::region::{self, HEADER, Kind, Region};
use super::sys;
use frame::frame_len;
use layout::{
    CAPACITY, CLOSED, DATA, DATA_SEQ, DONE, JOIN_SEQ, MAX_ITEMS, READ_LOCK, READER_WAITING,
    RECEIVED, SENT, SPACE_SEQ, WRITE_LOCK, WRITER_WAITING,
};
use wait::{Change, Wait};

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
    /// This handle's receives wait for one message at a time, spinning
    /// longer before they sleep (a [`Pipe`](crate::Pipe)'s requests and
    /// replies); not shared with other handles.
    prompt: bool,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Queue<T> {
    /// This handle, receiving one message at a time: each receive takes
    /// the first message at once and spins longer before it sleeps, for a
    /// channel of requests and replies.
    pub(crate) fn prompt(mut self) -> Self {
        self.prompt = true;
        self
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            region: self.region.clone(),
            cap: self.cap,
            prompt: self.prompt,
            _t: PhantomData,
        }
    }
}

/// Why a send failed; the value is handed back where it was not sent.
#[derive(thiserror::Error)]
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// A timed or non-blocking receive had begun a message larger than
    /// what was there, and its sender wrote none of the rest for 2 s past
    /// the receive's timeout (the sender is stopped, or the queue's memory
    /// is corrupted). That message is dropped: the next receive skips what
    /// is left of it and goes on with the next. A blocking
    /// [`recv`](Queue::recv) waits for the rest instead.
    #[error(
        "the message being received stopped arriving: its sender wrote none of the rest for 2 s \
         past the receive's timeout; it was dropped (use recv to wait for such a sender)"
    )]
    Stalled,
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
            prompt: false,
            _t: PhantomData,
        };
        q.word(CAPACITY).store(capacity as u64, SeqCst);
        q.word(MAX_ITEMS)
            .store(max_items.unwrap_or(u64::MAX), SeqCst);
        Ok(q)
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
    /// A message larger than what is there is read as its sender writes
    /// the rest, for as long as it keeps writing.
    ///
    /// # Errors
    /// [`RecvError::Empty`] if none is; `Disconnected` as for
    /// [`recv`](Self::recv); [`RecvError::Stalled`] when the sender of the
    /// message begun stopped writing it.
    pub fn try_recv(&self) -> Result<T, RecvError> {
        self.recv_with(Wait::No)
    }

    /// Receives the next message, waiting at most `timeout` for one to
    /// start arriving.
    ///
    /// # Errors
    /// [`RecvError::Empty`] when the time ran out; `Disconnected` as for
    /// [`recv`](Self::recv); [`RecvError::Stalled`] as for
    /// [`try_recv`](Self::try_recv).
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
        crate::wait::wait_on(self.word32(JOIN_SEQ), deadline, || {
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
                    prompt: false,
                    _t: PhantomData,
                })
            }
        }
        d.deserialize_tuple(2, V(PhantomData))
    }
}
