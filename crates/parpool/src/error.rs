//! Errors: how a job can fail ([`JobError`]) and how building a pool can fail
//! ([`BuildError`]).

use std::error::Error;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a panic happened: file, line and column, as the panic reported them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Location {
    /// Source file, as the compiler named it.
    pub file: String,
    /// Line, starting at 1.
    pub line: u32,
    /// Column, starting at 1.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A panic caught inside a job: its message and, when known, its location.
///
/// The location is recorded by a panic hook that parpool installs (chained
/// to the previous hook) the first time a pool is built; it is `None` when
/// another hook replaced parpool's afterwards.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PanicInfo {
    /// The panic message (`"Box<dyn Any>"` when the payload was not a string).
    pub message: String,
    /// Where the panic was raised.
    pub location: Option<Location>,
    /// In a map over data in memory ([`ThreadPool::par`](crate::ThreadPool::par)),
    /// the index of the item whose call panicked.
    #[serde(default)]
    pub item: Option<u64>,
}

impl fmt::Display for PanicInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "'{}' at {loc}", self.message)?,
            None => write!(f, "'{}'", self.message)?,
        }
        match self.item {
            Some(i) => write!(f, " on item {i}"),
            None => Ok(()),
        }
    }
}

/// How a worker process ended when it took its job down with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ExitStatus {
    /// The process exited with this code.
    Code(i32),
    /// The process was killed by this signal number (e.g. 9 for `SIGKILL`,
    /// 11 for `SIGSEGV`, 6 for `SIGABRT`).
    Signal(i32),
    /// The process vanished and its status could not be collected.
    Unknown,
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
            ExitStatus::Unknown => f.write_str("an unknown status"),
        }
    }
}

/// Which side of a job a codec error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum CodecStage {
    /// Encoding the input in the parent.
    EncodeInput,
    /// Decoding the input in the worker.
    DecodeInput,
    /// Encoding the output in the worker.
    EncodeOutput,
    /// Decoding the output in the parent.
    DecodeOutput,
    /// A frame of the wire protocol itself.
    Frame,
}

impl fmt::Display for CodecStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodecStage::EncodeInput => "encoding the input",
            CodecStage::DecodeInput => "decoding the input",
            CodecStage::EncodeOutput => "encoding the output",
            CodecStage::DecodeOutput => "decoding the output",
            CodecStage::Frame => "reading a protocol frame",
        })
    }
}

/// A job's input or its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Payload {
    /// What the job was given.
    Input,
    /// What the job returned.
    Output,
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Payload::Input => "input",
            Payload::Output => "output",
        })
    }
}

