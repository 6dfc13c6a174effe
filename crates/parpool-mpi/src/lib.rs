//! [`MpiPool`]: parpool's registered tasks across the ranks of an MPI job,
//! behind the same [`Executor`] API as `ThreadPool` and `ProcessPool` — the
//! counterpart of Python's `mpi4py.futures.MPIPoolExecutor`.
//!
//! Rank 0 runs the program's `main` and owns the pool. Every other rank
//! serves: it never runs `main`, and runs its jobs in a local
//! [`ProcessPool`](parpool::ProcessPool) (by default one worker process per
//! core of its node), so a task that panics, aborts, segfaults or runs past
//! its timeout fails alone with a typed [`JobError`] and the MPI job goes
//! on.
//!
//! # Two ways to start
//!
//! * **Under a launcher**: `mpirun -n 4 ./app` (or `srun -n 4 ./app` under
//!   Slurm). Rank 0 runs `main`; ranks 1–3 are diverted before `main`, by a
//!   constructor of this crate that reads the rank the launcher put in the
//!   environment, and serve until rank 0's pool shuts down.
//!   [`MpiPool::builder`]`().build()` on rank 0 starts the pool.
//! * **Spawned**: a program started on its own calls
//!   `MpiPool::builder().spawn(n).build()`; `MPI_Comm_spawn` starts `n`
//!   serving copies of the program (Open MPI's runtime must be on `PATH`).
//!
//! # What a program must do
//!
//! 1. Define its tasks with [`parpool::task!`], in the binary itself (every
//!    rank runs the same binary, so every rank knows every task).
//! 2. Call [`parpool_mpi::init()`](init) first thing in `main` (a safety
//!    net for platforms where constructors do not run; elsewhere it does
//!    nothing).
//! 3. Build one `MpiPool`, use it, and let it drop (or call
//!    [`shutdown`](MpiPool::shutdown)) before `main` returns: that releases
//!    the serving ranks and finalizes MPI. MPI allows this once per run.
//!    A run whose `main` never builds one (it chose another pool this time)
//!    ends cleanly too: when rank 0 exits, it releases the serving ranks.
//!
//! ```no_run
//! use parpool::Executor;
//! use parpool_mpi::MpiPool;
//!
//! parpool::task!(fn square(x: u64) -> u64 { x * x });
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     parpool_mpi::init();
//!     let pool = MpiPool::builder().build()?; // under `mpirun -n 3`
//!     let squares: Vec<u64> = pool.map_task(square, 0..100).collect::<Result<_, _>>()?;
//!     assert_eq!(squares[9], 81);
//!     Ok(())
//! }
//! ```
//!
//! # What crosses machines
//!
//! Inputs and outputs are serde values, copied into MPI messages. A
//! [`SharedBytes`](parpool::SharedBytes) crosses by value (a copy). An
//! [`ipc`](parpool::ipc) object lives in one machine's shared memory: a job
//! whose input holds one fails at submit with [`JobError::Unsendable`]
//! naming it, and never runs.
//!
//! # When a rank is lost
//!
//! A rank that stops answering (its node went down, it was killed) is found
//! by its silence: serving ranks send a heartbeat, and one silent for
//! [`lost_after`](MpiPoolBuilder::lost_after) is lost. Its jobs run again
//! on the other ranks while their [`retries`](MpiPoolBuilder::retries)
//! last, and otherwise fail with [`JobError::Lost`]; rank 0 carries on.
//! By default Open MPI's `mpirun` ends the whole job when any process
//! dies; start it with `mpirun --enable-recovery` (Slurm: `srun
//! --no-kill`) to keep going. After a loss the pool leaves MPI
//! unfinalized when it shuts down, on every rank: `MPI_Finalize` would
//! wait for the lost process forever.
//!
//! # Logging
//!
//! `tracing` events from tasks arrive at rank 0's subscriber, target
//! `parpool::worker`, with the fields `rank`, `host`, `worker_pid`, `job`
//! and `origin`. A serving rank's own events come with target
//! `parpool_mpi::rank`.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "parpool-mpi works on Linux only: each rank runs its jobs in parpool's ProcessPool, \
     which needs Linux."
);

mod comm;
mod launch;
mod log;
mod master;
mod pace;
mod serve;
mod wire;

use std::fmt;

use mpi::topology::Communicator as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle as ThreadHandle;
use std::time::{Duration, Instant};

