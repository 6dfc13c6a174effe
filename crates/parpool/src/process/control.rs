//! What a worker and its supervisor share besides the socket, and what
//! outlives a worker's crash: a block of words in shared memory. (A map
//! chunk's finished items outlive it in the chunk's journal,
//! [`Journal`](parpool_ipc::transfer::Journal).)
//!
//! - **Claims.** Every request the supervisor writes gets a sequence number
//!   and a claim cell, set to *offered*. Each cell then moves at most twice,
//!   every move one compare-and-swap, so of two parties that race for a
//!   cell exactly one wins:
//!
//!   ```text
//!   offered ──worker claims──▶ claimed ──body returns──▶ done
//!      │                          │
//!      ├─supervisor takes back─▶ revoked        (moved to another worker;
//!      │                                          the worker skips it silently)
//!      └─cancel or timeout────▶ withdrawn       (it never starts; the worker
//!                                                 answers `Skipped`)
//!                                 claimed ──cancel or timeout──▶ stopped
//!                                 (the worker is killed; if the body returns
//!                                  first, the worker ends without a reply)
//!   ```
//!
//!   After the worker died, the supervisor takes back whatever is still
//!   *offered*, *claimed* or *done* (one more swap, to *revoked*), so a
//!   cancel that comes later finds it settled by the supervisor.
//!
//!   So a moved job never runs twice, a cancelled job that had not started
//!   never starts, and a cancelled job never ran to the end in a worker that
//!   lived on: the cell says which of these happened, and the swap that
//!   made it so is the decision.
//! - **Reply log.** The worker's reply buffer lives here, not in its own
//!   heap: replies leave in batches (one write for many), and a worker that
//!   dies with replies still buffered leaves them readable to its
//!   supervisor, which reads them after the worker is gone. A job whose
//!   body returned is never lost with its worker for want of a write.
//!   See `reply_log.rs`.
//! - **Allocation failure.** Set by the worker's `SIGABRT` handler when the
//!   abort followed a failed allocation, the evidence behind a crash
//!   detail that says "memory".

use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;

use parpool_ipc::SharedMem;

use super::ring::{Ring, RingBlock, Stream};

/// Claim cells, more than the deepest pipeline
/// ([`MAX_PIPELINE`](super::supervisor) is 1024), so the cell of an
/// unresolved request is never reused.
const CLAIM_CELLS: u64 = 2048;

/// How many bytes of replies the log holds at most.
pub(crate) const LOG_CAP: usize = 64 * 1024;

/// Where the block's parts sit (never built: the offsets below come from
/// its fields, so none is numbered by hand). The claim cells start on a
/// cache line of their own, away from the words the worker writes with
/// every batch of replies.
#[repr(C)]
struct Layout {
    _unused: AtomicU64,
    /// Nonzero once the worker aborted after a failed allocation.
    alloc_failed: AtomicU64,
    /// Reply log: how many bytes the worker had sent on its socket when
    /// the log's first byte was written, and how many bytes the log holds.
    log_base: AtomicU64,
    log_len: AtomicU64,
    /// How many bytes of requests the supervisor has sent in all (on the
    /// socket, once each write returned, or through the request ring): an
    /// idle worker in the low-latency mode polls it (`README.md`, "Waiting
    /// without sleeping"), as the supervisor polls `log_base`.
    requests_sent: AtomicU64,
    _line: [AtomicU64; 3],
    cells: [AtomicU64; CLAIM_CELLS as usize],
    log: [u8; LOG_CAP],
    /// The low-latency mode's rings, requests then replies (`ring.rs`).
    rings: [RingBlock; 2],
}

/// The index of the `u64` word at byte offset `at` (the block is read as
/// words), checked at compile time to be a whole word.
const fn word_index(at: usize) -> usize {
    assert!(at.is_multiple_of(std::mem::align_of::<AtomicU64>()), "a word is misaligned");
    at / std::mem::size_of::<AtomicU64>()
}

