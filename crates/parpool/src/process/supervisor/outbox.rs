//! What the supervisor has to say to its worker and the socket has not
//! taken yet: frames queued in this process, sent without ever blocking.
//!
//! # Why the supervisor never blocks writing
//!
//! One thread per worker both writes requests and reads replies. Were it
//! to block in a write while the worker blocks writing a reply, each
//! would wait for the other for ever: the worker reads no request while
//! it writes, the supervisor reads no reply while it writes. Byte budgets
//! do not prevent this: the kernel charges each write's buffer at its true
//! size, a write with descriptors is a buffer of its own, and the worker
//! answers every request with a write of its own, so a count of bytes
//! bounds neither direction. (Thousands of small requests each carrying a
//! shared object filled both directions that way.)
//!
//! So the supervisor's writes are `sendmsg(MSG_DONTWAIT)`: what the socket
//! does not take stays here, and goes when `poll` says the socket has room
//! again. The argument, in full:
//!
//! 1. The supervisor blocks only (a) in `poll`, waiting for a reply *or*
//!    for room to write (the rest of the outbox goes as soon as there is),
//!    (b) reading the rest of a reply frame whose first bytes arrived, and
//!    (c) waiting for jobs when it has nothing in flight.
//! 2. The worker blocks only reading its next request (when it has nothing
//!    else to do) and writing replies.
//! 3. In (a) the supervisor drains the worker's writes; in (b) the worker
//!    is finishing a frame it started, which needs nothing from us; in (c)
//!    the worker has no reply left to write. A worker blocked reading gets
//!    the outbox's bytes in (a).
//!
//! No wait in that list depends on another that depends back on it, so the
//! pair cannot deadlock, whatever the mix of frame sizes, descriptors and
//! counts. The outbox grows at most by the pipeline (at most
//! `MAX_PIPELINE` requests, and `FD_BUDGET` descriptors beyond the head)
//! plus `Release` frames.
//!
//! Descriptors ride on the first byte of the frame they belong to (a frame
//! with more than `SCM_MAX_FD` of them spreads its groups over its first
//! bytes, one group per byte); the reader finds them queued by the time it
//! has read the frame (`fdpass.rs`).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};

use parpool_ipc::transfer::SharedObject;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use serde::Serialize;

use crate::process::fdpass::MAX_FDS_PER_SEND;
use crate::process::ring::Ring;
use crate::process::wire::ToWorker;
use crate::process::wire;

/// Bytes to send, and the descriptors that go with the first of them.
struct Chunk {
    bytes: Vec<u8>,
    /// Sent with the first bytes (one group of at most `MAX_FDS_PER_SEND`
    /// per byte); kept alive until sent.
    fds: Vec<SharedObject>,
    /// Bytes of `bytes` already sent.
    sent: usize,
    /// A `Wake` frame (with whatever was queued after it): socket only.
    wake: bool,
}

impl Chunk {
    fn groups(&self) -> usize {
        self.fds.len().div_ceil(MAX_FDS_PER_SEND)
    }
}

/// Frames waiting to be sent (see the module docs).
#[derive(Default)]
pub(super) struct Outbox {
    chunks: VecDeque<Chunk>,
    /// Set when the kernel refused descriptors for now (`ETOOMANYREFS`:
    /// too many in flight for this user): retry after a pause, not on
    /// `POLLOUT`, which says nothing about that limit.
    stalled: bool,
    /// Bytes sent in all, on the socket or through the ring.
    sent: u64,
    /// In the low-latency mode: the worker's request ring, which takes
    /// what needs no descriptors (`ring.rs`).
    ring: Option<Ring>,
    /// Whether a ring record left since the count was last published.
    published: bool,
}

/// What [`Outbox::flush`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flushed {
    /// Everything went.
    All,
    /// The socket is full: wait for `POLLOUT`.
    Full,
    /// The kernel holds too many descriptors in flight: try again shortly.
    Stalled,
}

