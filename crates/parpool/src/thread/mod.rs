//! [`ThreadPool`]: closures and tasks on a fixed set of worker threads.

mod par;
mod scope;
mod sleep;
mod worker;

pub(crate) use worker::help_until;

pub use par::{Indexed, Par};
pub use scope::{Scope, ScopedHandle, ScopedMap};

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle as ThreadHandle;

use crate::error::{BuildError, JobError};
use crate::handle::JobHandle;
use crate::job::JobOptions;
use crate::lifecycle::Lifecycle;
use crate::map::{ChunkIn, ChunkOut, Map, MapUnordered, Spawner};
use crate::panic;
use crate::stats::Stats;
use crate::task::{Executor, Task, sealed};
use worker::{Admitted, ClosureJob, Refused, ThreadShared};

type Initializer = Arc<dyn Fn() + Send + Sync>;

/// A pool of worker threads running closures and [`Task`]s.
///
/// The thread-backed counterpart of Python's `ThreadPoolExecutor`: jobs
/// return [`JobHandle`]s, a panicking job fails alone (the panic surfaces in
/// its handle; the worker lives on), and an idle pool uses no CPU.
/// Dropping the pool is [`shutdown`](Self::shutdown): queued jobs run, then
/// the workers are joined.
///
/// ```
/// use parpool::ThreadPool;
///
/// let pool = ThreadPool::builder().workers(4).name("demo").build()?;
/// let squares: Vec<u64> = pool.map(|x: u64| x * x, 0..10).map(Result::unwrap).collect();
/// assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
/// # Ok::<(), parpool::BuildError>(())
/// ```
pub struct ThreadPool {
    shared: Arc<ThreadShared>,
    threads: Mutex<Vec<ThreadHandle<()>>>,
    workers: usize,
}

/// Configures and builds a [`ThreadPool`].
pub struct ThreadPoolBuilder {
    workers: Option<usize>,
    name: String,
    queue_capacity: Option<usize>,
    initializer: Option<Initializer>,
    stack_size: Option<usize>,
}

impl fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("workers", &self.workers)
            .field("name", &self.name)
            .field("queue_capacity", &self.queue_capacity)
            .field("initializer", &self.initializer.is_some())
            .field("stack_size", &self.stack_size)
            .finish()
    }
}

impl Default for ThreadPoolBuilder {
    fn default() -> Self {
        ThreadPoolBuilder {
            workers: None,
            name: "parpool".to_owned(),
            queue_capacity: None,
            initializer: None,
            stack_size: None,
        }
    }
}

impl ThreadPoolBuilder {
    /// Number of worker threads (default: the machine's available parallelism).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Thread name prefix: workers are named `{name}-0`, `{name}-1`, …
    /// (default `parpool`). Also the `pool` field of the tracing spans.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Bounds the queue to `n` jobs not yet started: [`ThreadPool::spawn`]
    /// then blocks while it is full and [`ThreadPool::try_spawn`] hands the
    /// closure back. Default: unbounded.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = Some(n);
        self
    }

    /// Runs `init` once on each worker thread before it takes any job (to
    /// set up thread-locals, for instance). If it panics in any worker,
    /// [`build`](Self::build) fails with [`BuildError::Initializer`].
    pub fn initializer<F: Fn() + Send + Sync + 'static>(mut self, init: F) -> Self {
        self.initializer = Some(Arc::new(init));
        self
    }

    /// Stack size of each worker thread, in bytes (default: std's, 2 MiB).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Starts the workers, runs the initializer on each, and returns the pool.
    pub fn build(self) -> Result<ThreadPool, BuildError> {
        let workers = BuildError::worker_count(self.workers)?;
        // Joins on this pool's worker threads run queued jobs meanwhile.
        crate::handle::install_helper(worker::help_until);
        if self.queue_capacity == Some(0) {
            return Err(BuildError::invalid(
                "queue_capacity",
                "a bounded queue needs room for at least one job",
            ));
        }
        panic::install_hook();

        let shared = Arc::new(ThreadShared::new(
            self.name.clone(),
            workers,
            self.queue_capacity,
        ));
        let pool = ThreadPool {
            shared: shared.clone(),
            threads: Mutex::new(Vec::new()),
            workers,
        };

        let (ready_tx, ready_rx) = mpsc::channel();
        for index in 0..workers {
            let mut b = std::thread::Builder::new().name(format!("{}-{index}", self.name));
            if let Some(size) = self.stack_size {
                b = b.stack_size(size);
            }
            let worker_shared = shared.clone();
            let init = self.initializer.clone();
            let ready = ready_tx.clone();
            let spawned = b.spawn(move || {
                let init_result = match init {
                    Some(init) => panic::catch(|| init()),
                    None => Ok(()),
                };
                let ok = init_result.is_ok();
                let _ = ready.send((index, init_result));
                drop(ready);
                if ok {
                    worker::work(&worker_shared, index);
                }
            });
            match spawned {
                Ok(t) => {
                    crate::sync::lock(&pool.threads).push(t);
                }
                Err(e) => {
                    pool.shutdown_now();
                    let source = std::io::Error::new(
                        e.kind(),
                        format!("{e} (lower the worker count or stack size)"),
                    );
                    return Err(BuildError::Spawn { index, source });
                }
            }
        }
        drop(ready_tx);
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((index, Err(panic))) => {
                    pool.shutdown_now();
                    return Err(BuildError::Initializer {
                        index,
                        error: JobError::panicked(panic),
                    });
                }
                Err(_) => break,
            }
        }
        tracing::debug!(pool = %self.name, workers, "thread pool started");
        Ok(pool)
    }
}