use parpool::remote::{self, ChunkIn, ChunkOut, Pending, Sealed};
use parpool::{BuildError, Executor, JobError, JobHandle, JobOptions, Payload, Task};

use master::{Command, Master, Queued, Rank, Sink};
use wire::{FromRank, Kind, Outcome, Settings, ToRank};

pub use parpool;

/// Makes this process serve as a rank of an MPI pool if it was started as
/// one (a rank other than 0 under a launcher, or a spawned worker), and
/// as a worker of a local process pool if it was started as one.
///
/// Call it first thing in `main`. The constructors of parpool and
/// parpool-mpi already do this before `main` on the platforms they
/// support, so the call is a safety net; in rank 0 or an ordinary process
/// it returns at once.
pub fn init() {
    parpool::init();
    if launch::serves() {
        serve::run();
    }
}

/// Configures and builds an [`MpiPool`].
#[derive(Debug, Clone)]
pub struct MpiPoolBuilder {
    spawn: Option<usize>,
    settings: Settings,
    lost_after: Duration,
    start_timeout: Duration,
}

impl Default for MpiPoolBuilder {
    fn default() -> Self {
        MpiPoolBuilder {
            spawn: None,
            settings: Settings::default(),
            lost_after: Duration::from_secs(10),
            start_timeout: Duration::from_secs(60),
        }
    }
}

impl MpiPoolBuilder {
    /// Starts `n` serving processes with `MPI_Comm_spawn` instead of using
    /// the ranks of a launcher, for a program started without `mpirun`.
    pub fn spawn(mut self, n: usize) -> Self {
        self.spawn = Some(n);
        self
    }

    /// Worker processes per serving rank (default: each node's available
    /// cores).
    pub fn workers_per_rank(mut self, n: usize) -> Self {
        self.settings.workers = Some(u32::try_from(n).unwrap_or(u32::MAX));
        self
    }

    parpool::__worker_limit_setters!(settings.limits);

    /// Discards what tasks print to stdout and stderr (by default it goes
    /// to the launcher, which passes it on).
    pub fn quiet(mut self) -> Self {
        self.settings.quiet = true;
        self
    }

    /// How long a serving rank may stay silent before it is taken for lost
    /// (default 10 s). Ranks send a heartbeat ten times as often.
    pub fn lost_after(mut self, after: Duration) -> Self {
        self.lost_after = after;
        self
    }

