//! Waiting for a worker's replies (while the outbox drains), reading them,
//! and taking back the requests that wait unclaimed behind a running job.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{KillReason, REVOKE_AFTER, Supervisor, emit_log};
use crate::process::control::Cell;
use crate::process::fdpass::TakeFds;
use crate::process::wire::{self, FromWorker};

/// Why a reply could not be taken: its descriptors did not come with it.
const LOST_DESCRIPTORS: &str = "lost descriptors";

/// How long a supervisor waits before it offers the kernel descriptors
/// again after it refused them (too many in flight for this user).
const STALL_RETRY: Duration = Duration::from_millis(1);

impl Supervisor {
    /// When the oldest request behind the head of the pipeline that the
    /// worker has not claimed was written, if there is one: it waits behind
    /// the running job. (The head itself waits for nothing but the worker:
    /// it is never taken back.)
    ///
    /// A cell never goes back to *offered*, so the requests known to have
    /// left it (claimed, withdrawn by a cancel) stay known: `passed` counts
    /// them from the front, and each call reads only the cells past it,
    /// usually one (each read may be a cache miss on another core's line).
    /// A scan, not a binary search: requests a cancel withdrew sit among
    /// those still offered, so the offered ones are not a suffix.
    fn oldest_unclaimed(&mut self) -> Option<Instant> {
        let conn = self.conn.as_ref()?;
        let in_flight = &self.in_flight;
        let offered = |i: usize| conn.control.state(in_flight[i].seq) == Cell::Offered;
        self.passed = first_offered(in_flight.len(), self.passed, offered);
        self.in_flight.get(self.passed).map(|s| s.at)
    }

    /// Waits until a reply can be read (`true`), sending the outbox as the
    /// socket takes it meanwhile. Returns `false` without a reply when it
    /// took back requests stranded behind the running job (they waited
    /// [`REVOKE_AFTER`] unclaimed), so that the caller feeds again.
    pub(super) fn wait_for_reply(&mut self) -> bool {
        // In the low-latency mode, one poll of the worker's count of bytes
        // sent before the first sleep (`process/README.md`, "Waiting
        // without sleeping"), when the reply is due within the window: the
        // worker answers a batch once it has run it all, so a long
        // pipeline's next reply is far off, and polling for it would only
        // take a core from the worker.
        let spin = self.shared.config.spin;
        let due_ns = self.in_flight.len() as f64 * self.avg_ns;
        // (Nothing in flight gives NaN: not known to be far off.)
        let due_later = due_ns > spin.as_nanos() as f64;
        let mut may_spin = !spin.is_zero() && !due_later;
        loop {
            self.flush();
            let Some(conn) = self.conn.as_ref() else {
                return false;
            };
            if !conn.reader.buffer().is_empty() {
                return true;
            }
            let mut timeout: Option<Duration> = None;
            if let Some(oldest) = self.oldest_unclaimed() {
                let due = oldest + REVOKE_AFTER;
                let now = Instant::now();
                if now >= due {
                    self.revoke_unclaimed();
                    return false;
                }
                timeout = Some(due - now);
            }
            let conn = self.conn.as_ref().expect("checked above");
            let write = !conn.outbox.is_empty() && !conn.outbox.is_stalled();
            if conn.outbox.is_stalled() {
                timeout = Some(timeout.map_or(STALL_RETRY, |t| t.min(STALL_RETRY)));
            }
            if std::mem::take(&mut may_spin) && !write {
                let window = timeout.map_or(self.shared.config.spin, |t| {
                    t.min(self.shared.config.spin)
                });
                let (control, received) = (&conn.control, conn.received);
                if crate::sync::spin_until(window, || control.replies_sent() > received) {
                    return true;
                }
            }
            if conn.reader.get_ref().wait(write, timeout).readable {
                return true;
            }
        }
    }