/// Why [`ThreadPool::try_spawn`] did not queue the job; the closure is
/// handed back unharmed.
#[non_exhaustive]
pub enum TrySpawnError<F> {
    /// The bounded queue is full.
    Full(F),
    /// The pool is shutting down.
    Shutdown(F),
}

impl<F> TrySpawnError<F> {
    /// The closure that was not queued.
    pub fn into_inner(self) -> F {
        match self {
            TrySpawnError::Full(f) | TrySpawnError::Shutdown(f) => f,
        }
    }
    /// Whether the queue was full (as opposed to the pool shutting down).
    pub fn is_full(&self) -> bool {
        matches!(self, TrySpawnError::Full(_))
    }
}

impl<F> fmt::Debug for TrySpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySpawnError::Full(_) => "Full(..)",
            TrySpawnError::Shutdown(_) => "Shutdown(..)",
        })
    }
}

impl<F> fmt::Display for TrySpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySpawnError::Full(_) => {
                "the pool's queue is full; the job was handed back (retry later, or use spawn to wait)"
            }
            TrySpawnError::Shutdown(_) => {
                "the pool is shutting down; the job was handed back"
            }
        })
    }
}

impl<F> std::error::Error for TrySpawnError<F> {}

impl ThreadPool {
    /// A builder with default settings.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::default()
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The pool's name (thread name prefix).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Runs `f` on a worker. Blocks while a bounded queue is full. After
    /// shutdown the handle resolves at once as [`JobError::Shutdown`].
    pub fn spawn<F, R>(&self, f: F) -> JobHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.spawn_with(JobOptions::default(), f)
    }

    /// Like [`spawn`](Self::spawn), with per-job options such as a timeout.
    ///
    /// ```
    /// use parpool::{JobOptions, ThreadPool};
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPool::builder().workers(1).build()?;
    /// let h = pool.spawn_with(JobOptions::new().timeout(Duration::from_millis(20)), || {
    ///     while !parpool::current_job().unwrap().is_cancelled() {
    ///         std::thread::sleep(Duration::from_millis(1));
    ///     }
    /// });
    /// assert!(h.join().unwrap_err().is_timed_out());
    /// # Ok::<(), parpool::BuildError>(())
    /// ```
    pub fn spawn_with<F, R>(&self, opts: JobOptions, f: F) -> JobHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match self.shared.admit(true) {
            Ok(admitted) => self.enqueue(admitted, opts, f),
            Err(_) => self.refused(),
        }
    }

    /// [`spawn`](Self::spawn) for async code: where a bounded queue is
    /// full, waits for room without blocking the runtime's thread.
    ///
    /// ```
    /// use parpool::ThreadPool;
    ///
    /// let pool = ThreadPool::builder().workers(1).queue_capacity(1).build()?;
    /// let sum = futures::executor::block_on(async {
    ///     let mut handles = Vec::new();
    ///     for i in 0..10u64 {
    ///         handles.push(pool.spawn_async(move || i).await);
    ///     }
    ///     let mut sum = 0;
    ///     for h in handles {
    ///         sum += h.await.unwrap();
    ///     }
    ///     sum
    /// });
    /// assert_eq!(sum, 45);
    /// # Ok::<(), parpool::BuildError>(())
    /// ```
    pub async fn spawn_async<F, R>(&self, f: F) -> JobHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.spawn_async_with(JobOptions::default(), f).await
    }

    /// [`spawn_with`](Self::spawn_with) for async code (see
    /// [`spawn_async`](Self::spawn_async)).
    pub async fn spawn_async_with<F, R>(&self, opts: JobOptions, f: F) -> JobHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let mut f = Some(f);
        std::future::poll_fn(|cx| match self.shared.admit_or_wake(cx.waker()) {
            None => std::task::Poll::Pending,
            Some(admitted) => std::task::Poll::Ready(admitted),
        })
        .await
        .map_or_else(
            |_| self.refused(),
            |admitted| match f.take() {
                Some(f) => self.enqueue(admitted, opts, f),
                None => self.refused(),
            },
        )
    }

    /// Queues `f` without blocking; if the bounded queue is full or the pool
    /// is shutting down, hands `f` back.
    pub fn try_spawn<F, R>(&self, f: F) -> Result<JobHandle<R>, TrySpawnError<F>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match self.shared.admit(false) {
            Ok(admitted) => Ok(self.enqueue(admitted, JobOptions::default(), f)),
            Err(Refused::Full) => Err(TrySpawnError::Full(f)),
            Err(Refused::Closed) => Err(TrySpawnError::Shutdown(f)),
        }
    }

    fn refused<R: Send + 'static>(&self) -> JobHandle<R> {
        self.shared.refused(JobError::Shutdown)
    }

    fn enqueue<F, R>(&self, admitted: Admitted<'_>, opts: JobOptions, f: F) -> JobHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let job = Arc::new(ClosureJob::new(self.shared.new_job(), f, opts.timeout));
        admitted.push(job.clone());
        JobHandle::from_cell(job)
    }

    /// Applies `f` to every item of `inputs` on the pool and yields the
    /// results **in input order**, lazily.
    ///
    /// At most a bounded window of chunks is in flight, so an endless input
    /// works and memory stays bounded. Items travel in chunks whose size
    /// adapts to how long items take (tune with [`Map::chunk_size`] and
    /// [`Map::window`]). A panic fails only its own item.
    ///
    /// ```
    /// use parpool::ThreadPool;
    ///
    /// let pool = ThreadPool::builder().workers(2).build()?;
    /// let firsts: Vec<u64> = pool
    ///     .map(|x: u64| x * 2, 0..) // endless input, taken lazily
    ///     .take(5)
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(firsts, [0, 2, 4, 6, 8]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map<F, I, R>(&self, f: F, inputs: I) -> Map<'_, I::IntoIter, R>
    where
        F: Fn(I::Item) -> R + Send + Sync + 'static,
        I: IntoIterator,
        I::Item: Send + 'static,
        R: Send + 'static,
    {
        Map::new(self.chunk_spawner(f), inputs.into_iter(), self.workers)
    }

    /// Like [`map`](Self::map), but yields results as they finish, each
    /// with its input's index.
    ///
    /// ```
    /// use parpool::ThreadPool;
    ///
    /// let pool = ThreadPool::builder().workers(2).build()?;
    /// let mut got: Vec<(usize, u32)> = pool
    ///     .map_unordered(|x: u32| x + 1, [10, 20, 30])
    ///     .map(|(i, r)| (i, r.unwrap()))
    ///     .collect();
    /// got.sort();
    /// assert_eq!(got, [(0, 11), (1, 21), (2, 31)]);
    /// # Ok::<(), parpool::BuildError>(())
    /// ```
    pub fn map_unordered<F, I, R>(&self, f: F, inputs: I) -> MapUnordered<'_, I::IntoIter, R>
    where
        F: Fn(I::Item) -> R + Send + Sync + 'static,
        I: IntoIterator,
        I::Item: Send + 'static,
        R: Send + 'static,
    {
        MapUnordered::new(self.chunk_spawner(f), inputs.into_iter(), self.workers)
    }

    fn chunk_spawner<'a, F, In, R>(&'a self, f: F) -> Spawner<'a, In, R>
    where
        F: Fn(In) -> R + Send + Sync + 'static,
        In: Send + 'static,
        R: Send + 'static,
    {
        let f = Arc::new(f);
        Box::new(move |chunk: ChunkIn<In, R>| {
            let f = f.clone();
            self.spawn(move || crate::map::run_chunk(chunk, |x| f(x)))
        })
    }

    /// Runs `body` with a [`Scope`] whose jobs may borrow from the caller's
    /// stack, like `std::thread::scope`. Returns once every job spawned in
    /// the scope has finished (or was dropped unrun).
    ///
    /// ```
    /// use parpool::ThreadPool;
    ///
    /// let pool = ThreadPool::builder().workers(2).build()?;
    /// let data = vec![1, 2, 3, 4];
    /// let mut halves = (0, 0);
    /// pool.scope(|s| {
    ///     let (a, b) = data.split_at(2);
    ///     let left = s.spawn(move || a.iter().sum::<i32>());
    ///     let right = s.spawn(move || b.iter().sum::<i32>());
    ///     halves = (left.join().unwrap(), right.join().unwrap());
    /// });
    /// assert_eq!(halves, (3, 7));
    /// # Ok::<(), parpool::BuildError>(())
    /// ```
    pub fn scope<'env, F, T>(&self, body: F) -> T
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
    {
        scope::run(self, body)
    }

    /// Stops accepting jobs, lets queued and running jobs finish, and joins
    /// the workers. Jobs submitted afterwards resolve as
    /// [`JobError::Shutdown`]. Idempotent; called by `Drop`.
    pub fn shutdown(&self) {
        self.shared.close(Lifecycle::Draining);
        self.join_workers();
    }

    /// Stops accepting jobs and returns at once, as Python's
    /// `shutdown(wait=False)`: queued and running jobs still run and their
    /// handles resolve as usual; the workers end by themselves once the
    /// queue is empty, and dropping the pool no longer waits for them.
    /// Jobs submitted afterwards resolve as [`JobError::Shutdown`].
    ///
    /// ```
    /// use parpool::ThreadPool;
    ///
    /// let pool = ThreadPool::builder().workers(1).build()?;
    /// let slow = pool.spawn(|| { std::thread::sleep(std::time::Duration::from_millis(50)); 1 });
    /// pool.close();
    /// drop(pool); // does not wait
    /// assert_eq!(slow.join(), Ok(1));
    /// # Ok::<(), parpool::BuildError>(())
    /// ```
    pub fn close(&self) {
        self.shared.close(Lifecycle::Draining);
        // Detached: they exit once the queue is drained.
        drop(std::mem::take(&mut *crate::sync::lock(&self.threads)));
    }

    /// [`shutdown`](Self::shutdown) for async code: stops accepting jobs
    /// at once and resolves when the queued and running jobs have finished
    /// and the workers have exited, without blocking a runtime thread.
    ///
    /// ```
    /// use parpool::ThreadPool;
    ///
    /// let pool = ThreadPool::builder().workers(2).build()?;
    /// let job = pool.spawn(|| 7);
    /// futures::executor::block_on(pool.shutdown_async());
    /// assert!(pool.is_shutdown());
    /// assert_eq!(job.try_result().ok(), Some(Ok(7)));
    /// # Ok::<(), parpool::BuildError>(())
    /// ```
    pub fn shutdown_async(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shared.close(Lifecycle::Draining);
        let threads = std::mem::take(&mut *crate::sync::lock(&self.threads));
        crate::lifecycle::joined_async(move || {
            for t in threads {
                let _ = t.join();
            }
        })
    }

    /// Stops accepting jobs, resolves every queued job as
    /// [`JobError::Cancelled`], waits for running jobs, and joins the
    /// workers.
    pub fn shutdown_now(&self) {
        self.shared.close(Lifecycle::Cancelling);
        while let Some(job) = self.shared.find_job() {
            self.shared.execute(job, &self.shared.counters[0], true);
        }
        self.join_workers();
    }

    fn join_workers(&self) {
        if self.shared.is_own_worker() {
            // Called from one of our own jobs: the workers exit by themselves
            // once the queue drains; joining ourselves would deadlock.
            return;
        }
        let threads = std::mem::take(&mut *crate::sync::lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Whether [`shutdown`](Self::shutdown) or
    /// [`shutdown_now`](Self::shutdown_now) has been called.
    pub fn is_shutdown(&self) -> bool {
        !self.shared.is_open()
    }

    /// A snapshot of the pool's counters (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let running = self
            .shared
            .counters
            .iter()
            .map(|c| c.running.load(Relaxed))
            .sum();
        self.shared
            .tally
            .snapshot(self.shared.queued() as u64, running)
    }

    pub(crate) fn shared(&self) -> &Arc<ThreadShared> {
        &self.shared
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("name", &self.shared.name)
            .field("workers", &self.workers)
            .field("shutdown", &self.is_shutdown())
            .field("stats", &self.stats())
            .finish()
    }
}