    /// Turns on the low-latency mode: rank 0's MPI thread polls for the
    /// next job for up to `window` after the last activity (it polls for
    /// replies already), each serving rank's local pool runs in the mode
    /// of [`ProcessPoolBuilder::spin`](parpool::ProcessPoolBuilder::spin),
    /// its MPI thread polls as long, and a thread joining a job polls for
    /// its end as long before it sleeps. A job submitted right after the
    /// last one ended then meets nobody asleep on its way.
    ///
    /// Off by default (`Duration::ZERO`): it costs up to a core per
    /// spinning thread and worker, busy for `window` after each job,
    /// whether or not another comes; nothing once the pool has been idle
    /// for longer. It pays for small jobs one after another with a core
    /// for each spinner; see `benches/results/mpi-spin.md` for what it
    /// buys on the machine measured there. A window longer than a second
    /// is taken as a second.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use parpool_mpi::MpiPool;
    ///
    /// parpool::task! { fn inc(x: u64) -> u64 { x + 1 } }
    ///
    /// let pool = MpiPool::builder()
    ///     .spin(Duration::from_micros(100))
    ///     .build()?;
    /// # use parpool::Executor;
    /// assert_eq!(pool.submit(inc, 1).join()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spin(mut self, window: Duration) -> Self {
        let window = window.min(Duration::from_secs(1));
        self.settings.spin_nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        self
    }

    /// How long [`build`](Self::build) waits for every rank to start its
    /// workers (default 60 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts MPI and the serving ranks' workers, and waits until each
    /// rank is ready.
    ///
    /// Fails with [`BuildError::Remote`] when there is no rank to serve
    /// (started without a launcher and without [`spawn`](Self::spawn)),
    /// when spawning needs Open MPI's runtime and it is missing, when MPI
    /// was started or finalized already, and when a rank cannot start its
    /// workers.
    pub fn build(self) -> Result<MpiPool, BuildError> {
        std::hint::black_box(launch::constructor_linked());
        init();
        if self.lost_after.is_zero() {
            return Err(BuildError::InvalidSetting {
                setting: "lost_after",
                reason: "must be longer than zero".into(),
            });
        }
        self.settings.limits.check()?;
        if self.settings.workers == Some(0) {
            return Err(BuildError::InvalidSetting {
                setting: "workers_per_rank",
                reason: "a rank needs at least one worker".into(),
            });
        }
        // A batch message holds up to 16 MiB of jobs plus one job; MPI
        // counts a message's bytes in a C int.
        if self.settings.limits.max_payload > (i32::MAX as u64) - (64 << 20) {
            return Err(BuildError::InvalidSetting {
                setting: "max_payload",
                reason: "an MPI message holds less than 2 GiB: at most 1984 MiB".into(),
            });
        }
        if self.spawn == Some(0) {
            return Err(BuildError::InvalidSetting {
                setting: "spawn",
                reason: "spawn at least one serving process".into(),
            });
        }
        if self.spawn.is_some() {
            check_runtime_on_path().map_err(|reason| BuildError::Remote { reason })?;
        } else if launch::role() == launch::Role::Alone {
            return Err(BuildError::Remote {
                reason: no_launcher(),
            });
        }
        let (commands, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let builder = self.clone();
        let ranks: Ranks = Arc::default();
        let for_master = ranks.clone();
        let thread = std::thread::Builder::new()
            .name("parpool-mpi".into())
            .spawn(move || run_master(builder, rx, ready_tx, for_master))
            .map_err(|source| BuildError::Spawn { index: 0, source })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(MpiPool {
                shared: Arc::new(Shared {
                    commands: Mutex::new(commands),
                    closed: AtomicBool::new(false),
                    next_id: AtomicU64::new(1),
                }),
                thread: Mutex::new(Some(thread)),
                ranks,
                max_payload: self.settings.limits.max_payload,
                spin: Duration::from_nanos(self.settings.spin_nanos),
            }),
            Ok(Err(reason)) => {
                let _ = thread.join();
                Err(BuildError::Remote { reason })
            }
            Err(_) => {
                let _ = thread.join();
                Err(BuildError::Remote {
                    reason: "the MPI thread ended before the pool started".into(),
                })
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn no_launcher() -> String {
    "this process was not started by an MPI launcher, so there are no ranks to serve \
     the pool: run it as `mpirun -n N ./program` (N >= 2; rank 0 runs main, the others \
     serve), or `srun -n N` under Slurm, or build with `.spawn(n)` to start serving \
     processes from here"
        .into()
}

/// Spawning from a process started alone needs Open MPI's runtime daemon.
fn check_runtime_on_path() -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .any(|dir| dir.join("orted").is_file() || dir.join("mpirun").is_file());
    if found {
        Ok(())
    } else {
        Err(
            "spawning MPI workers needs Open MPI's runtime (`mpirun`, `orted`) on PATH, \
             and none was found: install it (Debian/Ubuntu: `apt-get install openmpi-bin`) \
             or add its bin directory to PATH"
                .into(),
        )
    }
}

/// A serving rank as the pool reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RankInfo {
    /// The rank in the world (launcher), or in the spawned group.
    pub rank: i32,
    /// The node it runs on.
    pub host: String,
    /// Its process id on that node.
    pub pid: u32,
    /// Its worker processes.
    pub workers: usize,
    /// Whether the pool found it lost (silent for `lost_after`): it gets
    /// no more jobs.
    pub lost: bool,
}

/// The ranks as the pool sees them now, shared by the pool and its MPI
/// thread (which marks the lost ones).
type Ranks = Arc<Mutex<Vec<RankInfo>>>;

/// The MPI thread: starts MPI and the ranks, says whether that worked,
/// then runs the pool until it closes and finalizes MPI.
fn run_master(
    builder: MpiPoolBuilder,
    commands: mpsc::Receiver<Command>,
    ready: mpsc::Sender<Result<(), String>>,
    info: Ranks,
) {
    launch::pool_built();
    let mpi = match comm::Mpi::start() {
        Ok(mpi) => mpi,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let comm = match builder.spawn {
        Some(n) => {
            if mpi.world().size() > 1 {
                let _ = ready.send(Err("spawn(n) is for a program started on its own; this \
                                        one runs under a launcher, whose ranks serve the \
                                        pool: build without spawn"
                    .into()));
                return;
            }
            let exe = match std::env::current_exe() {
                Ok(exe) => exe,
                Err(e) => {
                    let _ = ready.send(Err(format!("cannot find this program to spawn it: {e}")));
                    return;
                }
            };
            let mut command = std::process::Command::new(exe);
            command.arg(launch::SPAWNED_ARG);
            let n = i32::try_from(n).unwrap_or(i32::MAX);
            match mpi.spawn(&command, n) {
                Ok(inter) => comm::Comm::Inter(inter),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
        }
        None => {
            let world = mpi.world();
            if world.size() < 2 {
                let _ = ready.send(Err(
                    "this MPI job has only rank 0, so no rank can serve the pool: start it \
                     with `mpirun -n N` (N >= 2; rank 0 runs main, the others serve), or \
                     build with `.spawn(n)`"
                        .into(),
                ));
                return;
            }
            comm::Comm::World(world)
        }
    };
    let mut link = comm::Link::new(comm);
    let ranks = match start_ranks(&mut link, &builder) {
        Ok(ranks) => ranks,
        Err(e) => {
            let _ = ready.send(Err(e));
            release_after_failure(&mut link);
            drop(link);
            // A rank that never answered would never finalize either, and
            // `MPI_Finalize` would wait for it: MPI stays up instead.
            std::mem::forget(mpi);
            return;
        }
    };
    *log::parpool_lock(&info) = ranks
        .iter()
        .map(|r| RankInfo {
            rank: r.mpi_rank,
            host: r.host.clone(),
            pid: r.pid,
            workers: r.workers,
            lost: false,
        })
        .collect();
    if ready.send(Ok(())).is_err() {
        release_after_failure(&mut link);
        drop(link);
        std::mem::forget(mpi);
        return;
    }
    let master = Master::new(
        link,
        ranks,
        info,
        commands,
        builder.settings.limits.retries,
        builder.lost_after,
        Duration::from_nanos(builder.settings.spin_nanos),
    );
    // A panic here would be a bug; it must still not leave rank 0 waiting:
    // the unwinding drops every job (their handles resolve `Shutdown`) and
    // the link (its pending buffers leaked), and MPI is left up, since the
    // ranks were never told to finalize.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| master.run())) {
        Ok((link, true)) => {
            drop(link);
            drop(mpi);
        }
        Ok((link, false)) => {
            // A rank was lost: `MPI_Finalize` would wait for it forever.
            drop(link);
            std::mem::forget(mpi);
        }
        Err(_) => {
            tracing::error!(target: "parpool_mpi", "the MPI pool's thread panicked; its jobs were failed");
            std::mem::forget(mpi);
        }
    }
}

/// Sends the settings to every serving rank and waits for each hello.
fn start_ranks(link: &mut comm::Link, builder: &MpiPoolBuilder) -> Result<Vec<Rank>, String> {
    let (first, count) = match link.comm() {
        comm::Comm::World(_) => (1, link.comm().peers() - 1),
        comm::Comm::Inter(_) => (0, link.comm().peers()),
    };
    let mut settings = builder.settings.clone();
    settings.heartbeat_nanos = nanos(builder.lost_after / 10).max(1_000_000);
    settings.log_level = log::wanted_level();
    let setup = wire::encode(&ToRank::Setup(settings));
    for r in first..first + count {
        link.send(r, setup.clone())?;
    }
    let deadline = Instant::now() + builder.start_timeout;
    let mut ranks: Vec<Option<Rank>> = (0..count).map(|_| None).collect();
    let mut failures = Vec::new();
    while ranks.iter().any(Option::is_none) {
        link.progress();
        let Some((source, bytes)) = link.receive() else {
            if Instant::now() >= deadline {
                let missing: Vec<String> = ranks
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.is_none())
                    .map(|(i, _)| (first + i as i32).to_string())
                    .collect();
                return Err(format!(
                    "ranks {} did not start within {:?} (are they running this same program?)",
                    missing.join(", "),
                    builder.start_timeout
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
            continue;
        };
        let slot = usize::try_from(source - first)
            .ok()
            .and_then(|i| ranks.get_mut(i));
        let Some(slot) = slot else { continue };
        match postcard::from_bytes::<FromRank>(&bytes) {
            Ok(FromRank::Hello {
                host,
                pid,
                workers,
                error,
            }) => {
                if let Some(e) = &error {
                    failures.push(format!("rank {source} on {host}: {e}"));
                }
                *slot = Some(Rank::new(source, host, pid, workers as usize));
            }
            Ok(FromRank::Log(logs)) => {
                for l in &logs {
                    log::emit(source, "", l);
                }
            }
            Ok(_) => {}
            Err(e) => return Err(format!("rank {source}'s hello did not decode: {e}")),
        }
    }
    if !failures.is_empty() {
        return Err(format!(
            "serving ranks could not start their workers: {}",
            failures.join("; ")
        ));
    }
    Ok(ranks.into_iter().flatten().collect())
}

/// Tells every serving rank to exit, without finalizing MPI, after a
/// failed start.
fn release_after_failure(link: &mut comm::Link) {
    let (first, count) = match link.comm() {
        comm::Comm::World(_) => (1, link.comm().peers() - 1),
        comm::Comm::Inter(_) => (0, link.comm().peers()),
    };
    let finalize = wire::encode(&ToRank::Finalize(false));
    for r in first..first + count {
        let _ = link.send(r, finalize.clone());
    }
    link.drain(Duration::from_secs(5));
}

struct Shared {
    commands: Mutex<mpsc::Sender<Command>>,
    closed: AtomicBool,
    next_id: AtomicU64,
}

impl Shared {
    fn command(&self, command: Command) -> Result<(), Command> {
        let sender = log::parpool_lock(&self.commands);
        sender.send(command).map_err(|e| e.0)
    }
}

/// A pool whose workers are the ranks of an MPI job, each running its jobs
/// in a local process pool. See the [crate docs](crate) for how to start
/// one.
///
/// It implements [`Executor`], so code written for a `ThreadPool` or a
/// `ProcessPool` runs on it unchanged: [`submit`](Executor::submit),
/// [`map_task`](Executor::map_task), and [`JobHandle`]s to join, poll,
/// cancel, time out, `.await`, [`wait`](parpool::wait) on and take
/// [`as_completed`](parpool::as_completed).
pub struct MpiPool {
    shared: Arc<Shared>,
    thread: Mutex<Option<ThreadHandle<()>>>,
    ranks: Ranks,
    max_payload: u64,
    /// How long a thread joining a job polls before it sleeps.
    spin: Duration,
}

impl MpiPool {
    /// A builder with default settings.
    pub fn builder() -> MpiPoolBuilder {
        MpiPoolBuilder::default()
    }

    /// The serving ranks, as the pool sees them now: a rank found lost
    /// stays in the list, marked [`lost`](RankInfo::lost).
    pub fn ranks(&self) -> Vec<RankInfo> {
        log::parpool_lock(&self.ranks).clone()
    }

    /// Stops accepting jobs, lets every submitted job finish, releases the
    /// serving ranks and finalizes MPI. Jobs submitted afterwards resolve
    /// as [`JobError::Shutdown`]. Called by `Drop`.
    pub fn shutdown(&self) {
        self.close(false);
    }

    /// Stops accepting jobs, cancels those not started that can still be
    /// taken back (waiting on rank 0 or in a rank's queue: they resolve
    /// [`JobError::Cancelled`]), waits for the others, then releases the
    /// ranks as [`shutdown`](Self::shutdown). A job already sent ahead to a
    /// busy worker process runs.
    pub fn shutdown_now(&self) {
        self.close(true);
    }

    fn close(&self, now: bool) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let _ = self.shared.command(Command::Close { now });
        let thread = log::parpool_lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    fn enqueue<O: Send + 'static>(
        &self,
        task: &'static str,
        kind: Kind,
        timeout: Option<Duration>,
        input: Result<Vec<u8>, JobError>,
        sink: impl FnOnce(Pending<O>) -> Box<dyn Sink>,
    ) -> JobHandle<O> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        if self.shared.closed.load(Ordering::SeqCst) {
            return remote::ready(id, Err(JobError::Shutdown));
        }
        let input = match input {
            Ok(bytes) if bytes.len() as u64 > self.max_payload => Err(JobError::TooLarge {
                what: Payload::Input,
                size: bytes.len() as u64,
                limit: self.max_payload,
            }),
            other => other,
        };
        let input = match input {
            Ok(bytes) => bytes,
            Err(e) => return remote::ready(id, Err(e)),
        };
        let shared = Arc::downgrade(&self.shared);
        let on_cancel: remote::OnCancel = Arc::new(move |id| {
            if let Some(shared) = shared.upgrade() {
                let _ = shared.command(Command::Cancel(id.get()));
            }
        });
        let (handle, pending) = remote::pending::<O>(id, on_cancel, self.spin);
        let job = Queued {
            id,
            task,
            kind,
            timeout,
            input,
            sink: sink(pending),
            losses: 0,
        };
        if let Err(Command::Submit(job)) = self.shared.command(Command::Submit(job)) {
            job.sink.fail(JobError::Shutdown);
        }
        handle
    }
}

impl Drop for MpiPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for MpiPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpiPool")
            .field("ranks", &self.ranks())
            .finish_non_exhaustive()
    }
}

