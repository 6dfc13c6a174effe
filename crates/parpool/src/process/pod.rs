//! [`ProcessPool::par`]: an eager, split-based map over plain data, whose
//! input and output cross to the workers through shared memory.
//!
//! The input is copied once into a [`SharedMem`] (read-only for the
//! workers), the output is another, and each job is a range: a worker
//! maps its range block by block (copies through a small buffer that
//! stays in cache, so no `unsafe` aliasing of shared memory) and writes
//! the results in place. Nothing is serialized per item.
//!
//! Workers find the task's kernel through the registry: `task!` records
//! one for every task whose input and output are `bytemuck::Pod`, chosen
//! by the probe below (method resolution prefers the impl whose bounds
//! hold), so no other macro is needed.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use bytemuck::Pod;
use parpool_ipc::SharedMem;
use serde::{Deserialize, Serialize};

use super::ProcessPool;
use super::registry::{PodFn, TaskEntry};
use crate::codec::codec_error;
use crate::error::{CodecStage, JobError, Payload};
use crate::panic;
use crate::task::{Executor, Task};

/// Items a worker maps between copies in and out.
const BLOCK: usize = 4096;

/// Picks a task's shared-memory kernel in `task!`; not part of the API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Probe<T>(PhantomData<T>);

impl<T> Probe<T> {
    /// A probe for `T`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Probe(PhantomData)
    }

    /// A probe for the type of `task` (for a task whose type has no name).
    pub const fn of(_task: &T) -> Self {
        Probe(PhantomData)
    }
}

/// Chosen when the task's input and output are plain data.
#[doc(hidden)]
pub trait PodKernel<T> {
    /// The kernel.
    fn pod_kernel(&self) -> Option<PodFn<T>>;
}

impl<T: Task> PodKernel<T> for &&Probe<T>
where
    T::Input: Pod,
    T::Output: Pod,
{
    fn pod_kernel(&self) -> Option<PodFn<T>> {
        Some(run_pod::<T>)
    }
}

/// Chosen otherwise.
#[doc(hidden)]
pub trait NoPodKernel<T> {
    /// No kernel.
    fn pod_kernel(&self) -> Option<PodFn<T>>;
}

impl<T> NoPodKernel<T> for &Probe<T> {
    fn pod_kernel(&self) -> Option<PodFn<T>> {
        None
    }
}

/// Runs `T` over `range`, from `input` to `output`, a block at a time.
fn run_pod<T: Task>(
    task: &T,
    input: &SharedMem,
    output: &SharedMem,
    range: Range<usize>,
) -> Result<(), JobError>
where
    T::Input: Pod,
    T::Output: Pod,
{
    let ins = input.slice::<T::Input>();
    let outs = output.slice::<T::Output>();
    if range.end > ins.len() || range.end > outs.len() {
        return Err(codec_error(
            CodecStage::DecodeInput,
            format!(
                "range {range:?} is past the end of the shared input ({}) or output ({})",
                ins.len(),
                outs.len()
            ),
        ));
    }
    // One call per range instead of a page fault every 4 KiB.
    let (in_size, out_size) = (
        std::mem::size_of::<T::Input>(),
        std::mem::size_of::<T::Output>(),
    );
    input.prefault(range.start * in_size, range.len() * in_size);
    output.prefault(range.start * out_size, range.len() * out_size);
    let mut block: Vec<T::Input> = bytemuck::zeroed_vec(BLOCK.min(range.len()));
    let mut results: Vec<T::Output> = Vec::with_capacity(block.len());
    let mut at = range.start;
    while at < range.end {
        let n = BLOCK.min(range.end - at);
        ins.copy_to(at, &mut block[..n])
            .map_err(|e| codec_error(CodecStage::DecodeInput, e))?;
        results.clear();
        let mut index = at;
        panic::catch(|| {
            for &x in &block[..n] {
                results.push(task.run(x));
                index += 1;
            }
        })
        .map_err(|mut info| {
            info.item = Some(index as u64);
            JobError::panicked(info)
        })?;
        outs.copy_from(at, &results)
            .map_err(|e| codec_error(CodecStage::EncodeOutput, e))?;
        at += n;
    }
    Ok(())
}

