//! # parpool
//!
//! Thread pools (and, through the same [`Executor`] API, process pools)
//! with the tools Python's `concurrent.futures` made familiar, done the
//! Rust way:
//!
//! * [`JobHandle`]: block on it ([`join`](JobHandle::join),
//!   [`join_timeout`](JobHandle::join_timeout)), poll it
//!   ([`try_result`](JobHandle::try_result)), [`cancel`](JobHandle::cancel)
//!   it, attach [`on_done`](JobHandle::on_done) callbacks, or `.await` it
//!   from any async runtime;
//! * typed failures ([`JobError`]): a panic, a cancellation, a timeout or a
//!   late submission fails its own job only, with its message and location;
//! * [`ThreadPool::map`] (ordered, lazy, windowed, auto-chunked),
//!   [`map_unordered`](ThreadPool::map_unordered), [`as_completed`] and
//!   [`wait`](fn@wait) across handles from any pools;
//! * [`ThreadPool::par`] for data already in memory: an eager, indexed
//!   map (and `for_each`, `map_reduce`) that borrows the data and the
//!   closure, at rayon's speed; `ProcessPool::par` does the same for
//!   plain data across processes, through shared memory;
//! * progress on every map (`on_progress`, and `progress_bar` with the
//!   `progress` feature);
//! * [`ThreadPool::scope`] for jobs that borrow from the stack (their
//!   results may borrow too);
//! * registered [`Task`]s ([`task!`]) that any [`Executor`] can run, on
//!   threads or in isolated worker processes ([`ProcessPool`]), with
//!   [`SharedBytes`] for large payloads and per-job output capture
//!   ([`WorkerOutput::Capture`]);
//! * [`ipc`]: shared memory, robust mutexes, semaphores and events that
//!   work across worker processes and threads alike.
//!
//! ```
//! use parpool::{as_completed, JobOptions, ThreadPool};
//! use std::time::Duration;
//!
//! let pool = ThreadPool::builder().workers(4).build()?;
//!
//! // Submit, then collect in completion order.
//! let handles: Vec<_> = (1..=3u64).map(|n| pool.spawn(move || n * 10)).collect();
//! let mut results: Vec<u64> = as_completed(handles).map(|(_, r)| r.unwrap()).collect();
//! results.sort();
//! assert_eq!(results, [10, 20, 30]);
//!
//! // A panic fails its own job only.
//! let err = pool.spawn(|| -> () { panic!("boom") }).join().unwrap_err();
//! assert_eq!(err.panic_message(), Some("boom"));
//!
//! // A timeout resolves the handle and trips the job's cancel token.
//! let slow = pool.spawn_with(JobOptions::new().timeout(Duration::from_millis(10)), || {
//!     while !parpool::current_job().unwrap().is_cancelled() {
//!         std::thread::sleep(Duration::from_millis(1));
//!     }
//! });
//! assert!(slow.join().unwrap_err().is_timed_out());
//!
//! // Handles are futures too.
//! let answer = futures::executor::block_on(pool.spawn(|| 42));
//! assert_eq!(answer, Ok(42));
//! # Ok::<(), parpool::BuildError>(())
//! ```
//!
//! ## Platforms
//!
//! | part | Linux | macOS, Windows, other tier-1 |
//! |---|---|---|
//! | [`ThreadPool`], [`Pool::Threads`], [`JobHandle`], `map`, [`wait`](fn@wait), [`as_completed`], [`scope`](ThreadPool::scope), [`Executor`], [`task!`] | yes | yes |
//! | `ProcessPool`, `Pool::Processes`, tasks across processes, output capture (feature `process`) | 5.3 or later | absent |
//! | `ipc` and `SharedBytes` (feature `ipc`) | 5.3 or later; async waits use `futex_waitv` where the kernel has it (5.16) and a thread per waited word where not | absent |
//!
//! ## Features
//!
//! * `process` (default): process pools, registered tasks that cross into
//!   worker processes, per-job output capture. Brings in `ipc`, serde's
//!   postcard format and a constructor (`ctor`) that lets a worker process
//!   serve before `main`. Linux only; elsewhere it does nothing.
//! * `ipc` (default): the [`parpool-ipc`](https://docs.rs/parpool-ipc) crate as [`ipc`], and
//!   `SharedBytes`. Linux only; elsewhere it does nothing.
//! * `progress` (off): `progress_bar()` on every map, an `indicatif` bar
//!   with rate and ETA. The hook underneath, `on_progress`, needs no
//!   feature.
//! * `compare` (off): `parpool::compare::Compare` times *your* function
//!   sequentially, on a `ThreadPool`, on a `ProcessPool` (given a task) and
//!   as tokio tasks, and names the winner only when it is ahead by more
//!   than the spread (what `parpool compare` prints). Brings in `process`
//!   and tokio. Linux only.
//!
//! With `default-features = false` you get the thread pool and everything
//! around it with 20 dependencies and no code before `main`.
//!
//! ## Logging
//!
//! Each job runs inside a `tracing` span named `job` (fields `pool`, `job`)
//! at debug level; parpool prints nothing unless you install a subscriber.

