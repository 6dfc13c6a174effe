//! Lazy, windowed, chunked `map`, in input order ([`Map`]) or in completion
//! order ([`MapUnordered`]).
//!
//! Inputs are pulled from the caller's iterator only to keep a bounded
//! window of chunks in flight, so an endless iterator works and memory stays
//! bounded by `window × chunk size`. The chunk size starts at 1 and adapts:
//! it doubles while a full chunk takes less than [`TARGET_CHUNK_TIME`] (on
//! a process pool, whose chunks cost more to send, [`PROCESS_CHUNK_TIME`])
//! and halves when one takes more than four times that, so per-chunk overhead
//! stays small for tiny items and load stays balanced for heavy ones.

use std::collections::VecDeque;
use std::fmt;
use std::iter::Fuse;
use std::time::{Duration, Instant};

use crate::error::JobError;
use crate::handle::JobHandle;
use crate::notify::Completions;
use crate::panic;

/// What a chunk job is given: the inputs, and a buffer for the outputs
/// (both recycled from earlier chunks, so a long map allocates nothing in
/// its steady state).
///
/// `pub` but unreachable: it appears in the sealed `Executor` plumbing.
#[allow(unreachable_pub)]
#[derive(Debug)]
pub struct ChunkIn<I, R> {
    pub(crate) inputs: Vec<I>,
    pub(crate) out: Vec<R>,
}

/// What a chunk job returns.
///
/// `pub` but unreachable: it appears in the sealed `Executor` plumbing.
#[allow(unreachable_pub)]
#[derive(Debug)]
pub struct ChunkOut<I, R> {
    /// The input buffer, emptied, for reuse.
    pub(crate) spare: Vec<I>,
    /// The successful outputs, in order.
    pub(crate) values: Vec<R>,
    /// `(position in the chunk, error)` for items that failed, ascending.
    pub(crate) errors: Vec<(usize, JobError)>,
    /// How long running the chunk took.
    pub(crate) took: Duration,
}

/// Sends one chunk to a pool.
pub(crate) type Spawner<'a, In, R> =
    Box<dyn FnMut(ChunkIn<In, R>) -> JobHandle<ChunkOut<In, R>> + 'a>;

/// An in-flight chunk of an ordered map: first index, length, handle.
type InFlight<In, R> = (usize, usize, JobHandle<ChunkOut<In, R>>);

/// The chunk duration automatic chunking aims for.
pub(crate) const TARGET_CHUNK_TIME: Duration = Duration::from_micros(100);
/// The same on a process pool, where a chunk's trip to a worker and back
/// costs tens of microseconds.
#[cfg(all(feature = "process", target_os = "linux"))]
pub(crate) const PROCESS_CHUNK_TIME: Duration = Duration::from_millis(2);
/// Largest automatic chunk.
pub(crate) const MAX_AUTO_CHUNK: usize = 1 << 16;

/// Runs `f` over a chunk, catching each item's panic separately.
///
/// One `catch_unwind` covers a run of items; after a panic the loop resumes
/// with the next item, so a chunk without panics pays for one.
pub(crate) fn run_chunk<I, R>(chunk: ChunkIn<I, R>, f: impl Fn(I) -> R) -> ChunkOut<I, R> {
    let start = Instant::now();
    let ChunkIn {
        mut inputs,
        out: mut values,
    } = chunk;
    values.clear();
    values.reserve(inputs.len());
    let mut errors = Vec::new();
    {
        let mut items = inputs.drain(..);
        loop {
            match panic::catch(|| values.extend(items.by_ref().map(&f))) {
                Ok(()) => break,
                Err(p) => errors.push((values.len() + errors.len(), JobError::panicked(p))),
            }
        }
    }
    ChunkOut {
        spare: inputs,
        values,
        errors,
        took: start.elapsed(),
    }
}

/// The chunk being yielded from.
struct Current<I, R> {
    /// A deque so items leave from the front and the emptied buffer can be
    /// reused (`Vec` ↔ `VecDeque` conversions keep the allocation).
    values: VecDeque<R>,
    errors: VecDeque<(usize, JobError)>,
    /// Position within the chunk of the next item.
    pos: usize,
    len: usize,
    /// Index of the chunk's first item in the whole input.
    start: usize,
    spare: Vec<I>,
}