/// Resolves a single job: its output decoded. Dropped unresolved (the
/// pool closed before the job was sent, or its thread failed), it resolves
/// [`JobError::Shutdown`]: no handle waits forever.
struct SingleSink<T: Task>(Pending<T::Output>);

impl<T: Task> Drop for SingleSink<T> {
    fn drop(&mut self) {
        self.0.resolve(Err(JobError::Shutdown));
    }
}

impl<T: Task> Sink for SingleSink<T> {
    fn start(&self) -> bool {
        self.0.start()
    }
    fn finish(&self, outcome: Outcome, _took: Duration) {
        let result = match outcome {
            Outcome::Value(bytes) => remote::decode_task_output::<T>(&bytes),
            Outcome::Failed(e) => Err(e),
            Outcome::Items(_) => Err(protocol_error("a chunk's results for a single job")),
        };
        self.0.resolve(result);
    }
    fn fail(&self, error: JobError) {
        self.0.resolve(Err(error));
    }
}

/// Resolves a `map` chunk: each item's output decoded (and, dropped
/// unresolved, [`JobError::Shutdown`], as a [`SingleSink`]).
struct ChunkSink<T: Task> {
    pending: Pending<ChunkOut<T::Input, T::Output>>,
    len: usize,
}

impl<T: Task> Drop for ChunkSink<T> {
    fn drop(&mut self) {
        self.pending.resolve(Err(JobError::Shutdown));
    }
}

