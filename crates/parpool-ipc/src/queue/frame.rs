//! Messages in the ring. A frame is
//! `[len u64][payload][padding to 8][trailer u64]`, and the trailer
//! commits it (or, written by a sender that recovers a dead one's
//! message, aborts it). The send path, then the receive path: each takes
//! its end's lock, waits for room or data, and copies a whole frame at
//! once, or streams one larger than the free space through in pieces.

use std::io;
use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::layout::{
    DATA_SEQ, HEAD, HEAD_SEEN, MAX_ITEMS, READ_DROPPED, READ_END, READ_LOCK, READ_RECEIVED,
    READER_WAITING, RECEIVED, RECV_STREAK, SENT, SPACE_SEQ, TAIL, TAIL_SEEN, WRITE_END, WRITE_LOCK,
    WRITE_SENT, WRITER_WAITING,
};
use super::ring::Position;
use super::wait::{BATCH, PATIENT, PROMPT, STREAM, STREAM_BATCH, STREAMING, Wait};
use super::{Queue, RecvError, SendError};

pub(super) const COMMIT: u64 = 0x434f_4d4d_4954_2e2e;
pub(super) const ABORT: u64 = 0x4142_4f52_542e_2e2e;
/// Bytes a message takes besides its payload: length and trailer.
const FRAME: u64 = 16;

/// How often a receive that waits for the rest of a message looks whether
/// its sender is still there ([`Queue::await_sender`]).
const SENDER_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a timed or non-blocking receive inside a message waits past
/// its own deadline while the message's sender writes nothing more.
#[cfg(not(fuzzing))]
const STALL: std::time::Duration = std::time::Duration::from_secs(2);
/// Under the fuzzer (a region whose lock words name holders that never let
/// go is a common input there): short, so that it explores on.
#[cfg(fuzzing)]
const STALL: std::time::Duration = std::time::Duration::from_millis(10);

/// When a read in the middle of a message stops waiting for its bytes.
#[derive(Debug, Clone, Copy)]
pub(super) enum GiveUp {
    /// Never: it waits until they come or their sender is found dead.
    Never,
    /// At this instant (skipping what another receive left: the next
    /// receive goes on where this one stopped).
    At(std::time::Instant),
    /// At this instant, or later while the sender keeps writing: once it
    /// has written nothing for [`STALL`] (a receive of its own message,
    /// which a live sender finishes without waiting for anything else).
    Stalled(std::time::Instant),
}

impl GiveUp {
    /// A receive's give-up for `wait`: skipping (`skip`) or its own message.
    pub(super) fn of(wait: &Wait, skip: bool) -> GiveUp {
        let at = match *wait {
            Wait::Forever => return GiveUp::Never,
            Wait::Until(at) => at,
            Wait::No => std::time::Instant::now(),
        };
        if skip {
            GiveUp::At(at)
        } else {
            GiveUp::Stalled(at)
        }
    }

    /// The deadline for a wait, the last bytes having come at `progress`.
    fn deadline(self, progress: std::time::Instant) -> Option<std::time::Instant> {
        match self {
            GiveUp::Never => None,
            GiveUp::At(at) => Some(at),
            GiveUp::Stalled(at) => Some(at.max(progress + STALL)),
        }
    }
}

/// What [`Queue::await_sender`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sender {
    /// Bytes are there to read.
    There,
    /// The sender died in the message: it was completed as aborted.
    Gone,
    /// The deadline passed first.
    Later,
}

/// Bytes a message of `len` payload bytes takes in the ring: its length
/// word, the payload padded to a multiple of 8, and its trailer. The
/// padding keeps every length and trailer word aligned, so each is one
/// load or store and never wraps around the ring. `None` if it overflows.
pub(super) fn frame_len(len: u64) -> Option<u64> {
    len.checked_next_multiple_of(8)?.checked_add(FRAME)
}