impl<I, R> Current<I, R> {
    fn empty() -> Self {
        Current {
            values: VecDeque::new(),
            errors: VecDeque::new(),
            pos: 0,
            len: 0,
            start: 0,
            spare: Vec::new(),
        }
    }

    #[inline]
    fn next(&mut self) -> Option<(usize, Result<R, JobError>)> {
        if self.pos == self.len {
            return None;
        }
        let i = self.pos;
        self.pos += 1;
        let item = match self.errors.front() {
            Some((at, _)) if *at == i => Err(self.errors.pop_front()?.1),
            _ => Ok(self.values.pop_front()?),
        };
        Some((self.start + i, item))
    }
}

struct Engine<'a, I: Iterator<Item: Send + 'static>, R: Send + 'static> {
    spawn: Spawner<'a, I::Item, R>,
    inputs: Fuse<I>,
    window: usize,
    fixed_chunk: Option<usize>,
    chunk: usize,
    /// The work an automatic chunk aims at.
    chunk_time: Duration,
    in_flight: usize,
    next_index: usize,
    ordered: VecDeque<InFlight<I::Item, R>>,
    unordered: Completions<ChunkOut<I::Item, R>, (usize, usize)>,
    /// Items in the chunks of `unordered`.
    unordered_len: usize,
    is_ordered: bool,
    current: Current<I::Item, R>,
    spare_inputs: Vec<Vec<I::Item>>,
    spare_outputs: Vec<Vec<R>>,
    progress: Option<Progress<'a>>,
    /// With [`timeout`](Map::timeout): when every result must have come,
    /// and the timeout that was given.
    deadline: Option<(Instant, Duration)>,
    /// The map gave up (its timeout ran out): nothing more comes.
    inputs_done: bool,
}

/// A map's progress hook and what it has been told.
struct Progress<'a> {
    report: Box<dyn FnMut(u64, Option<u64>) + 'a>,
    /// Items whose results arrived.
    done: u64,
    /// How many items there are, when the input said so exactly.
    total: Option<u64>,
    /// Whether the final count went out.
    finished: bool,
}

impl Progress<'_> {
    /// `n` more results arrived.
    fn advance(&mut self, n: usize) {
        self.done += n as u64;
        // An input that said its length wrongly: the total is unknown
        // until the end after all.
        if self.total.is_some_and(|t| self.done > t) {
            self.total = None;
        }
        self.finished = self.total == Some(self.done);
        (self.report)(self.done, self.total);
    }

    /// The input is exhausted and every result arrived: the total is known.
    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.total = Some(self.done);
            (self.report)(self.done, self.total);
        }
    }
}

