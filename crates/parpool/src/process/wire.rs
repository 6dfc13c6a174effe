//! The wire protocol between a pool and its worker processes.
//!
//! Each frame is a little-endian `u32` length followed by that many bytes of
//! a postcard-encoded message. Both sides buffer: a batch of requests or of
//! replies leaves in one `write`. A frame over the size limit, or one that
//! does not decode, is a [`FrameError`], never a panic.

use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::capture::CapturedOutput;
use super::fdpass::SendFds;
use crate::error::JobError;
use parpool_ipc::transfer::{ObjectId, SharedObject};

/// Largest frame either side accepts unless configured otherwise.
pub(crate) const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// The protocol a worker speaks, said in its hello: parpool's version, so
/// that a worker command built against another parpool is refused with a
/// reason instead of misread.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parent to worker.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) enum ToWorker {
    /// Run task `task` on `input`, once the request's claim (`seq`, see
    /// [`Control`](super::control::Control)) is won; a revoked request is
    /// skipped without a reply. `items`: whether the input is one input
    /// or a map chunk (a `Vec` of inputs) and which of its items to run.
    /// `shared`: how many descriptors (shared segments) came with it.
    Run {
        id: u64,
        seq: u64,
        task: String,
        items: Items,
        shared: u32,
        input: Vec<u8>,
    },
    /// Finish and exit.
    Exit,
    /// Run `task` as this worker's initializer; reply `Done { id: 0 }`.
    Init {
        task: String,
        shared: u32,
        #[serde(with = "serde_bytes")]
        input: Vec<u8>,
    },
    /// Sent once, before any job: `input` encodes the worker's
    /// [`Control`](super::control::Control) block, and the last of the
    /// `shared` descriptors is its chunk journal ([`Journal`](parpool_ipc::transfer::Journal)). No reply.
    Control {
        shared: u32,
        #[serde(with = "serde_bytes")]
        input: Vec<u8>,
    },
    /// The parent dropped its last handle to these shared objects: stop
    /// keeping them mapped ([`Kept`](parpool_ipc::transfer::Kept)). No reply.
    Release { ids: Vec<ObjectId> },
    /// Nothing to do: in the low-latency mode, wakes a worker that sleeps
    /// on the socket while its requests come through shared memory
    /// (`ring.rs`).
    Wake,
}

/// [`ToWorker::Run`] by reference, for sending without copying the input.
/// Encodes exactly as [`ToWorker`] does (same variant index and fields).
#[derive(Debug, Serialize)]
pub(crate) enum ToWorkerRef<'a> {
    Run {
        id: u64,
        seq: u64,
        task: &'a str,
        items: &'a Items,
        shared: u32,
        #[serde(with = "serde_bytes")]
        input: &'a [u8],
    },
}

/// What a request's input holds, and what of it to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Items {
    /// One input (a job of its own).
    One,
    /// A map chunk: a `Vec` of inputs, all of them to run.
    All,
    /// A map chunk of which only these positions are left to run (after a
    /// crash), in order.
    Only(Vec<u32>),
}

/// Worker to parent.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) enum FromWorker {
    /// The worker is ready, and speaks this version's protocol.
    Hello { pid: u32, version: String },
    /// A job's outcome: its encoded output, or why there is none.
    /// `shared`: how many descriptors (shared segments) came with it.
    Done {
        id: u64,
        shared: u32,
        /// How long a map chunk ran, in nanoseconds, as the worker measured
        /// it (0 for a single job: nothing uses it).
        nanos: u64,
        result: Result<Bytes, JobError>,
        /// What the job wrote, when the pool captures output.
        output: Option<CapturedOutput>,
    },
    /// A request that was cancelled before the worker claimed it: it did
    /// not run (see [`Control`](super::control::Control)).
    Skipped { id: u64 },
    /// A `tracing` event emitted in the worker.
    Log {
        job: Option<u64>,
        level: LogLevel,
        target: String,
        message: String,
    },
    /// Nothing to do: in the low-latency mode, wakes a supervisor that
    /// sleeps on the socket while replies come through shared memory
    /// (`ring.rs`).
    Wake,
}

/// An encoded input or output: sent as one byte string (a plain `Vec<u8>`
/// would be encoded byte by byte).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Bytes(#[serde(with = "serde_bytes")] pub(crate) Vec<u8>);

/// A `tracing` level on the wire.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("frame does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

