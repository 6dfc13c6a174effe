//! The worker's reply stream, buffered in shared memory so that a worker's
//! death loses no reply.
//!
//! A worker answers a batch of requests with one write: its replies wait
//! in a buffer until no request is waiting (or the flusher thread's
//! deadline). Were that buffer in the worker's heap, a worker killed with
//! replies in it (the out-of-memory killer, a `kill -9`, a crash in the
//! next job of the batch) would take jobs that *finished* down with it,
//! and they could only be failed or run a second time. So the buffer is
//! the reply log in the worker's control block (`control.rs`), which its
//! supervisor maps too:
//!
//! - the worker appends a frame's bytes to the log, then counts them (one
//!   store), and on flush writes the log to the socket (in the low-latency
//!   mode, at a frame boundary, to the reply ring when it has room:
//!   `ring.rs`), then empties it and adds what it sent to the log's
//!   *base*: the number of bytes it has sent in all;
//! - the supervisor counts the bytes of the frames it has read; once the
//!   worker is dead and its stream read to its end (the ring's records
//!   included), the bytes the log holds past that count are exactly the
//!   replies that never left, whole, in order. It handles them as if they had come through the socket
//!   (`supervisor/blame.rs`).
//!
//! A frame larger than the log, or one that carries descriptors, goes
//! straight to the socket (descriptors cannot wait in memory). A worker
//! killed in the middle of such a write, or between copying a frame into
//! the log and counting it, still loses that one reply; the supervisor
//! then treats its job as crashed after it finished (`blame.rs`, rule 4).