/// Shared memory kept from one [`ProcessPool::par`] map for the next: new
/// shared memory costs a page allocation every 4 KiB (tens of
/// milliseconds for tens of megabytes), memory kept costs nothing, and
/// the workers keep it mapped too. At most [`KEEP_BUFFERS`] regions and
/// [`KEEP_BYTES`] in all are kept; they go with the pool.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    spare: std::sync::Mutex<Vec<SharedMem>>,
}

/// Regions a pool keeps for its next `par` map.
const KEEP_BUFFERS: usize = 2;
/// Bytes a pool keeps for its next `par` map.
const KEEP_BYTES: usize = 1 << 30;

impl Buffers {
    /// A kept region of at least `len` bytes, and at most twice that (a
    /// small map does not hold a huge region), if there is one.
    fn take(&self, len: usize) -> Option<SharedMem> {
        let mut spare = crate::sync::lock(&self.spare);
        let fits = |m: &SharedMem| m.len() >= len && m.len() / 2 <= len;
        let i = spare.iter().position(fits)?;
        Some(spare.swap_remove(i))
    }

    /// Keeps `mem` for a later map, within the limits.
    fn give(&self, mem: SharedMem) {
        let mut spare = crate::sync::lock(&self.spare);
        let kept: usize = spare.iter().map(SharedMem::len).sum();
        if spare.len() < KEEP_BUFFERS && kept.saturating_add(mem.len()) <= KEEP_BYTES {
            spare.push(mem);
        }
    }
}

/// One range of a [`ProcessPool::par`] map, as a job.
#[derive(Serialize, Deserialize)]
struct RangeJob {
    /// The registered name of the task to run.
    task: String,
    input: SharedMem,
    output: SharedMem,
    start: u64,
    end: u64,
}

crate::task! {
    /// Runs a plain-data task's kernel over one range (the job every
    /// [`ProcessPool::par`] map sends).
    fn pod_range(job: RangeJob) -> Result<(), JobError> {
        let Some(entry) = TaskEntry::find(&job.task) else {
            return Err(JobError::UnknownTask { name: job.task });
        };
        let range = usize::try_from(job.start).unwrap_or(usize::MAX)
            ..usize::try_from(job.end).unwrap_or(usize::MAX);
        entry.run_pod(&job.input, &job.output, range).unwrap_or_else(|| {
            Err(codec_error(
                CodecStage::DecodeInput,
                format!("task {} does not take and return plain data", job.task),
            ))
        })
    }
}

/// A [`ProcessPool::par`] map in which some ranges failed: every result
/// the other ranges produced, and what went wrong in each failed range.
#[non_exhaustive]
pub struct PodMapError<R> {
    /// One value per input; the items of failed ranges are zero.
    pub results: Vec<R>,
    /// Each failed range of input indices, with its error, in input order.
    pub failed: Vec<(Range<usize>, JobError)>,
}

impl<R> PodMapError<R> {
    /// The first failure (the lowest range).
    pub fn first(&self) -> Option<&JobError> {
        self.failed.first().map(|(_, e)| e)
    }

    /// How many items failed.
    pub fn failed_items(&self) -> usize {
        self.failed.iter().map(|(r, _)| r.len()).sum()
    }

    pub(crate) fn whole(len: usize, error: JobError) -> Self
    where
        R: Pod,
    {
        PodMapError {
            results: bytemuck::zeroed_vec(len),
            failed: vec![(0..len, error)],
        }
    }
}

impl<R> fmt::Debug for PodMapError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodMapError")
            .field("results", &self.results.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl<R> fmt::Display for PodMapError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} items failed, in {} range(s)",
            self.failed_items(),
            self.results.len(),
            self.failed.len()
        )?;
        match self.failed.first() {
            Some((range, e)) => write!(f, "; the first, items {range:?}: {e}"),
            None => Ok(()),
        }
    }
}

impl<R> std::error::Error for PodMapError<R> {}

/// A progress hook.
type Report<'a> = dyn FnMut(u64, Option<u64>) + 'a;