impl Outbox {
    /// Queues one frame.
    pub(super) fn push<M: Serialize>(&mut self, msg: &M) -> io::Result<()> {
        let tail = match self.chunks.back_mut() {
            Some(tail) => tail,
            None => {
                self.chunks.push_back(Chunk {
                    bytes: Vec::new(),
                    fds: Vec::new(),
                    sent: 0,
                    wake: false,
                });
                self.chunks.back_mut().expect("just pushed")
            }
        };
        wire::write_frame(&mut tail.bytes, msg)
    }

    /// Queues one frame with the descriptors of `shared` attached.
    pub(super) fn push_with_fds<M: Serialize>(
        &mut self,
        msg: &M,
        shared: &[SharedObject],
    ) -> io::Result<()> {
        if shared.is_empty() {
            return self.push(msg);
        }
        let mut bytes = Vec::new();
        wire::write_frame(&mut bytes, msg)?;
        // A frame holds at least one byte per descriptor it names (its
        // index), so every group has a byte to ride on.
        if shared.len().div_ceil(MAX_FDS_PER_SEND) > bytes.len() {
            return Err(io::Error::other("more descriptors than frame bytes"));
        }
        self.chunks.push_back(Chunk {
            bytes,
            fds: shared.to_vec(),
            sent: 0,
            wake: false,
        });
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Bytes sent on the socket in all.
    pub(super) fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether the last flush met the kernel's descriptor limit.
    pub(super) fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// From now on, sends what needs no descriptors through `ring` (the
    /// worker's request ring) when it has room (the low-latency mode:
    /// `ring.rs`). Only once the worker reads that ring: it says so in the
    /// ring.
    pub(super) fn use_ring(&mut self, ring: Ring) {
        self.ring = Some(ring);
    }

    /// Sends as much as the socket (and in the low-latency mode the ring)
    /// takes now, without waiting; publishes the count of bytes sent.
    ///
    /// # Errors
    /// When the socket is broken (the worker is gone: the reader finds out
    /// and settles its jobs).
    pub(super) fn flush(&mut self, socket: BorrowedFd<'_>) -> io::Result<Flushed> {
        loop {
            let flushed = self.send(socket)?;
            let Some(ring) = &self.ring else {
                return Ok(flushed);
            };
            // Published, then the reader's word: see `ring.rs`.
            ring.set_sent(self.sent);
            if !std::mem::take(&mut self.published) || !ring.take_asleep() {
                return Ok(flushed);
            }
            let mut bytes = Vec::new();
            wire::write_frame(&mut bytes, &ToWorker::Wake)?;
            self.chunks.push_back(Chunk {
                bytes,
                fds: Vec::new(),
                sent: 0,
                wake: true,
            });
        }
    }

    /// One pass of [`flush`](Self::flush).
    fn send(&mut self, socket: BorrowedFd<'_>) -> io::Result<Flushed> {
        self.stalled = false;
        while let Some(chunk) = self.chunks.front_mut() {
            if chunk.sent == chunk.bytes.len() {
                self.chunks.pop_front();
                continue;
            }
            if let Some(ring) = &self.ring
                && !chunk.wake
                && chunk.sent >= chunk.groups()
            {
                let part = &chunk.bytes[chunk.sent..];
                let n = part.len().min(ring.room());
                if n > 0 && ring.push(self.sent, &part[..n]) {
                    chunk.sent += n;
                    self.sent += n as u64;
                    self.published = true;
                    continue;
                }
            }
            // The `g`-th group of descriptors rides on the `g`-th byte; the
            // last group takes the rest of the chunk with it.
            let groups = chunk.groups();
            let (end, group) = if chunk.sent < groups {
                let g = chunk.sent;
                let from = g * MAX_FDS_PER_SEND;
                let to = (from + MAX_FDS_PER_SEND).min(chunk.fds.len());
                let end = if g + 1 < groups {
                    chunk.sent + 1
                } else {
                    chunk.bytes.len()
                };
                (end, Some(from..to))
            } else {
                (chunk.bytes.len(), None)
            };
            let part = &chunk.bytes[chunk.sent..end];
            let fds: Vec<BorrowedFd<'_>> = group
                .map(|r| chunk.fds[r].iter().map(|s| s.share_fd()).collect())
                .unwrap_or_default();
            match send(socket, part, &fds) {
                Ok(n) => {
                    chunk.sent += n;
                    self.sent += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Full),
                Err(e)
                    if e.raw_os_error() == Some(rustix::io::Errno::TOOMANYREFS.raw_os_error()) =>
                {
                    self.stalled = true;
                    return Ok(Flushed::Stalled);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Flushed::All)
    }

    /// Sends everything, waiting for room as long as `patience` allows:
    /// for a worker known to be reading (starting up, or idle and told to
    /// exit).
    ///
    /// # Errors
    /// When the socket is broken, or the time is up.
    pub(super) fn flush_all(
        &mut self,
        socket: BorrowedFd<'_>,
        patience: std::time::Duration,
    ) -> io::Result<()> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match self.flush(socket)? {
                Flushed::All => return Ok(()),
                Flushed::Full | Flushed::Stalled => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the worker did not read what it was sent",
                        ));
                    }
                    crate::process::os::writable(
                        socket,
                        left.min(std::time::Duration::from_millis(1)),
                    );
                }
            }
        }
    }
}

