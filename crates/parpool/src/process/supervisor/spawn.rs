//! Starting a worker process: the command, the handshake, the control
//! block, and the initializer.

use std::fs::File;
use std::io::{self, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::emit_log;
use super::outbox::{Flushed, Outbox};
use crate::error::{CodecStage, JobError};
use crate::process::capture::{self, CapturedOutput};
use crate::process::control::Control;
use crate::process::ring::Stream;
use crate::process::fdpass::FdStream;
use crate::process::registry::Sharing;
use crate::process::wire::{self, FromWorker, ToWorker};
use crate::process::{Config, WorkerOutput, os};
use parpool_ipc::transfer::{ShareFd, SharedObject};

/// Why a worker could not be started.
#[derive(Debug)]
pub(super) enum StartError {
    /// The process could not be started, or did not say hello.
    Io(io::Error),
    /// Its initializer failed.
    Init(JobError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Io(e) => write!(f, "{e}"),
            StartError::Init(e) => write!(f, "its initializer failed: {e}"),
        }
    }
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Io(e)
    }
}

/// A live worker process and our end of its socket.
///
/// The parent holds three descriptors per worker: the socket, the control
/// block and the chunk journal (plus one per captured stream). A pool of
/// `n` workers needs `3n` descriptors beyond what the program holds, and
/// a few more while a replacement starts.
pub(super) struct Conn {
    pub(super) child: Child,
    /// The socket, read through here; written through `outbox`.
    pub(super) reader: BufReader<FdStream>,
    pub(super) outbox: Outbox,
    pub(super) pid: u32,
    /// Bytes of whole frames read from the socket (`reply_log.rs`).
    pub(super) received: u64,
    pub(super) jobs_done: u64,
    /// The sequence number of the next request (claims, see `Control`).
    pub(super) next_seq: u64,
    /// Our descriptors of the worker's capture files (stdout, stderr).
    capture: [Option<File>; 2],
    /// Claims, shared with the worker.
    pub(super) control: Control,
    /// The worker's chunk journal, which we read only after it died.
    pub(super) journal: File,
    /// In the low-latency mode, until requests go through the ring.
    ring_pending: bool,
}

/// Held while a worker process is started (see [`Conn::spawn`]).
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The chunk journal's descriptor, sent to the worker with its control block.
struct JournalFd(File);

impl ShareFd for JournalFd {
    fn share_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Conn {
    /// Starts a worker and waits for it to say hello, hands it its control
    /// block, and runs the pool's initializer in it.
    pub(super) fn spawn(config: &Config) -> Result<Conn, StartError> {
        let (ours, capture, mut child) = {
            // One worker at a time through the part that holds descriptors
            // only while it lasts (the worker's end of the socket, the
            // pipe that reports a failed exec): a pool's workers start
            // together, and their passing needs must not add up against
            // the descriptor limit.
            let _one_at_a_time = crate::sync::lock(&STARTING);
            let (ours, theirs) = UnixStream::pair()?;
            let capture = [capture_file(config.stdout)?, capture_file(config.stderr)?];
            let mut cmd = command(config, &capture)?;
            cmd.stdin(Stdio::from(OwnedFd::from(theirs)));
            let child = cmd.spawn()?;
            // Our copy of the worker's end must be closed, or its death
            // would never show as end-of-file here.
            drop(cmd);
            (ours, capture, child)
        };
        let pid = child.id();
        // Made while the worker starts up, before waiting for its hello.
        let started = Control::new()
            .and_then(|control| Ok((control, parpool_ipc::transfer::Journal::create_file()?)))
            .and_then(|(control, journal)| {
                let (reader, received) = handshake(ours, config)?;
                Ok((reader, received, control, journal))
            });
        let (reader, received, control, journal) = match started {
            Ok(parts) => parts,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                let hint = match &config.worker_command {
                    Some(command) => format!(
                        "the worker command {:?} must call parpool::serve_worker() and know \
                         the pool's tasks",
                        command.program
                    ),
                    None => "if this binary's main runs before parpool's constructor, call \
                             parpool::init() first thing in main"
                        .to_owned(),
                };
                return Err(StartError::Io(io::Error::other(format!(
                    "the worker process did not start ({e}; exit status {status:?}); {hint}"
                ))));
            }
        };
        let mut conn = Conn {
            child,
            reader,
            outbox: Outbox::default(),
            pid,
            received,
            jobs_done: 0,
            next_seq: 1,
            capture,
            control,
            journal,
            ring_pending: false,
        };
        if let Err(e) = conn.send_control(config) {
            let _ = conn.child.kill();
            let _ = conn.child.wait();
            return Err(e.into());
        }
        if let Err(e) = conn.initialize(config) {
            let _ = conn.child.kill();
            let _ = conn.child.wait();
            return Err(e);
        }
        conn.reader.get_ref().socket().set_read_timeout(None)?;
        if !config.spin.is_zero() {
            // The rings are used once their readers say they read them
            // (`ring.rs`): this one now, the worker's once it has its
            // control block.
            let ring = conn.control.ring(Stream::Replies);
            conn.reader.get_mut().also_read_ring(ring, config.spin);
            conn.ring_pending = true;
        }
        Ok(conn)
    }

