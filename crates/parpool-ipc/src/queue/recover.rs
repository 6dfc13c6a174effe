//! What an end does when it takes its lock as `OwnerDied`: the previous
//! holder died in the middle of a message. Before it starts a message,
//! each end records where that message will end (`WRITE_END`, `READ_END`)
//! and its count before it (`WRITE_SENT`, `READ_RECEIVED`), so the next
//! holder can finish the message: a sender fills the rest and writes an
//! abort trailer (receivers drop the message), a receiver skips the rest
//! (it was taken, as in Python).

use std::sync::atomic::Ordering::SeqCst;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Queue;
use super::frame::{ABORT, COMMIT, GiveUp, Sender};
use super::layout::{READ_DROPPED, READ_END, READ_RECEIVED, RECEIVED, SENT, WRITE_END, WRITE_SENT};
use super::ring::Position;
use super::wait::Wait;

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// After a sender died holding the lock, or gave up completing a dead
    /// one's message: completes that message as aborted, so receivers drop
    /// it and the stream stays in step, and takes back its count in `SENT`
    /// if it had made it. `false`: the room for it did not come within
    /// `wait` (nobody read); the next send goes on where this stopped.
    pub(super) fn recover_sender(&self, wait: &Wait) -> bool {
        let end = self.word(WRITE_END).load(SeqCst);
        let tail = self.ring().tail.get();
        if tail >= end {
            return true;
        }
        let filler = (end - tail).saturating_sub(8);
        let zeros = vec![0u8; filler.min(1 << 16) as usize];
        let mut left = filler;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            if !self.stream_in_until(&zeros[..n], wait) {
                return false;
            }
            left -= n as u64;
        }
        let before = self.word(WRITE_SENT).load(SeqCst);
        self.word(SENT).store(before, SeqCst);
        self.put_word_until(ABORT, wait)
    }

    /// After a receiver died holding the lock, or gave up skipping: skips
    /// the rest of the message it was reading (it was taken, as in
    /// Python). `false`: the bytes did not come within `wait` (a sender
    /// still writing them); the next receive goes on where this stopped.
    ///
    /// # Errors
    /// When the rest can never come (its sender gone too, or the memory
    /// corrupted; see `frame.rs`, `await_sender`).
    pub(super) fn recover_receiver(&self, wait: &Wait) -> std::io::Result<bool> {
        let deadline = GiveUp::of(wait, true);
        let end = self.word(READ_END).load(SeqCst);
        let head = self.ring().head.get();
        if head >= end {
            return Ok(true);
        }
        let mut left = (end - head).saturating_sub(8);
        let mut sink = vec![0u8; left.min(1 << 16) as usize];
        while left > 0 {
            let n = left.min(sink.len() as u64) as usize;
            match self.stream_out_until(&mut sink[..n], deadline)? {
                (Sender::There, _) => left -= n as u64,
                // Its sender died too: the trailer is next.
                (Sender::Gone, _) => break,
                (Sender::Later, _) => return Ok(false),
            }
        }
        let before = self.word(READ_RECEIVED).load(SeqCst);
        self.word(RECEIVED).store(before, SeqCst);
        let Some(trailer) =
            self.take_word_until(|trailer| self.count_received(before, trailer), deadline)?
        else {
            return Ok(false);
        };
        // A message a receive gave up on (`Stalled`) was received by
        // nobody: nobody marks it done but this.
        if self.word(READ_DROPPED).swap(0, SeqCst) != 0 && trailer == COMMIT {
            let _ = self.task_done();
        }
        Ok(true)
    }
}