use std::io::{self, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;

use super::control::{Control, LOG_CAP};
use super::fdpass::{SendFds, send_with_fds};
use super::ring::{Ring, Stream};
use super::wire::{self, FromWorker};

/// The worker's end of the socket, written through the reply log once the
/// control block has arrived (before that, through a plain buffer).
pub(crate) struct LogWriter {
    socket: UnixStream,
    log: Option<Control>,
    /// Before the log: bytes not yet sent.
    pending: Vec<u8>,
    /// Before the log: bytes sent so far.
    sent: u64,
    /// The log's bytes, copied out to be written.
    scratch: Vec<u8>,
    /// In the low-latency mode, the reply ring, through which the log's
    /// bytes go when it has room (`ring.rs`).
    ring: Option<Ring>,
}

impl LogWriter {
    pub(crate) fn new(socket: UnixStream) -> Self {
        LogWriter {
            socket,
            log: None,
            pending: Vec::new(),
            sent: 0,
            scratch: Vec::new(),
            ring: None,
        }
    }

    fn direct(&mut self, bytes: &[u8]) -> io::Result<()> {
        (&self.socket).write_all(bytes)?;
        self.counted(bytes.len());
        Ok(())
    }

    /// `n` bytes went out around the log.
    fn counted(&mut self, n: usize) {
        match &self.log {
            Some(log) => log.log_sent_direct(n),
            None => self.sent += n as u64,
        }
    }

    /// Sends what the log holds. `boundary`: the log ends with a whole
    /// frame, so it may go through the ring, and a `Wake` frame after it.
    fn send_log(&mut self, boundary: bool) -> io::Result<()> {
        let Some(log) = &self.log else {
            let pending = std::mem::take(&mut self.pending);
            return self.direct(&pending);
        };
        log.log_copy(&mut self.scratch);
        if self.scratch.is_empty() {
            return Ok(());
        }
        let ring = self.ring.as_ref().filter(|_| boundary);
        if let Some(ring) = ring
            && ring.push(log.replies_sent(), &self.scratch)
        {
            log.log_sent(self.scratch.len());
            if ring.take_asleep() {
                let mut wake = Vec::new();
                wire::write_frame(&mut wake, &FromWorker::Wake)?;
                self.direct(&wake)?;
            }
            return Ok(());
        }
        (&self.socket).write_all(&self.scratch)?;
        log.log_sent(self.scratch.len());
        Ok(())
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(log) = &self.log else {
            self.pending.extend_from_slice(buf);
            return Ok(buf.len());
        };
        if log.log_len() + buf.len() > LOG_CAP {
            // Perhaps in the middle of a frame: through the socket.
            self.send_log(false)?;
        }
        if buf.len() > LOG_CAP {
            self.direct(buf)?;
        } else if let Some(log) = &self.log {
            log.log_append(buf);
        }
        Ok(buf.len())
    }

    /// Called between frames only.
    fn flush(&mut self) -> io::Result<()> {
        self.send_log(true)
    }
}

impl SendFds for LogWriter {
    fn write_with_fds(&mut self, frame: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        self.flush()?;
        send_with_fds(&self.socket, frame, fds)?;
        self.counted(frame.len());
        Ok(())
    }

    fn attach_log(&mut self, control: &Control) -> io::Result<()> {
        self.flush()?;
        control.log_attach(self.sent);
        self.log = Some(control.clone());
        Ok(())
    }

    fn use_ring(&mut self) {
        if self.ring.is_none() {
            let ring = self.log.as_ref().map(|log| log.ring(Stream::Replies));
            self.ring = ring.filter(Ring::reader_ready);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn what_the_socket_missed_is_in_the_log_and_nothing_else() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let control = Control::new().unwrap();
        let mut w = LogWriter::new(a);
        w.write_all(b"hello").unwrap();
        w.flush().unwrap();
        w.attach_log(&control).unwrap();
        w.write_all(b"one").unwrap();
        w.flush().unwrap();
        w.write_all(b"two").unwrap();
        w.write_all(b"three").unwrap();
        // The worker "dies" here: "two" and "three" never left.
        drop(w);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"helloone");
        assert_eq!(control.log_unsent(got.len() as u64), b"twothree");
        // Had the reader stopped inside the log (a frame cut short), what
        // follows starts where it stopped.
        assert_eq!(control.log_unsent(9), b"wothree");
        assert!(
            control.log_unsent(6).is_empty(),
            "sent long ago, not logged"
        );
    }

    #[test]
    fn a_frame_larger_than_the_log_goes_straight_to_the_socket_and_is_counted() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let control = Control::new().unwrap();
        let mut w = LogWriter::new(a);
        w.attach_log(&control).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        w.write_all(b"ab").unwrap();
        w.write_all(&vec![7u8; LOG_CAP + 1]).unwrap();
        w.write_all(b"cd").unwrap();
        drop(w);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 2 + LOG_CAP + 1);
        assert_eq!(control.log_unsent(got.len() as u64), b"cd");
    }

    /// A reply larger than the log is written piecemeal (its first fields
    /// into the log, its payload straight to the socket, its last fields
    /// into the log again) and flushed at its end, so it leaves whole and
    /// the replies after it are in the log: a death loses none of them.
    #[test]
    fn replies_after_a_frame_larger_than_the_log_survive_a_death() {
        use crate::process::wire::{self, Bytes, FromWorker};
        let (a, b) = UnixStream::pair().unwrap();
        let control = Control::new().unwrap();
        let mut w = LogWriter::new(a);
        w.attach_log(&control).unwrap();
        // With what the job wrote after its value (fields that follow the
        // large one in the frame).
        let done = |id: u64, len: usize| FromWorker::Done {
            id,
            shared: 0,
            nanos: 0,
            result: Ok(Bytes(vec![7; len])),
            output: Some(crate::output::CapturedOutput {
                stdout: b"last words".to_vec(),
                stderr: Vec::new(),
            }),
        };
        let reader = std::thread::spawn(move || {
            let mut b = b;
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        wire::write_frame(&mut w, &done(1, 10)).unwrap();
        wire::write_frame(&mut w, &done(2, LOG_CAP + 100)).unwrap();
        wire::write_frame(&mut w, &done(3, 10)).unwrap();
        drop(w); // the worker dies with reply 3 in its log
        let got = reader.join().unwrap();
        // The supervisor read what came whole: replies 1 and 2.
        let mut stream = &got[..];
        let mut buf = Vec::new();
        let mut received = 0u64;
        let mut ids = Vec::new();
        while let Ok(Some(FromWorker::Done { id, .. })) =
            wire::read_frame::<_, FromWorker>(&mut stream, 1 << 20, &mut buf)
        {
            received += 4 + buf.len() as u64;
            ids.push(id);
        }
        assert_eq!(ids, [1, 2]);
        let unsent = control.log_unsent(received);
        let mut log = &unsent[..];
        match wire::read_frame::<_, FromWorker>(&mut log, 1 << 20, &mut buf) {
            Ok(Some(FromWorker::Done { id: 3, .. })) => {}
            other => panic!("reply 3 is not in the log: {other:?}"),
        }
    }

    /// The low-latency mode (`ring.rs`): replies of every size, flushed
    /// through the ring or the socket at random moments, some while the
    /// reader sleeps; then the worker dies with replies still in its log.
    /// The reader gets every reply once, in order: from the ring and the
    /// socket up to the death, from the log after it.
    #[test]
    fn replies_through_the_ring_then_a_death_lose_and_repeat_nothing() {
        use crate::process::fdpass::FdStream;
        use crate::process::wire::Bytes;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        use std::time::Duration;
        for seed in 1..=4u64 {
            let mut next = crate::process::ring::seeded(seed);
            let (a, b) = UnixStream::pair().unwrap();
            let control = Control::new().unwrap();
            let consumed = Arc::new(AtomicU64::new(0));
            let progress = consumed.clone();
            // Reading the ring before the writer looks whether it may use it.
            let mut stream = FdStream::new(b);
            stream.also_read_ring(control.ring(Stream::Replies), Duration::from_micros(50));
            let reader = std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(stream);
                let (mut buf, mut received, mut ids, mut wakes) = (Vec::new(), 0u64, Vec::new(), 0);
                while let Some(frame) =
                    wire::read_frame::<_, FromWorker>(&mut r, 1 << 20, &mut buf).unwrap()
                {
                    received += 4 + buf.len() as u64;
                    match frame {
                        FromWorker::Done { id, result, .. } => {
                            let bytes = result.unwrap().0;
                            assert!(bytes.iter().all(|&x| x == id as u8), "reply {id} garbled");
                            ids.push(id);
                            progress.store(id + 1, SeqCst);
                        }
                        FromWorker::Wake => wakes += 1,
                        other => panic!("{other:?}"),
                    }
                }
                (received, ids, wakes)
            });
            let mut w = LogWriter::new(a);
            w.attach_log(&control).unwrap();
            w.use_ring();
            const REPLIES: u64 = 2000;
            for id in 0..REPLIES {
                let len = match next(50) {
                    0 => LOG_CAP + next(LOG_CAP as u64) as usize,
                    1..=5 => next(20_000) as usize,
                    _ => next(200) as usize,
                };
                let done = FromWorker::Done {
                    id,
                    shared: 0,
                    nanos: 0,
                    result: Ok(Bytes(vec![id as u8; len])),
                    output: None,
                };
                wire::write_frame(&mut w, &done).unwrap();
                // The last replies stay in the log: the worker dies then.
                if id + 5 >= REPLIES {
                    continue;
                }
                match next(5) {
                    0 => {}
                    1 => {
                        // Once the reader has read everything, long enough
                        // for it to fall asleep.
                        w.flush().unwrap();
                        let read_all = || consumed.load(SeqCst) == id + 1;
                        assert!(
                            crate::sync::spin_until(Duration::from_secs(60), read_all),
                            "seed {seed}: the reader is stuck before reply {id}"
                        );
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    _ => w.flush().unwrap(),
                }
            }
            drop(w); // dies with replies in its log
            let (received, mut ids, wakes) = reader.join().unwrap();
            let unsent = control.log_unsent(received);
            let (mut log, mut buf) = (&unsent[..], Vec::new());
            while let Some(FromWorker::Done { id, .. }) =
                wire::read_frame::<_, FromWorker>(&mut log, 1 << 20, &mut buf).unwrap()
            {
                ids.push(id);
            }
            assert_eq!(ids, (0..REPLIES).collect::<Vec<_>>(), "seed {seed}");
            assert!(wakes > 0, "seed {seed}: the reader never slept");
        }
    }

}
