//! What a pool whose workers live on other machines needs from parpool:
//! the crate `parpool-mpi` builds its `MpiPool` on these.
//!
//! Not part of parpool's API, and without its stability promise: the items
//! here change with the crates that use them, which are released together
//! with parpool.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{decode, encode_by_value};
use crate::error::{CodecStage, JobError};
use crate::handle::{HandleTarget, JobState, JobHandle};
use crate::job::{Cancellable, JobId};
use crate::timer::Expire;

pub use crate::map::{ChunkIn, ChunkOut};
pub use crate::task::sealed::Sealed;

/// Polls `ready` until it says yes (`true`) or `window` has passed: how a
/// binding that waits for a pool's jobs its own way polls in the pool's
/// low-latency mode, as the pool's own joiners do.
pub fn spin_until(window: Duration, ready: impl FnMut() -> bool) -> bool {
    crate::sync::spin_until(window, ready)
}

/// The work an automatic `map` chunk aims at on a process pool.
pub const PROCESS_CHUNK_TIME: Duration = crate::map::PROCESS_CHUNK_TIME;

/// Encodes a job's input by value, for a worker on another machine:
/// shared bytes are copied inline and an `ipc` object fails the encode
/// with [`JobError::Unsendable`].
pub fn encode_input<T: Serialize + ?Sized>(input: &T) -> Result<Vec<u8>, JobError> {
    encode_by_value(CodecStage::EncodeInput, input)
}

/// Decodes an output that a worker on another machine wrote by value.
pub fn decode_output<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JobError> {
    decode(CodecStage::DecodeOutput, bytes, Vec::new())
}

/// Decodes task `T`'s output that a worker on another machine wrote by
/// value: the form it crossed in, then the output again.
pub fn decode_task_output<T: crate::Task>(bytes: &[u8]) -> Result<T::Output, JobError> {
    decode_output::<T::Wire>(bytes).and_then(T::from_wire)
}

/// Takes a chunk's inputs.
pub fn chunk_inputs<I, R>(chunk: ChunkIn<I, R>) -> Vec<I> {
    chunk.inputs
}

/// A chunk's output from one result per item, in item order, and the
/// time the chunk's work took.
pub fn chunk_output<I, R>(results: Vec<Result<R, JobError>>, took: Duration) -> ChunkOut<I, R> {
    let mut values = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => values.push(v),
            Err(e) => errors.push((i, e)),
        }
    }
    ChunkOut {
        spare: Vec::new(),
        values,
        errors,
        took,
    }
}

impl<I, R> ChunkOut<I, R> {
    /// One result per item, in item order.
    pub fn into_results(self) -> Vec<Result<R, JobError>> {
        let mut results: Vec<Result<R, JobError>> = Vec::with_capacity(self.values.len());
        let mut values = self.values.into_iter();
        let mut errors = self.errors.into_iter().peekable();
        loop {
            let i = results.len();
            if errors.peek().is_some_and(|(at, _)| *at == i) {
                if let Some((_, e)) = errors.next() {
                    results.push(Err(e));
                }
            } else if let Some(v) = values.next() {
                results.push(Ok(v));
            } else {
                break;
            }
        }
        // An error past the last value (the chunk ended in failures).
        results.extend(errors.map(|(_, e)| Err(e)));
        results
    }

    /// How long the chunk's work took.
    pub fn took(&self) -> Duration {
        self.took
    }
}

/// Told when a job is cancelled or times out, with the job's id, so that
/// the pool can stop it wherever it runs.
pub type OnCancel = Arc<dyn Fn(JobId) + Send + Sync>;

/// The pool's side of a job whose worker is elsewhere: it starts and
/// resolves the job; the caller holds its [`JobHandle`].
pub struct Pending<T> {
    cell: Arc<RemoteCell<T>>,
}

/// A remote job's handle state and what to do when it is cancelled.
struct RemoteCell<T> {
    state: JobState<T>,
    on_cancel: OnCancel,
}

impl<T: Send> Cancellable for RemoteCell<T> {
    fn is_cancelled(&self) -> bool {
        self.state.is_cancelled()
    }
}

impl<T: Send> HandleTarget<T> for RemoteCell<T> {
    fn state(&self) -> &JobState<T> {
        &self.state
    }
    fn cancel(&self, err: JobError) -> bool {
        let won = self.state.resolve_cancel(err);
        if won {
            (self.on_cancel)(self.state.id());
        }
        won
    }
}

impl<T: Send> Expire for RemoteCell<T> {
    fn expire(&self, after: Duration) {
        self.cancel(JobError::TimedOut { after });
    }
}