impl sealed::Sealed for ThreadPool {
    fn submit_chunk<T: Task>(
        &self,
        task: T,
        chunk: ChunkIn<T::Input, T::Output>,
    ) -> JobHandle<ChunkOut<T::Input, T::Output>> {
        self.spawn(move || crate::map::run_chunk(chunk, |x| task.run(x)))
    }
}

impl Executor for ThreadPool {
    fn submit_with<T: Task>(
        &self,
        opts: JobOptions,
        task: T,
        input: T::Input,
    ) -> JobHandle<T::Output> {
        self.spawn_with(opts, move || task.run(input))
    }

    fn submit_async<T: Task>(
        &self,
        task: T,
        input: T::Input,
    ) -> impl std::future::Future<Output = JobHandle<T::Output>> + Send {
        self.spawn_async(move || task.run(input))
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn shutdown(&self) {
        ThreadPool::shutdown(self);
    }

    fn shutdown_now(&self) {
        ThreadPool::shutdown_now(self);
    }
}

/// Unit tests of the pool's queue, sleep and shutdown paths, small enough
/// for Miri (CI runs them under it: `.ci/run`).
#[cfg(all(test, not(parpool_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    #[test]
    fn jobs_from_several_threads_all_run_once() {
        let pool = Arc::new(ThreadPool::builder().workers(2).build().unwrap());
        let runs = Arc::new(AtomicUsize::new(0));
        let submitters: Vec<_> = (0..3)
            .map(|t| {
                let (pool, runs) = (pool.clone(), runs.clone());
                std::thread::spawn(move || {
                    let hs: Vec<_> = (0..20)
                        .map(|i| {
                            let runs = runs.clone();
                            pool.spawn(move || {
                                runs.fetch_add(1, SeqCst);
                                t * 100 + i
                            })
                        })
                        .collect();
                    for (i, h) in hs.into_iter().enumerate() {
                        assert_eq!(h.join(), Ok(t * 100 + i));
                    }
                })
            })
            .collect();
        for s in submitters {
            s.join().unwrap();
        }
        assert_eq!(runs.load(SeqCst), 60);
        let s = pool.stats();
        assert_eq!((s.submitted, s.completed), (60, 60));
    }