/// Why a job did not produce its value.
///
/// Every pool resolves every job to either its value or one of these. Match
/// on the variant, or ask with the `is_*` predicates:
///
/// ```
/// use parpool::{JobError, ThreadPool};
///
/// let pool = ThreadPool::builder().workers(1).build()?;
/// let err = pool.spawn(|| -> u32 { panic!("bad input: {}", 7) }).join().unwrap_err();
/// assert!(err.is_panicked());
/// assert_eq!(err.panic_message(), Some("bad input: 7"));
/// # Ok::<(), parpool::BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum JobError {
    /// The job panicked; the message and location are kept.
    #[error(
        "the job panicked with {0}; the panic was caught and the pool carries on \
         (fix the panic, or handle this error)"
    )]
    Panicked(Box<PanicInfo>),

    /// The job returned an error whose type cannot cross a process
    /// boundary as itself (not a serde type: `anyhow::Error`, a
    /// `Box<dyn Error>`, a user's error enum): its message, type and chain
    /// of sources, kept in an [`ErrorReport`](crate::ErrorReport). A serde
    /// error type, and `std::io::Error`, come back as themselves instead,
    /// as the task's `Err`; so does every error on a thread pool.
    #[error(
        "the job returned an error: {} (its type, `{}`, is not a serde type, \
         so it came back from the worker as its message)",
        .0.full_message(), .0.type_name()
    )]
    Returned(Box<ErrorReport>),

    /// The job was cancelled, by [`JobHandle::cancel`](crate::JobHandle::cancel)
    /// or by [`shutdown_now`](crate::ThreadPool::shutdown_now), before it
    /// produced a value.
    #[error("the job was cancelled before it produced a value")]
    Cancelled,

    /// The job ran past its deadline. A thread job's cancel token was tripped;
    /// a process job's worker was killed.
    #[error(
        "the job ran past its timeout of {after:?} and was abandoned \
         (raise the timeout, or make the job check its cancel token)"
    )]
    TimedOut {
        /// The timeout that was exceeded.
        after: Duration,
    },

    /// The job was submitted after the pool had begun shutting down.
    #[error(
        "the job was submitted after the pool began shutting down, so it never ran \
         (submit before calling shutdown, or build a new pool)"
    )]
    Shutdown,

    /// The worker process running the job died (crash, `abort`, `exit`, a
    /// signal, or the out-of-memory killer). The pool replaced the worker.
    #[error(
        "the worker process running the job died with {status}{}; \
         the pool replaced it (look for a crash, exit or memory limit in the task)",
        .detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
    )]
    Crashed {
        /// How the worker ended.
        status: ExitStatus,
        /// What else is known: the last lines the worker wrote, or a hint such
        /// as "memory limit reached".
        detail: Option<String>,
    },

    /// The job's input or output could not be encoded or decoded.
    #[error(
        "{stage} failed: {message} (check that the task's Input and Output types \
         are the same in parent and worker and that they serialize)"
    )]
    Codec {
        /// Where it failed.
        stage: CodecStage,
        /// The codec's own message.
        message: String,
    },

    /// A worker was asked to run a task that is not registered under that name.
    #[error(
        "no task named `{name}` is registered in the worker \
         (register it with `parpool::task!` in the binary that runs the pool)"
    )]
    UnknownTask {
        /// The name that was asked for.
        name: String,
    },

    /// The job's encoded input or output was larger than the pool accepts.
    #[error(
        "the job's {what} is {size} bytes, over the limit of {limit} bytes \
         (raise the limit on the pool builder, or pass the data through shared memory)"
    )]
    TooLarge {
        /// Which payload was too large.
        what: Payload,
        /// Its encoded size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },

    /// The job's input or output holds an object that lives in one
    /// machine's shared memory (an [`ipc`](crate::ipc) object), and the
    /// pool's workers run on other machines. An input is checked at
    /// submit, so the job never ran; an output is checked where the job
    /// ran, so it ran, and its value could not be sent back.
    #[error(
        "the job's {what} holds a {object}, which lives in this machine's shared memory \
         and cannot reach a worker on another machine (send the data by value: a Vec, \
         a struct, or a SharedBytes, which crosses as a copy)"
    )]
    Unsendable {
        /// Whether the input or the output held it.
        what: Payload,
        /// The kind of object (`SharedMem`, `Queue`, `Mutex`, ...).
        object: String,
    },

    /// No worker could be started to run the job, for as long as the
    /// pool's `start_timeout`: the job never started. (The operating
    /// system refused new processes or descriptors: see the detail; a pool
    /// of `n` workers holds about `3n` descriptors.) The pool keeps trying
    /// to start workers; later jobs run once it can.
    #[error(
        "the job never started: {detail} (raise the process or descriptor limit, \
         `ulimit -u` / `ulimit -n`, or use fewer workers)"
    )]
    NoWorker {
        /// Why no worker could be started, and for how long.
        detail: String,
    },

    /// The worker for the job was lost as a whole, not just one process:
    /// an MPI rank that stopped answering (its node went down or it was
    /// killed), or every rank being gone. The pool no longer sends it jobs.
    /// The detail says whether the job may have run.
    #[error(
        "the job's worker was lost: {detail} (set retries on the pool to run such jobs \
         again elsewhere, and check that node)"
    )]
    Lost {
        /// Which worker, and how it was found lost.
        detail: String,
    },
}

impl JobError {
    /// The job panicked.
    pub fn is_panicked(&self) -> bool {
        matches!(self, JobError::Panicked(_))
    }
    /// The job returned an error that came back as its report.
    pub fn is_returned(&self) -> bool {
        matches!(self, JobError::Returned(_))
    }
    /// The report of the error the job returned, if it came back as one.
    pub fn returned(&self) -> Option<&ErrorReport> {
        match self {
            JobError::Returned(r) => Some(r),
            _ => None,
        }
    }
    /// The job was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JobError::Cancelled)
    }
    /// The job ran past its timeout.
    pub fn is_timed_out(&self) -> bool {
        matches!(self, JobError::TimedOut { .. })
    }
    /// The job was submitted after shutdown began.
    pub fn is_shutdown(&self) -> bool {
        matches!(self, JobError::Shutdown)
    }
    /// The worker process running the job died.
    pub fn is_crashed(&self) -> bool {
        matches!(self, JobError::Crashed { .. })
    }
    /// Encoding or decoding the input or output failed.
    pub fn is_codec(&self) -> bool {
        matches!(self, JobError::Codec { .. })
    }
    /// The task name is not registered in the worker.
    pub fn is_unknown_task(&self) -> bool {
        matches!(self, JobError::UnknownTask { .. })
    }
    /// The input or output was over the size limit.
    pub fn is_too_large(&self) -> bool {
        matches!(self, JobError::TooLarge { .. })
    }
    /// The input or output held an object that cannot leave this machine.
    pub fn is_unsendable(&self) -> bool {
        matches!(self, JobError::Unsendable { .. })
    }
    /// The worker running the job was lost as a whole (an MPI rank).
    pub fn is_lost(&self) -> bool {
        matches!(self, JobError::Lost { .. })
    }
    /// No worker could be started to run the job; it never started.
    pub fn is_no_worker(&self) -> bool {
        matches!(self, JobError::NoWorker { .. })
    }

    /// A [`JobError::Panicked`] from a caught panic.
    pub(crate) fn panicked(info: PanicInfo) -> Self {
        JobError::Panicked(Box::new(info))
    }

    /// The panic message, if the job panicked.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            JobError::Panicked(p) => Some(&p.message),
            _ => None,
        }
    }

    /// The panic location, if the job panicked and it is known.
    pub fn panic_location(&self) -> Option<&Location> {
        match self {
            JobError::Panicked(p) => p.location.as_ref(),
            _ => None,
        }
    }
}