const ALLOC_FAILED: usize = word_index(std::mem::offset_of!(Layout, alloc_failed));
const LOG_BASE: usize = word_index(std::mem::offset_of!(Layout, log_base));
const LOG_LEN: usize = word_index(std::mem::offset_of!(Layout, log_len));
const REQUESTS_SENT: usize = word_index(std::mem::offset_of!(Layout, requests_sent));
/// Index of the first claim cell.
const CELLS: usize = word_index(std::mem::offset_of!(Layout, cells));
/// Where the reply log's bytes start.
const LOG_AT: usize = std::mem::offset_of!(Layout, log);
// The block's format, which a worker built by another build of this
// version reads too: a change to `Layout` that moves a part fails here.
const _: () = assert!(ALLOC_FAILED == 1 && LOG_BASE == 2 && LOG_LEN == 3 && REQUESTS_SENT == 4);
const _: () = assert!(CELLS == 8 && LOG_AT == (8 + CLAIM_CELLS as usize) * 8);
/// Where the rings start.
const RINGS_AT: usize = std::mem::offset_of!(Layout, rings);
const _: () = assert!(RINGS_AT.is_multiple_of(64));
/// The block's length.
const BLOCK_LEN: usize = std::mem::size_of::<Layout>();

/// A claim cell holds `seq << 3 | state`.
const OFFERED: u64 = 0;
const CLAIMED: u64 = 1;
const REVOKED: u64 = 2;
const DONE: u64 = 3;
const WITHDRAWN: u64 = 4;
const STOPPED: u64 = 5;
const STATE_BITS: u32 = 3;

/// Where a request stands (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cell {
    /// Written, not yet claimed.
    Offered,
    /// The worker is running it.
    Claimed,
    /// Taken back by the supervisor.
    Revoked,
    /// Its body returned; the reply follows.
    Done,
    /// Cancelled (or timed out) before it started.
    Withdrawn,
    /// Cancelled (or timed out) while it ran.
    Stopped,
    /// The cell holds another request now (the one asked about is long
    /// settled).
    Reused,
}

/// What a worker may do with a request it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Run it.
    Won,
    /// Skip it without a reply: the supervisor gave it to another worker.
    Revoked,
    /// Skip it and answer `Skipped`: it was cancelled before it started.
    Withdrawn,
}

/// What a cancel (or a timeout) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// It had not started: it never will.
    Withdrawn,
    /// It was running: its worker must be killed, and will never report
    /// it finished.
    Stopped,
    /// Its body has returned: too late, its result stands.
    Finished,
    /// The supervisor had taken it back (moved, or its worker died): the
    /// pool's queue has it, or will, and a resolved job there never runs.
    TakenBack,
}

/// The words a worker and its supervisor share (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Control {
    mem: SharedMem,
}

impl Control {
    /// A new block, made by the supervisor for one worker.
    pub(crate) fn new() -> io::Result<Control> {
        let mem = SharedMem::new(BLOCK_LEN)?;
        Ok(Control { mem })
    }