    #[test]
    fn a_job_that_joins_another_of_its_pool_does_not_deadlock_it() {
        let pool = Arc::new(ThreadPool::builder().workers(1).build().unwrap());
        let p = pool.clone();
        let outer = pool.spawn(move || {
            let inner = p.spawn(|| 2);
            inner.join().unwrap() * 3
        });
        assert_eq!(outer.join(), Ok(6));
    }

    #[test]
    fn shutdown_now_cancels_the_queued_and_a_bounded_queue_refuses_when_full() {
        let pool = ThreadPool::builder()
            .workers(1)
            .queue_capacity(2)
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let busy = pool.spawn(move || {
            started_tx.send(()).unwrap();
            rx.recv().unwrap();
        });
        started_rx.recv().unwrap();
        let queued: Vec<_> = (0..2)
            .map(|i| pool.try_spawn(move || i).ok().unwrap())
            .collect();
        assert!(matches!(pool.try_spawn(|| 9), Err(TrySpawnError::Full(_))));
        tx.send(()).unwrap();
        busy.join().unwrap();
        for (i, h) in queued.into_iter().enumerate() {
            assert_eq!(h.join(), Ok(i));
        }
        pool.shutdown_now();
        assert_eq!(pool.spawn(|| 1).join(), Err(JobError::Shutdown));
    }
}
