//! In the low-latency mode, the two streams between a worker and its
//! supervisor travel through shared memory where they can, with no system
//! call at either end (`README.md`, "Waiting without sleeping").
//!
//! Each direction (requests, replies) is one byte stream, as before; what
//! changes is that a stretch of it may go through a *ring* in the worker's
//! control block instead of the socket. A ring holds records, each a
//! stretch of the stream with the offset of its first byte:
//!
//! ```text
//! stream:  [ socket ][ ring ][ ring ][ socket (descriptors) ][ ring ] …
//! ```
//!
//! The writer sends stretches in stream order, one at a time, and publishes
//! a ring record (then the stream's count of bytes sent) before it writes
//! anything later to the socket. So a reader at stream offset `pos` finds
//! its next bytes this way: if the ring's oldest record starts at `pos`,
//! there; otherwise on the socket, and no further than where that record
//! starts (the socket may already hold later stretches: see
//! [`FdStream`](super::fdpass::FdStream)). Descriptors ride only on socket
//! bytes, so they still arrive with their frame.
//!
//! A reader that found nothing polls the count of bytes sent for the mode's
//! window, then says it is asleep (a word in the ring) and sleeps on the
//! socket. A writer that published a record and finds its reader asleep
//! wakes it by sending a `Wake` frame on the socket after the record. The
//! reader sets its word, then looks at the count once more; the writer
//! publishes, then looks at the word: both with sequentially consistent
//! atomics, so one of them sees the other, and no record waits for a
//! reader that sleeps.
//!
//! A writer uses its ring only once the reader has said (a word in the
//! ring) that it reads it. A ring that is full takes nothing: the stretch
//! goes on the socket.
//! After a worker's death, what its reply ring still holds is read as the
//! rest of the stream; the reply log (`reply_log.rs`) keeps the bytes that
//! had left neither way.

use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;

use parpool_ipc::SharedMem;

/// How many bytes a ring holds (a power of two, so that offsets wrap).
pub(crate) const RING_CAP: usize = 64 * 1024;
/// A record's header: the stream offset of its first byte, its length.
const HEADER: u64 = 16;

/// One ring's part of the control block. The writer's word and the
/// reader's words sit on cache lines of their own.
#[repr(C)]
pub(crate) struct RingBlock {
    /// Bytes of records the writer has published, in all.
    tail: AtomicU64,
    _line: [AtomicU64; 7],
    /// Bytes of records the reader has consumed, in all.
    head: AtomicU64,
    /// Nonzero while the reader sleeps on the socket.
    asleep: AtomicU64,
    /// Nonzero once the reader reads this ring: only then does the writer
    /// use it.
    ready: AtomicU64,
    _line2: [AtomicU64; 5],
    bytes: [u8; RING_CAP],
}

const TAIL: usize = std::mem::offset_of!(RingBlock, tail) / 8;
const HEAD: usize = std::mem::offset_of!(RingBlock, head) / 8;
const ASLEEP: usize = std::mem::offset_of!(RingBlock, asleep) / 8;
const READY: usize = std::mem::offset_of!(RingBlock, ready) / 8;
const BYTES: usize = std::mem::offset_of!(RingBlock, bytes);
const _: () = assert!(RING_CAP.is_power_of_two() && BYTES.is_multiple_of(8));

/// Which of a worker's two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Supervisor to worker.
    Requests,
    /// Worker to supervisor.
    Replies,
}

/// A record's length in the ring, header and padding included.
fn footprint(len: u64) -> u64 {
    HEADER + len.next_multiple_of(8)
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the low-latency ring is corrupt: {what}"),
    )
}

/// One ring in shared memory, with its stream's count of bytes sent.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    mem: SharedMem,
    /// Where its [`RingBlock`] starts in `mem`.
    at: usize,
    /// The word index in `mem` of the stream's count of bytes sent.
    sent: usize,
}

impl Ring {
    /// The ring whose block starts at byte `at` of `mem` (a multiple of
    /// 8), its stream's count of bytes sent being word `sent`.
    pub(crate) fn new(mem: SharedMem, at: usize, sent: usize) -> Ring {
        Ring { mem, at, sent }
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        self.mem
            .atomic_u64(index)
            .expect("the ring's words lie inside its block")
    }

    fn ring_word(&self, word: usize) -> &AtomicU64 {
        self.word(self.at / 8 + word)
    }

    /// Copies `data` into the ring at ring offset `at` (wrapping).
    fn write(&self, at: u64, data: &[u8]) {
        let base = self.at + BYTES;
        let start = (at % RING_CAP as u64) as usize;
        let first = data.len().min(RING_CAP - start);
        let _ = self.mem.write(base + start, &data[..first]);
        let _ = self.mem.write(base, &data[first..]);
    }