    /// Sends what the outbox holds, as far as the socket takes it now.
    pub(super) fn flush(&mut self) -> io::Result<Flushed> {
        if self.ring_pending {
            let ring = self.control.ring(Stream::Requests);
            if ring.reader_ready() {
                self.ring_pending = false;
                self.outbox.use_ring(ring);
            }
        }
        let flushed = self.outbox.flush(self.reader.get_ref().as_fd());
        self.control.set_requests_sent(self.outbox.sent());
        flushed
    }

    /// Sends all the outbox holds, to a worker that is reading, waiting
    /// at most `patience`.
    pub(super) fn flush_all(&mut self, patience: Duration) -> io::Result<()> {
        let flushed = self
            .outbox
            .flush_all(self.reader.get_ref().as_fd(), patience);
        self.control.set_requests_sent(self.outbox.sent());
        flushed
    }

    /// Sends the control block and the chunk journal, before any job.
    fn send_control(&mut self, config: &Config) -> io::Result<()> {
        let encoded = crate::codec::encode(CodecStage::EncodeInput, self.control.mem())
            .map_err(io::Error::other)?;
        let mut shared = encoded.shared;
        let log: SharedObject = std::sync::Arc::new(JournalFd(self.journal.try_clone()?));
        shared.push(log);
        let msg = ToWorker::Control {
            shared: shared_count(&shared)?,
            input: encoded.bytes,
        };
        self.outbox.push_with_fds(&msg, &shared)?;
        self.flush_all(config.start_timeout)
    }

    /// Runs the pool's initializer, if it has one, and waits for its end.
    fn initialize(&mut self, config: &Config) -> Result<(), StartError> {
        let Some((task, Ok(input))) = &config.initializer else {
            return Ok(());
        };
        let init = ToWorker::Init {
            task: (*task).to_owned(),
            shared: shared_count(&input.shared)?,
            input: input.bytes.clone(),
        };
        let mut reply = self
            .outbox
            .push_with_fds(&init, &input.shared)
            .and_then(|()| self.flush_all(config.start_timeout))
            .map_err(wire::FrameError::Io)
            .and_then(|()| self.read_counted());
        // The initializer may log before it answers.
        while let Ok(Some(FromWorker::Log {
            job,
            level,
            target,
            message,
        })) = &reply
        {
            emit_log(self.pid, *job, *level, target, message);
            reply = self.read_counted();
        }
        match reply {
            Ok(Some(FromWorker::Done {
                id: 0,
                result,
                output,
                ..
            })) => {
                if let Some(output) = output {
                    output.pass_on();
                }
                result.map(drop).map_err(StartError::Init)
            }
            other => Err(StartError::Io(io::Error::other(format!(
                "the worker did not answer its initializer: {other:?}"
            )))),
        }
    }

    /// Reads one frame while the worker starts, counting its bytes.
    fn read_counted(&mut self) -> Result<Option<FromWorker>, wire::FrameError> {
        let mut buf = Vec::new();
        let frame = wire::read_frame::<_, FromWorker>(&mut self.reader, 1 << 20, &mut buf)?;
        self.received += 4 + buf.len() as u64;
        Ok(frame)
    }

    /// What the worker's job wrote before the worker died.
    pub(super) fn leftover_output(&self) -> Option<CapturedOutput> {
        if self.capture.iter().all(Option::is_none) {
            return None;
        }
        let take = |file: &Option<File>| {
            file.as_ref()
                .and_then(|f| capture::drain(f.as_fd(), u64::MAX).ok())
                .unwrap_or_default()
        };
        Some(CapturedOutput {
            stdout: take(&self.capture[0]),
            stderr: take(&self.capture[1]),
        })
    }
}

