//! Reading a worker's replies, and taking back the requests that wait
//! unclaimed behind a running job.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::super::os;
use super::super::wire::{self, FromWorker};
use super::{KillReason, REVOKE_AFTER, Supervisor, emit_log};

impl Supervisor {
    /// When the oldest request behind the head of the pipeline that the
    /// worker has not claimed was written, if there is one: it waits behind
    /// the running job. (The head itself waits for nothing but the worker:
    /// it is never taken back.)
    ///
    /// The worker claims in order, so the claimed requests are a prefix of
    /// the pipeline: a binary search reads a few claim cells, not one per
    /// request (each may be a cache miss on another core's line).
    fn oldest_unclaimed(&self) -> Option<Instant> {
        let conn = self.conn.as_ref()?;
        let claimed = self
            .in_flight
            .partition_point(|s| conn.control.is_claimed(s.seq));
        self.in_flight.get(claimed.max(1)).map(|s| s.at)
    }

    /// Waits for the worker's next reply; while requests wait unclaimed
    /// behind the running job, waits at most until the oldest has waited
    /// [`REVOKE_AFTER`], then takes them back.
    pub(super) fn wait_for_reply(&mut self) {
        loop {
            let Some(conn) = self.conn.as_ref() else {
                return;
            };
            if !conn.reader.buffer().is_empty() {
                return;
            }
            let Some(oldest) = self.oldest_unclaimed() else {
                return;
            };
            let now = Instant::now();
            let due = oldest + REVOKE_AFTER;
            if now >= due {
                self.revoke_unclaimed();
                return;
            }
            if os::readable(conn.reader.get_ref().as_fd(), Some(due - now)) {
                return;
            }
        }
    }

    /// Takes back every request behind the head that the worker has not
    /// claimed (newest first, so what is left is what it claimed: it claims
    /// in order) and puts them at the front of the pool's queue, in their
    /// order.
    fn revoke_unclaimed(&mut self) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let mut taken = VecDeque::new();
        while self.in_flight.len() > 1 {
            let Some(last) = self.in_flight.back() else {
                break;
            };
            if !conn.control.revoke(last.seq) {
                break;
            }
            if let Some(sent) = self.in_flight.pop_back() {
                self.shared.counters.in_flight.fetch_sub(1, Relaxed);
                taken.push_front(sent.job);
            }
        }
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
        let frame = wire::read_frame::<_, FromWorker>(
            &mut conn.reader,
            self.shared.config.max_payload as usize + 4096,
            &mut self.buf,
        );
        let pid = conn.pid;
        match frame {
            Ok(Some(FromWorker::Done {
                id,
                shared,
                nanos,
                result,
                output,
            })) => {
                let result = match result {
                    Ok(bytes) => match super::super::fdpass::TakeFds::take_fds(
                        conn.reader.get_mut(),
                        shared as usize,
                    ) {
                        Ok(fds) => Ok((bytes.0, fds)),
                        Err(_) => {
                            // Descriptors lost in transit: the stream is
                            // out of step, so the worker is replaced.
                            self.ctl.kill(KillReason::Protocol("lost descriptors"));
                            self.worker_lost();
                            return;
                        }
                    },
                    Err(e) => Err(e),
                };
                conn.jobs_done += 1;
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
                if self.in_flight.front().is_none_or(|s| s.job.id() != id) {
                    // Out of order: the stream cannot be trusted.
                    tracing::error!(pid, id, "worker replied out of order; replacing it");
                    self.ctl.kill(KillReason::Protocol("replied out of order"));
                    return;
                }
                if let Some(job) = self.finish_head() {
                    if let Some(output) = output {
                        job.set_output(output);
                    }
                    let counter = if job.complete(result, took) {
                        &self.shared.counters.completed
                    } else {
                        &self.shared.counters.failed
                    };
                    counter.fetch_add(1, Relaxed);
                    self.start_head();
                }
            }
            Ok(Some(FromWorker::Log {
                job,
                level,
                target,
                message,
            })) => emit_log(pid, job, level, &target, &message),
            Ok(Some(FromWorker::Hello { .. })) => {
                tracing::error!(pid, "worker said hello twice; replacing it");
                self.ctl.kill(KillReason::Protocol("said hello twice"));
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
}
