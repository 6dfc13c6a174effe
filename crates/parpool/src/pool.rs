//! [`Pool`]: a thread pool or a process pool, chosen at run time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::BuildError;
use crate::handle::JobHandle;
use crate::job::JobOptions;
use crate::map::{ChunkIn, ChunkOut};
#[cfg(all(feature = "process", target_os = "linux"))]
use crate::process::ProcessPool;
use crate::stats::Stats;
use crate::task::{Executor, Task, sealed};
use crate::thread::ThreadPool;

/// A thread pool or a process pool, chosen at run time — Python's
/// `executor = ThreadPoolExecutor() if io_bound else ProcessPoolExecutor()`.
///
/// [`Executor`]'s methods are generic over the task, so a `dyn Executor`
/// can report its workers and shut down but cannot submit; `Pool` is the
/// way to pick a pool at run time and still use all of [`Executor`], at
/// the cost of one branch per call.
///
/// ```
/// use parpool::{Executor, Pool, PoolKind};
///
/// parpool::task!(fn square(x: u64) -> u64 { x * x });
///
/// // From a flag, a setting or a measurement.
/// let kind: PoolKind = "threads".parse()?;
/// let pool = Pool::new(kind, 2)?;
/// assert_eq!(pool.kind(), PoolKind::Threads);
/// let total: u64 = pool.map_task(square, 1..=3).map(Result::unwrap).sum();
/// assert_eq!(total, 14);
///
/// // Any configured pool converts.
/// let pool: Pool = parpool::ThreadPool::builder().workers(1).build()?.into();
/// assert_eq!(pool.submit(square, 7).join(), Ok(49));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Pool {
    /// Jobs run on threads of this process.
    Threads(ThreadPool),
    /// Jobs run in isolated worker processes.
    #[cfg(all(feature = "process", target_os = "linux"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "process", target_os = "linux"))))]
    Processes(ProcessPool),
}

/// Which kind of [`Pool`] to build; parses from `"threads"` and
/// `"processes"` (also `"thread"`, `"process"`), as a command-line flag
/// would give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PoolKind {
    /// A [`ThreadPool`].
    Threads,
    /// A [`ProcessPool`](crate::ProcessPool) (Linux, with the `process`
    /// feature).
    Processes,
}

/// A [`PoolKind`] that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pool kind {given:?}: expected \"threads\" or \"processes\"")]
pub struct ParsePoolKindError {
    given: String,
}

impl FromStr for PoolKind {
    type Err = ParsePoolKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "threads" | "thread" => Ok(PoolKind::Threads),
            "processes" | "process" => Ok(PoolKind::Processes),
            _ => Err(ParsePoolKindError {
                given: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for PoolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolKind::Threads => "threads",
            PoolKind::Processes => "processes",
        })
    }
}

impl Pool {
    /// Builds a pool of `kind` with `workers` workers and every other
    /// setting at its default; build the concrete pool and convert it
    /// (`.into()`) for more control.
    ///
    /// # Errors
    ///
    /// What the pool's builder returns; [`BuildError::Unsupported`] for
    /// [`PoolKind::Processes`] where process pools are not available
    /// (outside Linux, or without the `process` feature).
    pub fn new(kind: PoolKind, workers: usize) -> Result<Pool, BuildError> {
        match kind {
            PoolKind::Threads => Ok(Pool::Threads(
                ThreadPool::builder().workers(workers).build()?,
            )),
            #[cfg(all(feature = "process", target_os = "linux"))]
            PoolKind::Processes => Ok(Pool::Processes(
                ProcessPool::builder().workers(workers).build()?,
            )),
            #[cfg(not(all(feature = "process", target_os = "linux")))]
            PoolKind::Processes => Err(BuildError::Unsupported {
                what: "process pools",
                needs: "Linux and parpool's `process` feature",
            }),
        }
    }

    /// Which kind of pool this is.
    pub fn kind(&self) -> PoolKind {
        match self {
            Pool::Threads(_) => PoolKind::Threads,
            #[cfg(all(feature = "process", target_os = "linux"))]
            Pool::Processes(_) => PoolKind::Processes,
        }
    }