    /// Copies from the ring at ring offset `at` (wrapping).
    fn read(&self, at: u64, out: &mut [u8]) {
        let base = self.at + BYTES;
        let start = (at % RING_CAP as u64) as usize;
        let first = out.len().min(RING_CAP - start);
        let (a, b) = out.split_at_mut(first);
        let _ = self.mem.read(base + start, a);
        let _ = self.mem.read(base, b);
    }

    /// The writer's side: how many bytes one record could carry now.
    pub(crate) fn room(&self) -> usize {
        let tail = self.ring_word(TAIL).load(SeqCst);
        let head = self.ring_word(HEAD).load(SeqCst);
        let free = (RING_CAP as u64).saturating_sub(tail.wrapping_sub(head));
        // Whole words only: a record's bytes are padded to the next one.
        (free.saturating_sub(HEADER) & !7) as usize
    }

    /// The writer's side: publishes `data`, the stream's bytes from offset
    /// `at`, as one record. `false`: the ring has no room (or `data` is
    /// empty); nothing was written.
    pub(crate) fn push(&self, at: u64, data: &[u8]) -> bool {
        let tail = self.ring_word(TAIL).load(SeqCst);
        let head = self.ring_word(HEAD).load(SeqCst);
        let need = footprint(data.len() as u64);
        let used = tail.wrapping_sub(head);
        if data.is_empty() || used > RING_CAP as u64 || need > RING_CAP as u64 - used {
            return false;
        }
        let mut header = [0u8; HEADER as usize];
        header[..8].copy_from_slice(&at.to_le_bytes());
        header[8..].copy_from_slice(&(data.len() as u64).to_le_bytes());
        self.write(tail, &header);
        self.write(tail.wrapping_add(HEADER), data);
        self.ring_word(TAIL).store(tail.wrapping_add(need), SeqCst);
        true
    }

    /// The writer's side, after publishing: whether the reader sleeps on
    /// the socket (and so needs a `Wake` frame); says so once per sleep.
    pub(crate) fn take_asleep(&self) -> bool {
        self.ring_word(ASLEEP).swap(0, SeqCst) != 0
    }

    /// The reader's side: says that it sleeps on the socket (`true`), or
    /// no longer does.
    pub(crate) fn set_asleep(&self, asleep: bool) {
        self.ring_word(ASLEEP).store(u64::from(asleep), SeqCst);
    }

    /// The reader's side: says that it reads the ring from now on.
    pub(crate) fn set_reader_ready(&self) {
        self.ring_word(READY).store(1, SeqCst);
    }

    /// The writer's side: whether the reader reads the ring (else every
    /// byte goes on the socket).
    pub(crate) fn reader_ready(&self) -> bool {
        self.ring_word(READY).load(SeqCst) != 0
    }

    /// How many bytes of the stream its writer has sent in all, through
    /// the socket or the ring.
    pub(crate) fn sent(&self) -> u64 {
        self.word(self.sent).load(SeqCst)
    }

    /// The requests' writer's side: publishes that `total` bytes have been
    /// sent in all. (The replies' count is the reply log's base.)
    pub(crate) fn set_sent(&self, total: u64) {
        self.word(self.sent).store(total, SeqCst);
    }
}

/// The record a reader is in the middle of.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Stream offset of its first byte.
    at: u64,
    len: u64,
    /// Bytes of it already read.
    done: u64,
}

/// A reader's place in one ring.
#[derive(Debug)]
pub(crate) struct RingReader {
    ring: Ring,
    current: Option<Record>,
}

impl RingReader {
    pub(crate) fn new(ring: Ring) -> Self {
        RingReader {
            ring,
            current: None,
        }
    }

    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The stream offset of the next byte the ring holds, if it holds any.
    ///
    /// # Errors
    /// When the ring's words or the record's header make no sense.
    pub(crate) fn next_at(&mut self) -> io::Result<Option<u64>> {
        if let Some(r) = self.current {
            return Ok(Some(r.at.wrapping_add(r.done)));
        }
        let c = &self.ring;
        let head = c.ring_word(HEAD).load(SeqCst);
        let tail = c.ring_word(TAIL).load(SeqCst);
        if head == tail {
            return Ok(None);
        }
        let used = tail.wrapping_sub(head);
        if used > RING_CAP as u64 || used < HEADER {
            return Err(corrupt("its counts disagree"));
        }
        let mut header = [0u8; HEADER as usize];
        c.read(head, &mut header);
        let [at, len] = [0, 8].map(|i| {
            u64::from_le_bytes(header[i..i + 8].try_into().expect("eight bytes"))
        });
        if len == 0 || len > RING_CAP as u64 || footprint(len) > used {
            return Err(corrupt("a record's length is out of bounds"));
        }
        self.current = Some(Record { at, len, done: 0 });
        Ok(Some(at))
    }

