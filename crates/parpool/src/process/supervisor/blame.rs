//! What a worker's death does to the jobs it had, and how the crash is
//! described.
//!
//! Each request in flight has a claim cell (`control.rs`); once the worker
//! is gone, the supervisor takes back each cell (one swap, so a cancel
//! racing with it is settled one way) and what the cell held says what
//! happened to its job:
//!
//! 1. *Offered* (or already revoked): the worker never started it. It goes
//!    back to the front of the queue, unblamed.
//! 2. *Withdrawn* or *stopped*: a cancel or timeout settled it first (and
//!    resolved it); a stopped job is why the pool killed the worker.
//! 3. *Claimed*: the worker died in it. It crashed: `Crashed` with the
//!    exit code or signal, or a retry on a fresh worker, up to `retries`
//!    ([`ProcJob::crashed`]; for a map chunk, the item the worker was in
//!    fails alone and the finished items keep their results).
//! 4. *Done*: its body returned, but its reply died with the worker (the
//!    worker sends replies in batches). It ran; it must not silently run
//!    again, so it is treated as a crash: retried only as `retries`
//!    allows, else `Crashed`, with a detail that says so. (A map chunk
//!    whose journal holds every item keeps them all.)

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::read::Source;
use super::{KillReason, Supervisor};
use crate::error::ExitStatus;
use crate::process::control::Cell;
use crate::process::submission::{AfterCrash, Crash, ProcJob};
use crate::process::wire::{self, FromWorker};
use parpool_ipc::transfer::Journal;

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

/// How a reaped worker ended.
pub(super) fn exit_status(waited: std::io::Result<std::process::ExitStatus>) -> ExitStatus {
    match waited {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => ExitStatus::Code(c),
            (None, Some(sig)) => ExitStatus::Signal(sig),
            _ => ExitStatus::Unknown,
        },
        Err(_) => ExitStatus::Unknown,
    }
}

impl Supervisor {
    /// The worker died (or broke the protocol and was killed): settle the
    /// jobs it had by the rules above, and drop it.
    pub(super) fn worker_lost(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // Detached before it is reaped: no kill can reach a reused pid.
        let killed = self.detach();
        super::os::kill(conn.pid);
        let status = exit_status(conn.child.wait());
        if let Some(shot) = &self.shared.config.one_shot {
            shot.ended(status);
        }
        // Read once the worker is gone, so that nothing more is written.
        let mut leftover = conn.leftover_output();
        self.shared.counters.respawns.fetch_add(1, Relaxed);
        // Replies it wrote that never left: handled as if they had.
        let unsent = conn.control.log_unsent(conn.received);
        let mut log = &unsent[..];
        while let Ok(Some(frame)) =
            wire::read_frame::<_, FromWorker>(&mut log, usize::MAX, &mut self.buf)
        {
            if self.on_frame(frame, Source::Log).is_err() {
                break;
            }
        }
        let lost: Vec<_> = self.in_flight.drain(..).collect();
        for sent in &lost {
            self.forget(sent);
        }
        // None of them counts as running once any of them resolves.
        self.head_changed();
        let mut requeue: Vec<Arc<dyn ProcJob>> = Vec::new();
        for sent in lost {
            let job = sent.job;
            let finished = match conn.control.take_back(sent.seq) {
                // Rule 1.
                Cell::Offered | Cell::Revoked | Cell::Reused => {
                    requeue.push(job);
                    continue;
                }
                // Rule 2.
                Cell::Withdrawn | Cell::Stopped => {
                    if let Some(output) = leftover.take() {
                        job.set_output(output);
                    }
                    continue;
                }
                Cell::Claimed => false,
                Cell::Done => true,
            };
            // Rules 3 and 4.
            if let Some(output) = leftover.take() {
                job.set_output(output);
            }
            let journal = Journal::read(&conn.journal, job.id());
            let why = killed.map(|(_, why)| why);
            let mut detail = describe(
                status,
                why,
                conn.control.allocation_failed(),
                self.shared.config.limits.memory_limit,
            );
            if finished {
                detail = Some(format!(
                    "the job had finished, but the worker died before its result reached the pool{}",
                    detail.map(|d| format!("; {d}")).unwrap_or_default()
                ));
            }
            let crash = Crash {
                status,
                detail,
                retries: self.shared.config.limits.retries,
                item: journal.as_ref().and_then(|j| j.running),
                journal: journal.as_ref().map(|j| (j.finished, j.entries.as_slice())),
            };
            if job.crashed(&crash) == AfterCrash::Retry {
                tracing::debug!(job = job.id(), %status, "worker crashed; retrying");
                requeue.push(job);
            }
        }
        self.passed = 0;
        self.head_changed();
        if let Some(output) = leftover {
            output.pass_on();
        }
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
