//! Threads, processes or async, for *your* function: [`Compare`] runs it
//! over your inputs sequentially, on a [`ThreadPool`], on a
//! [`ProcessPool`] (when it is a registered [task](crate::task!)) and as
//! tokio tasks, each several times, and says which is fastest, by how
//! much, and whether the lead is larger than the run-to-run spread.
//!
//! The same table `parpool compare` prints for its built-in workloads.
//!
//! ```
//! use parpool::compare::{Compare, Model};
//!
//! fn work(n: u64) -> u64 {
//!     (0..n * 1000).fold(0u64, |a, x| a.wrapping_add(x * x))
//! }
//!
//! let report = Compare::new(0..64, work).repeat(2).run()?;
//! println!("{report}");
//! // Every way computed what the sequential run did, or `run` said so.
//! assert_eq!(report.measurements()[0].model, Model::Sequential);
//! assert_eq!(report.measurements().len(), 3); // no task: no ProcessPool row
//! # Ok::<(), parpool::compare::CompareError>(())
//! ```
//!
//! Give [`Compare::task`] a task to measure a `ProcessPool` too, and
//! [`Compare::async_fn`] an async version of the function for the async
//! row (without one, the function itself is called inside tokio tasks, as
//! CPU work in async code is).

mod usage;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::{BuildError, Executor, JobError, ProcessPool, Task, ThreadPool};

/// A way to run the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Model {
    /// One call after another on the calling thread.
    #[serde(rename = "sequential")]
    Sequential,
    /// [`ThreadPool::map`] (or `map_task`), one worker per core unless
    /// [`Compare::workers`] says.
    #[serde(rename = "ThreadPool")]
    Threads,
    /// [`ProcessPool`]'s `map_task`: the task in worker processes.
    #[serde(rename = "ProcessPool")]
    Processes,
    /// A tokio multi-thread runtime, one task per input.
    #[serde(rename = "async (tokio)")]
    Async,
}

impl Model {
    /// The name the tables (and JSON) use.
    pub fn label(self) -> &'static str {
        match self {
            Model::Sequential => "sequential",
            Model::Threads => "ThreadPool",
            Model::Processes => "ProcessPool",
            Model::Async => "async (tokio)",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One way measured: the median of its repetitions with their spread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    /// The way.
    pub model: Model,
    /// Threads, processes or executor threads used.
    pub workers: usize,
    /// The median of the repetitions, in seconds (starting the pool
    /// included), and the fastest and slowest of them.
    pub seconds: f64,
    /// The fastest repetition.
    pub min_seconds: f64,
    /// The slowest repetition.
    pub max_seconds: f64,
    /// The sequential median divided by this one.
    pub speedup: f64,
    /// CPU time over wall time, in percent of one core (workers
    /// included), in the median repetition.
    pub cpu_percent: f64,
    /// The highest resident memory seen in any repetition, this process
    /// and the processes below it, in MiB.
    pub peak_mib: f64,
}

/// One run timed: wall seconds, CPU use in percent of one core (this
/// process and its reaped children), peak resident memory of the process
/// tree in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Wall-clock seconds.
    pub seconds: f64,
    /// CPU time over wall time, in percent of one core.
    pub cpu_percent: f64,
    /// The highest resident memory seen while it ran, in MiB.
    pub peak_mib: f64,
}

impl Sample {
    /// Times `run` once; its result is returned beside.
    pub fn of<R>(run: impl FnOnce() -> R) -> (Sample, R) {
        let sampler = usage::PeakSampler::start();
        let cpu0 = usage::cpu_seconds();
        let t = Instant::now();
        let r = run();
        let seconds = t.elapsed().as_secs_f64();
        let cpu = usage::cpu_seconds() - cpu0;
        let sample = Sample {
            seconds,
            cpu_percent: 100.0 * cpu / seconds.max(f64::MIN_POSITIVE),
            peak_mib: sampler.stop(),
        };
        (sample, r)
    }
}

impl Measurement {
    /// Times `run` once as `model` on `workers` (see [`Sample::of`]); its
    /// result is returned beside.
    pub fn time<R>(model: Model, workers: usize, run: impl FnOnce() -> R) -> (Measurement, R) {
        let (s, r) = Sample::of(run);
        let m = Measurement {
            model,
            workers,
            seconds: s.seconds,
            min_seconds: s.seconds,
            max_seconds: s.seconds,
            speedup: 1.0,
            cpu_percent: s.cpu_percent,
            peak_mib: s.peak_mib,
        };
        (m, r)
    }