impl<I: Iterator<Item: Send + 'static>, R: Send + 'static> Engine<'_, I, R> {
    fn fill(&mut self) {
        while self.in_flight < self.window {
            let size = self.fixed_chunk.unwrap_or(self.chunk);
            let mut inputs = self.spare_inputs.pop().unwrap_or_default();
            inputs.reserve(size);
            inputs.extend(self.inputs.by_ref().take(size));
            if inputs.is_empty() {
                self.spare_inputs.push(inputs);
                return;
            }
            let (start, len) = (self.next_index, inputs.len());
            self.next_index += len;
            let out = self.spare_outputs.pop().unwrap_or_default();
            let handle = (self.spawn)(ChunkIn { inputs, out });
            if self.is_ordered {
                self.ordered.push_back((start, len, handle));
            } else {
                self.unordered.insert(handle, (start, len));
                self.unordered_len += len;
            }
            self.in_flight += 1;
        }
    }

    fn adapt(&mut self, len: usize, took: Duration) {
        if self.fixed_chunk.is_some() || len < self.chunk {
            return;
        }
        if took < self.chunk_time {
            self.chunk = (self.chunk * 2).min(MAX_AUTO_CHUNK);
        } else if took > self.chunk_time * 4 {
            self.chunk = (self.chunk / 2).max(1);
        }
    }

    fn open(&mut self, start: usize, len: usize, result: Result<ChunkOut<I::Item, R>, JobError>) {
        self.in_flight -= 1;
        if let Some(p) = &mut self.progress {
            p.advance(len);
        }
        let done = std::mem::replace(&mut self.current, Current::empty());
        self.spare_outputs.push(Vec::from(done.values));
        if done.spare.capacity() > 0 {
            self.spare_inputs.push(done.spare);
        }
        self.current = match result {
            Ok(out) => {
                self.adapt(len, out.took);
                Current {
                    values: VecDeque::from(out.values),
                    errors: out.errors.into(),
                    pos: 0,
                    len,
                    start,
                    spare: out.spare,
                }
            }
            Err(e) => Current {
                values: VecDeque::new(),
                errors: (0..len).map(|i| (i, e.clone())).collect(),
                pos: 0,
                len,
                start,
                spare: Vec::new(),
            },
        };
    }

    /// The map's timeout ran out before the result it waits for came: the
    /// jobs still out are cancelled, no more are sent, and the map ends
    /// after this item (`index`), a [`JobError::TimedOut`].
    fn give_up(&mut self, index: usize) -> (usize, Result<R, JobError>) {
        let after = self.deadline.map_or(Duration::ZERO, |(_, d)| d);
        self.window = 0;
        self.inputs_done = true;
        for (_, _, h) in self.ordered.drain(..) {
            h.cancel();
        }
        for (h, _) in self.unordered.drain() {
            h.cancel();
        }
        self.unordered_len = 0;
        self.in_flight = 0;
        (index, Err(JobError::TimedOut { after }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.inputs_done {
            return (0, Some(0));
        }
        let queued: usize =
            self.ordered.iter().map(|(_, len, _)| len).sum::<usize>() + self.unordered_len;
        let here = self.current.len - self.current.pos + queued;
        let (lo, hi) = self.inputs.size_hint();
        (
            here.saturating_add(lo),
            hi.and_then(|h| h.checked_add(here)),
        )
    }

    #[inline]
    fn next_item(&mut self) -> Option<(usize, Result<R, JobError>)> {
        match self.current.next() {
            Some(item) => Some(item),
            None => {
                let item = self.next_chunk();
                if item.is_none()
                    && let Some(p) = &mut self.progress
                {
                    p.finish();
                }
                item
            }
        }
    }

    #[cold]
    fn next_chunk(&mut self) -> Option<(usize, Result<R, JobError>)> {
        loop {
            self.fill();
            let deadline = self.deadline.map(|(at, _)| at);
            if self.is_ordered {
                let (start, len, h) = self.ordered.pop_front()?;
                let result = match deadline {
                    None => h.join(),
                    Some(at) => {
                        match h.join_timeout(at.saturating_duration_since(Instant::now())) {
                            Ok(result) => result,
                            Err(late) => {
                                late.cancel();
                                return Some(self.give_up(start));
                            }
                        }
                    }
                };
                self.open(start, len, result);
            } else {
                let Some((h, (start, len))) = self.unordered.next_blocking(deadline) else {
                    // Empty, or the time ran out with chunks still out.
                    return (self.unordered.len() > 0).then(|| self.give_up(self.next_index));
                };
                self.unordered_len -= len;
                self.open(start, len, h.join());
            }
            self.fill();
            if let Some(item) = self.current.next() {
                return Some(item);
            }
        }
    }
}

macro_rules! map_type {
    ($(#[$doc:meta])* $name:ident, $item:ty, $ordered:expr, |$idx:ident, $res:ident| $out:expr) => {
        $(#[$doc])*
        pub struct $name<'a, I: Iterator<Item: Send + 'static>, R: Send + 'static> {
            engine: Engine<'a, I, R>,
        }

        impl<'a, I: Iterator<Item: Send + 'static>, R: Send + 'static> $name<'a, I, R> {
            pub(crate) fn new(spawn: Spawner<'a, I::Item, R>, inputs: I, workers: usize) -> Self {
                $name {
                    engine: Engine {
                        spawn,
                        inputs: inputs.fuse(),
                        window: 4 * workers.max(1),
                        fixed_chunk: None,
                        chunk: 1,
                        chunk_time: TARGET_CHUNK_TIME,
                        in_flight: 0,
                        next_index: 0,
                        ordered: VecDeque::new(),
                        unordered: Completions::new(),
                        unordered_len: 0,
                        is_ordered: $ordered,
                        current: Current::empty(),
                        spare_inputs: Vec::new(),
                        spare_outputs: Vec::new(),
                        progress: None,
                        deadline: None,
                        inputs_done: false,
                    },
                }
            }

            /// Calls `report(done, total)` each time a chunk's results
            /// arrive, on the thread that iterates: `done` counts items
            /// (failed ones too) and only grows; `total` is the number of
            /// inputs when the input iterator knows it exactly (a `Vec`, a
            /// range) and `None` until the map ends otherwise. The last
            /// call has `done == total`, exactly once, when the map has
            /// every result. Set it before iterating. Free when not used.
            pub fn on_progress(mut self, report: impl FnMut(u64, Option<u64>) + 'a) -> Self {
                let (lo, hi) = self.engine.inputs.size_hint();
                let taken = self.engine.next_index;
                let total = (Some(lo) == hi).then(|| (lo + taken) as u64);
                self.engine.progress = Some(Progress {
                    report: Box::new(report),
                    done: 0,
                    total,
                    finished: false,
                });
                self
            }

            /// Aims automatic chunks at `t` of work each (pools whose jobs
            /// cost more to send aim higher).
            pub(crate) fn chunk_time(mut self, t: Duration) -> Self {
                self.engine.chunk_time = t;
                self
            }

            progress_bar_methods!("as results arrive");

            /// Sends exactly `n` items per job (at least 1) instead of
            /// adapting the chunk size. Takes effect for chunks not yet sent.
            pub fn chunk_size(mut self, n: usize) -> Self {
                self.engine.fixed_chunk = Some(n.max(1));
                self
            }

            /// Keeps at most `n` chunks in flight (at least 1; default: four
            /// per worker). Memory is bounded by `window × chunk size` items.
            pub fn window(mut self, n: usize) -> Self {
                self.engine.window = n.max(1);
                self
            }

            /// Gives the whole map `timeout`, counted from this call, as
            /// Python's `executor.map(fn, items, timeout=…)`: once it runs
            /// out, the result being waited for is
            /// [`JobError::TimedOut`], the jobs still queued or running are
            /// cancelled, and the map ends. Results that came in time are
            /// yielded as usual.
            ///
            /// ```
            /// use parpool::{JobError, ThreadPool};
            /// use std::time::Duration;
            ///
            /// let pool = ThreadPool::builder().workers(2).build()?;
            /// let results: Vec<_> = pool
            ///     .map(|ms: u64| { std::thread::sleep(Duration::from_millis(ms)); ms }, [1, 1, 2_000, 1])
            ///     .chunk_size(1)
            ///     .timeout(Duration::from_millis(500))
            ///     .collect();
            /// assert_eq!(results[..2], [Ok(1), Ok(1)]);
            /// assert!(matches!(results[2], Err(JobError::TimedOut { .. })));
            /// assert_eq!(results.len(), 3, "the map ends at the late item");
            /// # Ok::<(), parpool::BuildError>(())
            /// ```
            pub fn timeout(mut self, timeout: Duration) -> Self {
                self.engine.deadline = Instant::now()
                    .checked_add(timeout)
                    .map(|at| (at, timeout));
                self
            }
        }

        impl<I: Iterator<Item: Send + 'static>, R: Send + 'static> Iterator for $name<'_, I, R> {
            type Item = $item;

            #[inline]
            fn next(&mut self) -> Option<Self::Item> {
                let ($idx, $res) = self.engine.next_item()?;
                Some($out)
            }

            fn size_hint(&self) -> (usize, Option<usize>) {
                self.engine.size_hint()
            }
        }

        impl<I: Iterator<Item: Send + 'static>, R: Send + 'static> fmt::Debug for $name<'_, I, R> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("window", &self.engine.window)
                    .field("chunk", &self.engine.fixed_chunk.unwrap_or(self.engine.chunk))
                    .field("in_flight", &self.engine.in_flight)
                    .finish()
            }
        }
    };
}

map_type!(
    /// Results of a parallel map, in input order; see
    /// [`ThreadPool::map`](crate::ThreadPool::map) and
    /// [`Executor::map_task`](crate::Executor::map_task).
    Map,
    Result<R, JobError>,
    true,
    |_i, r| r
);

map_type!(
    /// Results of a parallel map as they finish, each with its input's
    /// index; see [`ThreadPool::map_unordered`](crate::ThreadPool::map_unordered).
    MapUnordered,
    (usize, Result<R, JobError>),
    false,
    |i, r| (i, r)
);