/// A new job with id `id`: its handle, for the caller, and its pending
/// side, for the pool. `on_cancel` runs once the job is resolved by
/// [`JobHandle::cancel`] or by its timeout ([`Pending::arm_timeout`]). A
/// thread joining the handle polls for its end for up to `join_spin`
/// before it sleeps (a pool's low-latency mode; zero: briefly).
pub fn pending<T: Send + 'static>(
    id: u64,
    on_cancel: OnCancel,
    join_spin: Duration,
) -> (JobHandle<T>, Pending<T>) {
    let cell = Arc::new(RemoteCell {
        state: JobState::new(JobId(id), 0).join_spin(join_spin),
        on_cancel,
    });
    (JobHandle::from_cell(cell.clone()), Pending { cell })
}

/// A handle already resolved with `result`.
pub fn ready<T: Send + 'static>(id: u64, result: Result<T, JobError>) -> JobHandle<T> {
    JobHandle::ready(JobId(id), result)
}

impl<T: Send + 'static> Pending<T> {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.cell.state.id()
    }

    /// Marks the job started (sent to a worker); `false` if it was resolved
    /// (cancelled) before and must not be sent. A retry may call it again.
    pub fn start(&self) -> bool {
        self.cell.state.try_start() || !self.is_resolved()
    }

    /// Resolves the job unless it was resolved already; `true` if this
    /// call did.
    pub fn resolve(&self, result: Result<T, JobError>) -> bool {
        self.cell.state.resolve(result)
    }

    /// Whether the job is resolved (done, cancelled or timed out).
    pub fn is_resolved(&self) -> bool {
        self.cell.state.is_finished() || self.cell.state.is_cancelled()
    }

    /// Resolves the job as [`JobError::TimedOut`] after `after`, unless it
    /// is resolved before.
    pub fn arm_timeout(&self, after: Duration) {
        let target: Arc<dyn Expire> = self.cell.clone();
        crate::timer::schedule(after, Arc::downgrade(&target));
    }
}

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("id", &self.cell.state.id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_results_come_back_in_item_order() {
        let results = vec![
            Err(JobError::Cancelled),
            Ok(1u64),
            Err(JobError::Shutdown),
            Ok(3),
            Err(JobError::Cancelled),
        ];
        let out: ChunkOut<(), u64> = chunk_output(results.clone(), Duration::from_millis(2));
        assert_eq!(out.took(), Duration::from_millis(2));
        assert_eq!(out.into_results(), results);
        let empty: ChunkOut<(), u64> = chunk_output(Vec::new(), Duration::ZERO);
        assert!(empty.into_results().is_empty());
    }

    #[test]
    fn an_ipc_object_is_refused_by_name_and_shared_bytes_go_by_value() {
        let mem = parpool_ipc::SharedMem::new(64).unwrap();
        assert_eq!(
            encode_input(&(1u8, mem)),
            Err(JobError::Unsendable {
                what: crate::Payload::Input,
                object: "SharedMem".into()
            })
        );
        let bytes = crate::SharedBytes::copy_from_slice(b"abc").unwrap();
        let encoded = encode_input(&bytes).unwrap();
        let back: crate::SharedBytes = decode_output(&encoded).unwrap();
        assert_eq!(&back[..], b"abc");
        // A refusal does not linger into the next encode.
        assert_eq!(decode_output::<u64>(&encode_input(&7u64).unwrap()), Ok(7));
    }

    #[test]
    fn a_pending_job_resolves_once_and_reports_its_cancel() {
        let cancelled = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = cancelled.clone();
        let on_cancel: OnCancel = Arc::new(move |id| seen.lock().unwrap().push(id.get()));
        let (handle, pending) = pending::<u64>(9, on_cancel.clone(), Duration::ZERO);
        assert!(pending.start());
        assert!(handle.cancel());
        assert!(!pending.resolve(Ok(1)), "resolved once, by the cancel");
        assert_eq!(handle.join(), Err(JobError::Cancelled));
        assert_eq!(*cancelled.lock().unwrap(), [9]);

        let (handle, pending) = super::pending::<u64>(10, on_cancel, Duration::ZERO);
        pending.arm_timeout(Duration::from_millis(20));
        assert_eq!(
            handle.join(),
            Err(JobError::TimedOut {
                after: Duration::from_millis(20)
            })
        );
        assert!(pending.is_resolved());
        assert!(!pending.start(), "a resolved job is not sent");
        // The timer thread tells the pool after it resolved the handle:
        // `join` may return first, so wait for it, with a bound.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while cancelled.lock().unwrap().len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the timeout was never reported"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(*cancelled.lock().unwrap(), [9, 10]);
    }
}