    /// Several repetitions of one way as one: the median run, with the
    /// fastest and slowest times and the highest memory seen. `None` for
    /// no repetitions.
    pub fn median(mut runs: Vec<Measurement>) -> Option<Measurement> {
        runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        let min = runs.first()?.seconds;
        let max = runs.last()?.seconds;
        let peak = runs.iter().map(|m| m.peak_mib).fold(0.0, f64::max);
        let mut m = runs.swap_remove(runs.len() / 2);
        m.min_seconds = min;
        m.max_seconds = max;
        m.peak_mib = peak;
        Some(m)
    }

    /// Whether `self`, the fastest, is not clearly ahead of `other`: their
    /// spreads overlap, or the medians are within 3% (this machine's noise
    /// with one repetition).
    pub fn ties_with(&self, other: &Measurement) -> bool {
        within_spread(
            (self.seconds, self.max_seconds),
            (other.seconds, other.min_seconds),
        )
    }
}

/// Whether `best` (median, slowest) is not clearly ahead of `other`
/// (median, fastest): see [`Measurement::ties_with`].
pub fn within_spread(best: (f64, f64), other: (f64, f64)) -> bool {
    other.1 <= best.1 || other.0 <= best.0 * 1.03
}

/// Seconds as the tables show them (`1.23 s`, `45.6 ms`).
pub fn format_seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

/// The table's rows (with a header), the fastest marked `<`, or `=
/// (tie)` beside those it does not clearly beat.
pub fn table(results: &[Measurement], fastest: Model, tied_with: &[Model]) -> String {
    use fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  {:<15} {:>8} {:>10} {:>21} {:>9} {:>9} {:>11}",
        "model", "workers", "time", "spread", "speed-up", "CPU use", "peak memory"
    );
    for m in results {
        let mark = if m.model == fastest && tied_with.is_empty() {
            " <"
        } else if m.model == fastest || tied_with.contains(&m.model) {
            " = (tie)"
        } else {
            ""
        };
        let spread = format!(
            "{} – {}",
            format_seconds(m.min_seconds),
            format_seconds(m.max_seconds)
        );
        let _ = writeln!(
            s,
            "  {:<15} {:>8} {:>10} {:>21} {:>8.2}× {:>8.0}% {:>7.1} MiB{mark}",
            m.model.label(),
            m.workers,
            format_seconds(m.seconds),
            spread,
            m.speedup,
            m.cpu_percent,
            m.peak_mib
        );
    }
    s
}

/// The fastest of `results` by median, and those it does not clearly beat.
pub fn rank(results: &[Measurement]) -> Option<(Model, Vec<Model>)> {
    let best = results
        .iter()
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))?;
    let mut tied: Vec<&Measurement> = results
        .iter()
        .filter(|m| m.model != best.model && best.ties_with(m))
        .collect();
    tied.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    Some((best.model, tied.iter().map(|m| m.model).collect()))
}

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// A pool could not be built.
    #[error("cannot build the {model} to compare: {source}")]
    Build {
        /// The way whose pool failed.
        model: Model,
        /// Why.
        #[source]
        source: BuildError,
    },
    /// A job failed (it panicked, its worker died, …): the way cannot be
    /// timed fairly.
    #[error("a job failed under {model}, so it cannot be timed: {source}")]
    Job {
        /// The way it failed under.
        model: Model,
        /// How it failed.
        #[source]
        source: JobError,
    },
    /// A way computed something else than the sequential run: a race or
    /// a task that differs from the function.
    #[error(
        "{model} computed another result than the sequential run for input {index}; \
         check the function for shared state, or that the task does what the function does"
    )]
    Mismatch {
        /// The way that differed.
        model: Model,
        /// The input (by position) whose output differed.
        index: usize,
    },
    /// No inputs, or no repetitions: nothing to time.
    #[error("nothing to compare: give at least one input and one repetition")]
    Empty,
    /// The tokio runtime for the async way could not start.
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl CompareError {
    /// A pool of `model` that could not be built.
    fn build(model: Model) -> impl FnOnce(BuildError) -> CompareError {
        move |source| CompareError::Build { model, source }
    }

    /// A job that failed under `model`.
    fn job(model: Model) -> impl FnOnce(JobError) -> CompareError {
        move |source| CompareError::Job { model, source }
    }
}

type Boxed<O> = Pin<Box<dyn Future<Output = O> + Send>>;
type Way<I, O> = Arc<dyn Fn(Vec<I>, usize) -> Result<Vec<O>, CompareError> + Send + Sync>;

/// A comparison to run: the inputs, the function, and the ways to try.
/// See the [module](self).
pub struct Compare<I, O> {
    inputs: Vec<I>,
    function: Arc<dyn Fn(I) -> O + Send + Sync>,
    processes: Option<Way<I, O>>,
    future: Option<Arc<dyn Fn(I) -> Boxed<O> + Send + Sync>>,
    repeat: u32,
    workers: usize,
}

impl<I, O> fmt::Debug for Compare<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compare")
            .field("inputs", &self.inputs.len())
            .field("task", &self.processes.is_some())
            .field("async_fn", &self.future.is_some())
            .field("repeat", &self.repeat)
            .field("workers", &self.workers)
            .finish()
    }
}

