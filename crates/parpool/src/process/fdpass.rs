//! File descriptors alongside the byte stream of a Unix socket
//! (`SCM_RIGHTS`), for shared memory segments.
//!
//! A frame that carries descriptors is sent with them attached to its own
//! bytes, after everything buffered before it; the kernel delivers them to
//! the `recvmsg` call that reads the first of those bytes. So by the time a
//! reader has read a whole frame, its descriptors are waiting in
//! [`FdStream`]'s queue, behind those of earlier frames: each frame says how
//! many it carries and takes that many from the front.

use std::collections::VecDeque;
use std::io::{self, BufReader, BufWriter, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::control::Control;
use super::os;
use super::ring::{Ring, RingReader, Stream};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The most descriptors one `sendmsg` may carry (Linux's `SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_SEND: usize = 253;

/// The read half of a socket that also collects descriptors sent on it,
/// and in the low-latency mode reads the stream's stretches that came
/// through shared memory instead (`ring.rs`).
#[derive(Debug)]
pub(crate) struct FdStream {
    socket: UnixStream,
    fds: VecDeque<OwnedFd>,
    /// Bytes of the stream returned in all.
    pos: u64,
    /// In the low-latency mode: the ring, and how long to poll before
    /// sleeping on the socket (`process/README.md`, "Waiting without
    /// sleeping").
    ring: Option<(RingReader, Duration)>,
    /// Bytes read from the socket that belong after a ring record not yet
    /// read: the socket's next bytes.
    stash: Vec<u8>,
    /// How much of `stash` has been returned.
    stashed_from: usize,
}

impl FdStream {
    pub(crate) fn new(socket: UnixStream) -> Self {
        FdStream {
            socket,
            fds: VecDeque::new(),
            pos: 0,
            ring: None,
            stash: Vec::new(),
            stashed_from: 0,
        }
    }

    /// The socket.
    pub(crate) fn socket(&self) -> &UnixStream {
        &self.socket
    }

    /// From now on, reads the stream's stretches that come through `ring`
    /// too, polling for up to `window` before a read that would block.
    /// Says so in the ring, so that its writer starts using it.
    pub(crate) fn also_read_ring(&mut self, ring: Ring, window: Duration) {
        ring.set_reader_ready();
        self.ring = Some((RingReader::new(ring), window));
    }

    /// Waits until a read would not block, or `fd` is writable if `write`,
    /// for at most `timeout`, as [`os::wait_socket`] does; in the
    /// low-latency mode, saying so to the writer while it sleeps, and
    /// readable at once if bytes were sent through the ring.
    pub(crate) fn wait(&self, write: bool, timeout: Option<Duration>) -> os::Ready {
        let Some((reader, _)) = &self.ring else {
            return os::wait_socket(self.socket.as_fd(), write, timeout);
        };
        let ring = reader.ring();
        ring.set_asleep(true);
        let ready = if ring.sent() > self.pos || self.stashed() > 0 {
            os::Ready {
                readable: true,
                writable: false,
            }
        } else {
            os::wait_socket(self.socket.as_fd(), write, timeout)
        };
        ring.set_asleep(false);
        ready
    }

    fn stashed(&self) -> usize {
        self.stash.len() - self.stashed_from
    }

    /// Reads the socket's next bytes (the stash's first), collecting the
    /// descriptors that came with them.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stashed() > 0 {
            let n = self.stashed().min(buf.len());
            let from = self.stashed_from;
            buf[..n].copy_from_slice(&self.stash[from..from + n]);
            self.stashed_from += n;
            return Ok(n);
        }
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_SEND))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = loop {
            match rustix::net::recvmsg(
                &self.socket,
                &mut iov,
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other?,
            }
        };
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                self.fds.extend(fds);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            return Err(io::Error::other(
                "descriptors were dropped in transit (ancillary data truncated)",
            ));
        }
        Ok(msg.bytes)
    }

    /// Reads the stream's next bytes, from the ring or the socket
    /// (`ring.rs`), waiting as the low-latency mode does.
    fn read_either(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.pos;
        let mut readable = false;
        loop {
            // Looked at before the ring, never after: a writer publishes a
            // record before it counts it or writes anything later to the
            // socket, so whatever these say has come, the ring now shows
            // the records among it. (Looked at after, a record published in
            // between would be taken for socket bytes, and the read would
            // wait on the socket for ever.)
            let come =
                readable || self.sent_past(pos) || self.stashed() > 0 || self.readable_now();
            let (reader, window) = self.ring.as_mut().expect("the caller checked");
            let window = *window;
            if let Some(n) = reader.take(pos, buf)? {
                return Ok(n);
            }
            if come {
                return self.recv_before_ring(buf);
            }
            let this = &*self;
            if crate::sync::spin_until(window, || this.sent_past(pos)) {
                continue;
            }
            let ring = self.ring.as_ref().expect("the caller checked").0.ring();
            ring.set_asleep(true);
            if !self.sent_past(pos) {
                readable = os::wait_socket(self.socket.as_fd(), false, None).readable;
            }
            ring.set_asleep(false);
        }
    }

    /// Whether the writer has sent bytes past stream offset `pos` (in the
    /// low-latency mode).
    fn sent_past(&self, pos: u64) -> bool {
        self.ring
            .as_ref()
            .is_some_and(|(reader, _)| reader.ring().sent() > pos)
    }

    /// Reads socket bytes at the stream's offset, no further than where the
    /// ring's next record starts: what was read past it belongs after that
    /// record, and waits in the stash.
    fn recv_before_ring(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let from_stash = self.stashed() > 0;
        let n = self.recv(buf)?;
        let (reader, _) = self.ring.as_mut().expect("the caller checked");
        let Some(at) = reader.next_at()? else {
            return Ok(n);
        };
        let end = self.pos + n as u64;
        if at >= end {
            return Ok(n);
        }
        let Some(keep) = at.checked_sub(self.pos).filter(|&k| k > 0) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the low-latency ring's record overlaps the socket's bytes",
            ));
        };
        let keep = keep as usize;
        if from_stash {
            // Not taken from the stash after all.
            self.stashed_from -= n - keep;
        } else {
            self.stash.clear();
            self.stash.extend_from_slice(&buf[keep..n]);
            self.stashed_from = 0;
        }
        Ok(keep)
    }

    /// Whether the socket has bytes (or its end) to read now.
    fn readable_now(&self) -> bool {
        os::wait_socket(self.socket.as_fd(), false, Some(Duration::ZERO)).readable
    }
}

