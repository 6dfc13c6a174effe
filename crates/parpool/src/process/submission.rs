//! A submitted process job: its state shared by its handle, the pool's
//! queue, its supervisor, a cancel and a timeout (`ProcCell`), and the job
//! as its supervisor sees it whatever its types (`ProcJob`): a single
//! job or a map chunk, with the rules for what a crash does to it.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::capture::CapturedOutput;
use super::control::{Cell as ControlCell, Control, Stop};
use super::slot::{KillReason, SlotCtl};
use super::wire::Items;
use crate::codec::decode;
use crate::error::{CodecStage, ExitStatus, JobError};
use crate::handle::{HandleTarget, JobState};
use crate::job::Cancellable;
use crate::map::ChunkOut;
use crate::sync::lock;
use crate::timer::Expire;
use parpool_ipc::transfer::Encoded;

/// How a worker died in a job, as its supervisor found out.
#[derive(Debug)]
pub(crate) struct Crash<'a> {
    pub(crate) status: ExitStatus,
    pub(crate) detail: Option<String>,
    /// How many times a crashed attempt may be run again.
    pub(crate) retries: u32,
    /// For a chunk: the position (in the order its items were run) of the
    /// item the worker was in.
    pub(crate) item: Option<u32>,
    /// For a chunk: how many items the worker finished and logged, and
    /// their encoded results.
    pub(crate) journal: Option<(u32, &'a [u8])>,
}

impl Crash<'_> {
    fn error(&self) -> JobError {
        JobError::Crashed {
            status: self.status,
            detail: self.detail.clone(),
        }
    }
}

/// What a crash made of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterCrash {
    /// Something of it is left to run: it goes back to the queue.
    Retry,
    /// It is resolved; `true` if with a value (a chunk whose other items
    /// ran), `false` with an error.
    Settled(bool),
}

/// What a worker is sent to run a job.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// The registered task's name.
    pub(crate) task: &'static str,
    /// The encoded input and the shared objects that travel with it.
    pub(crate) payload: &'a Encoded,
    /// What of the input to run: [`Items::One`] for a job, the items left
    /// for a chunk.
    pub(crate) items: Items,
}

/// Where a request for a job was written: the slot, its worker (by
/// generation), and the request's claim cell.
#[derive(Debug)]
pub(crate) struct SentTo {
    pub(crate) slot: Arc<SlotCtl>,
    pub(crate) worker: u64,
    pub(crate) control: Control,
    pub(crate) seq: u64,
}

/// Where a process job is, as a cancel needs to know it.
#[derive(Debug)]
enum Place {
    /// In the pool's queue (or about to be put back there).
    Queued,
    /// Written to a worker; its claim cell says the rest.
    Sent(SentTo),
    /// Cancelled or timed out before any worker could take it: whoever
    /// made it so resolves it, and no supervisor may send it.
    Gone,
}