/// One `sendmsg` that does not wait, with `fds` attached.
fn send(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_SEND))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("descriptor group does not fit its buffer"));
    }
    loop {
        match rustix::net::sendmsg(
            socket.as_fd(),
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::fdpass::{FdStream, TakeFds};
    use std::io::{BufReader, Read};
    use std::os::unix::net::UnixStream;

    fn memfd() -> SharedObject {
        struct F(std::fs::File);
        impl parpool_ipc::transfer::ShareFd for F {
            fn share_fd(&self) -> BorrowedFd<'_> {
                self.0.as_fd()
            }
        }
        let fd = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        std::sync::Arc::new(F(std::fs::File::from(fd)))
    }

    #[test]
    fn a_full_socket_never_blocks_the_writer_and_loses_nothing() {
        // Far more than the socket holds, half of the frames with
        // descriptors, the other end not reading until everything is
        // queued: every flush returns at once, and the reader then gets
        // every frame and every descriptor, in order.
        let (a, b) = UnixStream::pair().unwrap();
        let mut out = Outbox::default();
        let objects: Vec<SharedObject> = (0..4).map(|_| memfd()).collect();
        let mut full = false;
        for i in 0..4000u32 {
            if i % 2 == 0 {
                out.push_with_fds(&(i, vec![7u8; 40]), &objects[..(i % 4 + 1) as usize])
                    .unwrap();
            } else {
                out.push(&(i, vec![7u8; 40])).unwrap();
            }
            full |= out.flush(a.as_fd()).unwrap() != Flushed::All;
        }
        assert!(full, "the socket never filled: the test proves nothing");
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(FdStream::new(b));
            let mut buf = Vec::new();
            let mut fds = 0;
            for i in 0..4000u32 {
                let (n, body): (u32, Vec<u8>) = wire::read_frame(&mut r, 1 << 20, &mut buf)
                    .unwrap()
                    .unwrap();
                assert_eq!((n, body.len()), (i, 40));
                if i % 2 == 0 {
                    fds += r.take_fds((i % 4 + 1) as usize).unwrap().len();
                }
            }
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
            fds
        });
        out.flush_all(a.as_fd(), std::time::Duration::from_secs(60))
            .unwrap();
        drop(a);
        assert_eq!(
            reader.join().unwrap(),
            (0..4000).step_by(2).map(|i| i % 4 + 1).sum::<usize>()
        );
    }

    #[test]
    fn more_descriptors_than_one_message_carries_arrive_with_their_frame() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut out = Outbox::default();
        let objects: Vec<SharedObject> = (0..600).map(|_| memfd()).collect();
        out.push(&1u32).unwrap();
        out.push_with_fds(&vec![3u8; 1000], &objects).unwrap();
        out.push(&2u32).unwrap();
        out.flush_all(a.as_fd(), std::time::Duration::from_secs(10))
            .unwrap();
        drop(a);
        let mut r = BufReader::new(FdStream::new(b));
        let mut buf = Vec::new();
        assert_eq!(
            wire::read_frame::<_, u32>(&mut r, 1 << 20, &mut buf).unwrap(),
            Some(1)
        );
        let big: Vec<u8> = wire::read_frame(&mut r, 1 << 20, &mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(big.len(), 1000);
        assert_eq!(r.take_fds(600).unwrap().len(), 600);
        assert_eq!(
            wire::read_frame::<_, u32>(&mut r, 1 << 20, &mut buf).unwrap(),
            Some(2)
        );
    }

    /// The low-latency mode's two ways at once (`ring.rs`): frames of every
    /// size (some larger than the ring), some with descriptors, queued and
    /// flushed at random moments, to a reader that at random moments
    /// dawdles (so the socket and the ring fill) or sleeps (so it must be
    /// woken): every frame arrives once, whole, in order, with its
    /// descriptors, whichever way each stretch of it went.
    #[test]
    fn the_ring_and_the_socket_together_lose_and_reorder_nothing() {
        use crate::process::control::Control;
        use crate::process::ring::{Stream, seeded};
        use crate::process::wire::{Items, ToWorkerRef};
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        use std::time::Duration;
        for seed in 1..=6u64 {
            let mut next = seeded(seed);
            let (a, b) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            let control = Control::new().unwrap();
            let mut out = Outbox::default();
            out.use_ring(control.ring(Stream::Requests));
            let objects: Vec<SharedObject> = (0..3).map(|_| memfd()).collect();
            // (length, descriptors) of each frame.
            let sizes: Vec<(usize, usize)> = (0..3000)
                .map(|_| {
                    let len = match next(40) {
                        0 => next(200_000) as usize,
                        1..=3 => next(5_000) as usize,
                        _ => next(100) as usize,
                    };
                    let fds = if next(8) == 0 { 1 + next(3) as usize } else { 0 };
                    (len, fds)
                })
                .collect();
            let consumed = std::sync::Arc::new(AtomicU64::new(0));
            let mut stream = FdStream::new(b);
            stream.also_read_ring(control.ring(Stream::Requests), Duration::from_micros(50));
            let reader = read_checking(stream, sizes.clone(), consumed.clone());
            for (id, (len, fds)) in sizes.into_iter().enumerate() {
                let input = vec![id as u8; len];
                let msg = ToWorkerRef::Run {
                    id: id as u64,
                    seq: id as u64,
                    task: "t",
                    items: &Items::One,
                    shared: fds as u32,
                    input: &input,
                };
                out.push_with_fds(&msg, &objects[..fds]).unwrap();
                match next(6) {
                    0 => {}
                    // Once the reader has read everything, long enough for it
                    // to fall asleep.
                    1 => {
                        out.flush_all(a.as_fd(), Duration::from_secs(60)).unwrap();
                        let read_all = || consumed.load(SeqCst) == id as u64 + 1;
                        assert!(
                            crate::sync::spin_until(Duration::from_secs(60), read_all),
                            "seed {seed}: the reader is stuck before frame {id}"
                        );
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    _ => {
                        if out.flush(a.as_fd()).unwrap() != Flushed::All {
                            crate::process::os::writable(a.as_fd(), Duration::from_millis(1));
                        }
                    }
                }
            }
            out.flush_all(a.as_fd(), Duration::from_secs(60)).unwrap();
            let wakes = reader.join().unwrap();
            assert!(
                control.ring(Stream::Requests).sent() == out.sent(),
                "seed {seed}: the published count is the bytes sent"
            );
            // A sleeping reader was woken at least once (else the test
            // proves less than it says).
            assert!(wakes > 0, "seed {seed}: the reader never slept");
        }
    }

    /// Reads `expected.len()` `Run` frames (length, descriptors) from
    /// `stream`, checking each, dawdling now and then, counting in
    /// `consumed` those read; returns how many `Wake` frames came between.
    fn read_checking(
        stream: FdStream,
        expected: Vec<(usize, usize)>,
        consumed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> std::thread::JoinHandle<usize> {
        use crate::process::wire::ToWorker;
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(64 * 1024, stream);
            let (mut buf, mut id, mut wakes) = (Vec::new(), 0u64, 0);
            while (id as usize) < expected.len() {
                let msg: ToWorker = wire::read_frame(&mut r, 1 << 20, &mut buf)
                    .unwrap()
                    .unwrap();
                let ToWorker::Run {
                    id: got,
                    shared,
                    input,
                    ..
                } = msg
                else {
                    assert!(matches!(msg, ToWorker::Wake), "{msg:?}");
                    wakes += 1;
                    continue;
                };
                let (len, fds) = expected[id as usize];
                assert_eq!((got, input.len(), shared as usize), (id, len, fds));
                assert!(input.iter().all(|&x| x == id as u8), "frame {id} garbled");
                assert_eq!(r.take_fds(fds).unwrap().len(), fds);
                if id.is_multiple_of(97) {
                    // Dawdle: the socket and the ring fill meanwhile.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                id += 1;
                consumed.store(id, std::sync::atomic::Ordering::SeqCst);
            }
            wakes
        })
    }

    /// The race a reader of the ring must not lose (`FdStream::read_either`):
    /// its next bytes were counted as sent just after it looked at the ring
    /// and found nothing. Were that count taken to mean "on the socket",
    /// the reader would wait there for ever for bytes that are in the ring.
    /// A tight ping-pong of one small frame at a time through the ring
    /// meets that moment many times over.
    #[test]
    fn a_frame_published_while_the_reader_looks_is_read_from_the_ring() {
        use crate::process::control::Control;
        use crate::process::ring::Stream;
        use crate::process::wire::{Items, ToWorker, ToWorkerRef};
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        use std::time::Duration;
        const ROUNDS: u64 = 100_000;
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let control = Control::new().unwrap();
        let mut stream = FdStream::new(b);
        stream.also_read_ring(control.ring(Stream::Requests), Duration::from_micros(20));
        let mut out = Outbox::default();
        out.use_ring(control.ring(Stream::Requests));
        let acked = std::sync::Arc::new(AtomicU64::new(0));
        let ack = acked.clone();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                match wire::read_frame::<_, ToWorker>(&mut r, 1 << 10, &mut buf) {
                    Ok(Some(ToWorker::Run { id, .. })) => ack.store(id, SeqCst),
                    Ok(Some(ToWorker::Wake)) => {}
                    Ok(None) => return,
                    other => panic!("after frame {}: {other:?}", ack.load(SeqCst)),
                }
            }
        });
        for n in 1..=ROUNDS {
            let input = vec![7; n as usize % 50];
            let run = ToWorkerRef::Run {
                id: n,
                seq: n,
                task: "t",
                items: &Items::One,
                shared: 0,
                input: &input,
            };
            out.push(&run).unwrap();
            assert_eq!(out.flush(a.as_fd()).unwrap(), Flushed::All);
            assert!(
                crate::sync::spin_until(Duration::from_secs(10), || acked.load(SeqCst) == n),
                "frame {n} never arrived: the reader waits on the socket"
            );
        }
        drop(a);
        reader.join().unwrap();
    }

}