impl std::os::fd::AsFd for FdStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Read for FdStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = if self.ring.is_some() {
            self.read_either(buf)?
        } else {
            self.recv(buf)?
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// A reader that may have received descriptors with its bytes.
pub(crate) trait TakeFds {
    /// Takes the next `n` descriptors received, in order.
    ///
    /// # Errors
    /// When fewer than `n` arrived: the stream is out of step.
    fn take_fds(&mut self, n: usize) -> io::Result<Vec<OwnedFd>>;

    /// Reads the requests that come through `control`'s ring too, polling
    /// for up to `window` before a read that would block (the low-latency
    /// mode: `ring.rs`); readers of memory ignore it.
    fn use_ring(&mut self, control: &Control, window: Duration) {
        let _ = (control, window);
    }
}

fn missing(n: usize, have: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("a frame announced {n} descriptors but {have} arrived"),
    )
}

impl TakeFds for FdStream {
    fn take_fds(&mut self, n: usize) -> io::Result<Vec<OwnedFd>> {
        if self.fds.len() < n {
            return Err(missing(n, self.fds.len()));
        }
        Ok(self.fds.drain(..n).collect())
    }

    fn use_ring(&mut self, control: &Control, window: Duration) {
        if !window.is_zero() {
            self.also_read_ring(control.ring(Stream::Requests), window);
        }
    }
}