/// The supervisor's view of a queued process job.
pub(crate) trait ProcJob: Send + Sync {
    fn id(&self) -> u64;
    /// What to send the worker for it.
    fn request(&self) -> Request<'_>;
    /// Marks the job written to `to` (its cell already offered); `false`
    /// if it was cancelled meanwhile and must not be sent. Decided under
    /// the same lock a cancel takes, so a cancel either finds the job
    /// queued (and then it is never sent) or finds its cell.
    fn start(&self, to: SentTo) -> bool;
    /// Resolves with the worker's reply (encoded output and the
    /// descriptors that came with it) and how long the worker ran it;
    /// `true` if it delivered a value.
    fn complete(&self, reply: Result<(Vec<u8>, Vec<OwnedFd>), JobError>, took: Duration) -> bool;
    /// The worker died while it ran this job (or after its body returned,
    /// with its result): what becomes of it.
    fn crashed(&self, crash: &Crash<'_>) -> AfterCrash;
    /// Resolves with `err` unless already resolved; `true` if it did.
    fn abandon(&self, err: JobError) -> bool;
    /// Whether the job was resolved already (cancelled, timed out).
    fn is_resolved(&self) -> bool;
    /// The job was handed back to the queue: forget its worker.
    fn requeued(&self);
    /// Whether a worker ran (part of) it already: it crashed and waits for
    /// a retry.
    fn attempted(&self) -> bool;
    /// Arms the job's timeout, now that it is running.
    fn arm_timeout(self: Arc<Self>);
    /// Hands over what the job wrote to stdout/stderr, before it resolves.
    fn set_output(&self, output: CapturedOutput);
}

/// The retry rule, for a job or one item of a chunk: a crashed attempt is
/// run again while its crashes so far (this one included) are at most
/// `retries`.
fn may_retry(crashes: &mut u32, retries: u32) -> bool {
    *crashes = crashes.saturating_add(1);
    *crashes <= retries
}

/// What differs between a single job and a map chunk.
pub(crate) trait Work<O>: Send + Sync + 'static {
    const CHUNK: bool;
    fn items(&self) -> Items;
    /// The value of a reply.
    fn finish(&self, bytes: &[u8], fds: Vec<OwnedFd>, took: Duration) -> Result<O, JobError>;
    /// What a crash leaves: `Some` once every part of the work is settled.
    fn crashed(&self, crash: &Crash<'_>) -> Option<Result<O, JobError>>;
    /// Whether a crash has happened in it.
    fn attempted(&self) -> bool;
}

/// A single job: its reply is decoded by `D`.
pub(crate) struct Single<D> {
    decode: D,
    crashes: Mutex<u32>,
}

impl<D> Single<D> {
    pub(crate) fn new(decode: D) -> Self {
        Single {
            decode,
            crashes: Mutex::new(0),
        }
    }
}

impl<O, D> Work<O> for Single<D>
where
    D: Fn(&[u8], Vec<OwnedFd>) -> Result<O, JobError> + Send + Sync + 'static,
{
    const CHUNK: bool = false;
    fn items(&self) -> Items {
        Items::One
    }
    fn finish(&self, bytes: &[u8], fds: Vec<OwnedFd>, _took: Duration) -> Result<O, JobError> {
        (self.decode)(bytes, fds)
    }
    fn crashed(&self, crash: &Crash<'_>) -> Option<Result<O, JobError>> {
        if may_retry(&mut lock(&self.crashes), crash.retries) {
            None
        } else {
            Some(Err(crash.error()))
        }
    }
    fn attempted(&self) -> bool {
        *lock(&self.crashes) > 0
    }
}

/// A map chunk: `Vec<I>` in, one result per item out. After a crash the
/// items that finished keep their results, the item that crashed fails
/// alone (or is retried), and the rest run again.
pub(crate) struct Chunk<I, R, W> {
    state: Mutex<ChunkState<I, R>>,
    /// An item's output from the form it crossed in ([`Task::from_wire`](crate::Task)).
    from_wire: fn(W) -> Result<R, JobError>,
}

struct ChunkState<I, R> {
    len: usize,
    /// What crashes have settled so far; `None` until the first crash (the
    /// common path builds the output straight from the reply).
    partial: Option<Partial<R>>,
    /// Crashes of the chunk when no item was to blame.
    chunk_crashes: u32,
    took: Duration,
    /// The caller's input buffer, emptied, handed back for reuse.
    spare: Option<Vec<I>>,
}

struct Partial<R> {
    /// Each item's result, once it has one.
    results: Vec<Option<Result<R, JobError>>>,
    /// Positions still to run, ascending.
    pending: Vec<u32>,
    /// Crashes per item.
    item_crashes: HashMap<u32, u32>,
}

impl<R> Partial<R> {
    fn new(len: usize) -> Self {
        Partial {
            results: (0..len).map(|_| None).collect(),
            pending: (0..u32::try_from(len).unwrap_or(u32::MAX)).collect(),
            item_crashes: HashMap::new(),
        }
    }

