//! Where everything sits in a queue's region, and typed access to it: the
//! header words (positions, counts, futex words, settings), the ring over
//! the data area, and each end's reads of the other end's position.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Queue;
use super::ring::{Cells, Position, Ring};
use crate::region::HEADER;
use crate::sys;

// Layout of the payload. What the sender writes, what the receiver
// writes, and each futex sit on cache lines of their own (128 bytes apart),
// so the two ends do not take lines from each other.
pub(super) const WRITE_LOCK: usize = 0;
pub(super) const READ_LOCK: usize = 64;
// The sender's line.
pub(super) const TAIL: usize = 128;
/// Where the message being written ends (== `TAIL` when none is).
pub(super) const WRITE_END: usize = 136;
/// Messages committed (written by the sender holding the lock only).
pub(super) const SENT: usize = 144;
/// The last `HEAD` the sender read: a lower bound of it, so the sender
/// reads the receiver's line only when this bound leaves too little room.
pub(super) const HEAD_SEEN: usize = 152;
/// `SENT` before the message being written.
pub(super) const WRITE_SENT: usize = 160;
// The receiver's line.
pub(super) const HEAD: usize = 256;
/// Where the message being read ends (== `HEAD` when none is).
pub(super) const READ_END: usize = 264;
/// Committed messages received (written by the receiver holding the lock).
pub(super) const RECEIVED: usize = 272;
/// The last `TAIL` the receiver read, a lower bound of it.
pub(super) const TAIL_SEEN: usize = 280;
/// `RECEIVED` before the message being read.
pub(super) const READ_RECEIVED: usize = 288;
/// How many waits in a row found the senders streaming (see
/// `recv_into`); written by the receiver holding the lock.
pub(super) const RECV_STREAK: usize = 296;
/// Nonzero while the message left to skip (`READ_END` past the head) was
/// dropped by a receive that gave up on it (`RecvError::Stalled`): nobody
/// will mark it done, so the skip does if it turns out committed.
pub(super) const READ_DROPPED: usize = 304;
pub(super) const DATA_SEQ: usize = 384;
pub(super) const READER_WAITING: usize = 388;
pub(super) const SPACE_SEQ: usize = 512;
pub(super) const WRITER_WAITING: usize = 516;
// Read-mostly settings.
pub(super) const CAPACITY: usize = 640;
pub(super) const MAX_ITEMS: usize = 648;
pub(super) const CLOSED: usize = 656;
/// Messages marked done (`task_done`); never more than `SENT`.
pub(super) const DONE: usize = 768;
/// Bumped when `DONE` reaches `SENT`; `join` waits on it.
pub(super) const JOIN_SEQ: usize = 776;
pub(super) const DATA: usize = 896;

/// The ring's cells in the mapped region.
pub(super) struct MapCells<'a>(&'a memmap2::MmapRaw);

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

impl<T: Serialize + DeserializeOwned> Queue<T> {
    pub(super) fn word(&self, at: usize) -> &AtomicU64 {
        sys::atomic_at(self.region.map(), HEADER + at).expect("queue words are in bounds")
    }

    pub(super) fn word32(&self, at: usize) -> &AtomicU32 {
        sys::atomic_at(self.region.map(), HEADER + at).expect("queue words are in bounds")
    }

    /// The ring's positions and bytes (see `ring.rs`).
    pub(super) fn ring(&self) -> Ring<'_, AtomicU64, MapCells<'_>> {
        Ring {
            tail: self.word(TAIL),
            head: self.word(HEAD),
            cells: MapCells(self.region.map()),
            cap: self.cap,
        }
    }

    pub(super) fn copy_in(&self, pos: u64, bytes: &[u8]) {
        self.ring().write(pos, bytes);
    }

    pub(super) fn copy_out(&self, pos: u64, buf: &mut [u8]) {
        self.ring().read(pos, buf);
    }

    /// The 8-byte word at stream position `pos`: one load where it is
    /// aligned, as every length and trailer word is.
    pub(super) fn read_word(&self, pos: u64) -> u64 {
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
    pub(super) fn space(&self) -> u64 {
        self.ring().space()
    }

    /// Checks the ring's positions: a head past the tail, or more unread
    /// bytes than the ring holds, is memory no sender or receiver wrote
    /// (corrupted), and reading on would read garbage for as long as the
    /// positions say.
    pub(super) fn check_positions(&self) -> std::io::Result<()> {
        let head = self.word(HEAD).load(SeqCst);
        let tail = self.word(TAIL).load(SeqCst);
        match tail.checked_sub(head) {
            Some(unread) if unread <= self.cap => Ok(()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the queue's positions are impossible: its memory is corrupted",
            )),
        }
    }

    /// Published bytes not yet read, from both positions (for anyone).
    pub(super) fn available(&self) -> u64 {
        self.ring().available()
    }

    /// For the sender holding the lock: whether `want` bytes are free.
    /// It checks the last `HEAD` it saw first (a lower bound), and reads
    /// the receiver's line only when that bound leaves too little room.
    pub(super) fn has_room(&self, want: u64) -> bool {
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
    pub(super) fn has_data(&self, want: u64) -> bool {
        // Never more than the ring holds, whatever the positions say (see
        // `Ring::available`): a corrupted region must not make a read
        // reach past the ring.
        let head = self.word(HEAD).load(Relaxed);
        let seen = self.word(TAIL_SEEN);
        if seen.load(Relaxed).saturating_sub(head).min(self.cap) >= want {
            return true;
        }
        let tail = self.ring().tail.get();
        seen.store(tail, Relaxed);
        tail.saturating_sub(head).min(self.cap) >= want
    }
}