/// An eager, split-based map over plain data on a [`ProcessPool`]; from
/// [`ProcessPool::par`]. Finish it with [`map`](Self::map).
#[must_use = "a `PodPar` does nothing until `map` runs it"]
pub struct PodPar<'p, 'a, A> {
    pool: &'p ProcessPool,
    data: &'a [A],
    parts: Option<usize>,
    progress: Option<Box<Report<'p>>>,
}

impl<A> fmt::Debug for PodPar<'_, '_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodPar")
            .field("len", &self.data.len())
            .field("parts", &self.parts)
            .field("progress", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}

impl<'p, A: Pod> PodPar<'p, '_, A> {
    /// Splits the input into `n` ranges, one job each (default: four per
    /// worker). More ranges balance uneven items better and lose less to
    /// a crash; fewer cost fewer trips.
    pub fn ranges(mut self, n: usize) -> Self {
        self.parts = Some(n.max(1));
        self
    }

    /// Calls `report(done, Some(total))` on this thread as ranges finish:
    /// `done` only grows, and the last call has `done == total`, once,
    /// when every range succeeded.
    pub fn on_progress(mut self, report: impl FnMut(u64, Option<u64>) + 'p) -> Self {
        self.progress = Some(Box::new(report));
        self
    }

    progress_bar_methods!("as ranges finish");

    /// Maps every item through `task` in the pool's worker processes and
    /// returns the results in input order.
    ///
    /// ```
    /// use parpool::ProcessPool;
    ///
    /// parpool::task!(fn square(x: f64) -> f64 { x * x });
    ///
    /// let pool = ProcessPool::builder().workers(2).build()?;
    /// let data: Vec<f64> = (0..10_000).map(f64::from).collect();
    /// let squares = pool.par(&data).map(square)?;
    /// assert_eq!(squares[3], 9.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`PodMapError`], holding every result of the ranges that succeeded,
    /// when ranges failed: a panic (with the item's index), a worker that
    /// crashed twice on the same range (a crash is retried once, in a
    /// fresh worker; a panic is not), a timeout, or a pool shut down.
    pub fn map<T>(mut self, task: T) -> Result<Vec<T::Output>, PodMapError<T::Output>>
    where
        T: Task<Input = A>,
        T::Output: Pod,
    {
        let _ = task;
        let len = self.data.len();
        let total = len as u64;
        if len == 0 {
            self.report(0, total);
            return Ok(Vec::new());
        }
        let (input, output) = match self.memories::<T::Output>() {
            Ok(memories) => memories,
            Err(e) => return Err(PodMapError::whole(len, e)),
        };
        let parts = self
            .parts
            .unwrap_or_else(|| Executor::workers(self.pool).saturating_mul(4))
            .clamp(1, len);
        // In u128: `i * len` may not fit a usize.
        let bound = |i: usize| (i as u128 * len as u128 / parts as u128) as usize;
        let ranges: Vec<Range<usize>> = (0..parts).map(|i| bound(i)..bound(i + 1)).collect();
        let submit = |range: &Range<usize>| {
            self.pool.submit(
                pod_range,
                RangeJob {
                    task: T::NAME.to_owned(),
                    input: input.read_only(),
                    output: output.clone(),
                    start: range.start as u64,
                    end: range.end as u64,
                },
            )
        };
        // Each range's input is copied in just before its job is sent, and
        // its output copied out as soon as it is done: the copies overlap
        // the workers' work.
        let ins = input.slice::<A>();
        let mut failed: Vec<(Range<usize>, JobError)> = Vec::new();
        let mut sent = Vec::with_capacity(ranges.len());
        let mut handles = Vec::with_capacity(ranges.len());
        for range in &ranges {
            match ins.copy_from(range.start, &self.data[range.clone()]) {
                Ok(()) => {
                    sent.push(range.clone());
                    handles.push(submit(range));
                }
                Err(e) => failed.push((range.clone(), codec_error(CodecStage::EncodeInput, e))),
            }
        }
        let mut results: Vec<T::Output> = bytemuck::zeroed_vec(len);
        super::os::prefault_for_write(&mut results);
        let outs = output.slice::<T::Output>();
        let mut done = 0u64;
        let mut crashed: Vec<Range<usize>> = Vec::new();
        let mut finish =
            |range: &Range<usize>, result: Result<Result<(), JobError>, JobError>, retry: bool| {
                match result {
                    Ok(Ok(())) => match outs.copy_to(range.start, &mut results[range.clone()]) {
                        Ok(()) => {
                            done += range.len() as u64;
                            if done < total {
                                self.report(done, total);
                            }
                        }
                        Err(e) => {
                            failed.push((range.clone(), codec_error(CodecStage::DecodeOutput, e)))
                        }
                    },
                    Err(JobError::Crashed { .. }) if retry => return true,
                    Ok(Err(e)) | Err(e) => failed.push((range.clone(), e)),
                }
                false
            };
        for (i, result) in crate::wait::as_completed(handles) {
            if finish(&sent[i], result, true) {
                crashed.push(sent[i].clone());
            }
        }
        // A crash may be the worker's, not the items': once more, each in
        // a fresh worker.
        let retries: Vec<_> = crashed.iter().map(|r| (r.clone(), submit(r))).collect();
        for (range, handle) in retries {
            finish(&range, handle.join(), false);
        }
        if failed.is_empty() {
            self.pool.pod_buffers.give(input);
            self.pool.pod_buffers.give(output);
            self.report(total, total);
            return Ok(results);
        }
        // A timed-out or cancelled range's worker may still be writing (the
        // kill is not waited for): these buffers are not kept.
        // The items of failed ranges were never copied out: they are zero.
        failed.sort_by_key(|(r, _)| r.start);
        Err(PodMapError { results, failed })
    }

    /// Shared memory for the input (the workers get read-only handles) and
    /// for the output: kept from an earlier map where the pool has some of
    /// the right size, new otherwise.
    fn memories<R: Pod>(&self) -> Result<(SharedMem, SharedMem), JobError> {
        let len = self.data.len();
        let bytes = |size: usize, what: Payload| {
            len.checked_mul(size).ok_or(JobError::TooLarge {
                what,
                size: u64::MAX,
                limit: isize::MAX as u64,
            })
        };
        let shared = |e: std::io::Error| {
            codec_error(
                CodecStage::EncodeInput,
                format!("could not create the shared memory for the map: {e}"),
            )
        };
        let buffers = &self.pool.pod_buffers;
        let in_bytes = bytes(std::mem::size_of::<A>(), Payload::Input)?;
        let input = match buffers.take(in_bytes) {
            Some(kept) => kept,
            None => {
                let fresh = SharedMem::new(in_bytes).map_err(shared)?;
                fresh.prefault(0, in_bytes);
                fresh
            }
        };
        let out_bytes = bytes(std::mem::size_of::<R>(), Payload::Output)?;
        let output = match buffers.take(out_bytes) {
            Some(kept) => kept,
            None => {
                let fresh = SharedMem::new(out_bytes).map_err(|e| {
                    buffers.give(input.clone());
                    shared(e)
                })?;
                // Allocated here in one call; the workers then find the pages.
                fresh.prefault(0, out_bytes);
                fresh
            }
        };
        Ok((input, output))
    }

    fn report(&mut self, done: u64, total: u64) {
        if let Some(report) = &mut self.progress {
            report(done, Some(total));
        }
    }
}

impl ProcessPool {
    /// An eager, split-based map over plain data (`bytemuck::Pod`: numbers,
    /// arrays of them, `#[repr(C)]` structs of them) in the pool's worker
    /// processes, the process counterpart of
    /// [`ThreadPool::par`](crate::ThreadPool::par). Finish it with
    /// [`PodPar::map`], giving a [`task!`](crate::task!) whose input is
    /// the element type.
    ///
    /// The data goes to the workers through shared memory, copied once,
    /// and the results come back the same way: nothing is serialized per
    /// item. Each job maps one range, so a crash or a panic fails only its
    /// range ([`PodMapError`] keeps the rest).
    pub fn par<'a, A: Pod>(&self, data: &'a [A]) -> PodPar<'_, 'a, A> {
        PodPar {
            pool: self,
            data,
            parts: None,
            progress: None,
        }
    }
}
