//! What a worker's death does to the jobs it had, and how the crash is
//! described.
//!
//! The rules, in the order they are checked:
//!
//! 1. The worker's control block says which job it was in (0: none). Jobs
//!    before that one in the pipeline finished, but their replies died
//!    with the worker: they run again, unblamed. Jobs after it never
//!    started: they go back to the queue, unblamed. If it was in no job,
//!    nobody is blamed and every job goes back.
//! 2. The job it was in, if already resolved (cancelled, timed out), was
//!    the reason the pool killed the worker: it is counted as failed.
//! 3. If the pool killed the worker for another job (one that had just
//!    finished when the kill landed), this job is not to blame: it goes
//!    back to the queue.
//! 4. Otherwise the job crashed: [`ProcJob::crashed`] applies the retry
//!    rule (for a map chunk, to the item the worker was in, keeping the
//!    results of the items it finished).

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::super::job::{AfterCrash, Crash, ProcJob};
use super::Supervisor;
use crate::error::ExitStatus;
use parpool_ipc::transfer::Journal;

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

/// Says what killed a worker, from the evidence: its exit status, whether
/// the pool killed it (and why), and whether it aborted after an
/// allocation failed.
pub(crate) fn describe(
    status: ExitStatus,
    killed: Option<KillReason>,
    allocation_failed: bool,
    memory_limit: Option<u64>,
) -> Option<String> {
    if let Some(why) = killed {
        return Some(format!("killed by the pool: {why}"));
    }
    let what = match status {
        ExitStatus::Signal(9) => {
            "SIGKILL: killed by another process (the kernel's out-of-memory killer does this)"
                .to_owned()
        }
        ExitStatus::Signal(6) if allocation_failed => match memory_limit {
            Some(limit) => format!(
                "SIGABRT: an allocation failed; the worker reached its memory limit of {limit} bytes"
            ),
            None => "SIGABRT: an allocation failed (out of memory)".to_owned(),
        },
        ExitStatus::Signal(6) => "SIGABRT: aborted".to_owned(),
        ExitStatus::Signal(11) => "SIGSEGV: segmentation fault".to_owned(),
        ExitStatus::Signal(7) => "SIGBUS: bus error".to_owned(),
        ExitStatus::Signal(4) => "SIGILL: illegal instruction".to_owned(),
        ExitStatus::Signal(8) => "SIGFPE: arithmetic exception".to_owned(),
        ExitStatus::Code(_) => "the task exited the process".to_owned(),
        _ => return None,
    };
    Some(what)
}

impl Supervisor {
    /// The worker died (or broke the protocol and was killed): settle the
    /// jobs it had by the rules above, and drop it.
    pub(super) fn worker_lost(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        super::os::kill(conn.pid);
        let status = match conn.child.wait() {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(c), _) => ExitStatus::Code(c),
                (None, Some(sig)) => ExitStatus::Signal(sig),
                _ => ExitStatus::Unknown,
            },
            Err(_) => ExitStatus::Unknown,
        };
        // Read once the worker is gone, so that nothing more is written.
        let leftover = conn.leftover_output();
        let killed = self.ctl.detach();
        self.shared.counters.respawns.fetch_add(1, Relaxed);
        let running = conn.control.running();

        // Rule 1: split the pipeline around the job the worker was in.
        let mut requeue: Vec<Arc<dyn ProcJob>> = Vec::new();
        let known = running != 0 && self.in_flight.iter().any(|s| s.job.id() == running);
        while self
            .in_flight
            .front()
            .is_some_and(|s| !known || s.job.id() != running)
        {
            requeue.extend(self.finish_head());
        }
        let head = self.finish_head();
        match (leftover, &head) {
            // What the dead worker's last job wrote belongs to that job.
            (Some(output), Some(job)) => job.set_output(output),
            (Some(output), None) => output.pass_on(),
            (None, _) => {}
        }
        let killed_for_head =
            killed.filter(|(job, _)| head.as_ref().is_some_and(|h| h.id() == *job));
        if let Some(head) = head {
            if head.is_resolved() {
                // Rule 2: cancelled or timed out; the kill was its own.
                self.shared.counters.failed.fetch_add(1, Relaxed);
            } else if killed.is_some() && killed_for_head.is_none() {
                // Rule 3: killed for a job that had just finished.
                requeue.push(head);
            } else {
                // Rule 4.
                let journal = Journal::read(&conn.journal, head.id());
                let crash = Crash {
                    status,
                    detail: describe(
                        status,
                        killed_for_head.map(|(_, why)| why),
                        conn.control.allocation_failed(),
                        self.shared.config.memory_limit,
                    ),
                    retries: self.shared.config.retries,
                    item: journal.as_ref().and_then(|j| j.running),
                    journal: journal.as_ref().map(|j| (j.finished, j.entries.as_slice())),
                };
                match head.crashed(&crash) {
                    AfterCrash::Retry => {
                        tracing::debug!(job = head.id(), %status, "worker crashed; retrying");
                        requeue.push(head);
                    }
                    AfterCrash::Settled(true) => {
                        self.shared.counters.completed.fetch_add(1, Relaxed);
                    }
                    AfterCrash::Settled(false) => {
                        self.shared.counters.failed.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        while let Some(job) = self.finish_head() {
            requeue.push(job);
        }
        self.in_flight_bytes = 0;
        self.requeue_front(requeue.into());
        tracing::debug!(
            pid = conn.pid,
            %status,
            killed_by_pool = ?killed.map(|(_, why)| why.to_string()),
            "worker process lost"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_of_death_is_described_by_its_evidence() {
        let abort = ExitStatus::Signal(6);
        assert_eq!(
            describe(abort, None, false, None).unwrap(),
            "SIGABRT: aborted"
        );
        // A memory limit alone is no evidence.
        assert_eq!(
            describe(abort, None, false, Some(1 << 30)).unwrap(),
            "SIGABRT: aborted"
        );
        assert!(
            describe(abort, None, true, Some(1024))
                .unwrap()
                .contains("memory limit of 1024")
        );
        assert!(
            describe(abort, None, true, None)
                .unwrap()
                .contains("allocation failed")
        );
        let kill = ExitStatus::Signal(9);
        assert!(
            describe(kill, None, false, None)
                .unwrap()
                .contains("another process")
        );
        let cancel = describe(kill, Some(KillReason::Cancelled), false, None).unwrap();
        assert_eq!(cancel, "killed by the pool: its job was cancelled");
        let proto = describe(
            kill,
            Some(KillReason::Protocol("replied out of order")),
            false,
            None,
        );
        assert!(proto.unwrap().contains("broke the protocol"));
        assert!(
            !describe(kill, Some(KillReason::TimedOut), false, None)
                .unwrap()
                .contains("memory")
        );
    }
}