    /// Fills in results for the first pending positions, in order.
    fn record(&mut self, results: Vec<Result<R, JobError>>) {
        let n = results.len().min(self.pending.len());
        for (&position, result) in self.pending.iter().zip(results) {
            self.results[position as usize] = Some(result);
        }
        self.pending.drain(..n);
    }
}

impl<I, R, W> Chunk<I, R, W> {
    pub(crate) fn new(len: usize, spare: Vec<I>, from_wire: fn(W) -> Result<R, JobError>) -> Self {
        Chunk {
            from_wire,
            state: Mutex::new(ChunkState {
                len,
                partial: None,
                chunk_crashes: 0,
                took: Duration::ZERO,
                spare: Some(spare),
            }),
        }
    }
}

impl<I, R> ChunkState<I, R> {
    /// The output: `results` is every item's result when no crash came
    /// before, else what the last run settled.
    fn out(&mut self, results: Vec<Result<R, JobError>>) -> ChunkOut<I, R> {
        let mut values = Vec::with_capacity(self.len);
        let mut errors = Vec::new();
        match self.partial.take() {
            // The common case: one run, every item answered.
            None if results.len() == self.len => {
                for (i, r) in results.into_iter().enumerate() {
                    match r {
                        Ok(v) => values.push(v),
                        Err(e) => errors.push((i, e)),
                    }
                }
            }
            partial => {
                let mut partial = partial.unwrap_or_else(|| Partial::new(self.len));
                partial.record(results);
                for (i, r) in partial.results.into_iter().enumerate() {
                    match r {
                        Some(Ok(v)) => values.push(v),
                        Some(Err(e)) => errors.push((i, e)),
                        None => errors.push((
                            i,
                            JobError::Codec {
                                stage: CodecStage::DecodeOutput,
                                message: "the worker sent no result for this item".into(),
                            },
                        )),
                    }
                }
            }
        }
        ChunkOut {
            spare: self.spare.take().unwrap_or_default(),
            values,
            errors,
            took: self.took,
        }
    }
}

/// Decodes the `count` logged entries (each an encoded
/// `Result<R, JobError>`), up to the first that does not decode: an item
/// whose output held shared objects refers to descriptors that died with
/// the worker, so it and the items after it run again.
fn decode_journal<R: serde::de::DeserializeOwned>(
    count: u32,
    mut entries: &[u8],
) -> Vec<Result<R, JobError>> {
    let mut results = Vec::new();
    for _ in 0..count {
        let next = crate::codec::decode_prefix::<Result<R, JobError>>(entries);
        let Some((result, rest)) = next else {
            break;
        };
        results.push(result);
        entries = rest;
    }
    results
}

impl<I, R, W> Chunk<I, R, W> {
    /// Each item's output from its crossing form.
    fn outputs(&self, results: Vec<Result<W, JobError>>) -> Vec<Result<R, JobError>> {
        results
            .into_iter()
            .map(|r| r.and_then(self.from_wire))
            .collect()
    }
}

impl<I, R, W> Work<ChunkOut<I, R>> for Chunk<I, R, W>
where
    I: Send + 'static,
    R: Send + 'static,
    W: serde::de::DeserializeOwned + Send + 'static,
{
    const CHUNK: bool = true;

    fn items(&self) -> Items {
        let st = lock(&self.state);
        match &st.partial {
            Some(p) if p.pending.len() < st.len => Items::Only(p.pending.clone()),
            _ => Items::All,
        }
    }

    fn finish(
        &self,
        bytes: &[u8],
        fds: Vec<OwnedFd>,
        took: Duration,
    ) -> Result<ChunkOut<I, R>, JobError> {
        let results: Vec<Result<W, JobError>> = decode(CodecStage::DecodeOutput, bytes, fds)?;
        let results = self.outputs(results);
        let mut st = lock(&self.state);
        st.took += took;
        Ok(st.out(results))
    }

    fn crashed(&self, crash: &Crash<'_>) -> Option<Result<ChunkOut<I, R>, JobError>> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let len = st.len;
        let partial = st.partial.get_or_insert_with(|| Partial::new(len));
        // Items that finished before the crash keep their results.
        let logged = crash
            .journal
            .map(|(count, entries)| self.outputs(decode_journal::<W>(count, entries)))
            .unwrap_or_default();
        let finished = logged.len() as u32;
        partial.record(logged);
        // The item the worker was in is the one to blame (items between the
        // journal's end and it ran, but their results died with the worker:
        // they run again).
        match crash.item.filter(|&k| k >= finished) {
            Some(k) if ((k - finished) as usize) < partial.pending.len() => {
                let index = (k - finished) as usize;
                let position = partial.pending[index];
                let crashes = partial.item_crashes.entry(position).or_insert(0);
                if !may_retry(crashes, crash.retries) {
                    partial.results[position as usize] = Some(Err(crash.error()));
                    partial.pending.remove(index);
                }
            }
            // In no item (decoding the chunk, say) and nothing finished:
            // the chunk as a whole is to blame.
            _ if finished == 0 && !may_retry(&mut st.chunk_crashes, crash.retries) => {
                for position in std::mem::take(&mut partial.pending) {
                    partial.results[position as usize] = Some(Err(crash.error()));
                }
            }
            _ => {}
        }
        if partial.pending.is_empty() {
            Some(Ok(st.out(Vec::new())))
        } else {
            None
        }
    }

    fn attempted(&self) -> bool {
        let st = lock(&self.state);
        st.partial.is_some() || st.chunk_crashes > 0
    }
}

/// A process job and its handle's state, in one allocation.
pub(crate) struct ProcCell<O, W> {
    state: JobState<O>,
    task: &'static str,
    payload: Encoded,
    timeout: Option<Duration>,
    work: W,
    place: Mutex<Place>,
    output: Mutex<Option<CapturedOutput>>,
}

impl<O, W> ProcCell<O, W> {
    pub(crate) fn new(
        state: JobState<O>,
        task: &'static str,
        payload: Encoded,
        timeout: Option<Duration>,
        work: W,
    ) -> Self {
        ProcCell {
            state,
            task,
            payload,
            timeout,
            work,
            place: Mutex::new(Place::Queued),
            output: Mutex::new(None),
        }
    }
}

impl<O: Send, W: Send + Sync> ProcCell<O, W> {
    /// Cancels the job with `err` (a cancel, or its timeout) where it
    /// stands; `true` if this call resolved it.
    ///
    /// What may happen is decided first, under the place lock (queued: it
    /// will never be sent) or by one swap of its claim cell (see
    /// `control.rs`); the handle is resolved after, outside every lock, so
    /// that `on_done` callbacks run with no lock of the pool's held.
    fn stop(&self, err: JobError, why: KillReason) -> bool {
        let kill = {
            let mut place = lock(&self.place);
            let kill = match &*place {
                Place::Gone | Place::Queued => None,
                Place::Sent(to) => match to.control.stop(to.seq) {
                    // Its result stands, and is on its way.
                    Stop::Finished => return false,
                    Stop::Withdrawn | Stop::TakenBack => None,
                    Stop::Stopped => Some((to.slot.clone(), to.worker)),
                },
            };
            // From here no supervisor sends it again (`start` refuses).
            *place = Place::Gone;
            kill
        };
        let won = self.state.resolve_cancel(err);
        if let Some((slot, worker)) = kill {
            // Resolved first: when the supervisor sees the worker die, the
            // job it was in is already settled.
            slot.kill_for(worker, self.state.id().get(), why);
        }
        won
    }
}

impl<O: Send, W: Send + Sync> Cancellable for ProcCell<O, W> {
    fn is_cancelled(&self) -> bool {
        self.state.is_cancelled()
    }
}

impl<O: Send, W: Send + Sync> HandleTarget<O> for ProcCell<O, W> {
    fn state(&self) -> &JobState<O> {
        &self.state
    }
    fn cancel(&self, err: JobError) -> bool {
        self.stop(err, KillReason::Cancelled)
    }
    fn captured_output(&self) -> Option<CapturedOutput> {
        lock(&self.output).clone()
    }
    fn is_running(&self) -> bool {
        if self.state.is_finished() {
            return false;
        }
        // Written to a worker is not running: its claim cell says when
        // the worker starts it (and `Done` until the reply resolves it).
        let claimed = match &*lock(&self.place) {
            Place::Sent(to) => matches!(
                to.control.state(to.seq),
                ControlCell::Claimed | ControlCell::Done
            ),
            Place::Queued | Place::Gone => false,
        };
        // The cell stays `Done` after the reply resolved the job.
        claimed && !self.state.is_finished()
    }
}

impl<O: Send, W: Send + Sync> Expire for ProcCell<O, W> {
    fn expire(&self, after: Duration) {
        self.stop(JobError::TimedOut { after }, KillReason::TimedOut);
    }
}

impl<O, W> ProcJob for ProcCell<O, W>
where
    O: Send + 'static,
    W: Work<O>,
{
    fn id(&self) -> u64 {
        self.state.id().get()
    }
    fn request(&self) -> Request<'_> {
        Request {
            task: self.task,
            payload: &self.payload,
            items: self.work.items(),
        }
    }
    fn start(&self, to: SentTo) -> bool {
        let mut place = lock(&self.place);
        if matches!(*place, Place::Gone) || self.is_resolved() {
            return false;
        }
        *place = Place::Sent(to);
        // A retry finds STARTED already set.
        self.state.try_start();
        true
    }
    fn complete(&self, reply: Result<(Vec<u8>, Vec<OwnedFd>), JobError>, took: Duration) -> bool {
        let result = reply.and_then(|(bytes, fds)| self.work.finish(&bytes, fds, took));
        let ok = result.is_ok();
        self.state.resolve(result) && ok
    }
    fn crashed(&self, crash: &Crash<'_>) -> AfterCrash {
        match self.work.crashed(crash) {
            None => AfterCrash::Retry,
            Some(result) => {
                let ok = result.is_ok();
                AfterCrash::Settled(self.state.resolve(result) && ok)
            }
        }
    }
    fn abandon(&self, err: JobError) -> bool {
        *lock(&self.place) = Place::Gone;
        self.state.resolve(Err(err))
    }
    fn is_resolved(&self) -> bool {
        self.state.is_finished() || self.state.is_cancelled()
    }
    fn requeued(&self) {
        let mut place = lock(&self.place);
        if matches!(*place, Place::Sent(_)) {
            *place = Place::Queued;
        }
    }
    fn attempted(&self) -> bool {
        self.work.attempted()
    }
    fn arm_timeout(self: Arc<Self>) {
        if let Some(after) = self.timeout {
            let weak = Arc::downgrade(&self);
            crate::timer::schedule(after, weak);
        }
    }
    fn set_output(&self, output: CapturedOutput) {
        if W::CHUNK {
            // A map chunk has no handle of its own to read it from.
            output.pass_on();
            return;
        }
        let mut slot = lock(&self.output);
        match slot.as_mut() {
            // A retried job keeps what every attempt wrote.
            Some(earlier) => {
                earlier.stdout.extend_from_slice(&output.stdout);
                earlier.stderr.extend_from_slice(&output.stderr);
            }
            None => *slot = Some(output),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crash(item: Option<u32>, journal: Option<(u32, &[u8])>, retries: u32) -> Crash<'_> {
        Crash {
            status: ExitStatus::Signal(6),
            detail: None,
            retries,
            item,
            journal,
        }
    }

    fn entries(results: &[Result<u64, JobError>]) -> Vec<u8> {
        let mut all = crate::codec::encode_exact(results).unwrap();
        all.remove(0); // the length (one byte for short lists)
        all
    }

    #[test]
    fn a_crash_in_a_chunk_fails_the_item_alone_and_keeps_finished_results() {
        let chunk: Chunk<u64, u64, u64> = Chunk::new(5, Vec::new(), Ok);
        let log = entries(&[Ok(10), Ok(11)]);
        assert!(chunk.crashed(&crash(Some(2), Some((2, &log)), 0)).is_none());
        // Items 0 and 1 are done, item 2 failed: 3 and 4 are left.
        assert_eq!(chunk.items(), Items::Only(vec![3, 4]));
        let reply = crate::codec::encode_exact(&vec![Ok::<u64, JobError>(13), Ok(14)]).unwrap();
        let out = chunk
            .finish(&reply, Vec::new(), Duration::from_millis(1))
            .unwrap();
        assert_eq!(out.values, [10, 11, 13, 14]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].0, 2);
        assert!(out.errors[0].1.is_crashed());
    }

    #[test]
    fn a_crashed_item_with_a_retry_left_runs_again_first() {
        let chunk: Chunk<u64, u64, u64> = Chunk::new(3, Vec::new(), Ok);
        assert!(chunk.crashed(&crash(Some(0), None, 1)).is_none());
        assert_eq!(chunk.items(), Items::All);
        // Second crash of the same item: out of retries.
        assert!(chunk.crashed(&crash(Some(0), None, 1)).is_none());
        assert_eq!(chunk.items(), Items::Only(vec![1, 2]));
    }

    #[test]
    fn a_chunk_that_dies_outside_its_items_fails_once_out_of_retries() {
        let chunk: Chunk<u64, u64, u64> = Chunk::new(2, Vec::new(), Ok);
        assert!(chunk.crashed(&crash(None, None, 1)).is_none());
        let out = chunk.crashed(&crash(None, None, 1)).unwrap().unwrap();
        assert_eq!(out.errors.len(), 2);
    }
}