/// The worker's command line and environment.
fn command(config: &Config, capture: &[Option<File>; 2]) -> io::Result<Command> {
    let mut cmd = match &config.worker_command {
        // The command serves through `serve_worker()`, not the
        // constructor: it must not be marked, and keeps its own argv[0]
        // (an interpreter finds its installation from it).
        Some(command) => {
            let mut cmd = Command::new(&command.program);
            cmd.args(&command.args).env_remove(os::WORKER_ENV);
            cmd
        }
        None => {
            let mut cmd = Command::new("/proc/self/exe");
            cmd.arg0(format!("{} worker", config.name))
                .env(os::WORKER_ENV, "1");
            cmd
        }
    };
    // What a pool this process belongs to set (it runs in a worker) is
    // not this pool's: only what is set below applies.
    for inherited in [
        os::MEMORY_ENV,
        os::BY_VALUE_ENV,
        os::SPIN_ENV,
        capture::CAPTURE_ENV,
    ] {
        cmd.env_remove(inherited);
    }
    cmd.env(os::PARENT_ENV, os::pid().to_string())
        .env(os::MAX_FRAME_ENV, (config.limits.max_payload + 4096).to_string())
        .env(os::MAX_OUTPUT_ENV, config.limits.max_payload.to_string());
    if config.sharing == Sharing::ByValue {
        cmd.env(os::BY_VALUE_ENV, "1");
    }
    if !config.spin.is_zero() {
        cmd.env(os::SPIN_ENV, config.spin.as_nanos().to_string());
    }
    cmd.stdout(stdio(config.stdout, &capture[0])?)
        .stderr(stdio(config.stderr, &capture[1])?);
    let which: String = capture
        .iter()
        .zip(["1", "2"])
        .filter_map(|(file, n)| file.as_ref().map(|_| n))
        .collect();
    if !which.is_empty() {
        cmd.env(capture::CAPTURE_ENV, which);
    }
    if let Some(bytes) = config.limits.memory_limit {
        cmd.env(os::MEMORY_ENV, bytes.to_string());
    }
    for (k, v) in &config.env {
        cmd.env(k, v);
    }
    if let Some(dir) = &config.current_dir {
        cmd.current_dir(dir);
    }
    Ok(cmd)
}

/// Waits (at most `start_timeout`) for the worker's hello; returns the
/// socket's reader and the bytes read.
fn handshake(ours: UnixStream, config: &Config) -> io::Result<(BufReader<FdStream>, u64)> {
    ours.set_read_timeout(Some(config.start_timeout))?;
    let mut reader = BufReader::with_capacity(64 * 1024, FdStream::new(ours));
    let mut buf = Vec::new();
    match wire::read_frame::<_, FromWorker>(&mut reader, 1 << 16, &mut buf) {
        Ok(Some(FromWorker::Hello { version, .. })) if version == wire::VERSION => {
            Ok((reader, 4 + buf.len() as u64))
        }
        Ok(Some(FromWorker::Hello { version, .. })) => Err(io::Error::other(format!(
            "it runs parpool {version} and this pool parpool {}: build the worker against \
             the same parpool",
            wire::VERSION
        ))),
        Ok(Some(other)) => Err(io::Error::other(format!(
            "it said {other:?} before hello"
        ))),
        Ok(None) => Err(io::Error::other("it ended without saying hello")),
        Err(wire::FrameError::Io(e))
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
        {
            Err(io::Error::other(format!(
                "it did not say hello within the start timeout ({:?})",
                config.start_timeout
            )))
        }
        Err(e) => Err(io::Error::other(format!("its hello did not arrive: {e}"))),
    }
}

fn capture_file(o: WorkerOutput) -> io::Result<Option<File>> {
    match o {
        WorkerOutput::Capture => capture::create().map(Some),
        WorkerOutput::Inherit | WorkerOutput::Null => Ok(None),
    }
}

fn stdio(o: WorkerOutput, capture: &Option<File>) -> io::Result<Stdio> {
    Ok(match (o, capture) {
        (WorkerOutput::Capture, Some(file)) => Stdio::from(file.try_clone()?),
        (WorkerOutput::Null, _) => Stdio::null(),
        _ => Stdio::inherit(),
    })
}

pub(super) fn shared_count(shared: &[SharedObject]) -> io::Result<u32> {
    u32::try_from(shared.len()).map_err(|_| io::Error::other("too many shared segments"))
}
