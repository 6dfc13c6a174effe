//! The registry of [`Task`]s a worker process looks jobs up in, and the
//! type-erased entry points that decode a job's input, run the task and
//! encode its output.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, OnceLock};

use crate::codec::{codec_error, decode, encode, encode_by_value, encode_exact};
use crate::error::{CodecStage, JobError};
use crate::panic;
use crate::task::Task;
use parpool_ipc::SharedMem;
use parpool_ipc::transfer::{self, Encoded};
use std::ops::Range;

/// A plain-data task's kernel: maps `range` of the input memory into the
/// same range of the output memory.
#[doc(hidden)]
pub type PodFn<T> = fn(&T, &SharedMem, &SharedMem, Range<usize>) -> Result<(), JobError>;

/// A registered task as a worker process finds it: its name and a
/// type-erased entry that decodes the input, runs the task with panics
/// caught, and encodes the output. Each `task!` (and each `call!`)
/// registers its entry from a constructor, so a task defined anywhere in
/// the binary is known before `main` — and before the `late` constructor
/// that diverts worker processes runs.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct TaskEntry {
    name: &'static str,
    ops: &'static dyn EntryOps,
}

impl std::fmt::Debug for TaskEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEntry")
            .field("name", &self.name)
            .finish()
    }
}

/// What a worker does with a registered task, its types erased.
trait EntryOps: Send + Sync {
    fn run(&self, input: &[u8], fds: Vec<OwnedFd>, sharing: Sharing) -> Result<Encoded, JobError>;
    fn run_chunk(
        &self,
        input: &[u8],
        fds: Vec<OwnedFd>,
        only: Option<&[u32]>,
        journal: &mut transfer::Journal,
        sharing: Sharing,
    ) -> Result<Encoded, JobError>;
    fn run_init(&self, input: &[u8], fds: Vec<OwnedFd>) -> Result<WorkerState, JobError>;
    /// Runs the task's kernel over `range` of shared memory, if its data
    /// is plain (`None` otherwise).
    fn run_pod(
        &self,
        input: &SharedMem,
        output: &SharedMem,
        range: Range<usize>,
    ) -> Option<Result<(), JobError>>;
}

/// A task and, for a task of plain data, its kernel over shared memory.
struct Entry<T: Task> {
    task: T,
    pod: Option<PodFn<T>>,
}

impl<T: Task> EntryOps for Entry<T> {
    fn run(&self, input: &[u8], fds: Vec<OwnedFd>, sharing: Sharing) -> Result<Encoded, JobError> {
        run_one(&self.task, input, fds, sharing)
    }
    fn run_chunk(
        &self,
        input: &[u8],
        fds: Vec<OwnedFd>,
        only: Option<&[u32]>,
        journal: &mut transfer::Journal,
        sharing: Sharing,
    ) -> Result<Encoded, JobError> {
        run_chunk(&self.task, input, fds, only, journal, sharing)
    }
    fn run_init(&self, input: &[u8], fds: Vec<OwnedFd>) -> Result<WorkerState, JobError> {
        let input: T::Input = decode(CodecStage::DecodeInput, input, fds)?;
        let output = panic::catch(|| self.task.run(input)).map_err(JobError::panicked)?;
        Ok(Box::new(output))
    }
    fn run_pod(
        &self,
        input: &SharedMem,
        output: &SharedMem,
        range: Range<usize>,
    ) -> Option<Result<(), JobError>> {
        self.pod
            .map(|kernel| kernel(&self.task, input, output, range))
    }
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

/// A worker's state: what its initializer returned.
pub(crate) type WorkerState = Box<dyn std::any::Any + Send>;

static REGISTRY: Mutex<Vec<TaskEntry>> = Mutex::new(Vec::new());

/// Adds a task to the registry (called by `task!` before `main`).
#[doc(hidden)]
pub fn register(entry: TaskEntry) {
    crate::sync::lock(&REGISTRY).push(entry);
}

impl TaskEntry {
    /// The entry for `task`, with the kernel over shared memory that
    /// `task!` found for a task of plain data.
    pub fn new<T: Task>(task: T, pod: Option<PodFn<T>>) -> Self {
        TaskEntry {
            name: T::NAME,
            // One small allocation per registered task, for the life of
            // the process (none for a task without state, the usual kind).
            ops: Box::leak(Box::new(Entry { task, pod })),
        }
    }

    /// Runs the task's kernel over `range` of shared memory; `None` if the
    /// task's data is not plain.
    pub(crate) fn run_pod(
        &self,
        input: &SharedMem,
        output: &SharedMem,
        range: Range<usize>,
    ) -> Option<Result<(), JobError>> {
        self.ops.run_pod(input, output, range)
    }

    /// Runs one job: the input and the output are postcard bytes.
    pub(crate) fn run(
        &self,
        input: &[u8],
        fds: Vec<OwnedFd>,
        sharing: Sharing,
    ) -> Result<Encoded, JobError> {
        self.ops.run(input, fds, sharing)
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
        self.ops.run_chunk(input, fds, only, journal, sharing)
    }

    /// Runs the task as a worker's initializer: its output is kept, not sent.
    pub(crate) fn run_init(
        &self,
        input: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<WorkerState, JobError> {
        self.ops.run_init(input, fds)
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
                let mut ambiguous = Vec::new();
                for entry in crate::sync::lock(&REGISTRY).iter() {
                    if map.insert(entry.name, *entry).is_some() {
                        ambiguous.push(entry.name);
                    }
                }
                // Two functions under one name (a `call!` that a macro
                // expands twice at one place): neither is run, rather than
                // perhaps the wrong one.
                for name in ambiguous {
                    map.remove(name);
                    tracing::error!(
                        task = name,
                        "two tasks are registered under one name, so neither can be run; \
                         give each `call!` a place of its own (or use `task!`)"
                    );
                }
                map
            })
            .get(name)
            .copied()
    }
}

fn run_one<T: Task>(
    task: &T,
    input: &[u8],
    fds: Vec<OwnedFd>,
    sharing: Sharing,
) -> Result<Encoded, JobError> {
    let input: T::Input = decode(CodecStage::DecodeInput, input, fds)?;
    let output = panic::catch(|| T::to_wire(task.run(input))).map_err(JobError::panicked)?;
    match sharing {
        Sharing::Descriptors => encode(CodecStage::EncodeOutput, &output),
        Sharing::ByValue => Ok(Encoded {
            bytes: encode_by_value(CodecStage::EncodeOutput, &output)?,
            shared: Vec::new(),
        }),
    }
}

fn run_chunk<T: Task>(
    task: &T,
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
    let write_ok = |output: &T::Wire, journal: &mut transfer::Journal| match sharing {
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
                    let output = T::to_wire(task.run(x));
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