    /// An eager map over plain data (`bytemuck::Pod`: numbers, arrays of
    /// them, `#[repr(C)]` structs of them) on whichever pool this is: on
    /// threads, [`ThreadPool::par`]; in processes,
    /// [`ProcessPool::par`](crate::ProcessPool::par), through shared memory.
    ///
    /// ```
    /// use parpool::{Pool, PoolKind};
    ///
    /// parpool::task!(fn square(x: f64) -> f64 { x * x });
    ///
    /// let data: Vec<f64> = (0..1_000).map(f64::from).collect();
    /// for kind in [PoolKind::Threads, PoolKind::Processes] {
    ///     let pool = Pool::new(kind, 2)?;
    ///     let squares = pool.par(&data).map(square)?;
    ///     assert_eq!(squares[30], 900.0);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(all(feature = "process", target_os = "linux"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "process", target_os = "linux"))))]
    pub fn par<'a, A: bytemuck::Pod>(&self, data: &'a [A]) -> PoolPar<'_, 'a, A> {
        PoolPar { pool: self, data }
    }

    /// Stops accepting jobs and returns at once; the jobs still run (see
    /// [`ThreadPool::close`]).
    pub fn close(&self) {
        match self {
            Pool::Threads(p) => p.close(),
            #[cfg(all(feature = "process", target_os = "linux"))]
            Pool::Processes(p) => p.close(),
        }
    }

    /// Shuts down without blocking a runtime thread (see
    /// [`ThreadPool::shutdown_async`]).
    pub fn shutdown_async(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let threads = match self {
            Pool::Threads(p) => Some(p.shutdown_async()),
            #[cfg(all(feature = "process", target_os = "linux"))]
            Pool::Processes(_) => None,
        };
        #[cfg(all(feature = "process", target_os = "linux"))]
        let processes = match self {
            Pool::Processes(p) => Some(p.shutdown_async()),
            Pool::Threads(_) => None,
        };
        async move {
            if let Some(done) = threads {
                done.await;
            }
            #[cfg(all(feature = "process", target_os = "linux"))]
            if let Some(done) = processes {
                done.await;
            }
        }
    }

    /// A snapshot of the pool's counters.
    pub fn stats(&self) -> Stats {
        match self {
            Pool::Threads(p) => p.stats(),
            #[cfg(all(feature = "process", target_os = "linux"))]
            Pool::Processes(p) => p.stats(),
        }
    }
}

impl From<ThreadPool> for Pool {
    fn from(pool: ThreadPool) -> Self {
        Pool::Threads(pool)
    }
}

#[cfg(all(feature = "process", target_os = "linux"))]
impl From<ProcessPool> for Pool {
    fn from(pool: ProcessPool) -> Self {
        Pool::Processes(pool)
    }
}

/// Calls `$body` with `$p` bound to the pool inside `$pool`.
macro_rules! each {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Threads($p) => $body,
            #[cfg(all(feature = "process", target_os = "linux"))]
            Pool::Processes($p) => $body,
        }
    };
}

impl sealed::Sealed for Pool {
    fn submit_chunk<T: Task>(
        &self,
        task: T,
        chunk: ChunkIn<T::Input, T::Output>,
    ) -> JobHandle<ChunkOut<T::Input, T::Output>> {
        each!(self, p => p.submit_chunk(task, chunk))
    }

    fn chunk_time(&self) -> Duration {
        each!(self, p => p.chunk_time())
    }
}

impl Executor for Pool {
    fn submit_with<T: Task>(
        &self,
        opts: JobOptions,
        task: T,
        input: T::Input,
    ) -> JobHandle<T::Output> {
        each!(self, p => p.submit_with(opts, task, input))
    }

    async fn submit_async<T: Task>(&self, task: T, input: T::Input) -> JobHandle<T::Output> {
        match self {
            Pool::Threads(p) => p.submit_async(task, input).await,
            #[cfg(all(feature = "process", target_os = "linux"))]
            Pool::Processes(p) => p.submit(task, input),
        }
    }

    fn workers(&self) -> usize {
        each!(self, p => Executor::workers(p))
    }

    fn shutdown(&self) {
        each!(self, p => Executor::shutdown(p))
    }

    fn shutdown_now(&self) {
        each!(self, p => Executor::shutdown_now(p))
    }
}

/// An eager map over plain data on a [`Pool`], from [`Pool::par`].
#[cfg(all(feature = "process", target_os = "linux"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "process", target_os = "linux"))))]
#[derive(Debug)]
pub struct PoolPar<'p, 'a, A> {
    pool: &'p Pool,
    data: &'a [A],
}

#[cfg(all(feature = "process", target_os = "linux"))]
impl<A: bytemuck::Pod + Sync> PoolPar<'_, '_, A> {
    /// Maps every item through `task` and returns the results in input
    /// order.
    ///
    /// # Errors
    ///
    /// [`PodMapError`](crate::PodMapError): on a process pool, the results
    /// of the ranges that succeeded and each failed range's error (see
    /// [`PodPar::map`](crate::PodPar::map)); on a thread pool, the first
    /// panic, for the whole input.
    pub fn map<T>(self, task: T) -> Result<Vec<T::Output>, crate::PodMapError<T::Output>>
    where
        T: Task<Input = A>,
        T::Output: bytemuck::Pod,
    {
        match self.pool {
            Pool::Threads(p) => p
                .par(self.data)
                .map(|x| task.run(*x))
                .map_err(|e| crate::PodMapError::whole(self.data.len(), e)),
            Pool::Processes(p) => p.par(self.data).map(task),
        }
    }
}