impl<I, O> Compare<I, O>
where
    I: Clone + Send + 'static,
    O: PartialEq + Send + 'static,
{
    /// `function` over `inputs`: measured sequentially, on a
    /// [`ThreadPool`] and as tokio tasks; three repetitions of each,
    /// one worker per core.
    pub fn new<F>(inputs: impl IntoIterator<Item = I>, function: F) -> Self
    where
        F: Fn(I) -> O + Send + Sync + 'static,
    {
        Compare {
            inputs: inputs.into_iter().collect(),
            function: Arc::new(function),
            processes: None,
            future: None,
            repeat: 3,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Measures a [`ProcessPool`] too, running `task` (which must compute
    /// what the function does: the outputs are compared).
    pub fn task<T>(mut self, task: T) -> Self
    where
        T: Task<Input = I, Output = O>,
        I: serde::Serialize,
    {
        self.processes = Some(Arc::new(move |inputs: Vec<I>, workers: usize| {
            let pool = ProcessPool::builder()
                .workers(workers)
                .build()
                .map_err(CompareError::build(Model::Processes))?;
            let out = pool
                .map_task(task, inputs)
                .collect::<Result<Vec<O>, JobError>>()
                .map_err(CompareError::job(Model::Processes));
            // Dropping the pool reaps the workers: their CPU time counts.
            drop(pool);
            out
        }));
        self
    }

    /// The async way runs `function` (an async version of the function)
    /// as one tokio task per input.
    pub fn async_fn<G, Fut>(mut self, function: G) -> Self
    where
        G: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
    {
        self.future = Some(Arc::new(move |i| Box::pin(function(i)) as Boxed<O>));
        self
    }

    /// Measures each way `n` times (interleaved, so a slow moment of the
    /// machine does not fall on one way only); the median is shown with
    /// the spread. At least 1; 3 by default.
    pub fn repeat(mut self, n: u32) -> Self {
        self.repeat = n;
        self
    }

    /// Threads and processes for the pools (default: one per core; more
    /// pays for work that waits). The async way runs on one executor
    /// thread per core, as tokio's runtime does by default.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Runs the comparison.
    ///
    /// # Errors
    /// [`CompareError`]: a pool that cannot start, a job that fails, a
    /// way whose outputs differ from the sequential run's, no inputs.
    pub fn run(self) -> Result<Comparison, CompareError> {
        if self.inputs.is_empty() || self.repeat == 0 {
            return Err(CompareError::Empty);
        }
        let ways = self.ways();
        let mut runs: Vec<Vec<Measurement>> = vec![Vec::new(); ways.len()];
        let mut expected: Option<Vec<O>> = None;
        for _ in 0..self.repeat {
            for (i, (model, workers, way)) in ways.iter().enumerate() {
                let inputs = self.inputs.clone();
                let (m, out) = Measurement::time(*model, *workers, || way(inputs, *workers));
                let out = out?;
                match &expected {
                    None => expected = Some(out),
                    Some(e) => {
                        if let Some(index) = (0..e.len()).find(|&k| out.get(k) != e.get(k)) {
                            return Err(CompareError::Mismatch {
                                model: *model,
                                index,
                            });
                        }
                    }
                }
                runs[i].push(m);
            }
        }
        let measurements = runs.into_iter().filter_map(Measurement::median).collect();
        Comparison::new(measurements, self.inputs.len(), self.repeat).ok_or(CompareError::Empty)
    }

    /// The ways to measure, each with its workers.
    fn ways(&self) -> Vec<(Model, usize, Way<I, O>)> {
        let f = self.function.clone();
        let sequential: Way<I, O> = Arc::new(move |inputs: Vec<I>, _| {
            crate::panic::catch(|| inputs.into_iter().map(|i| f(i)).collect())
                .map_err(|info| CompareError::job(Model::Sequential)(JobError::panicked(info)))
        });
        let f = self.function.clone();
        let threads: Way<I, O> = Arc::new(move |inputs: Vec<I>, workers| {
            let pool = ThreadPool::builder()
                .workers(workers)
                .build()
                .map_err(CompareError::build(Model::Threads))?;
            let f = f.clone();
            pool.map(move |i| f(i), inputs)
                .collect::<Result<Vec<O>, JobError>>()
                .map_err(CompareError::job(Model::Threads))
        });
        let mut ways = vec![
            (Model::Sequential, 1, sequential),
            (Model::Threads, self.workers, threads),
        ];
        if let Some(p) = &self.processes {
            ways.push((Model::Processes, self.workers, p.clone()));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ways.push((Model::Async, cores, self.async_way()));
        ways
    }

    /// One tokio task per input on a multi-thread runtime of `workers`
    /// threads (one per core, as tokio's default): the async function if
    /// given, else the function itself.
    fn async_way(&self) -> Way<I, O> {
        let f = self.function.clone();
        let fut = self.future.clone();
        Arc::new(move |inputs: Vec<I>, workers| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_time()
                .build()
                .map_err(CompareError::Runtime)?;
            let out = rt.block_on(async {
                let tasks: Vec<_> = inputs
                    .into_iter()
                    .map(|i| match &fut {
                        Some(g) => tokio::spawn(g(i)),
                        None => {
                            let f = f.clone();
                            tokio::spawn(async move { f(i) })
                        }
                    })
                    .collect();
                let mut out = Vec::with_capacity(tasks.len());
                for t in tasks {
                    match t.await {
                        Ok(o) => out.push(o),
                        Err(e) => return Err(e),
                    }
                }
                Ok(out)
            });
            drop(rt);
            out.map_err(|e| {
                CompareError::job(Model::Async)(JobError::panicked(crate::PanicInfo {
                    message: format!("a tokio task failed: {e}"),
                    location: None,
                    item: None,
                }))
            })
        })
    }
}

/// What [`Compare::run`] measured: each way's median and spread, the
/// fastest, and the ways it does not clearly beat. `Display` prints the
/// table with the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    inputs: usize,
    repeat: u32,
    cores: usize,
    measurements: Vec<Measurement>,
    fastest: Model,
    tied_with: Vec<Model>,
}

impl Comparison {
    /// A comparison of ways you measured yourself ([`Measurement::time`],
    /// [`Measurement::median`]), the first the baseline: speed-ups set
    /// against it, the fastest and its ties found. `None` if there are
    /// none.
    pub fn new(mut measurements: Vec<Measurement>, inputs: usize, repeat: u32) -> Option<Self> {
        let base = measurements.first()?.seconds;
        for m in &mut measurements {
            m.speedup = base / m.seconds.max(f64::MIN_POSITIVE);
        }
        let (fastest, tied_with) = rank(&measurements)?;
        Some(Comparison {
            inputs,
            repeat,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            measurements,
            fastest,
            tied_with,
        })
    }

    /// Each way measured, sequential first.
    pub fn measurements(&self) -> &[Measurement] {
        &self.measurements
    }

    /// The way with the lowest median.
    pub fn fastest(&self) -> Model {
        self.fastest
    }

    /// The ways the fastest is not ahead of by more than the spread.
    pub fn tied_with(&self) -> &[Model] {
        &self.tied_with
    }

    /// The winner, if one is ahead of every other by more than the
    /// spread.
    pub fn winner(&self) -> Option<Model> {
        self.tied_with.is_empty().then_some(self.fastest)
    }

    /// The verdict in one sentence, with a general reason for the winner.
    pub fn verdict(&self) -> String {
        let why = match self.fastest {
            Model::Sequential => {
                "each call is cheaper than handing it to another thread: keep it \
                 sequential, or give the pools bigger pieces"
            }
            Model::Threads => "the work scales across cores, and threads start and share cheaply",
            Model::Processes => {
                "worker processes beat threads here: the work contends for something \
                 per process (an allocator, a lock, a global)"
            }
            Model::Async => "the work mostly waits, and tasks wait more cheaply than threads",
        };
        match self.winner() {
            Some(_) => self.verdict_because(why),
            None => self.sentence(None),
        }
    }

    /// The verdict in one sentence, ending with `why` (what you know of
    /// the work that explains it).
    pub fn verdict_because(&self, why: &str) -> String {
        self.sentence(Some(why))
    }

    fn sentence(&self, why: Option<&str>) -> String {
        let of = |m: Model| self.measurements.iter().find(|x| x.model == m);
        let named = |m: Model| format!("{m} ({:.1}×)", of(m).map_or(0.0, |x| x.speedup));
        let why = why.map(|w| format!(": {w}")).unwrap_or_default();
        match self.winner() {
            Some(w) => format!(
                "{w} wins ({:.1}× sequential, ahead by more than the spread){why}.",
                of(w).map_or(0.0, |x| x.speedup)
            ),
            None => {
                let mut names = vec![named(self.fastest)];
                names.extend(self.tied_with.iter().map(|m| named(*m)));
                format!(
                    "tie between {} (speed-ups over sequential), within the spread{why}.",
                    names.join(" and ")
                )
            }
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "parpool compare: {} inputs, {} cores, each way {} time{} (the median, and the \
             spread from fastest to slowest; times include starting each pool)",
            self.inputs,
            self.cores,
            self.repeat,
            if self.repeat == 1 { "" } else { "s" }
        )?;
        f.write_str(&table(&self.measurements, self.fastest, &self.tied_with))?;
        writeln!(f, "  verdict: {}", self.verdict())
    }
}
