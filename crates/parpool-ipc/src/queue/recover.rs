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
use super::frame::{ABORT, Sender};
use super::layout::{READ_END, READ_RECEIVED, RECEIVED, SENT, WRITE_END, WRITE_SENT};
use super::ring::Position;

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// After a sender died holding the lock: completes its message as
    /// aborted, so receivers drop it and the stream stays in step, and
    /// takes back its count in `SENT` if it had made it.
    pub(super) fn recover_sender(&self) {
        let end = self.word(WRITE_END).load(SeqCst);
        let tail = self.ring().tail.get();
        if tail >= end {
            return;
        }
        let filler = (end - tail).saturating_sub(8);
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

    /// After a receiver died holding the lock: skips the rest of the
    /// message it was reading (it was taken, as in Python).
    ///
    /// # Errors
    /// When the rest can never come (its sender gone too, or the memory
    /// corrupted; see `frame.rs`, `await_sender`).
    pub(super) fn recover_receiver(&self) -> std::io::Result<()> {
        let end = self.word(READ_END).load(SeqCst);
        let head = self.ring().head.get();
        if head >= end {
            return Ok(());
        }
        let mut left = (end - head).saturating_sub(8);
        let mut sink = vec![0u8; left.min(1 << 16) as usize];
        while left > 0 {
            let n = left.min(sink.len() as u64) as usize;
            if self.stream_out(&mut sink[..n])? == Sender::Gone {
                // Its sender died too: the trailer is next.
                break;
            }
            left -= n as u64;
        }
        let before = self.word(READ_RECEIVED).load(SeqCst);
        self.word(RECEIVED).store(before, SeqCst);
        self.take_word(|trailer| self.count_received(before, trailer))?;
        Ok(())
    }
}
