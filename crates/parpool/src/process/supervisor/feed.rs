//! Feeding a worker's pipeline: taking jobs from the pool's queue, writing
//! their requests within the socket's budget, and telling the worker which
//! shared objects it may let go.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::super::job::ProcJob;
use super::super::wire::{self, ToWorker, ToWorkerRef};
use super::{PIPELINE_BYTES, RELEASE_BATCH, RELEASE_POLL, Sent, Supervisor, WRITE_COST};
use crate::lifecycle::Lifecycle;
use crate::sync::lock;
use parpool_ipc::transfer::ObjectId;

impl Supervisor {
    /// Takes up to `want` jobs from the pool's queue. Blocks for a job only
    /// when nothing is in flight. `None`: the pool is closed and drained.
    fn take_jobs(&self, want: usize) -> Option<VecDeque<Arc<dyn ProcJob>>> {
        let mut q = self.shared.lock();
        loop {
            if !q.jobs.is_empty() {
                let n = want.min(q.jobs.len());
                return Some(q.jobs.drain(..n).collect());
            }
            if q.state != Lifecycle::Open {
                return (!self.in_flight.is_empty()).then(VecDeque::new);
            }
            if !self.in_flight.is_empty() || !lock(&self.releases.ids).is_empty() {
                return Some(VecDeque::new());
            }
            q.waiting += 1;
            q = if !self.kept.is_empty() {
                crate::sync::wait_timeout(&self.shared.ready, q, RELEASE_POLL)
            } else {
                crate::sync::wait(&self.shared.ready, q)
            };
            q.waiting -= 1;
        }
    }

    /// Sends jobs until the pipeline is full, taking them from the queue
    /// in one batch. `false`: the pool is closed and drained.
    pub(super) fn feed(&mut self) -> bool {
        self.send_releases();
        // Refill a pipeline once it is half empty, not one job per reply:
        // each write costs the socket a buffer of its own (`WRITE_COST`).
        let depth = self.depth();
        if self.in_flight.len() > depth / 2 {
            return true;
        }
        let want = depth - self.in_flight.len();
        let Some(mut batch) = self.take_jobs(want) else {
            return false;
        };
        // Objects dropped before these jobs were submitted are released
        // before the jobs run: a job never sees one kept past its release.
        self.send_releases();
        let mut wrote = false;
        // One write leaves with the whole batch: one time for all of it.
        let written_at = Instant::now();
        while let Some(job) = batch.pop_front() {
            if !job.start(&self.ctl) {
                // Cancelled while queued: it never runs.
                self.shared.counters.cancelled.fetch_add(1, Relaxed);
                continue;
            }
            let idle = self.in_flight.is_empty();
            let Some(conn) = self.conn.as_mut() else {
                batch.push_front(job);
                break;
            };
            if idle && matches!(conn.child.try_wait(), Ok(Some(_))) {
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
            let mut bytes = payload.bytes.len() + request.task.len() + 48;
            if !wrote {
                // The first request of this write pays for its buffer.
                bytes += WRITE_COST;
            }
            if !idle && self.in_flight_bytes + bytes > PIPELINE_BYTES {
                batch.push_front(job);
                break;
            }
            let seq = conn.next_seq;
            conn.next_seq += 1;
            conn.control.offer(seq);
            let msg = ToWorkerRef::Run {
                id: job.id(),
                seq,
                task: request.task,
                items: &request.items,
                // At most one descriptor per payload byte, so this fits.
                shared: payload.shared.len() as u32,
                input: &payload.bytes,
            };
            let sent = wire::write_frame_with_fds(&mut conn.writer, &msg, &payload.shared).is_ok();
            if sent {
                // The worker keeps them mapped until told they are gone.
                for object in &payload.shared {
                    if let Some(id) = object.watch(&self.release_sink) {
                        self.kept.insert(id);
                    }
                }
            }
            self.in_flight_bytes += bytes;
            // Even if the write failed the job is counted in flight: the
            // read that follows reports the dead worker and settles it.
            wrote |= sent;
            self.push_sent(Sent {
                job,
                seq,
                at: written_at,
                bytes,
            });
            if !sent {
                break;
            }
        }
        self.requeue_front(batch);
        if wrote && let Some(conn) = self.conn.as_mut() {
            let _ = conn.writer.flush();
        }
        true
    }

    /// Tells the worker which shared objects it may stop keeping, in
    /// batches, as far as the pipeline's byte budget allows (the rest wait
    /// for the next call).
    fn send_releases(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut wrote = false;
        loop {
            let batch: Vec<ObjectId> = {
                let mut ids = lock(&self.releases.ids);
                let n = ids.len().min(RELEASE_BATCH);
                let bytes = n * 24 + 16 + WRITE_COST;
                if n == 0
                    || (!self.in_flight.is_empty() && self.in_flight_bytes + bytes > PIPELINE_BYTES)
                {
                    break;
                }
                // Unanswered, these bytes count until the pipeline empties.
                self.in_flight_bytes += bytes;
                ids.drain(..n).collect()
            };
            for id in &batch {
                self.kept.remove(id);
            }
            wrote = true;
            if wire::write_frame(&mut conn.writer, &ToWorker::Release { ids: batch }).is_err() {
                // The read that follows finds the worker gone.
                break;
            }
        }
        if wrote {
            let _ = conn.writer.flush();
        }
    }
}