thread_local! {
    /// Scratch space for encoding and receiving, reused between messages.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Largest frame built on the stack: payloads of up to 240 bytes.
const SMALL_FRAME: usize = 256;

/// Encodes `value` as a whole frame in `buf` if its payload fits there;
/// the frame's length, or `None` when it does not fit. Inlined into
/// `send_with`, which the split into files would otherwise prevent (its
/// caller, a `Queue` method, is compiled with the rest of `mod.rs`).
#[inline]
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

impl<T: Serialize + DeserializeOwned> Queue<T> {
    pub(super) fn send_with(&self, value: T, wait: Wait) -> Result<(), SendError<T>> {
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
        // A send that died (or gave up completing a dead one's message)
        // left the rest of it to fill (`WRITE_END` is past the tail).
        let left_over = self.ring().tail.get() < self.word(WRITE_END).load(SeqCst);
        if died || left_over {
            // Recovery goes by the positions: refuse impossible ones. (Not
            // on every send: that reads the receiver's line each time, and
            // a send with impossible positions only ever finds no room.)
            self.check_positions().map_err(SendError::Io)?;
            if !self.recover_sender(&wait) {
                return Err(SendError::Full(value));
            }
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
        // The count first: a sender that finds `WRITE_END` past the tail
        // must find the count that goes with it.
        self.word(WRITE_SENT).store(sent, Release);
        self.word(WRITE_END).store(tail.wrapping_add(need), Release);
        // `SENT` counts the message before receivers can see it, so a
        // receiver's `task_done` always finds it counted.
        if self.has_room(need) {
            // The common case: the whole message at once, one publish.
            self.copy_in(tail, frame);
            self.word(SENT).store(sent.wrapping_add(1), Release);
            self.publish(TAIL, tail.wrapping_add(need), DATA_SEQ, READER_WAITING);
        } else {
            self.stream_in(&frame[..frame.len() - 8]);
            self.word(SENT).store(sent.wrapping_add(1), Release);
            self.put_word(COMMIT);
        }
        Ok(())
    }

    /// Writes `bytes` at the tail, in pieces as room frees up: a quarter
    /// of the ring at a time, or what is left.
    pub(super) fn stream_in(&self, bytes: &[u8]) {
        self.stream_in_until(bytes, &Wait::Forever);
    }

    /// [`stream_in`](Self::stream_in), waiting for room only as `wait`
    /// allows; `false` if it gave up (what was written stays written).
    pub(super) fn stream_in_until(&self, mut bytes: &[u8], wait: &Wait) -> bool {
        while !bytes.is_empty() {
            let piece = (bytes.len() as u64).min(self.cap / 4);
            if !self.wait_for(SPACE_SEQ, WRITER_WAITING, wait, || self.has_room(piece)) {
                return false;
            }
            let n = (self.space() as usize).min(bytes.len());
            if n == 0 {
                // The sender's cached head said there was room, the head
                // itself says not: only a corrupted cache does that.
                self.word(HEAD_SEEN).store(self.ring().head.get(), SeqCst);
                continue;
            }
            let tail = self.ring().tail.get();
            self.copy_in(tail, &bytes[..n]);
            self.ring().tail.set(tail.wrapping_add(n as u64));
            self.bump(DATA_SEQ, READER_WAITING);
            bytes = &bytes[n..];
        }
        true
    }

    /// Writes one 8-byte word at the tail once there is room for all of it.
    pub(super) fn put_word(&self, word: u64) {
        self.put_word_until(word, &Wait::Forever);
    }

    /// [`put_word`](Self::put_word), waiting for room only as `wait`
    /// allows; `false` if it gave up (nothing written).
    pub(super) fn put_word_until(&self, word: u64, wait: &Wait) -> bool {
        if !self.wait_for(SPACE_SEQ, WRITER_WAITING, wait, || self.has_room(8)) {
            return false;
        }
        let tail = self.ring().tail.get();
        self.copy_in(tail, &word.to_le_bytes());
        self.ring().tail.set(tail.wrapping_add(8));
        self.bump(DATA_SEQ, READER_WAITING);
        true
    }

    pub(super) fn recv_with(&self, wait: Wait) -> Result<T, RecvError> {
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
        let give_up = GiveUp::of(&wait, false);
        let Some((_lock, died)) = self.lock_end(READ_LOCK, &wait).map_err(RecvError::Io)? else {
            return Err(RecvError::Empty);
        };
        // A receive that died (or gave up) inside a message left the rest
        // of it to skip (`READ_END` is past the head).
        let left_over = self.ring().head.get() < self.word(READ_END).load(SeqCst);
        if died || left_over {
            // As for sends: only where the positions steer a recovery (and
            // in every streamed piece), not on every receive.
            self.check_positions().map_err(RecvError::Io)?;
            if !self.recover_receiver(&wait).map_err(RecvError::Io)? {
                return Err(RecvError::Empty);
            }
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
            let (patience, batch) = if self.prompt {
                (PROMPT, 8)
            } else if streaming {
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
                    streak.saturating_add(1).min(STREAMING)
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
            // What the length claims is reserved only as it arrives (a
            // corrupted length must not take the memory it names).
            let need = frame_len(len).filter(|&n| usize::try_from(n).is_ok());
            let Some(need) = need else {
                return Err(RecvError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a message claims {len} bytes, more than this process can hold"),
                )));
            };
            let received = self.word(RECEIVED).load(Relaxed);
            // The count first, as for senders.
            self.word(READ_RECEIVED).store(received, Release);
            self.word(READ_END).store(head.wrapping_add(need), Release);
            let trailer = if self.has_data(need) {
                // The whole message is there: one read, one publish.
                self.ring()
                    .read_append(head.wrapping_add(8), len as usize, bytes);
                let trailer = self.read_word(head.wrapping_add(need).wrapping_sub(8));
                self.count_received(received, trailer);
                self.publish(HEAD, head.wrapping_add(need), SPACE_SEQ, WRITER_WAITING);
                trailer
            } else {
                self.stream_message(head, len, need, received, give_up, bytes)?
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

    /// Reads a message larger than what the ring holds now, its `len`
    /// bytes into `bytes` as its sender writes them, and returns its
    /// trailer (counted received from `received` if it commits).
    /// `Stalled` if the sender stopped writing before `give_up` let go:
    /// `READ_END` tells the next receive to skip the rest.
    fn stream_message(
        &self,
        head: u64,
        len: u64,
        need: u64,
        received: u64,
        give_up: GiveUp,
        bytes: &mut Vec<u8>,
    ) -> Result<u64, RecvError> {
        self.ring().head.set(head.wrapping_add(8));
        self.bump(SPACE_SEQ, WRITER_WAITING);
        let streamed =
            self.stream_out_vec(bytes, len as usize, give_up)
                .and_then(|sender| match sender {
                    Sender::There => {
                        let pad = (need - FRAME - len) as usize;
                        self.stream_out_until(&mut [0u8; 8][..pad], give_up)
                            .map(|(sender, _)| sender)
                    }
                    // Its sender died in it: the trailer is next.
                    Sender::Gone | Sender::Later => Ok(sender),
                })
                .and_then(|sender| match sender {
                    Sender::Later => Ok(None),
                    Sender::There | Sender::Gone => self
                        .take_word_until(|trailer| self.count_received(received, trailer), give_up),
                });
        // Its sender stopped writing it: `READ_END` tells the next
        // receive to skip the rest.
        let Some(trailer) = streamed.map_err(RecvError::Io)? else {
            self.word(READ_DROPPED).store(1, SeqCst);
            return Err(RecvError::Stalled);
        };
        Ok(trailer)
    }

    /// [`stream_out_until`](Self::stream_out_until) into `bytes`, `len`
    /// of them, growing it a ring's worth at a time as they arrive.
    ///
    /// # Errors
    /// As `stream_out_until`, and when `bytes` cannot grow.
    fn stream_out_vec(
        &self,
        bytes: &mut Vec<u8>,
        len: usize,
        give_up: GiveUp,
    ) -> io::Result<Sender> {
        while bytes.len() < len {
            let start = bytes.len();
            let piece = (len - start).min(self.cap as usize);
            bytes.try_reserve_exact(piece).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("a message of {len} bytes is more than this process can hold"),
                )
            })?;
            bytes.resize(start + piece, 0);
            match self.stream_out_until(&mut bytes[start..], give_up)? {
                (Sender::There, _) => {}
                (other, _) => return Ok(other),
            }
        }
        Ok(Sender::There)
    }

    /// Reads `buf.len()` bytes at the head, in pieces as they arrive,
    /// giving up as `give_up` says if they have not come (then
    /// [`Sender::Later`], with how many were read; the next receive can go
    /// on skipping the rest). [`Sender::Gone`]: the sender died in the
    /// message, whose rest was never written; the head is at its `ABORT`
    /// trailer (read it with [`take_word_until`](Self::take_word_until),
    /// skipping any padding).
    ///
    /// # Errors
    /// When the bytes can never come (see [`await_sender`](Self::await_sender)).
    pub(super) fn stream_out_until(
        &self,
        buf: &mut [u8],
        give_up: GiveUp,
    ) -> io::Result<(Sender, usize)> {
        let mut done = 0;
        let mut progress = std::time::Instant::now();
        while done < buf.len() {
            let deadline = give_up.deadline(progress);
            // A quarter of the ring at a time, or what is left. The sender
            // is not waiting for room meanwhile: it has at least the other
            // three quarters.
            let piece = ((buf.len() - done) as u64).min(self.cap / 4);
            self.check_positions()?;
            match self.await_sender(|| self.has_data(piece), deadline)? {
                Sender::There => {}
                Sender::Gone => {
                    buf[done..].fill(0);
                    return Ok((Sender::Gone, done));
                }
                Sender::Later => return Ok((Sender::Later, done)),
            }
            let n = (self.available() as usize).min(buf.len() - done);
            if n == 0 {
                // The receiver's cached tail said there was data, the tail
                // itself says not: only a corrupted cache does that. Take
                // the tail as it is, and wait again.
                self.word(TAIL_SEEN).store(self.ring().tail.get(), SeqCst);
                continue;
            }
            let head = self.ring().head.get();
            self.copy_out(head, &mut buf[done..done + n]);
            self.ring().head.set(head.wrapping_add(n as u64));
            self.bump(SPACE_SEQ, WRITER_WAITING);
            done += n;
            if matches!(give_up, GiveUp::Stalled(_)) {
                progress = std::time::Instant::now();
            }
        }
        Ok((Sender::There, done))
    }

    /// Reads the 8-byte word at the head once it is all there; `done`
    /// runs before the head moves past it. `None`: it had not come when
    /// `give_up` said to stop waiting.
    ///
    /// # Errors
    /// As [`stream_out_until`](Self::stream_out_until).
    pub(super) fn take_word_until(
        &self,
        done: impl FnOnce(u64),
        give_up: GiveUp,
    ) -> io::Result<Option<u64>> {
        let deadline = give_up.deadline(std::time::Instant::now());
        // A sender found gone left the trailer `ABORT` at the head.
        if self.await_sender(|| self.has_data(8), deadline)? == Sender::Later {
            return Ok(None);
        }
        let head = self.ring().head.get();
        let w = self.read_word(head);
        done(w);
        self.ring().head.set(head.wrapping_add(8));
        self.bump(SPACE_SEQ, WRITER_WAITING);
        Ok(Some(w))
    }

    /// Waits until `ready` (bytes of the message this receive is in the
    /// middle of), or at least some bytes, looking every [`SENDER_CHECK`]
    /// whether that message's sender is still there (it holds the send
    /// end while it writes one):
    ///
    /// - it is (the send end is busy): wait on;
    /// - it died holding it (a robust lock: its owner died) with everything
    ///   it wrote read: its message is completed here as aborted, the way
    ///   the next sender would ([`recover_sender`](Self::recover_sender)),
    ///   but in place: head and tail jump over the filler nobody will
    ///   write, and the `ABORT` trailer is put at the head
    ///   ([`Sender::Gone`]). The next sender would otherwise have to come
    ///   first, and a receive waited for ever when none did.
    /// - nobody holds it, and the bytes are still not there: no sender
    ///   will write them; the queue's memory says a message is longer than
    ///   anything sent (corrupted): an error, not a wait for ever.
    fn await_sender(
        &self,
        ready: impl Fn() -> bool,
        deadline: Option<std::time::Instant>,
    ) -> io::Result<Sender> {
        loop {
            let now = std::time::Instant::now();
            let next = now + SENDER_CHECK;
            let check = Wait::Until(deadline.map_or(next, |d| d.min(next)));
            if self.wait_for(DATA_SEQ, READER_WAITING, &check, &ready) || self.available() > 0 {
                return Ok(Sender::There);
            }
            // Past the deadline the send end is still looked at once: a
            // dead sender's message is completed by the first receive to
            // find it, however short its wait.
            let late = deadline.is_some_and(|d| std::time::Instant::now() >= d);
            let Some((_send_end, _died)) = self.lock_end(WRITE_LOCK, &Wait::No)? else {
                if late {
                    return Ok(Sender::Later);
                }
                continue;
            };
            if ready() || self.available() > 0 {
                return Ok(Sender::There);
            }
            // Nobody writes: the sender died in its message, or a send
            // that was completing a dead one's gave up (either way the
            // tail is short of `WRITE_END`); or the memory is corrupted.
            let end = self.word(WRITE_END).load(SeqCst);
            let tail = self.ring().tail.get();
            if tail.saturating_add(8) > end {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a message is longer than what was sent: the queue's memory is corrupted",
                ));
            }
            // Nothing unread (available is 0): head and tail move together
            // to where the sender's trailer goes.
            let at = end - 8;
            self.ring().tail.set(at);
            self.ring().head.set(at);
            let before = self.word(WRITE_SENT).load(SeqCst);
            self.word(SENT).store(before, SeqCst);
            self.put_word(ABORT);
            return Ok(Sender::Gone);
        }
    }

    /// Counts a message received if `trailer` commits it, from the count
    /// before it (so a receiver that recovers a dead one's message counts
    /// it once).
    pub(super) fn count_received(&self, before: u64, trailer: u64) {
        if trailer == COMMIT {
            self.word(RECEIVED).store(before.wrapping_add(1), Release);
        }
    }
}