impl BuildError {
    /// An [`InvalidSetting`](BuildError::InvalidSetting) error.
    pub(crate) fn invalid(setting: &'static str, reason: &str) -> Self {
        BuildError::InvalidSetting {
            setting,
            reason: reason.to_owned(),
        }
    }

    /// The worker count a builder asked for, or the machine's available
    /// parallelism; zero is an error.
    pub(crate) fn worker_count(asked: Option<usize>) -> Result<usize, BuildError> {
        match asked {
            Some(0) => Err(BuildError::invalid(
                "workers",
                "a pool needs at least one worker",
            )),
            Some(n) => Ok(n),
            None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        }
    }
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A builder setting is out of range.
    #[error("invalid pool setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The builder method concerned.
        setting: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// A worker could not be started: the operating system refused a
    /// thread or process, or a worker process ended or stayed silent
    /// before it was ready (the reason says which, and what to do).
    #[error("could not start worker {index}: {source}")]
    Spawn {
        /// Which worker.
        index: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The initializer failed in a worker (it panicked, or, in a process
    /// pool, its task is unknown or its input did not decode); the pool was
    /// torn down.
    #[error("the initializer failed in worker {index}: {error}; no pool was built")]
    Initializer {
        /// Which worker.
        index: usize,
        /// What went wrong.
        error: JobError,
    },
    /// The pool's workers on other machines could not be started or
    /// reached (an MPI pool: no launcher and no spawn, MPI missing or
    /// refusing, a rank that could not start its workers).
    #[error("could not start the pool's remote workers: {reason}")]
    Remote {
        /// What went wrong, and what to do about it.
        reason: String,
    },
    /// The pool asked for is not available in this build: process pools
    /// need Linux and the `process` feature.
    #[error("{what} are not available here: they need {needs}; use a thread pool instead")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
        /// What it needs.
        needs: &'static str,
    },
}

/// An error a task returned, as it crossed from a worker process: the
/// error's message, its type and the chain of errors that caused it.
///
/// `Display` shows the error's own message, as for any error; its causes
/// are its [`source`](Error::source) chain, each an `ErrorReport` too
/// ([`chain`](ErrorReport::chain) walks them).
/// [`JobError::Returned`](crate::JobError::Returned)'s `Display` shows the
/// whole chain.
///
/// ```
/// use parpool::ErrorReport;
///
/// let err = std::io::Error::other("disk on fire");
/// let report = ErrorReport::of(&err);
/// assert_eq!(report.to_string(), "disk on fire");
/// assert_eq!(report.type_name(), "std::io::error::Error");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    message: String,
    pub(crate) type_name: String,
    source: Option<Box<ErrorReport>>,
}

impl ErrorReport {
    /// The report of `error` and its sources.
    pub fn of<E: Error + ?Sized>(error: &E) -> Self {
        let mut report = ErrorReport::message_only(std::any::type_name::<E>(), error.to_string());
        let mut sources = Vec::new();
        let mut next = error.source();
        while let Some(e) = next {
            sources.push(ErrorReport::message_only("", e.to_string()));
            next = e.source();
        }
        report.source = sources.into_iter().rev().fold(None, |inner, mut s| {
            s.source = inner;
            Some(Box::new(s))
        });
        report
    }

    /// A report with a message and no sources.
    pub(crate) fn message_only(type_name: &str, message: String) -> Self {
        ErrorReport {
            message,
            type_name: type_name.to_owned(),
            source: None,
        }
    }

    /// The error's own message (its `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The Rust type of the error the task returned, as
    /// [`std::any::type_name`] wrote it (`""` for a source, whose type a
    /// `&dyn Error` does not tell).
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// This report and then each of its causes, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &ErrorReport> {
        std::iter::successors(Some(self), |r| r.source.as_deref())
    }

    /// The messages of the whole chain, joined with `": "` (as `anyhow`'s
    /// `{:#}` does).
    pub fn full_message(&self) -> String {
        let messages: Vec<&str> = self.chain().map(|r| r.message.as_str()).collect();
        messages.join(": ")
    }
}

impl fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for ErrorReport {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn Error + 'static))
    }
}
