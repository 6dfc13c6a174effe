//! The messages between rank 0 and the serving ranks: postcard, one MPI
//! message each, on one tag. Jobs and results travel in batches: one
//! message carries every job rank 0 has for a rank, or every result a rank
//! has ready.

use parpool::__private::WorkerLimits;
use parpool::JobError;
use serde::{Deserialize, Serialize};

/// The MPI tag of every parpool message.
pub(crate) const TAG: i32 = 0x7061;

/// How a serving rank sets up its local process pool.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Settings {
    /// Worker processes per rank (`None`: the node's available cores).
    pub(crate) workers: Option<u32>,
    /// What the local pool's builder sets through the same methods.
    pub(crate) limits: WorkerLimits,
    /// Discard the workers' stdout/stderr instead of passing it on.
    pub(crate) quiet: bool,
    /// How often the rank says it is alive, in nanoseconds.
    pub(crate) heartbeat_nanos: u64,
    /// How long the rank's MPI thread and its local pool poll before they
    /// sleep, in nanoseconds (`MpiPoolBuilder::spin`; 0: off).
    pub(crate) spin_nanos: u64,
    /// The most verbose `tracing` level rank 0 wants (see
    /// [`log::wanted_level`](crate::log::wanted_level)).
    pub(crate) log_level: u8,
}

/// What a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// One input, one output.
    Single,
    /// A `map` chunk of this many inputs (the input is their `Vec`).
    Chunk(u32),
}

/// One job, as rank 0 sends it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JobMsg<'a> {
    pub(crate) id: u64,
    #[serde(borrow)]
    pub(crate) task: &'a str,
    pub(crate) kind: Kind,
    pub(crate) timeout_nanos: Option<u64>,
    #[serde(with = "serde_bytes", borrow)]
    pub(crate) input: &'a [u8],
}

/// From rank 0 to a serving rank.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToRank<'a> {
    /// Start the local pool; answered by [`FromRank::Hello`].
    Setup(Settings),
    /// Run these.
    #[serde(borrow)]
    Jobs(Vec<JobMsg<'a>>),
    /// Stop these jobs (kill the worker of a running one).
    Cancel(Vec<u64>),
    /// Give back whichever of these has not started
    /// ([`FromRank::Revoked`]).
    Revoke(Vec<u64>),
    /// Finish: every job is done. The rank says [`FromRank::Bye`], stops
    /// its local pool and waits for [`ToRank::Finalize`].
    Exit,
    /// Whether to finalize MPI before exiting: not if any rank was lost,
    /// since `MPI_Finalize` would wait for it forever. Rank 0 sends it once
    /// every rank said goodbye or was found lost.
    Finalize(bool),
}

/// A job's outcome.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// A single job's encoded output.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A chunk's results, one per item: encoded outputs or errors.
    Items(Vec<Result<serde_bytes::ByteBuf, JobError>>),
    /// The job failed as a whole.
    Failed(JobError),
}

/// A finished job.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DoneMsg {
    pub(crate) id: u64,
    /// How long the rank held the job, in nanoseconds.
    pub(crate) nanos: u64,
    pub(crate) outcome: Outcome,
}

/// A `tracing` event from a serving rank.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogMsg {
    /// 0 error, 1 warn, 2 info, 3 debug, 4 trace.
    pub(crate) level: u8,
    pub(crate) target: String,
    pub(crate) message: String,
    /// The worker process that logged it, if a task did.
    pub(crate) worker_pid: Option<u32>,
    /// Rank 0's id of the job that was running, if any.
    pub(crate) job: Option<u64>,
    /// Where the event came from in the task's code (`target`, file:line).
    pub(crate) origin: Option<String>,
}

/// From a serving rank to rank 0.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromRank {
    /// The local pool started (or could not).
    Hello {
        host: String,
        pid: u32,
        workers: u32,
        error: Option<String>,
    },
    Done(Vec<DoneMsg>),
    /// These jobs were taken back before they started.
    Revoked(Vec<u64>),
    Log(Vec<LogMsg>),
    /// Still here.
    Heartbeat,
    /// The local pool is down; the rank exits.
    Bye,
}

/// Encodes a message.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Every field is a plain value: encoding to a Vec cannot fail.
    postcard::to_allocvec(msg).unwrap_or_default()
}