#![cfg_attr(docsrs, feature(doc_cfg))]
// Without worker processes (another platform, or the features off) the
// docs still name `ProcessPool`, `ipc` and the rest, which that build lacks.
#![cfg_attr(
    not(all(feature = "process", feature = "ipc", target_os = "linux")),
    allow(rustdoc::broken_intra_doc_links)
)]

// The paths the exported macros write (`parpool::…`) work inside this
// crate too.
extern crate self as parpool;

/// Items of the `process` feature: on Linux only (elsewhere the feature
/// does nothing), marked as such in the docs.
macro_rules! cfg_process {
    ($($item:item)*) => {
        $(
            #[cfg(all(feature = "process", target_os = "linux"))]
            #[cfg_attr(docsrs, doc(cfg(all(feature = "process", target_os = "linux"))))]
            $item
        )*
    };
}

/// `progress_bar()` and `progress_bar_with(bar)` for a map that has
/// `on_progress`: one text for every map, `$when` saying when the bar
/// moves ("as results arrive").
macro_rules! progress_bar_methods {
    ($when:literal) => {
        #[doc = concat!(
                    "Shows an `indicatif` progress bar on standard error (with rate and ETA) ",
                    $when,
                    "; see [`on_progress`](Self::on_progress). The `progress` feature."
                )]
        #[cfg(feature = "progress")]
        #[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
        pub fn progress_bar(self) -> Self {
            self.progress_bar_with(crate::bar::new_bar())
        }

        #[doc = concat!("Drives `bar`, a bar of your own, ", $when, ". The `progress` feature.")]
        #[cfg(feature = "progress")]
        #[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
        pub fn progress_bar_with(self, bar: indicatif::ProgressBar) -> Self {
            self.on_progress(crate::bar::drive(bar))
        }
    };
}

/// Items of the `ipc` feature: on Linux only, marked as such in the docs.
macro_rules! cfg_ipc {
    ($($item:item)*) => {
        $(
            #[cfg(all(feature = "ipc", target_os = "linux"))]
            #[cfg_attr(docsrs, doc(cfg(all(feature = "ipc", target_os = "linux"))))]
            $item
        )*
    };
}

#[cfg(feature = "progress")]
mod bar;
#[cfg(all(feature = "compare", target_os = "linux"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "compare", target_os = "linux"))))]
pub mod compare;
mod error;
mod handle;
mod job;
mod lifecycle;
mod map;
mod notify;
mod output;
mod panic;
mod pool;
cfg_process! {
    mod codec;
    mod process;
    #[doc(hidden)]
    pub mod remote;
}
mod returned;
/// What the fuzz targets reach (`fuzz/`); built only by `cargo fuzz`.
#[cfg(all(fuzzing, feature = "process", target_os = "linux"))]
#[doc(hidden)]
pub use process::fuzz as __fuzz;
mod stats;
mod sync;
mod task;
mod thread;
mod timer;
mod wait;

