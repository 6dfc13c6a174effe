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
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::control::Control;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The most descriptors one `sendmsg` may carry (Linux's `SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_SEND: usize = 253;

/// The read half of a socket that also collects descriptors sent on it.
#[derive(Debug)]
pub(crate) struct FdStream {
    socket: UnixStream,
    fds: VecDeque<OwnedFd>,
    /// Bytes read in all.
    read: u64,
    /// In the low-latency mode: the control block whose count of bytes
    /// sent says whether a read would block, and how long to poll it
    /// first (`process/README.md`, "Waiting without sleeping").
    spin: Option<(Control, Duration)>,
}

impl FdStream {
    pub(crate) fn new(socket: UnixStream) -> Self {
        FdStream {
            socket,
            fds: VecDeque::new(),
            read: 0,
            spin: None,
        }
    }
}

impl FdStream {
    /// The socket.
    pub(crate) fn socket(&self) -> &UnixStream {
        &self.socket
    }
}

impl std::os::fd::AsFd for FdStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Read for FdStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((control, window)) = &self.spin {
            // Nothing unread was sent yet: poll for it before sleeping.
            let read = self.read;
            crate::sync::spin_until(*window, || control.requests_sent() > read);
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
        self.read += msg.bytes as u64;
        Ok(msg.bytes)
    }
}

/// A reader that may have received descriptors with its bytes.
pub(crate) trait TakeFds {
    /// Takes the next `n` descriptors received, in order.
    ///
    /// # Errors
    /// When fewer than `n` arrived: the stream is out of step.
    fn take_fds(&mut self, n: usize) -> io::Result<Vec<OwnedFd>>;

    /// Polls `control`'s count of bytes sent for up to `window` before a
    /// read that would block (the low-latency mode: `README.md`, "Waiting without sleeping"); readers
    /// of memory ignore it.
    fn spin_on(&mut self, control: &Control, window: Duration) {
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

    fn spin_on(&mut self, control: &Control, window: Duration) {
        self.spin = (!window.is_zero()).then(|| (control.clone(), window));
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

    fn spin_on(&mut self, control: &Control, window: Duration) {
        self.get_mut().spin_on(control, window);
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
