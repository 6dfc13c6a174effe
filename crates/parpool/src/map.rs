//! Lazy, windowed, chunked `map`, in input order ([`Map`]) or in completion
//! order ([`MapUnordered`]).
//!
//! Inputs are pulled from the caller's iterator only to keep a bounded
//! window of chunks in flight, so an endless iterator works and memory stays
//! bounded by `window × chunk size`. The chunk size starts at 1 and adapts:
//! it doubles while a full chunk takes less than [`TARGET_CHUNK_TIME`] and
//! halves when one takes more than four times that, so per-chunk overhead
//! stays small for tiny items and load stays balanced for heavy ones.

use std::collections::VecDeque;
use std::fmt;
use std::iter::Fuse;
use std::time::{Duration, Instant};

use crate::error::JobError;
use crate::handle::JobHandle;
use crate::notify::Completions;
use crate::panic;

/// A chunk's results and how long running it took.
pub(crate) type Chunk<R> = (Vec<Result<R, JobError>>, Duration);

type Spawner<'a, In, R> = Box<dyn FnMut(Vec<In>) -> JobHandle<Chunk<R>> + 'a>;

/// The chunk duration automatic chunking aims for.
pub(crate) const TARGET_CHUNK_TIME: Duration = Duration::from_micros(100);
/// Largest automatic chunk.
pub(crate) const MAX_AUTO_CHUNK: usize = 1 << 16;

/// Runs `f` over `items`, catching each item's panic separately.
pub(crate) fn run_chunk<I, R>(items: Vec<I>, f: impl Fn(I) -> R) -> Chunk<R> {
    let start = Instant::now();
    let out = items
        .into_iter()
        .map(|x| panic::catch(|| f(x)).map_err(JobError::panicked))
        .collect();
    (out, start.elapsed())
}

struct Engine<'a, I: Iterator, R: Send + 'static> {
    spawn: Spawner<'a, I::Item, R>,
    inputs: Fuse<I>,
    window: usize,
    fixed_chunk: Option<usize>,
    chunk: usize,
    in_flight: usize,
    next_index: usize,
    ordered: VecDeque<(usize, usize, JobHandle<Chunk<R>>)>,
    unordered: Completions<Chunk<R>, (usize, usize)>,
    is_ordered: bool,
    current: std::vec::IntoIter<Result<R, JobError>>,
    current_index: usize,
}

impl<'a, I: Iterator, R: Send + 'static> Engine<'a, I, R> {
    fn fill(&mut self) {
        while self.in_flight < self.window {
            let size = self.fixed_chunk.unwrap_or(self.chunk);
            let chunk: Vec<I::Item> = self.inputs.by_ref().take(size).collect();
            if chunk.is_empty() {
                return;
            }
            let (start, len) = (self.next_index, chunk.len());
            self.next_index += len;
            let handle = (self.spawn)(chunk);
            if self.is_ordered {
                self.ordered.push_back((start, len, handle));
            } else {
                self.unordered.insert(handle, (start, len));
            }
            self.in_flight += 1;
        }
    }

    fn adapt(&mut self, len: usize, took: Duration) {
        if self.fixed_chunk.is_some() || len < self.chunk {
            return;
        }
        if took < TARGET_CHUNK_TIME {
            self.chunk = (self.chunk * 2).min(MAX_AUTO_CHUNK);
        } else if took > TARGET_CHUNK_TIME * 4 {
            self.chunk = (self.chunk / 2).max(1);
        }
    }

    fn open(&mut self, start: usize, len: usize, result: Result<Chunk<R>, JobError>) {
        self.in_flight -= 1;
        self.current_index = start;
        self.current = match result {
            Ok((items, took)) => {
                self.adapt(len, took);
                items.into_iter()
            }
            Err(e) => std::iter::repeat_n(e, len)
                .map(Err)
                .collect::<Vec<_>>()
                .into_iter(),
        };
    }

    fn next_item(&mut self) -> Option<(usize, Result<R, JobError>)> {
        loop {
            if let Some(r) = self.current.next() {
                let i = self.current_index;
                self.current_index += 1;
                return Some((i, r));
            }
            self.fill();
            if self.is_ordered {
                let (start, len, h) = self.ordered.pop_front()?;
                self.open(start, len, h.join());
            } else {
                let (h, (start, len)) = self.unordered.next_blocking(None)?;
                self.open(start, len, h.join());
            }
            self.fill();
        }
    }
}

macro_rules! map_type {
    ($(#[$doc:meta])* $name:ident, $item:ty, $ordered:expr, |$idx:ident, $res:ident| $out:expr) => {
        $(#[$doc])*
        pub struct $name<'a, I: Iterator, R: Send + 'static> {
            engine: Engine<'a, I, R>,
        }

        impl<'a, I: Iterator, R: Send + 'static> $name<'a, I, R> {
            pub(crate) fn new(spawn: Spawner<'a, I::Item, R>, inputs: I, workers: usize) -> Self {
                $name {
                    engine: Engine {
                        spawn,
                        inputs: inputs.fuse(),
                        window: 4 * workers.max(1),
                        fixed_chunk: None,
                        chunk: 1,
                        in_flight: 0,
                        next_index: 0,
                        ordered: VecDeque::new(),
                        unordered: Completions::new(),
                        is_ordered: $ordered,
                        current: Vec::new().into_iter(),
                        current_index: 0,
                    },
                }
            }

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
        }

        impl<I: Iterator, R: Send + 'static> Iterator for $name<'_, I, R> {
            type Item = $item;

            fn next(&mut self) -> Option<Self::Item> {
                let ($idx, $res) = self.engine.next_item()?;
                Some($out)
            }
        }

        impl<I: Iterator, R: Send + 'static> fmt::Debug for $name<'_, I, R> {
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