/// Appends `msg` as one frame to `w` (which should be buffered). The
/// message is measured first; a large one is encoded straight into `w`
/// (no intermediate copy) and `w` is flushed after it (postcard's writer
/// does), a small one into a vector written in one call. Either way a
/// worker's reply log (`reply_log.rs`) never holds part of a frame whose
/// rest went to the socket: a large frame leaves whole.
pub(crate) fn write_frame<W: Write, M: Serialize>(w: &mut W, msg: &M) -> io::Result<()> {
    const STREAM_ABOVE: usize = 64 * 1024;
    let size = postcard::serialize_with_flavor::<_, postcard::ser_flavors::Size, usize>(
        msg,
        Default::default(),
    )
    .map_err(io::Error::other)?;
    let len = u32::try_from(size).map_err(|_| io::Error::other("frame larger than 4 GiB"))?;
    if size > STREAM_ABOVE {
        w.write_all(&len.to_le_bytes())?;
        postcard::to_io(msg, w).map_err(io::Error::other)?;
    } else {
        let mut frame = Vec::with_capacity(4 + size);
        frame.extend_from_slice(&len.to_le_bytes());
        let frame = postcard::to_extend(msg, frame).map_err(io::Error::other)?;
        w.write_all(&frame)?;
    }
    Ok(())
}

/// Like [`write_frame`], with the descriptors of `shared` attached.
pub(crate) fn write_frame_with_fds<W: SendFds, M: Serialize>(
    w: &mut W,
    msg: &M,
    shared: &[SharedObject],
) -> io::Result<()> {
    if shared.is_empty() {
        return write_frame(w, msg);
    }
    let mut frame = Vec::new();
    write_frame(&mut frame, msg)?;
    let fds: Vec<BorrowedFd<'_>> = shared.iter().map(|s| s.share_fd()).collect();
    w.write_with_fds(&frame, &fds)
}

/// Reads one frame. `Ok(None)`: the peer closed the connection cleanly
/// between frames.
pub(crate) fn read_frame<R: Read, M: DeserializeOwned>(
    r: &mut R,
    limit: usize,
    buf: &mut Vec<u8>,
) -> Result<Option<M>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = u32::from_le_bytes(len) as usize;
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    buf.clear();
    buf.resize(size, 0);
    r.read_exact(buf)?;
    Ok(Some(postcard::from_bytes(buf)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip() {
        let msgs = vec![
            FromWorker::Hello {
                pid: 7,
                version: VERSION.to_owned(),
            },
            FromWorker::Done {
                id: 1,
                shared: 0,
                nanos: 5,
                result: Ok(Bytes(vec![1, 2, 3])),
                output: None,
            },
            FromWorker::Done {
                id: 2,
                shared: 0,
                nanos: 0,
                result: Err(JobError::Cancelled),
                output: Some(CapturedOutput {
                    stdout: b"out".to_vec(),
                    stderr: Vec::new(),
                }),
            },
            FromWorker::Log {
                job: Some(3),
                level: LogLevel::Warn,
                target: "t".into(),
                message: "m".into(),
            },
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            write_frame(&mut bytes, m).unwrap();
        }
        let mut r = &bytes[..];
        let mut buf = Vec::new();
        for m in &msgs {
            let got: FromWorker = read_frame(&mut r, 1 << 20, &mut buf).unwrap().unwrap();
            assert_eq!(&got, m);
        }
        assert!(
            read_frame::<_, FromWorker>(&mut r, 1 << 20, &mut buf)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_borrowed_request_encodes_like_an_owned_one() {
        let owned = ToWorker::Run {
            id: 3,
            seq: 4,
            task: "a::b".into(),
            items: Items::Only(vec![1, 5]),
            shared: 2,
            input: vec![9; 300],
        };
        let borrowed = ToWorkerRef::Run {
            id: 3,
            seq: 4,
            task: "a::b",
            items: &Items::Only(vec![1, 5]),
            shared: 2,
            input: &[9; 300],
        };
        assert_eq!(
            postcard::to_allocvec(&owned).unwrap(),
            postcard::to_allocvec(&borrowed).unwrap()
        );
    }

    #[test]
    fn oversized_frame_is_refused_before_allocating() {
        let bytes = u32::MAX.to_le_bytes();
        let err = read_frame::<_, FromWorker>(&mut &bytes[..], 1024, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { limit: 1024, .. }),
            "{err}"
        );
    }

    #[test]
    fn truncated_frame_is_an_error() {
        let mut bytes = Vec::new();
        write_frame(
            &mut bytes,
            &FromWorker::Hello {
                pid: 1,
                version: VERSION.to_owned(),
            },
        )
        .unwrap();
        bytes.pop();
        let err = read_frame::<_, FromWorker>(&mut &bytes[..], 1024, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, FrameError::Io(_)), "{err}");
    }

    proptest! {
        #[test]
        fn garbage_never_panics_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut r = &bytes[..];
            let mut buf = Vec::new();
            // Keep reading until the garbage runs out or is rejected.
            for _ in 0..64 {
                match read_frame::<_, FromWorker>(&mut r, 4096, &mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
            let mut r = &bytes[..];
            for _ in 0..64 {
                match read_frame::<_, ToWorker>(&mut r, 4096, &mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
