//! Starting a worker process: the command, the handshake, the control
//! block, and the initializer.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use super::super::capture::{self, CapturedOutput};
use super::super::control::Control;
use super::super::fdpass::FdStream;
use super::super::wire::{self, FromWorker, ToWorker};
use super::super::{Config, WorkerOutput, os};
use super::emit_log;
use crate::error::{CodecStage, JobError};
use crate::process::registry::Sharing;
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

/// A live worker process and the two ends of its socket.
pub(super) struct Conn {
    pub(super) child: Child,
    pub(super) reader: BufReader<FdStream>,
    pub(super) writer: BufWriter<UnixStream>,
    pub(super) pid: u32,
    /// Readable once the worker has exited (reaped or not); handed to the
    /// slot's control block when the worker is attached.
    pub(super) pidfd: Option<OwnedFd>,
    pub(super) jobs_done: u64,
    /// The sequence number of the next request (claims, see `Control`).
    pub(super) next_seq: u64,
    /// Our descriptors of the worker's capture files (stdout, stderr).
    capture: [Option<File>; 2],
    /// Claims, the running job and item, shared with the worker.
    pub(super) control: Control,
    /// The worker's chunk journal, which we read only after it died.
    pub(super) journal: File,
}

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
        let (ours, theirs) = UnixStream::pair()?;
        let capture = [capture_file(config.stdout)?, capture_file(config.stderr)?];
        let mut cmd = command(config, &capture)?;
        cmd.stdin(Stdio::from(OwnedFd::from(theirs)));
        let mut child = cmd.spawn()?;
        // Our copy of the worker's end must be closed, or its death would
        // never show as end-of-file here.
        drop(cmd);
        let pid = child.id();
        // Made while the worker starts up, before waiting for its hello.
        let started = Control::new()
            .and_then(|control| Ok((control, parpool_ipc::transfer::Journal::create_file()?)))
            .and_then(|(control, journal)| {
                let (reader, writer) = handshake(&ours, config)?;
                Ok((reader, writer, control, journal))
            });
        let (reader, writer, control, journal) = match started {
            Ok(parts) => parts,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(StartError::Io(io::Error::other(format!(
                    "the worker process did not start ({e}; exit status {status:?}); if this \
                     binary's main runs before parpool's constructor, call parpool::init() \
                     first thing in main"
                ))));
            }
        };
        let mut conn = Conn {
            pidfd: os::pidfd(pid).ok(),
            child,
            reader,
            writer,
            pid,
            jobs_done: 0,
            next_seq: 1,
            capture,
            control,
            journal,
        };
        if let Err(e) = conn.send_control() {
            let _ = conn.child.kill();
            let _ = conn.child.wait();
            return Err(e.into());
        }
        if let Err(e) = conn.initialize(config) {
            let _ = conn.child.kill();
            let _ = conn.child.wait();
            return Err(e);
        }
        ours.set_read_timeout(None)?;
        Ok(conn)
    }

    /// Sends the control block and the chunk journal, before any job.
    fn send_control(&mut self) -> io::Result<()> {
        let encoded = crate::codec::encode(CodecStage::EncodeInput, self.control.mem())
            .map_err(io::Error::other)?;
        let mut shared = encoded.shared;
        let log: SharedObject = std::sync::Arc::new(JournalFd(self.journal.try_clone()?));
        shared.push(log);
        let msg = ToWorker::Control {
            shared: shared_count(&shared)?,
            input: encoded.bytes,
        };
        wire::write_frame_with_fds(&mut self.writer, &msg, &shared)?;
        self.writer.flush()
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
        let mut reply = wire::write_frame_with_fds(&mut self.writer, &init, &input.shared)
            .and_then(|()| self.writer.flush())
            .map_err(wire::FrameError::Io)
            .and_then(|()| {
                wire::read_frame::<_, FromWorker>(&mut self.reader, 1 << 20, &mut Vec::new())
            });
        // The initializer may log before it answers.
        while let Ok(Some(FromWorker::Log {
            job,
            level,
            target,
            message,
        })) = &reply
        {
            emit_log(self.pid, *job, *level, target, message);
            reply = wire::read_frame::<_, FromWorker>(&mut self.reader, 1 << 20, &mut Vec::new());
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
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(format!("{} worker", config.name))
        .env(os::WORKER_ENV, "1")
        .env(os::PARENT_ENV, os::pid().to_string())
        .env(os::MAX_FRAME_ENV, (config.max_payload + 4096).to_string())
        .env(os::MAX_OUTPUT_ENV, config.max_payload.to_string());
    if config.sharing == Sharing::ByValue {
        cmd.env(os::BY_VALUE_ENV, "1");
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
    if let Some(bytes) = config.memory_limit {
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

/// Waits (at most `start_timeout`) for the worker's hello.
fn handshake(
    ours: &UnixStream,
    config: &Config,
) -> io::Result<(BufReader<FdStream>, BufWriter<UnixStream>)> {
    ours.set_read_timeout(Some(config.start_timeout))?;
    let mut reader = BufReader::with_capacity(64 * 1024, FdStream::new(ours.try_clone()?));
    match wire::read_frame::<_, FromWorker>(&mut reader, 1 << 16, &mut Vec::new()) {
        Ok(Some(FromWorker::Hello { .. })) => {}
        other => return Err(io::Error::other(format!("it said {other:?}"))),
    }
    let writer = BufWriter::with_capacity(64 * 1024, ours.try_clone()?);
    Ok((reader, writer))
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