    /// The block as the worker received it; `None` if it is not one (the
    /// stream is then not to be trusted).
    pub(crate) fn from_shared(mem: SharedMem) -> Option<Control> {
        (mem.len() == BLOCK_LEN).then_some(Control { mem })
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

    /// `stream`'s ring, for the low-latency mode (`ring.rs`).
    pub(crate) fn ring(&self, stream: Stream) -> Ring {
        let at = RINGS_AT + std::mem::size_of::<RingBlock>() * stream as usize;
        let sent = match stream {
            Stream::Requests => REQUESTS_SENT,
            Stream::Replies => LOG_BASE,
        };
        Ring::new(self.mem.clone(), at, sent)
    }

    fn cell(&self, seq: u64) -> &AtomicU64 {
        self.word(CELLS + (seq % CLAIM_CELLS) as usize)
    }

    fn swap(&self, seq: u64, from: u64, to: u64) -> Result<(), Cell> {
        self.cell(seq)
            .compare_exchange(
                seq << STATE_BITS | from,
                seq << STATE_BITS | to,
                SeqCst,
                SeqCst,
            )
            .map(drop)
            .map_err(|now| decode(seq, now))
    }

    /// Where request `seq` stands.
    pub(crate) fn state(&self, seq: u64) -> Cell {
        decode(seq, self.cell(seq).load(SeqCst))
    }

    // The supervisor's side.

    /// Offers request `seq` to the worker (before it is written).
    pub(crate) fn offer(&self, seq: u64) {
        self.cell(seq).store(seq << STATE_BITS | OFFERED, SeqCst);
    }

    /// Takes request `seq` back while nobody has claimed it; `false` if
    /// the worker claimed it first, or a cancel withdrew it.
    pub(crate) fn revoke(&self, seq: u64) -> bool {
        self.swap(seq, OFFERED, REVOKED).is_ok()
    }

    /// After the worker died: takes request `seq` back from whatever state
    /// the worker left it in, and returns that state (`Withdrawn` or
    /// `Stopped`: a cancel settled it first, and resolved its job).
    pub(crate) fn take_back(&self, seq: u64) -> Cell {
        loop {
            let was = self.state(seq);
            let from = match was {
                Cell::Offered => OFFERED,
                Cell::Claimed => CLAIMED,
                Cell::Done => DONE,
                other => return other,
            };
            if self.swap(seq, from, REVOKED).is_ok() {
                return was;
            }
        }
    }

    // A cancel's side (any thread).

    /// Cancels request `seq` where it stands (see [`Stop`]).
    pub(crate) fn stop(&self, seq: u64) -> Stop {
        loop {
            match self.state(seq) {
                Cell::Offered => {
                    if self.swap(seq, OFFERED, WITHDRAWN).is_ok() {
                        return Stop::Withdrawn;
                    }
                }
                Cell::Claimed => {
                    if self.swap(seq, CLAIMED, STOPPED).is_ok() {
                        return Stop::Stopped;
                    }
                }
                Cell::Done => return Stop::Finished,
                Cell::Revoked | Cell::Reused => return Stop::TakenBack,
                // Settled by an earlier cancel or timeout of the same job.
                Cell::Withdrawn => return Stop::Withdrawn,
                Cell::Stopped => return Stop::Stopped,
            }
        }
    }

    /// Publishes that `total` bytes of requests have been sent in all.
    pub(crate) fn set_requests_sent(&self, total: u64) {
        self.word(REQUESTS_SENT).store(total, SeqCst);
    }

    /// How many bytes of replies the worker has sent in all, on the socket
    /// or through the reply ring (the reply log's base).
    pub(crate) fn replies_sent(&self) -> u64 {
        self.word(LOG_BASE).load(SeqCst)
    }

    /// Whether the worker aborted after an allocation failed.
    pub(crate) fn allocation_failed(&self) -> bool {
        self.word(ALLOC_FAILED).load(SeqCst) != 0
    }

    // The worker's side.

    /// Claims request `seq` before running it.
    pub(crate) fn claim(&self, seq: u64) -> Claim {
        match self.swap(seq, OFFERED, CLAIMED) {
            Ok(()) => Claim::Won,
            Err(Cell::Withdrawn) => Claim::Withdrawn,
            Err(_) => Claim::Revoked,
        }
    }

    /// Marks request `seq` done, its body having returned; `false`: it was
    /// stopped meanwhile, and its result must not be sent.
    pub(crate) fn finish(&self, seq: u64) -> bool {
        self.swap(seq, CLAIMED, DONE).is_ok()
    }

    /// Starts the reply log: `sent` bytes went out on the socket before it.
    pub(crate) fn log_attach(&self, sent: u64) {
        self.word(LOG_LEN).store(0, SeqCst);
        self.word(LOG_BASE).store(sent, SeqCst);
    }

    /// How many bytes the log holds.
    pub(crate) fn log_len(&self) -> usize {
        self.word(LOG_LEN).load(SeqCst) as usize
    }

    /// Appends `bytes`, which must fit (`log_len() + bytes.len() <=
    /// LOG_CAP`): copied first, counted after, so that what the count
    /// covers is always whole.
    pub(crate) fn log_append(&self, bytes: &[u8]) {
        let len = self.log_len();
        debug_assert!(len + bytes.len() <= LOG_CAP);
        if self.mem.write(LOG_AT + len, bytes).is_ok() {
            self.word(LOG_LEN).store((len + bytes.len()) as u64, SeqCst);
        }
    }

    /// Copies what the log holds into `out`.
    pub(crate) fn log_copy(&self, out: &mut Vec<u8>) {
        out.clear();
        out.resize(self.log_len(), 0);
        let _ = self.mem.read(LOG_AT, out);
    }

    /// The log's `n` bytes are on the socket now: empties it. (Emptied
    /// before the base moves: read in between, the log looks sent.)
    pub(crate) fn log_sent(&self, n: usize) {
        self.word(LOG_LEN).store(0, SeqCst);
        self.word(LOG_BASE).fetch_add(n as u64, SeqCst);
    }

    /// `n` bytes went out on the socket around the (empty) log.
    pub(crate) fn log_sent_direct(&self, n: usize) {
        self.word(LOG_BASE).fetch_add(n as u64, SeqCst);
    }

    /// After the worker died: the bytes it logged that did not reach the
    /// socket, given that `received` bytes did (and were read).
    pub(crate) fn log_unsent(&self, received: u64) -> Vec<u8> {
        let base = self.word(LOG_BASE).load(SeqCst);
        let len = self.log_len().min(LOG_CAP);
        let Some(offset) = received
            .checked_sub(base)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o < len)
        else {
            return Vec::new();
        };
        let mut out = vec![0; len - offset];
        let _ = self.mem.read(LOG_AT + offset, &mut out);
        out
    }