    /// Reads into `buf` the ring's bytes from stream offset `pos`, if its
    /// next record goes on from there; `None` if the ring holds nothing, or
    /// only bytes that come later.
    ///
    /// # Errors
    /// When the ring is corrupt, or its next bytes were due before `pos`.
    pub(crate) fn take(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.next_at()? {
            Some(at) if at == pos => {}
            Some(at) if at < pos => return Err(corrupt("a record overlaps what was read")),
            _ => return Ok(None),
        }
        let Some(r) = self.current.as_mut() else {
            return Ok(None);
        };
        let n = (r.len - r.done).min(buf.len() as u64) as usize;
        let c = &self.ring;
        let head = c.ring_word(HEAD).load(SeqCst);
        c.read(head.wrapping_add(HEADER + r.done), &mut buf[..n]);
        r.done += n as u64;
        if r.done == r.len {
            let next = head.wrapping_add(footprint(r.len));
            self.current = None;
            c.ring_word(HEAD).store(next, SeqCst);
        }
        Ok(Some(n))
    }
}

/// For the seeded tests of the rings' users: numbers below `n`, the same
/// sequence for the same seed (xorshift).
#[cfg(test)]
pub(crate) fn seeded(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring alone in its memory, its count of bytes sent just after it.
    fn ring() -> Ring {
        let len = std::mem::size_of::<RingBlock>();
        Ring::new(SharedMem::new(len + 8).unwrap(), 0, len / 8)
    }

    #[test]
    fn records_come_out_whole_in_order_and_wrap_around_the_end() {
        let ring = ring();
        let mut r = RingReader::new(ring.clone());
        let mut pos = 0u64;
        let mut buf = [0u8; 1000];
        // Enough rounds of odd sizes to wrap the ring many times.
        for round in 0..2000u64 {
            let len = 1 + (round * 37 % 997) as usize;
            let data: Vec<u8> = (0..len).map(|i| (i as u64 + round) as u8).collect();
            assert!(ring.push(pos, &data));
            let mut got = Vec::new();
            while got.len() < len {
                // Read in uneven pieces.
                let want = (len - got.len()).min(1 + round as usize % 300);
                let n = r.take(pos, &mut buf[..want]).unwrap().unwrap();
                got.extend_from_slice(&buf[..n]);
                pos += n as u64;
            }
            assert_eq!(got, data, "round {round}");
            assert_eq!(r.take(pos, &mut buf).unwrap(), None, "nothing more");
        }
    }

    #[test]
    fn a_full_ring_refuses_and_a_record_for_later_is_left_alone() {
        let ring = ring();
        let big = vec![1u8; RING_CAP / 2];
        assert_eq!(ring.room(), RING_CAP - 16);
        assert!(ring.push(100, &big));
        let room = ring.room();
        assert_eq!(room, RING_CAP / 2 - 32);
        assert!(!ring.push(0, &vec![0; room + 1]));
        assert!(!ring.push(100 + big.len() as u64, &big));
        let mut r = RingReader::new(ring.clone());
        let mut buf = vec![0u8; RING_CAP];
        // The record starts at 100: the bytes before it are elsewhere.
        assert_eq!(r.take(40, &mut buf).unwrap(), None);
        assert_eq!(r.next_at().unwrap(), Some(100));
        assert_eq!(r.take(100, &mut buf).unwrap(), Some(big.len()));
        assert!(r.take(99, &mut buf).is_ok_and(|n| n.is_none()));
        assert!(ring.push(500_000, &big));
        assert!(r.take(500_001, &mut buf).is_err(), "behind what was read");
    }

    #[test]
    fn the_asleep_word_is_taken_once_and_the_count_is_shared() {
        let ring = ring();
        assert!(!ring.take_asleep());
        ring.set_asleep(true);
        assert!(ring.take_asleep());
        assert!(!ring.take_asleep());
        ring.set_sent(42);
        assert!(!ring.reader_ready());
        let reader = RingReader::new(ring.clone());
        assert_eq!(reader.ring().sent(), 42);
        reader.ring().set_reader_ready();
        assert!(ring.reader_ready());
    }

    #[test]
    fn garbage_in_the_words_is_an_error_not_a_panic() {
        let ring = ring();
        ring.ring_word(TAIL).store(u64::MAX, SeqCst);
        let mut r = RingReader::new(ring.clone());
        assert!(r.take(0, &mut [0u8; 8]).is_err());
        ring.ring_word(TAIL).store(64, SeqCst);
        ring.write(0, &[0xff; 16]);
        let mut r = RingReader::new(ring);
        assert!(r.take(0, &mut [0u8; 8]).is_err());
    }
}