    /// Takes back every request behind the head that the worker has not
    /// claimed (newest first, so what is left is what it claimed: it claims
    /// in order) and puts them at the front of the pool's queue, in their
    /// order. Requests a cancel withdrew stay: the worker answers those.
    fn revoke_unclaimed(&mut self) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let control = conn.control.clone();
        let mut taken = VecDeque::new();
        let mut withdrawn = VecDeque::new();
        while self.in_flight.len() > 1 {
            let Some(last) = self.in_flight.back() else {
                break;
            };
            let seq = last.seq;
            if control.revoke(seq) {
                if let Some(sent) = self.in_flight.pop_back() {
                    self.forget(&sent);
                    taken.push_front(sent.job);
                }
            } else if control.state(seq) == Cell::Withdrawn {
                withdrawn.extend(self.in_flight.pop_back());
            } else {
                break;
            }
        }
        // Back in their places, behind what the worker claimed.
        while let Some(sent) = withdrawn.pop_back() {
            self.in_flight.push_back(sent);
        }
        self.passed = self.passed.min(self.in_flight.len());
        if taken.is_empty() {
            return;
        }
        tracing::trace!(
            jobs = taken.len(),
            "took back jobs waiting behind a running one"
        );
        // The running job has run longer than the pipeline's budget:
        // pipeline nothing behind it, and little behind its successors.
        self.held = true;
        self.avg_ns = self.avg_ns.max(REVOKE_AFTER.as_nanos() as f64);
        self.requeue_front(taken);
    }

    /// Reads one frame from the worker and acts on it.
    pub(super) fn read_one(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let limit = self.shared.config.limits.max_payload as usize + 4096;
        match wire::read_frame::<_, FromWorker>(&mut conn.reader, limit, &mut self.buf) {
            Ok(Some(frame)) => {
                // Counted whole, for the reply log (`reply_log.rs`).
                conn.received += 4 + self.buf.len() as u64;
                if let Err(why) = self.on_frame(frame, Source::Socket) {
                    tracing::error!(
                        pid = self.worker_pid,
                        why,
                        "worker broke the protocol; replacing it"
                    );
                    self.ctl.kill(KillReason::Protocol(why));
                    if why == LOST_DESCRIPTORS {
                        // The bytes are in step, only descriptors went
                        // missing (this process's own limit, say): the
                        // replies after it still count.
                        self.drain();
                    }
                    self.worker_lost();
                }
            }
            Ok(None) => self.worker_lost(),
            Err(e) => {
                if !matches!(e, wire::FrameError::Io(_)) {
                    self.ctl
                        .kill(KillReason::Protocol("sent a frame that does not decode"));
                }
                self.worker_lost();
            }
        }
    }

    /// Acts on one frame from the worker, read from the socket or, after
    /// its death, from its reply log. `Err`: the worker broke the protocol
    /// in the way given.
    pub(super) fn on_frame(
        &mut self,
        frame: FromWorker,
        source: Source,
    ) -> Result<(), &'static str> {
        let pid = self.worker_pid;
        match frame {
            FromWorker::Done {
                id,
                shared,
                nanos,
                result,
                output,
            } => {
                let result = match result {
                    Ok(bytes) => {
                        let fds = match (source, self.conn.as_mut()) {
                            (Source::Socket, Some(conn)) => {
                                TakeFds::take_fds(conn.reader.get_mut(), shared as usize)
                            }
                            _ => TakeFds::take_fds(&mut &[][..], shared as usize),
                        };
                        // Descriptors lost in transit (or with a dead
                        // worker): the stream is out of step.
                        Ok((bytes.0, fds.map_err(|_| LOST_DESCRIPTORS)?))
                    }
                    Err(e) => Err(e),
                };
                if let Some(conn) = self.conn.as_mut() {
                    conn.jobs_done += 1;
                }
                let took = Duration::from_nanos(nanos);
                // What a job costs this pipeline: from the moment it headed
                // the pipeline to its reply, round trip included (replies
                // come in batches, so a batch's first reply carries it).
                let ns = self.head_since.elapsed().as_nanos() as f64;
                self.avg_ns = if self.avg_ns.is_finite() {
                    0.8 * self.avg_ns + 0.2 * ns
                } else {
                    ns
                };
                if !self.heads(id) {
                    return Err("replied out of order");
                }
                if let Some(job) = self.finish_head() {
                    if let Some(output) = output {
                        job.set_output(output);
                    }
                    // Counted as running no more (and the next job as
                    // running) before anyone waiting on it wakes.
                    self.head_changed();
                    job.complete(result, took);
                }
            }
            FromWorker::Skipped { id } => {
                // Withdrawn by a cancel, which resolved it.
                if !self.heads(id) {
                    return Err("replied out of order");
                }
                self.finish_head();
                self.head_changed();
            }
            FromWorker::Log {
                job,
                level,
                target,
                message,
            } => emit_log(pid, job, level, &target, &message),
            FromWorker::Wake => {}
            FromWorker::Hello { .. } => return Err("said hello twice"),
        }
        Ok(())
    }

    /// Reads what the (killed) worker sent until the end of the socket,
    /// handling each reply that needs no descriptor, up to the first that
    /// does.
    fn drain(&mut self) {
        let limit = self.shared.config.limits.max_payload as usize + 4096;
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            match wire::read_frame::<_, FromWorker>(&mut conn.reader, limit, &mut self.buf) {
                Ok(Some(frame)) => {
                    conn.received += 4 + self.buf.len() as u64;
                    if self.on_frame(frame, Source::Log).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Whether job `id` heads the pipeline (the reply the worker owes next).
    fn heads(&self, id: u64) -> bool {
        self.in_flight.front().is_some_and(|s| s.job.id() == id)
    }
}

/// The index of the first of `len` requests, after the head (index 0)
/// and the `passed` already known to have left *offered*, that is still
/// offered (`len` if none is).
fn first_offered(len: usize, passed: usize, offered: impl Fn(usize) -> bool) -> usize {
    let mut at = passed.max(1);
    while at < len && !offered(at) {
        at += 1;
    }
    at.min(len.max(1))
}

/// Where a frame was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The worker's socket.
    Socket,
    /// A dead worker's reply log: its descriptors died with it.
    Log,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests a cancel withdrew may follow one still offered: the
    /// binary search this replaced skipped past the offered one in
    /// `[running, offered, withdrawn, withdrawn]`, so the offered request
    /// was never taken back, and waited for ever behind a running job
    /// that waited for it.
    #[test]
    fn the_first_offered_request_is_found_past_withdrawn_ones() {
        // States by index: true = offered.
        let check = |states: &[bool], passed: usize, want: usize| {
            assert_eq!(
                first_offered(states.len(), passed, |i| states[i]),
                want,
                "{states:?}"
            );
        };
        // running, offered, withdrawn, withdrawn
        check(&[false, true, false, false], 0, 1);
        // running, claimed, withdrawn, offered, withdrawn, offered
        check(&[false, false, false, true, false, true], 0, 3);
        check(&[false, false, false, true, false, true], 2, 3);
        // Nothing offered: past the end.
        check(&[false, false, false], 0, 3);
        check(&[false], 0, 1);
        check(&[], 0, 1);
    }
}