    /// The word the `SIGABRT` handler sets on an allocation failure.
    pub(crate) fn allocation_flag(&self) -> &AtomicU64 {
        self.word(ALLOC_FAILED)
    }
}

fn decode(seq: u64, word: u64) -> Cell {
    if word >> STATE_BITS != seq {
        return Cell::Reused;
    }
    match word & ((1 << STATE_BITS) - 1) {
        OFFERED => Cell::Offered,
        CLAIMED => Cell::Claimed,
        REVOKED => Cell::Revoked,
        DONE => Cell::Done,
        WITHDRAWN => Cell::Withdrawn,
        _ => Cell::Stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_of_claim_revoke_and_withdraw_wins() {
        let c = Control::new().unwrap();
        c.offer(1);
        assert_eq!(c.claim(1), Claim::Won);
        assert!(!c.revoke(1));
        assert_eq!(c.state(1), Cell::Claimed);
        c.offer(2);
        assert!(c.revoke(2));
        assert_eq!(c.claim(2), Claim::Revoked);
        assert_eq!(c.stop(2), Stop::TakenBack);
        c.offer(3);
        assert_eq!(c.stop(3), Stop::Withdrawn);
        assert!(!c.revoke(3));
        assert_eq!(c.claim(3), Claim::Withdrawn);
    }

    #[test]
    fn a_running_job_is_stopped_or_finished_never_both() {
        let c = Control::new().unwrap();
        c.offer(1);
        assert_eq!(c.claim(1), Claim::Won);
        assert_eq!(c.stop(1), Stop::Stopped);
        assert!(!c.finish(1), "a stopped job's result is never sent");
        c.offer(2);
        assert_eq!(c.claim(2), Claim::Won);
        assert!(c.finish(2));
        assert_eq!(c.stop(2), Stop::Finished, "too late: its result stands");
        assert_eq!(c.state(2), Cell::Done);
    }

    #[test]
    fn after_a_death_the_supervisor_takes_back_what_a_cancel_did_not_settle() {
        let c = Control::new().unwrap();
        for seq in 1..=4 {
            c.offer(seq);
        }
        assert_eq!(c.claim(1), Claim::Won);
        assert!(c.finish(1));
        assert_eq!(c.claim(2), Claim::Won);
        assert_eq!(c.stop(3), Stop::Withdrawn);
        assert_eq!(c.take_back(1), Cell::Done);
        assert_eq!(c.take_back(2), Cell::Claimed);
        assert_eq!(c.take_back(3), Cell::Withdrawn);
        assert_eq!(c.take_back(4), Cell::Offered);
        // A cancel that comes now finds each one taken back.
        for seq in [1, 2, 4] {
            assert_eq!(c.stop(seq), Stop::TakenBack);
        }
    }

    #[test]
    fn a_reused_cell_does_not_let_an_old_request_be_claimed() {
        let c = Control::new().unwrap();
        c.offer(5);
        assert!(c.revoke(5));
        c.offer(5 + CLAIM_CELLS);
        // The old request, read late by the worker, finds another seq.
        assert_eq!(c.claim(5), Claim::Revoked);
        assert_eq!(c.state(5), Cell::Reused);
        assert_eq!(c.claim(5 + CLAIM_CELLS), Claim::Won);
    }

    #[test]
    fn claim_against_stop_from_two_threads_settles_one_way() {
        // The race the cells exist for, many times over: a worker claims
        // and finishes while another thread cancels.
        let c = Control::new().unwrap();
        for seq in 1..5_000u64 {
            c.offer(seq);
            let worker = {
                let c = c.clone();
                std::thread::spawn(move || match c.claim(seq) {
                    Claim::Won => Some(c.finish(seq)),
                    _ => None,
                })
            };
            let stop = c.stop(seq);
            let ran = worker.join().unwrap();
            match (stop, ran) {
                (Stop::Withdrawn, None) => {}
                (Stop::Stopped, Some(false)) => {}
                (Stop::Finished, Some(true)) => {}
                other => panic!("seq {seq}: cancel and worker disagree: {other:?}"),
            }
            if seq % 1000 == 0 {
                // Keep the thread count down.
                std::thread::yield_now();
            }
        }
    }
}
