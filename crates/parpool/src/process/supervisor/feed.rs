//! Feeding a worker's pipeline: taking jobs from the pool's queue, queueing
//! their requests in the outbox, and telling the worker which shared
//! objects it may let go.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::{FD_BUDGET, RELEASE_BATCH, RELEASE_POLL, Sent, Supervisor};
use crate::error::{CodecStage, JobError};
use crate::lifecycle::Lifecycle;
use crate::process::submission::{ProcJob, SentTo};
use crate::process::wire::{ToWorker, ToWorkerRef};
use crate::sync::lock;
use parpool_ipc::transfer::ObjectId;

/// How long an idle supervisor waits before it tries again to send what
/// its outbox still holds.
const OUTBOX_RETRY: Duration = Duration::from_millis(1);
/// How often an idle supervisor of a draining pool looks whether the
/// others are done (a take-back wakes it sooner).
const DRAIN_POLL: Duration = Duration::from_millis(5);

impl Supervisor {
    /// Takes up to `want` jobs from the pool's queue. Blocks for a job only
    /// when nothing is in flight. `None`: the pool is closed and drained.
    fn take_jobs(&mut self, want: usize) -> Option<VecDeque<Arc<dyn ProcJob>>> {
        // In the low-latency mode, one poll of the queue before the first
        // sleep (`process/README.md`, "Waiting without sleeping").
        let mut may_spin = !self.shared.config.spin.is_zero();
        let mut q = self.shared.lock();
        loop {
            if !q.jobs.is_empty() {
                let n = want.min(q.jobs.len());
                return Some(q.jobs.drain(..n).collect());
            }
            if q.state != Lifecycle::Open {
                if !self.in_flight.is_empty() {
                    return Some(VecDeque::new());
                }
                // Draining: another slot may still take back requests
                // stranded behind its running job and queue them again
                // (the job it runs may even wait for them). Stay while
                // anything is in flight anywhere, to take those.
                if q.state == Lifecycle::Draining
                    && self.shared.counters.in_flight.load(Relaxed) > 0
                {
                    q.waiting += 1;
                    q = crate::sync::wait_timeout(&self.shared.ready, q, DRAIN_POLL);
                    q.waiting -= 1;
                    continue;
                }
                return None;
            }
            if !self.in_flight.is_empty() || !lock(&self.releases.ids).is_empty() {
                return Some(VecDeque::new());
            }
            let unsent = self.conn.as_ref().is_some_and(|c| !c.outbox.is_empty());
            if std::mem::take(&mut may_spin) && !unsent {
                drop(q);
                let shared = &self.shared;
                // A probe never waits for the lock: a submitter holding it
                // is adding the job this poll is for.
                crate::sync::spin_until(shared.config.spin, || {
                    shared.try_lock().is_some_and(|q| {
                        !q.jobs.is_empty() || q.state != Lifecycle::Open
                    })
                });
                q = self.shared.lock();
                continue;
            }
            q.waiting += 1;
            q = if unsent {
                crate::sync::wait_timeout(&self.shared.ready, q, OUTBOX_RETRY)
            } else if !self.kept.is_empty() {
                crate::sync::wait_timeout(&self.shared.ready, q, RELEASE_POLL)
            } else {
                crate::sync::wait(&self.shared.ready, q)
            };
            q.waiting -= 1;
            if unsent {
                drop(q);
                self.flush();
                q = self.shared.lock();
            }
        }
    }

    /// Queues requests until the pipeline is full, taking jobs from the
    /// queue in one batch, and sends what the socket takes. `false`: the
    /// pool is closed and drained.
    pub(super) fn feed(&mut self) -> bool {
        self.queue_releases();
        // Refill a pipeline once it is half empty, not one job per reply,
        // so that requests leave in batches.
        let depth = self.depth();
        if self.in_flight.len() > depth / 2 {
            self.flush();
            return true;
        }
        let want = depth - self.in_flight.len();
        let Some(mut batch) = self.take_jobs(want) else {
            return false;
        };
        // Objects dropped before these jobs were submitted are released
        // before the jobs run: a job never sees one kept past its release.
        self.queue_releases();
        // One write leaves with the whole batch: one time for all of it.
        let written_at = Instant::now();
        while let Some(job) = batch.pop_front() {
            let idle = self.in_flight.is_empty();
            let Some(conn) = self.conn.as_mut() else {
                batch.push_front(job);
                break;
            };
            if idle && super::os::exited(conn.pid) {
                // The worker died while idle (killed from outside, say): it
                // never saw these jobs, so they go back to the front of the
                // queue and nobody is blamed.
                batch.push_front(job);
                self.requeue_front(std::mem::take(&mut batch));
                self.worker_lost();
                return true;
            }
            let request = job.request();
            let payload = request.payload;
            let fds = payload.shared.len();
            if !idle && self.fds_in_flight + fds > FD_BUDGET {
                batch.push_front(job);
                break;
            }
            let seq = conn.next_seq;
            conn.control.offer(seq);
            let to = SentTo {
                slot: self.ctl.clone(),
                worker: self.worker,
                control: conn.control.clone(),
                seq,
            };
            if !job.start(to) {
                // Cancelled while queued: it never runs (its canceller
                // resolved it). Its cell is offered again to the next.
                continue;
            }
            conn.next_seq += 1;
            let msg = ToWorkerRef::Run {
                id: job.id(),
                seq,
                task: request.task,
                items: &request.items,
                // At most one descriptor per payload byte, so this fits.
                shared: fds as u32,
                input: &payload.bytes,
            };
            if let Err(e) = conn.outbox.push_with_fds(&msg, &payload.shared) {
                // It cannot be framed (over 4 GiB, say): that job fails
                // alone; the worker never sees its claim cell used.
                job.abandon(JobError::Codec {
                    stage: CodecStage::Frame,
                    message: e.to_string(),
                });
                continue;
            }
            // The worker keeps them mapped until told they are gone.
            for object in &payload.shared {
                if let Some(id) = object.watch(&self.release_sink) {
                    self.kept.insert(id);
                }
            }
            self.push_sent(Sent {
                job,
                seq,
                at: written_at,
                fds,
            });
        }
        self.requeue_front(batch);
        self.flush();
        true
    }

    /// Sends what the outbox holds, as far as the socket takes it now. A
    /// broken socket is the reader's to find (end of file).
    pub(super) fn flush(&mut self) {
        if let Some(conn) = self.conn.as_mut()
            && conn.flush().is_err()
        {
            conn.outbox = Default::default();
        }
    }

    /// Queues `Release` frames for the shared objects whose last handle
    /// here is gone.
    fn queue_releases(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        loop {
            let batch: Vec<ObjectId> = {
                let mut ids = lock(&self.releases.ids);
                let n = ids.len().min(RELEASE_BATCH);
                if n == 0 {
                    break;
                }
                ids.drain(..n).collect()
            };
            for id in &batch {
                self.kept.remove(id);
            }
            if conn.outbox.push(&ToWorker::Release { ids: batch }).is_err() {
                break;
            }
        }
    }
}
