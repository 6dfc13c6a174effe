//! What a worker and its supervisor share besides the socket, and what
//! outlives a worker's crash: a block of words in shared memory
//! ([`Control`]) and a log of a map chunk's finished items ([`ChunkLog`]).
//!
//! - **Claims.** Every request the supervisor writes gets a sequence number
//!   and a claim cell, set to *offered*. The worker claims a request (one
//!   compare-and-swap to *claimed*) before it starts it; the supervisor may
//!   take back a request that has not been claimed (one compare-and-swap to
//!   *revoked*) and give it to another worker. Exactly one of the two swaps
//!   wins, so a moved job never runs twice. A revoked request is skipped
//!   by the worker when it reads it, without a reply.
//! - **Running job and item.** The id of the job the worker is in (0:
//!   none), and for a map chunk the position of the item it is in, so that
//!   after a crash the supervisor blames exactly that job, or that item.
//! - **Allocation failure.** Set by the worker's `SIGABRT` handler when the
//!   abort followed a failed allocation, the evidence behind a crash
//!   detail that says "memory".

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;

use crate::ipc::SharedMem;

/// Claim cells, more than the deepest pipeline
/// ([`MAX_PIPELINE`](super::supervisor) is 1024), so the cell of an
/// unresolved request is never reused.
const CLAIM_CELLS: u64 = 2048;

const RUNNING: usize = 0;
const ITEM: usize = 1;
const ALLOC_FAILED: usize = 2;
/// Index of the first claim cell.
const CELLS: usize = 8;

/// A claim cell holds `seq << 2 | state`.
const OFFERED: u64 = 0;
const CLAIMED: u64 = 1;
const REVOKED: u64 = 2;

/// No item of a chunk is running.
const NO_ITEM: u64 = u64::MAX;

/// The words a worker and its supervisor share (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Control {
    mem: SharedMem,
}

impl Control {
    /// A new block, made by the supervisor for one worker.
    pub(crate) fn new() -> io::Result<Control> {
        let mem = SharedMem::new((CELLS as u64 + CLAIM_CELLS) as usize * 8)?;
        let control = Control { mem };
        control.word(ITEM).store(NO_ITEM, SeqCst);
        Ok(control)
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

    /// The position of the chunk item the worker is in, if any.
    pub(crate) fn item(&self) -> Option<u32> {
        u32::try_from(self.word(ITEM).load(SeqCst)).ok()
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

    /// Records the chunk item the worker is in.
    pub(crate) fn set_item(&self, position: Option<u32>) {
        self.word(ITEM)
            .store(position.map_or(NO_ITEM, u64::from), SeqCst);
    }

    /// The word the `SIGABRT` handler sets on an allocation failure.
    pub(crate) fn allocation_flag(&self) -> &AtomicU64 {
        self.word(ALLOC_FAILED)
    }
}

/// The log of a map chunk's finished items, in a memory file the
/// supervisor gives its worker. The worker appends each item's encoded
/// result as it finishes; the supervisor reads the log only after the
/// worker died, so items that finished before a crash keep their results
/// and are not run again.
///
/// Layout: a header of four little-endian `u64` (job id, reserved, bytes,
/// items), then the items' encodings back to back. An item whose output
/// holds shared objects (their descriptors die with the worker) ends the
/// log for that chunk: the header says how many items the log holds.
#[derive(Debug)]
pub(crate) struct ChunkLog;

const LOG_HEADER: usize = 32;

impl ChunkLog {
    /// A new, empty log file.
    pub(crate) fn create() -> io::Result<File> {
        super::capture::create()
    }

    /// Reads what the log holds for job `id`: how many items finished and
    /// their encodings. `None` when the log is of another job.
    pub(crate) fn read(file: &File, id: u64) -> Option<(u32, Vec<u8>)> {
        let mut header = [0u8; LOG_HEADER];
        file.read_exact_at(&mut header, 0).ok()?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&header[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        if word(0) != id || id == 0 {
            return None;
        }
        let items = u32::try_from(word(3)).ok()?;
        let len = usize::try_from(word(2)).ok()?;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, LOG_HEADER as u64).ok()?;
        Some((items, bytes))
    }
}

/// The worker's end of a [`ChunkLog`]: a growing shared mapping.
#[derive(Debug)]
pub(crate) struct LogWriter {
    file: File,
    map: Option<memmap2::MmapMut>,
    /// Bytes of entries written for the current chunk.
    len: usize,
    items: u64,
    /// Whether the current chunk is still being logged.
    on: bool,
    /// Largest log kept (past it, the chunk stops being logged).
    limit: usize,
}

impl LogWriter {
    pub(crate) fn new(file: File, limit: u64) -> Self {
        LogWriter {
            file,
            map: None,
            len: 0,
            items: 0,
            on: false,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        }
    }

    fn header(&mut self, job: u64) {
        let (items, len) = (self.items, self.len as u64);
        if let Some(map) = self.map.as_mut() {
            map[0..8].copy_from_slice(&job.to_le_bytes());
            map[16..24].copy_from_slice(&len.to_le_bytes());
            map[24..32].copy_from_slice(&items.to_le_bytes());
        }
    }

    /// Starts logging chunk `job`.
    pub(crate) fn begin(&mut self, job: u64) {
        self.len = 0;
        self.items = 0;
        self.on = self.reserve(0).is_ok();
        self.header(job);
    }

    /// Appends one item's encoded result; `loggable: false` (its output
    /// holds shared objects) stops the log for this chunk.
    pub(crate) fn append(&mut self, job: u64, entry: &[u8], loggable: bool) {
        if !self.on {
            return;
        }
        if !loggable || self.reserve(entry.len()).is_err() {
            self.on = false;
            return;
        }
        let start = LOG_HEADER + self.len;
        if let Some(map) = self.map.as_mut() {
            map[start..start + entry.len()].copy_from_slice(entry);
        }
        self.len += entry.len();
        self.items += 1;
        self.header(job);
    }

    /// Makes room for `more` bytes of entries, growing the file by
    /// doubling.
    fn reserve(&mut self, more: usize) -> io::Result<()> {
        let need = LOG_HEADER + self.len + more;
        if need > self.limit {
            return Err(io::Error::other("the chunk log is full"));
        }
        if self.map.as_ref().is_some_and(|m| m.len() >= need) {
            return Ok(());
        }
        let size = need
            .next_power_of_two()
            .max(64 << 10)
            .min(self.limit.max(need));
        self.map = None;
        self.file.set_len(size as u64)?;
        self.map = Some(super::sys::map_log(&self.file)?);
        Ok(())
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

    #[test]
    fn the_log_holds_what_was_appended_for_its_job() {
        let file = ChunkLog::create().unwrap();
        let mut w = LogWriter::new(file.try_clone().unwrap(), 1 << 20);
        w.begin(7);
        w.append(7, b"abc", true);
        w.append(7, &[9; 100_000], true);
        assert_eq!(
            ChunkLog::read(&file, 7).map(|(n, b)| (n, b.len())),
            Some((2, 100_003))
        );
        assert_eq!(ChunkLog::read(&file, 8), None);
        w.append(7, b"x", false);
        w.append(7, b"y", true);
        assert_eq!(ChunkLog::read(&file, 7).map(|(n, _)| n), Some(2));
        w.begin(9);
        assert_eq!(ChunkLog::read(&file, 9), Some((0, Vec::new())));
    }
}