cfg_ipc! {
    /// Shared state and synchronization across processes (and threads), from
    /// the [`parpool-ipc`](https://docs.rs/parpool-ipc) crate: put one of these
    /// in a job's input and the job, in a worker process or on a thread, works
    /// on the same object.
    ///
    /// ```
    /// use parpool::ipc::{Lock, Queue, SharedMem};
    ///
    /// let q: Queue<String> = Queue::new()?;
    /// q.send("hello".to_owned()).unwrap();
    /// assert_eq!(q.recv().unwrap(), "hello");
    /// let lock = Lock::new(())?;
    /// drop(lock.lock());
    /// assert_eq!(SharedMem::new(64)?.len(), 64);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// See [the `parpool-ipc` crate's page](https://docs.rs/parpool-ipc) for
    /// the whole story: robust locks, what crosses and how, and what is
    /// checked when a region arrives. Every example on these items is written
    /// for a program that depends on `parpool` alone.
    pub mod ipc {
        pub use parpool_ipc::{
            AccessError, Barrier, BarrierError, Condvar, Descriptor, Event, EventWait, Lock, LockError,
            MapError,
            Mutex, MutexGuard, Party, Permit, Pipe, Queue, RLock, RLockGuard, RecvError, Semaphore,
            SendError, SharedList, SharedMap, SharedMem, SharedSlice, TaskDoneError,
        };
}
}

/// The names most programs use, in one import: the pools and
/// [`Process`], the [`Executor`] trait whose methods they
/// share, the [`task!`] and [`call!`] macros, handles and their errors,
/// job options, `wait`/`as_completed`, and (with their features, on Linux)
/// [`ipc`] and [`SharedBytes`].
///
/// ```
/// use parpool::prelude::*;
///
/// parpool::task! {
///     fn double(x: u64) -> u64 { x * 2 }
/// }
///
/// let pool = ThreadPool::builder().workers(2).build()?;
/// let handles: Vec<JobHandle<u64>> = (0..4).map(|x| pool.submit(double, x)).collect();
/// let all = wait(handles, WaitFor::AllCompleted, None);
/// assert!(all.pending.is_empty());
/// let mut results = all
///     .done
///     .into_iter()
///     .map(JobHandle::join)
///     .collect::<Result<Vec<u64>, JobError>>()?;
/// results.sort();
/// assert_eq!(results, [0, 2, 4, 6]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub mod prelude {
    #[cfg(all(feature = "ipc", target_os = "linux"))]
    pub use crate::SharedBytes;
    cfg_ipc! {
        pub use crate::ipc;
    }
    pub use crate::{
        CancelOnDrop, ErrorReport, Executor, JobError, JobHandle, JobOptions, Pool, PoolKind, Task,
        ThreadPool, WaitFor, as_completed, call, current_job, task, wait,
    };
    cfg_process! {
        pub use crate::{Process, ProcessPool, WorkerOutput};
    }
}

/// Items the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    cfg_process! {
        pub use crate::process::pod::{NoPodKernel, PodKernel, Probe};
        pub use crate::process::registry::{PodFn, TaskEntry, register};
        pub use crate::process::{EventSink, EventsOnly, WorkerLimits};
        pub use ctor;
    }
    pub use crate::returned::{
        Carry, ErrorCodec, ErrorProbe, ResultParts, Returned, carry, describe, error_codec,
    };
    pub use crate::task::CallFn;
    pub use serde;
}

pub use error::{
    BuildError, CodecStage, ErrorReport, ExitStatus, JobError, Location, PanicInfo, Payload,
};
pub use handle::{CancelOnDrop, JobHandle};
pub use job::{CancelToken, JobContext, JobId, JobOptions, current_job};
pub use map::{Map, MapUnordered};
pub use output::CapturedOutput;
cfg_ipc! {
    pub use parpool_ipc::SharedBytes;
}
cfg_process! {
    pub use pool::PoolPar;
}
pub use pool::{ParsePoolKindError, Pool, PoolKind};
cfg_process! {
    pub use process::{
        PodMapError, PodPar, Process, ProcessPool, ProcessPoolBuilder, WorkerOutput, init,
        serve_worker, with_worker_state,
    };
}
pub use stats::Stats;
pub use task::{Executor, Task};
pub use thread::{
    Indexed, Par, Scope, ScopedHandle, ScopedMap, ThreadPool, ThreadPoolBuilder, TrySpawnError,
};
pub use wait::{AsCompleted, CompletedStream, WaitFor, WaitResult, as_completed, wait};
