//! A worker slot as the rest of the pool sees it: its worker's pid, and
//! killing the worker for a job that was cancelled or timed out while it
//! ran (with the reason, which the supervisor reads when it settles the
//! worker's jobs). Submitted jobs (`submission.rs`) and the supervisor
//! both use it.

use std::sync::Mutex;

use super::os;
use crate::sync::lock;

/// Why the pool killed a worker itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillReason {
    /// Its job was cancelled.
    Cancelled,
    /// Its job ran past its timeout.
    TimedOut,
    /// It broke the wire protocol in the way given.
    Protocol(&'static str),
}

impl std::fmt::Display for KillReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillReason::Cancelled => f.write_str("its job was cancelled"),
            KillReason::TimedOut => f.write_str("its job timed out"),
            KillReason::Protocol(what) => write!(f, "the worker broke the protocol: it {what}"),
        }
    }
}

/// What other threads may do to a slot: read its worker's pid, and kill the
/// worker for a job that was cancelled or timed out while it ran.
#[derive(Debug, Default)]
pub(crate) struct SlotCtl {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The worker's pid while it is attached. The supervisor detaches a
    /// worker before reaping it, so a pid read here under the lock cannot
    /// belong to another process yet.
    pid: Option<u32>,
    /// Counts this slot's workers: a job remembers which one it went to.
    worker: u64,
    /// The job at the head of the worker's pipeline (0: none).
    head: u64,
    /// Why the pool killed the worker, and for which job, if it did.
    killed: Option<(u64, KillReason)>,
    /// A kill asked for a job behind the head: done when the job heads the
    /// pipeline, so that the replies of the jobs the worker finished
    /// before it are not lost with the worker.
    kill_at: Option<(u64, KillReason)>,
}

impl SlotCtl {
    /// The worker's pid, unless it has exited.
    pub(crate) fn live_pid(&self) -> Option<u32> {
        let st = lock(&self.state);
        st.pid.filter(|&pid| !os::exited(pid))
    }

    /// Kills worker `worker` of this slot, which was running `job` when
    /// the job was cancelled or timed out: at once if the job heads its
    /// pipeline, else as soon as it does. Nothing if that worker is gone.
    pub(crate) fn kill_for(&self, worker: u64, job: u64, why: KillReason) {
        let mut st = lock(&self.state);
        let Some(pid) = st.pid.filter(|_| st.worker == worker) else {
            return;
        };
        if st.head == job {
            os::kill(pid);
            st.killed = Some((job, why));
        } else {
            st.kill_at = Some((job, why));
        }
    }

    /// Kills the worker, if one is attached: because of what it did, or
    /// (a [`Process`](crate::Process)'s `kill`) because it was asked to.
    pub(crate) fn kill(&self, why: KillReason) {
        let mut st = lock(&self.state);
        if let Some(pid) = st.pid {
            os::kill(pid);
            st.killed = Some((st.head, why));
        }
    }

    /// `job` heads the worker's pipeline now (0: none); a kill asked for
    /// it happens now.
    pub(super) fn set_head(&self, job: u64) {
        let mut st = lock(&self.state);
        st.head = job;
        if let Some((at, why)) = st.kill_at
            && at == job
            && let Some(pid) = st.pid
        {
            os::kill(pid);
            st.killed = Some((job, why));
            st.kill_at = None;
        }
    }

    /// Attaches a new worker; returns its number.
    pub(super) fn attach(&self, pid: u32) -> u64 {
        let mut st = lock(&self.state);
        st.pid = Some(pid);
        st.worker += 1;
        st.head = 0;
        st.killed = None;
        st.kill_at = None;
        st.worker
    }

    /// Forgets the worker (gone, or about to be reaped); returns why the
    /// pool killed it, if it did.
    pub(super) fn detach(&self) -> Option<(u64, KillReason)> {
        let mut st = lock(&self.state);
        st.pid = None;
        st.head = 0;
        st.kill_at = None;
        st.killed.take()
    }
}