impl<T: Task> Sink for ChunkSink<T> {
    fn start(&self) -> bool {
        self.pending.start()
    }
    fn finish(&self, outcome: Outcome, took: Duration) {
        let result = match outcome {
            Outcome::Items(items) if items.len() == self.len => {
                let results = items
                    .into_iter()
                    .map(|r| r.and_then(|bytes| remote::decode_task_output::<T>(&bytes)))
                    .collect();
                Ok(remote::chunk_output(results, took))
            }
            Outcome::Items(items) => Err(protocol_error(&format!(
                "{} results for a chunk of {}",
                items.len(),
                self.len
            ))),
            Outcome::Failed(e) => Err(e),
            Outcome::Value(_) => Err(protocol_error("a single result for a chunk")),
        };
        self.pending.resolve(result);
    }
    fn fail(&self, error: JobError) {
        self.pending.resolve(Err(error));
    }
}

fn protocol_error(what: &str) -> JobError {
    JobError::Codec {
        stage: parpool::CodecStage::Frame,
        message: format!("a serving rank answered with {what} (are all ranks the same build?)"),
    }
}

impl Sealed for MpiPool {
    fn submit_chunk<T: Task>(
        &self,
        _task: T,
        chunk: ChunkIn<T::Input, T::Output>,
    ) -> JobHandle<ChunkOut<T::Input, T::Output>> {
        let inputs = remote::chunk_inputs(chunk);
        let len = inputs.len();
        let input = remote::encode_input(&inputs);
        let count = u32::try_from(len).unwrap_or(u32::MAX);
        self.enqueue(T::NAME, Kind::Chunk(count), None, input, |pending| {
            Box::new(ChunkSink::<T> { pending, len })
        })
    }

    fn chunk_time(&self) -> Duration {
        // A chunk's trip to a rank and back costs a few hundred
        // microseconds: chunks of about 10 ms keep that a few percent.
        remote::PROCESS_CHUNK_TIME * 5
    }
}

impl Executor for MpiPool {
    fn submit_with<T: Task>(
        &self,
        opts: JobOptions,
        _task: T,
        input: T::Input,
    ) -> JobHandle<T::Output> {
        let encoded = remote::encode_input(&input);
        self.enqueue(
            T::NAME,
            Kind::Single,
            opts.get_timeout(),
            encoded,
            |pending| Box::new(SingleSink::<T>(pending)),
        )
    }

    fn workers(&self) -> usize {
        log::parpool_lock(&self.ranks)
            .iter()
            .filter(|r| !r.lost)
            .map(|r| r.workers)
            .sum::<usize>()
            .max(1)
    }

    fn shutdown(&self) {
        MpiPool::shutdown(self);
    }

    fn shutdown_now(&self) {
        MpiPool::shutdown_now(self);
    }
}
