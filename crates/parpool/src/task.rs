//! Registered tasks and the [`Executor`] trait every pool implements.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{codec_error, decode, encode, encode_by_value, encode_exact};
use crate::error::{CodecStage, JobError};
use crate::panic;
use parpool_ipc::transfer::{self, Encoded};

use crate::handle::JobHandle;
use crate::job::JobOptions;
use crate::map::{ChunkIn, ChunkOut, Map, MapUnordered};

/// A function registered under a stable name, so that any pool — threads
/// or worker processes, through the same trait — can run it. Input and output are serde types: they may cross a process
/// boundary.
///
/// Define tasks with [`task!`](crate::task!) rather than by hand.
pub trait Task: Copy + Send + Sync + 'static {
    /// The stable name a worker looks the task up by.
    const NAME: &'static str;
    /// What the task takes.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// What the task returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Runs the task.
    fn run(input: Self::Input) -> Self::Output;
}

/// Defines a [`Task`]: a unit struct named like the function, whose
/// [`Task::NAME`] is its module path.
///
/// One input parameter; several values travel as a tuple.
///
/// ```
/// use parpool::{Executor, Task, ThreadPool};
///
/// parpool::task! {
///     /// Adds two numbers.
///     pub fn add((a, b): (u64, u64)) -> u64 { a + b }
/// }
///
/// assert!(add::NAME.ends_with("::add"));
/// let pool = ThreadPool::builder().workers(2).build()?;
/// assert_eq!(pool.submit(add, (2, 3)).join(), Ok(5));
/// # Ok::<(), parpool::BuildError>(())
/// ```
#[macro_export]
macro_rules! task {
    ($(#[$meta:meta])* $vis:vis fn $name:ident (mut $arg:ident : $in:ty) -> $out:ty $body:block) => {
        $crate::task!(@define [$(#[$meta])*] $vis $name [mut $arg] $in, $out, $body);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident ($arg:tt : $in:ty) -> $out:ty $body:block) => {
        $crate::task!(@define [$(#[$meta])*] $vis $name [$arg] $in, $out, $body);
    };
    (@define [$($meta:tt)*] $vis:vis $name:ident [$($arg:tt)*] $in:ty, $out:ty, $body:block) => {
        $($meta)*
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        $vis struct $name;

        impl $crate::Task for $name {
            const NAME: &'static str = concat!(module_path!(), "::", stringify!($name));
            type Input = $in;
            type Output = $out;
            fn run($($arg)*: $in) -> $out $body
        }

        $crate::__private::ctor::declarative::ctor! {
            #[ctor(unsafe, anonymous, crate_path = $crate::__private::ctor)]
            fn register() {
                // SAFETY (constructor): only appends to parpool's registry,
                // a std `Mutex` that needs no runtime initialization.
                $crate::__private::register($crate::__private::TaskEntry::of::<$name>());
            }
        }

        impl $name {
            /// Runs the task here, on the calling thread.
            #[allow(dead_code)]
            $vis fn run_now(input: $in) -> $out {
                <$name as $crate::Task>::run(input)
            }
        }
    };
}

/// A registered task as a worker process finds it: its name and type-erased
/// entry points that decode the input, run the task with panics caught, and
/// encode the output. Each `task!` registers its entry from a constructor,
/// so a task defined anywhere in the binary is known before `main` — and
/// before the `late` constructor that diverts worker processes runs.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct TaskEntry {
    name: &'static str,
    run: RunFn,
    run_chunk: ChunkFn,
    run_init: fn(&[u8], Vec<OwnedFd>) -> Result<WorkerState, JobError>,
}

/// How a worker writes the shared objects in a job's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// As descriptors sent beside the bytes (a pool on this machine).
    Descriptors,
    /// By value, for a pool whose parent forwards the output to another
    /// machine: a `SharedBytes` is copied inline, an `ipc` object fails
    /// with [`JobError::Unsendable`]. A chunk's items are each written as
    /// `Result<bytes, JobError>`, the bytes being the encoded output, so
    /// that a parent that does not know the output type can still tell
    /// them apart.
    ByValue,
}

/// A type-erased entry point: encoded input and its descriptors in,
/// encoded output out.
type RunFn = fn(&[u8], Vec<OwnedFd>, Sharing) -> Result<Encoded, JobError>;

/// A type-erased chunk entry point: the encoded `Vec` of inputs, the
/// positions to run (`None`: all), and the journal each item's result is
/// encoded into as it finishes.
type ChunkFn = fn(
    &[u8],
    Vec<OwnedFd>,
    Option<&[u32]>,
    &mut transfer::Journal,
    Sharing,
) -> Result<Encoded, JobError>;

/// A worker's state: what its initializer returned.
pub(crate) type WorkerState = Box<dyn std::any::Any + Send>;

static REGISTRY: Mutex<Vec<TaskEntry>> = Mutex::new(Vec::new());

/// Adds a task to the registry (called by `task!` before `main`).
#[doc(hidden)]
pub fn register(entry: TaskEntry) {
    crate::sync::lock(&REGISTRY).push(entry);
}

impl TaskEntry {
    /// The entry for `T`.
    pub const fn of<T: Task>() -> Self {
        TaskEntry {
            name: T::NAME,
            run: run_erased::<T>,
            run_chunk: run_chunk_erased::<T>,
            run_init: run_init_erased::<T>,
        }
    }

    /// Runs one job: the input and the output are postcard bytes.
    pub(crate) fn run(
        &self,
        input: &[u8],
        fds: Vec<OwnedFd>,
        sharing: Sharing,
    ) -> Result<Encoded, JobError> {
        (self.run)(input, fds, sharing)
    }

    /// Runs a chunk: `Vec<Input>` in, `Vec<Result<Output, JobError>>` out,
    /// one result for each position of `only` (`None`: every input), in
    /// that order, each written to `journal` as it finishes.
    pub(crate) fn run_chunk(
        &self,
        input: &[u8],
        fds: Vec<OwnedFd>,
        only: Option<&[u32]>,
        journal: &mut transfer::Journal,
        sharing: Sharing,
    ) -> Result<Encoded, JobError> {
        (self.run_chunk)(input, fds, only, journal, sharing)
    }

    /// Runs the task as a worker's initializer: its output is kept, not sent.
    pub(crate) fn run_init(
        &self,
        input: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<WorkerState, JobError> {
        (self.run_init)(input, fds)
    }

    /// The task's registered name.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The registered task called `name`.
    pub(crate) fn find(name: &str) -> Option<TaskEntry> {
        static BY_NAME: OnceLock<HashMap<&'static str, TaskEntry>> = OnceLock::new();
        BY_NAME
            .get_or_init(|| {
                let mut map = HashMap::new();
                for entry in crate::sync::lock(&REGISTRY).iter() {
                    if map.insert(entry.name, *entry).is_some() {
                        tracing::warn!(
                            task = entry.name,
                            "two tasks are registered under one name"
                        );
                    }
                }
                map
            })
            .get(name)
            .copied()
    }
}

fn run_erased<T: Task>(
    input: &[u8],
    fds: Vec<OwnedFd>,
    sharing: Sharing,
) -> Result<Encoded, JobError> {
    let input: T::Input = decode(CodecStage::DecodeInput, input, fds)?;
    let output = panic::catch(|| T::run(input)).map_err(JobError::panicked)?;
    match sharing {
        Sharing::Descriptors => encode(CodecStage::EncodeOutput, &output),
        Sharing::ByValue => Ok(Encoded {
            bytes: encode_by_value(CodecStage::EncodeOutput, &output)?,
            shared: Vec::new(),
        }),
    }
}

fn run_init_erased<T: Task>(input: &[u8], fds: Vec<OwnedFd>) -> Result<WorkerState, JobError> {
    let input: T::Input = decode(CodecStage::DecodeInput, input, fds)?;
    let output = panic::catch(|| T::run(input)).map_err(JobError::panicked)?;
    Ok(Box::new(output))
}

fn run_chunk_erased<T: Task>(
    input: &[u8],
    fds: Vec<OwnedFd>,
    only: Option<&[u32]>,
    journal: &mut transfer::Journal,
    sharing: Sharing,
) -> Result<Encoded, JobError> {
    let inputs: Vec<T::Input> = decode(CodecStage::DecodeInput, input, fds)?;
    let picked: Vec<T::Input> = match only {
        None => inputs,
        Some(positions) => {
            let mut slots: Vec<Option<T::Input>> = inputs.into_iter().map(Some).collect();
            positions
                .iter()
                .map(|&p| slots.get_mut(p as usize).and_then(Option::take))
                .collect::<Option<_>>()
                .ok_or_else(|| codec_error(CodecStage::DecodeInput, "no such item in the chunk"))?
        }
    };
    let count = picked.len();
    let stage = CodecStage::EncodeOutput;
    // Writes one item's value to the journal, as `Ok(output)`.
    let write_ok = |output: &T::Output, journal: &mut transfer::Journal| match sharing {
        Sharing::Descriptors => postcard::serialize_with_flavor(
            &Ok::<_, JobError>(output),
            transfer::JournalFlavor(journal),
        )
        .map_err(|e| codec_error(stage, e)),
        Sharing::ByValue => {
            let bytes = encode_by_value(stage, output)?;
            let entry = Ok::<_, JobError>(serde_bytes::Bytes::new(&bytes));
            postcard::serialize_with_flavor(&entry, transfer::JournalFlavor(journal))
                .map_err(|e| codec_error(stage, e))
        }
    };
    // One panic guard per item covers running and encoding it.
    let run_items = |journal: &mut transfer::Journal| {
        panic::capturing(|| {
            for (position, x) in picked.into_iter().enumerate() {
                journal.starting(u32::try_from(position).unwrap_or(u32::MAX));
                let start = journal.written();
                let mut encoding = false;
                let outcome = panic::catch_captured(|| {
                    transfer::pause_collecting(true);
                    let output = T::run(x);
                    transfer::pause_collecting(false);
                    encoding = true;
                    write_ok(&output, journal)
                });
                let failure = match outcome {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(p) if encoding => Some(codec_error(stage, format!("panicked: {p}"))),
                    Err(p) => Some(JobError::panicked(p)),
                };
                if let Some(e) = failure {
                    transfer::pause_collecting(false);
                    journal.truncate(start);
                    // `Err` is written alike whatever the `Ok` type.
                    let failed = Err::<(), _>(e);
                    postcard::serialize_with_flavor(&failed, transfer::JournalFlavor(journal))
                        .map_err(|e| codec_error(stage, e))?;
                }
                journal.commit_item();
            }
            Ok::<(), JobError>(())
        })
    };
    let mut shared = Vec::new();
    match sharing {
        // One collecting window for the whole chunk, paused while each item
        // runs: what an item's output holds of shared memory is gathered
        // for the reply, what the task serializes for itself is not.
        Sharing::Descriptors => transfer::collecting_onto(&mut shared, || run_items(journal))?,
        Sharing::ByValue => run_items(journal)?,
    }
    journal.idle();
    // The same bytes as encoding a `Vec<Result<Output, JobError>>` whole:
    // the length, then the entries.
    let mut bytes = encode_exact(&count).map_err(|e| codec_error(stage, e))?;
    bytes.extend_from_slice(journal.entries());
    Ok(Encoded { bytes, shared })
}

pub(crate) mod sealed {
    use super::*;

    /// Seals [`Executor`]: only parpool's pools implement it, which lets the
    /// trait grow without breaking anyone.
    pub trait Sealed {
        /// Runs `task` over a chunk of inputs as one job (the unit `map`
        /// sends); each item's panic is caught separately.
        fn submit_chunk<T: Task>(
            &self,
            task: T,
            chunk: ChunkIn<T::Input, T::Output>,
        ) -> JobHandle<ChunkOut<T::Input, T::Output>>
        where
            Self: Sized;

        /// The work an automatic `map` chunk aims at on this pool.
        fn chunk_time(&self) -> std::time::Duration {
            crate::map::TARGET_CHUNK_TIME
        }
    }
}

/// What every pool offers for registered [`Task`]s, like Python's
/// `concurrent.futures.Executor`: write code once against `Executor` and run
/// it on threads or processes.
///
/// ```
/// use parpool::{Executor, ThreadPool};
///
/// parpool::task!(fn square(x: u64) -> u64 { x * x });
///
/// fn sum_of_squares(pool: &impl Executor, n: u64) -> u64 {
///     pool.map_task(square, 0..n).map(Result::unwrap).sum()
/// }
///
/// let pool = ThreadPool::builder().workers(2).build()?;
/// assert_eq!(sum_of_squares(&pool, 4), 0 + 1 + 4 + 9);
/// # Ok::<(), parpool::BuildError>(())
/// ```
pub trait Executor: sealed::Sealed {
    /// Runs `task` on `input` with per-job options.
    fn submit_with<T: Task>(
        &self,
        opts: JobOptions,
        task: T,
        input: T::Input,
    ) -> JobHandle<T::Output>
    where
        Self: Sized;

    /// Runs `task` on `input`.
    fn submit<T: Task>(&self, task: T, input: T::Input) -> JobHandle<T::Output>
    where
        Self: Sized,
    {
        self.submit_with(JobOptions::default(), task, input)
    }

    /// Runs `task` over `inputs`, yielding results lazily in input order
    /// (see [`Map`]).
    fn map_task<T, I>(&self, task: T, inputs: I) -> Map<'_, I::IntoIter, T::Output>
    where
        Self: Sized,
        T: Task,
        I: IntoIterator<Item = T::Input>,
    {
        let chunk_time = self.chunk_time();
        Map::new(
            Box::new(move |chunk| self.submit_chunk(task, chunk)),
            inputs.into_iter(),
            self.workers(),
        )
        .chunk_time(chunk_time)
    }

    /// Runs `task` over `inputs`, yielding `(index, result)` as jobs finish.
    fn map_task_unordered<T, I>(
        &self,
        task: T,
        inputs: I,
    ) -> MapUnordered<'_, I::IntoIter, T::Output>
    where
        Self: Sized,
        T: Task,
        I: IntoIterator<Item = T::Input>,
    {
        let chunk_time = self.chunk_time();
        MapUnordered::new(
            Box::new(move |chunk| self.submit_chunk(task, chunk)),
            inputs.into_iter(),
            self.workers(),
        )
        .chunk_time(chunk_time)
    }

    /// Number of workers.
    fn workers(&self) -> usize;

    /// Stops accepting jobs, finishes the queued ones, and waits.
    fn shutdown(&self);

    /// Stops accepting jobs, cancels the queued ones, and waits for the
    /// running ones.
    fn shutdown_now(&self);
}