impl TakeFds for &[u8] {
    fn take_fds(&mut self, n: usize) -> io::Result<Vec<OwnedFd>> {
        if n > 0 {
            return Err(missing(n, 0));
        }
        Ok(Vec::new())
    }
}

impl<R: TakeFds> TakeFds for BufReader<R> {
    fn take_fds(&mut self, n: usize) -> io::Result<Vec<OwnedFd>> {
        self.get_mut().take_fds(n)
    }

    fn use_ring(&mut self, control: &Control, window: Duration) {
        self.get_mut().use_ring(control, window);
    }
}

/// A writer that can send descriptors attached to a frame.
pub(crate) trait SendFds: Write {
    /// Writes `frame` after everything buffered, with `fds` attached.
    fn write_with_fds(&mut self, frame: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()>;

    /// Buffers from now on in `control`'s reply log (`reply_log.rs`);
    /// writers to memory keep their own buffer.
    fn attach_log(&mut self, control: &super::control::Control) -> io::Result<()> {
        let _ = control;
        Ok(())
    }

    /// Sends what the reply log holds through its ring when it can, from
    /// now on, if the supervisor reads that ring (the low-latency mode:
    /// `ring.rs`; a call once it does is enough); writers to memory ignore
    /// it.
    fn use_ring(&mut self) {}
}

impl SendFds for BufWriter<UnixStream> {
    fn write_with_fds(&mut self, frame: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        self.flush()?;
        send_with_fds(self.get_ref(), frame, fds)
    }
}

impl SendFds for Vec<u8> {
    fn write_with_fds(&mut self, frame: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if !fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "descriptors cannot be written to memory",
            ));
        }
        self.write_all(frame)
    }
}

/// Sends `bytes` with `fds` attached. More descriptors than one message
/// can carry go in groups, each riding on one byte of the frame (a frame
/// holds at least one byte per descriptor it refers to).
pub(crate) fn send_with_fds(
    socket: &UnixStream,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let groups: Vec<&[BorrowedFd<'_>]> = fds.chunks(MAX_FDS_PER_SEND).collect();
    if groups.len() > bytes.len() {
        return Err(io::Error::other("more descriptors than frame bytes"));
    }
    let mut rest = bytes;
    for (i, group) in groups.iter().enumerate() {
        let last = i + 1 == groups.len();
        let part = if last { rest } else { &rest[..1] };
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_SEND))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(group)) {
            return Err(io::Error::other("descriptor group does not fit its buffer"));
        }
        let sent = loop {
            match rustix::net::sendmsg(
                socket,
                &[IoSlice::new(part)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other?,
            }
        };
        // The descriptors went with the first byte; the rest of this part,
        // if the socket took less, follows as plain bytes.
        (&*socket).write_all(&part[sent..])?;
        rest = &rest[part.len()..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_arrive_with_their_frames_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut w = BufWriter::new(a);
        let files: Vec<std::fs::File> = (0..600).map(|_| tempfile_like()).collect();
        let fds: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        w.write_all(b"plain").unwrap();
        w.write_with_fds(&[9u8; 1000], &fds).unwrap();
        w.write_all(b"tail").unwrap();
        w.flush().unwrap();
        drop(w);
        let mut r = BufReader::new(FdStream::new(b));
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 5 + 1000 + 4);
        let got = r.take_fds(600).unwrap();
        assert_eq!(got.len(), 600);
        assert!(r.take_fds(1).is_err());
        for (sent, got) in files.iter().zip(&got) {
            let s = rustix::fs::fstat(sent).unwrap();
            let g = rustix::fs::fstat(got).unwrap();
            assert_eq!((s.st_dev, s.st_ino), (g.st_dev, g.st_ino));
        }
    }

    fn tempfile_like() -> std::fs::File {
        std::fs::File::from(rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap())
    }
}
