//! What a worker and its supervisor share besides the socket, and what
//! outlives a worker's crash: a block of words in shared memory. (A map
//! chunk's finished items outlive it in the chunk's journal,
//! [`Journal`](parpool_ipc::transfer::Journal).)
//!
//! - **Claims.** Every request the supervisor writes gets a sequence number
//!   and a claim cell, set to *offered*. The worker claims a request (one
//!   compare-and-swap to *claimed*) before it starts it; the supervisor may
//!   take back a request that has not been claimed (one compare-and-swap to
//!   *revoked*) and give it to another worker. Exactly one of the two swaps
//!   wins, so a moved job never runs twice. A revoked request is skipped
//!   by the worker when it reads it, without a reply.
//! - **Running job.** The id of the job the worker is in (0: none), so
//!   that after a crash the supervisor blames exactly that job.
//! - **Allocation failure.** Set by the worker's `SIGABRT` handler when the
//!   abort followed a failed allocation, the evidence behind a crash
//!   detail that says "memory".

use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;

use parpool_ipc::SharedMem;

/// Claim cells, more than the deepest pipeline
/// ([`MAX_PIPELINE`](super::supervisor) is 1024), so the cell of an
/// unresolved request is never reused.
const CLAIM_CELLS: u64 = 2048;

const RUNNING: usize = 0;
const ALLOC_FAILED: usize = 1;
/// Index of the first claim cell.
const CELLS: usize = 8;

/// A claim cell holds `seq << 2 | state`.
const OFFERED: u64 = 0;
const CLAIMED: u64 = 1;
const REVOKED: u64 = 2;

/// The words a worker and its supervisor share (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Control {
    mem: SharedMem,
}

impl Control {
    /// A new block, made by the supervisor for one worker.
    pub(crate) fn new() -> io::Result<Control> {
        let mem = SharedMem::new((CELLS as u64 + CLAIM_CELLS) as usize * 8)?;
        Ok(Control { mem })
    }

    /// The block as the worker received it; `None` if it is not one (the
    /// stream is then not to be trusted).
    pub(crate) fn from_shared(mem: SharedMem) -> Option<Control> {
        let last = CELLS + CLAIM_CELLS as usize - 1;
        mem.atomic_u64(last)?;
        Some(Control { mem })
    }

    /// The shared memory, to send it to the worker.
    pub(crate) fn mem(&self) -> &SharedMem {
        &self.mem
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        self.mem
            .atomic_u64(index)
            .expect("the block's size is checked when it is made or received")
    }

    fn cell(&self, seq: u64) -> &AtomicU64 {
        self.word(CELLS + (seq % CLAIM_CELLS) as usize)
    }

    // The supervisor's side.

    /// Offers request `seq` to the worker (before it is written).
    pub(crate) fn offer(&self, seq: u64) {
        self.cell(seq).store(seq << 2 | OFFERED, SeqCst);
    }

    /// Takes request `seq` back; `false` if the worker claimed it first.
    pub(crate) fn revoke(&self, seq: u64) -> bool {
        self.cell(seq)
            .compare_exchange(seq << 2 | OFFERED, seq << 2 | REVOKED, SeqCst, SeqCst)
            .is_ok()
    }

    /// Whether the worker claimed request `seq` (it started it).
    pub(crate) fn is_claimed(&self, seq: u64) -> bool {
        self.cell(seq).load(SeqCst) == seq << 2 | CLAIMED
    }

    /// The job the worker is in (0: none).
    pub(crate) fn running(&self) -> u64 {
        self.word(RUNNING).load(SeqCst)
    }

    /// Whether the worker aborted after an allocation failed.
    pub(crate) fn allocation_failed(&self) -> bool {
        self.word(ALLOC_FAILED).load(SeqCst) != 0
    }

    // The worker's side.

    /// Claims request `seq`; `false`: it was revoked, skip it.
    pub(crate) fn claim(&self, seq: u64) -> bool {
        self.cell(seq)
            .compare_exchange(seq << 2 | OFFERED, seq << 2 | CLAIMED, SeqCst, SeqCst)
            .is_ok()
    }

    /// Records the job the worker is in (0: none).
    pub(crate) fn set_running(&self, job: u64) {
        self.word(RUNNING).store(job, SeqCst);
    }

    /// The word the `SIGABRT` handler sets on an allocation failure.
    pub(crate) fn allocation_flag(&self) -> &AtomicU64 {
        self.word(ALLOC_FAILED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_of_claim_and_revoke_wins() {
        let c = Control::new().unwrap();
        c.offer(1);
        assert!(c.claim(1));
        assert!(!c.revoke(1));
        assert!(c.is_claimed(1));
        c.offer(2);
        assert!(c.revoke(2));
        assert!(!c.claim(2));
        assert!(!c.is_claimed(2));
    }

    #[test]
    fn a_reused_cell_does_not_let_an_old_request_be_claimed() {
        let c = Control::new().unwrap();
        c.offer(5);
        assert!(c.revoke(5));
        c.offer(5 + CLAIM_CELLS);
        // The old request, read late by the worker, finds another seq.
        assert!(!c.claim(5));
        assert!(c.claim(5 + CLAIM_CELLS));
    }
}
