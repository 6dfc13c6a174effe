//! Running one scenario against a real pool and checking every invariant.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parpool::ipc::{Barrier, Event, Mutex as IpcMutex, Queue, SharedMem};
use parpool::{
    Executor, JobError, JobHandle, JobOptions, Pool, ProcessPool, SharedBytes, Stats, ThreadPool,
    WorkerOutput,
};

use crate::census::{self, Census};
use crate::jobs::{self, Body, Carry, Entry, Input, explore_init, explore_job, explore_pod};
use crate::scenario::{
    CarrySpec, Ending, Fate, MapStyle, ObjKind, Op, PairKind, PoolSpec, Rng, Scenario,
};
use crate::watchdog;

/// The pool under test.
pub(crate) enum Under {
    Threads(ThreadPool),
    Processes(ProcessPool),
    Either(Pool),
}

/// Runs `$body` with `$p` bound to the pool, whatever its type.
macro_rules! each {
    ($under:expr, $p:ident => $body:expr) => {
        match $under {
            Under::Threads($p) => $body,
            Under::Processes($p) => $body,
            Under::Either($p) => $body,
        }
    };
}

impl Under {
    fn build(spec: PoolSpec, ledger: &SharedMem) -> Under {
        let procs = |workers: usize| {
            ProcessPool::builder()
                .workers(workers)
                .initializer(explore_init, ledger.clone())
                .stdout(WorkerOutput::Null)
                .stderr(WorkerOutput::Null)
        };
        match spec {
            PoolSpec::Threads { workers } => {
                Under::Threads(ThreadPool::builder().workers(workers).build().unwrap())
            }
            PoolSpec::Processes {
                workers,
                retries,
                memory_limit,
                job_timeout_ms,
                capture,
                max_jobs_per_worker,
                spin,
            } => {
                let mut b = procs(workers).retries(retries);
                if memory_limit {
                    b = b.memory_limit(512 << 20);
                }
                if let Some(ms) = job_timeout_ms {
                    b = b.job_timeout(Duration::from_millis(u64::from(ms)));
                }
                if capture {
                    b = b
                        .stdout(WorkerOutput::Capture)
                        .stderr(WorkerOutput::Capture);
                }
                if let Some(n) = max_jobs_per_worker {
                    b = b.max_jobs_per_worker(n);
                }
                if spin {
                    b = b.spin(Duration::from_micros(200));
                }
                Under::Processes(b.build().unwrap())
            }
            PoolSpec::Either { processes, workers } => Under::Either(if processes {
                procs(workers).build().unwrap().into()
            } else {
                Pool::new("threads".parse().unwrap(), workers).unwrap()
            }),
        }
    }

    fn stats(&self) -> Stats {
        each!(self, p => p.stats())
    }

    fn worker_pids(&self) -> Vec<u32> {
        match self {
            Under::Processes(p) | Under::Either(Pool::Processes(p)) => p.worker_pids(),
            _ => Vec::new(),
        }
    }

    fn shutdown(&self) {
        each!(self, p => p.shutdown())
    }

    fn shutdown_now(&self) {
        each!(self, p => p.shutdown_now())
    }

    fn close(&self) {
        each!(self, p => p.close())
    }
}

/// A job whose handle the explorer keeps and joins at the end.
struct Tracked {
    key: u32,
    body: Body,
    timeout: bool,
    handle: Option<JobHandle<u64>>,
    /// What `cancel()` returned, if it was called (`true` if any call did).
    cancelled: Option<bool>,
    /// How many times the handle's `on_done` callbacks ran.
    resolutions: Arc<AtomicU32>,
}

/// A result the explorer saw somewhere other than a tracked handle (a map's
/// item, a handle awaited under a tokio timeout).
struct Seen {
    key: u32,
    body: Body,
    timeout: bool,
    result: Result<u64, JobError>,
}

/// The scenario's shared `ipc` objects, one of each kind.
struct Objects {
    mem: SharedMem,
    event: Event,
    mutex: IpcMutex<u64>,
}

/// Everything the lanes and the checks share while a scenario runs.
struct Ctx<'a> {
    sc: &'a Scenario,
    pool: Under,
    ledger: SharedMem,
    next_key: AtomicU32,
    max_keys: u32,
    objects: Objects,
    tracked: Mutex<Vec<Tracked>>,
    seen: Mutex<Vec<Seen>>,
    /// Keys whose handle was dropped or given up on: only the ledger speaks
    /// for them.
    detached: Mutex<Vec<u32>>,
    /// Keys cancelled while surely still queued (every worker was held at
    /// a gate): they must never start.
    gated: Mutex<Vec<u32>>,
    /// Jobs submitted, as the explorer counts them (single jobs only).
    submitted: AtomicU64,
    killed: AtomicBool,
    squeezed: AtomicBool,
    shutdown: AtomicBool,
    shutdown_now: AtomicBool,
    problems: Mutex<Vec<String>>,
}

impl Ctx<'_> {
    fn problem(&self, p: String) {
        self.problems.lock().unwrap().push(p);
    }

    fn key(&self) -> u32 {
        let k = self.next_key.fetch_add(1, SeqCst);
        assert!(
            k < self.max_keys,
            "the scenario used more keys than it said"
        );
        k
    }

    fn carry(&self, spec: CarrySpec) -> Carry {
        match spec {
            CarrySpec::Nothing => Carry::Nothing,
            CarrySpec::Bytes(n) => {
                Carry::Bytes(SharedBytes::new(n as usize, |b| b.fill(0x5a)).expect("a SharedBytes"))
            }
            CarrySpec::Shared(ObjKind::Mem) => Carry::Mem(self.objects.mem.clone()),
            CarrySpec::Shared(ObjKind::Event) => Carry::Event(self.objects.event.clone()),
            CarrySpec::Shared(ObjKind::Mutex) => Carry::Mutex(self.objects.mutex.clone()),
            CarrySpec::Fresh(ObjKind::Mem) => Carry::Mem(SharedMem::new(64).expect("SharedMem")),
            CarrySpec::Fresh(ObjKind::Event) => Carry::Event(Event::new().expect("Event")),
            CarrySpec::Fresh(ObjKind::Mutex) => Carry::Mutex(IpcMutex::new(0).expect("Mutex")),
        }
    }

    /// Submits one job; returns its key and handle (with a resolution
    /// counter attached).
    fn submit(
        &self,
        body: Body,
        carry: Carry,
        timeout_ms: Option<u32>,
    ) -> (u32, JobHandle<u64>, Arc<AtomicU32>) {
        let key = self.key();
        let mut opts = JobOptions::new();
        if let Some(ms) = timeout_ms {
            opts = opts.timeout(Duration::from_millis(u64::from(ms)));
        }
        let input = Input { key, body, carry };
        let handle = each!(&self.pool, p => p.submit_with(opts, explore_job, input));
        self.submitted.fetch_add(1, SeqCst);
        let resolutions = Arc::new(AtomicU32::new(0));
        let r = resolutions.clone();
        handle.on_done(move |_| {
            r.fetch_add(1, SeqCst);
        });
        (key, handle, resolutions)
    }

    fn track(
        &self,
        key: u32,
        body: Body,
        timeout: bool,
        handle: JobHandle<u64>,
        resolutions: Arc<AtomicU32>,
    ) -> usize {
        let mut t = self.tracked.lock().unwrap();
        t.push(Tracked {
            key,
            body,
            timeout,
            handle: Some(handle),
            cancelled: None,
            resolutions,
        });
        t.len() - 1
    }

    fn cancel(&self, index: usize) -> Option<bool> {
        let mut t = self.tracked.lock().unwrap();
        let tracked = &mut t[index];
        let won = tracked.handle.as_ref()?.cancel();
        tracked.cancelled = Some(tracked.cancelled.unwrap_or(false) || won);
        Some(won)
    }

    fn run_lane(&self, lane: &[Op], seed: u64) {
        let mut rng = Rng::new(seed);
        let mut runtime = None;
        for op in lane {
            self.run_op(*op, &mut rng, &mut runtime);
        }
    }

    fn run_op(&self, op: Op, rng: &mut Rng, runtime: &mut Option<tokio::runtime::Runtime>) {
        match op {
            Op::Submit {
                body,
                carry,
                timeout_ms,
                fate,
            } => {
                let carry = self.carry(carry);
                let (key, handle, res) = self.submit(body, carry, timeout_ms);
                let timeout = timeout_ms.is_some();
                match fate {
                    Fate::Keep => {
                        self.track(key, body, timeout, handle, res);
                    }
                    Fate::Drop => {
                        drop(handle);
                        self.detached.lock().unwrap().push(key);
                    }
                    Fate::Cancel { after_us } => {
                        let i = self.track(key, body, timeout, handle, res);
                        std::thread::sleep(Duration::from_micros(u64::from(after_us)));
                        self.cancel(i);
                    }
                    Fate::CancelOnDrop { within_ms } => {
                        let rt = runtime.get_or_insert_with(|| {
                            tokio::runtime::Builder::new_current_thread()
                                .enable_time()
                                .build()
                                .unwrap()
                        });
                        let within = Duration::from_millis(u64::from(within_ms));
                        let guarded = handle.cancel_on_drop();
                        match rt.block_on(async { tokio::time::timeout(within, guarded).await }) {
                            Ok(result) => self.seen.lock().unwrap().push(Seen {
                                key,
                                body,
                                timeout,
                                result,
                            }),
                            Err(_) => self.detached.lock().unwrap().push(key),
                        }
                    }
                }
            }
            Op::Burst {
                n,
                body,
                carry,
                cancel_every,
                lag,
            } => {
                let mut indices = Vec::with_capacity(n as usize);
                for i in 0..n {
                    let c = self.carry(carry);
                    let (key, handle, res) = self.submit(body, c, None);
                    indices.push(self.track(key, body, false, handle, res));
                    if let Some(every) = cancel_every
                        && i >= lag
                        && (i - lag) % every == 0
                    {
                        self.cancel(indices[(i - lag) as usize]);
                    }
                }
            }
            Op::Pair { kind, gap_ms } => {
                let (wait, release, carry) = match kind {
                    PairKind::Event => (
                        Body::WaitEvent,
                        Body::SetEvent,
                        Carry::Event(Event::new().unwrap()),
                    ),
                    PairKind::Queue => (
                        Body::QueueGet,
                        Body::QueuePut,
                        Carry::Queue(Queue::new().unwrap()),
                    ),
                };
                let (k, h, r) = self.submit(wait, carry.clone(), None);
                self.track(k, wait, false, h, r);
                if gap_ms >= 5 {
                    std::thread::sleep(Duration::from_millis(u64::from(gap_ms)));
                }
                let (k, h, r) = self.submit(release, carry, None);
                self.track(k, release, false, h, r);
                // Jobs sent right behind them and cancelled at once: a
                // release waiting unclaimed behind its waiter, with
                // withdrawn requests after it, must still be taken back.
                for _ in 0..Op::pair_followers(gap_ms) {
                    let (k, h, r) = self.submit(Body::Tiny, Carry::Nothing, None);
                    let i = self.track(k, Body::Tiny, false, h, r);
                    self.cancel(i);
                }
            }
            Op::Barrier { parties } => {
                let b = Barrier::new(parties).unwrap();
                for _ in 0..parties {
                    let (k, h, r) = self.submit(Body::BarrierWait, Carry::Barrier(b.clone()), None);
                    self.track(k, Body::BarrierWait, false, h, r);
                }
            }
            Op::Map {
                style,
                n,
                body,
                poison,
                take,
            } => self.map(style, n, body, poison, take),
            Op::Par { n, panic_at } => self.par(n, panic_at),
            Op::Scope { n } => self.scope(n),
            Op::Gate { k } => self.gate(k),
            Op::Kill => {
                let pids = self.pool.worker_pids();
                if !pids.is_empty() {
                    let pid = pids[(rng.next() % pids.len() as u64) as usize];
                    self.killed.store(true, SeqCst);
                    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
            Op::Squeeze { n, ms } => {
                self.squeezed.store(true, SeqCst);
                // No new descriptor at all: a worker that retires cannot
                // be replaced, even by the numbers it frees.
                let squeeze = census::Squeeze::to(3);
                for _ in 0..n {
                    let (k, h, r) = self.submit(Body::Tiny, Carry::Nothing, None);
                    self.track(k, Body::Tiny, false, h, r);
                }
                std::thread::sleep(Duration::from_millis(u64::from(ms)));
                drop(squeeze);
            }
            Op::Pause { ms } => std::thread::sleep(Duration::from_millis(u64::from(ms))),
        }
    }

    fn map(
        &self,
        style: MapStyle,
        n: u32,
        body: Body,
        poison: Option<(u32, Body)>,
        take: Option<u32>,
    ) {
        let base = self.next_key.fetch_add(n, SeqCst);
        assert!(base + n <= self.max_keys);
        let body_of = move |i: u32| match poison {
            Some((at, b)) if at == i => b,
            _ => body,
        };
        let inputs = (0..n).map(move |i| Input {
            key: base + i,
            body: body_of(i),
            carry: Carry::Nothing,
        });
        let take = take.unwrap_or(n) as usize;
        let mut results: Vec<(u32, Result<u64, JobError>)> = Vec::new();
        match (style, &self.pool) {
            (MapStyle::Closures, Under::Threads(p)) => {
                for (i, r) in p.map(explore_job::run_now, inputs).take(take).enumerate() {
                    results.push((i as u32, r));
                }
            }
            (MapStyle::ClosuresUnordered, Under::Threads(p)) => {
                for (i, r) in p.map_unordered(explore_job::run_now, inputs).take(take) {
                    results.push((i as u32, r));
                }
            }
            (MapStyle::Task, under) => each!(under, p => {
                for (i, r) in p.map_task(explore_job, inputs).take(take).enumerate() {
                    results.push((i as u32, r));
                }
            }),
            (_, under) => each!(under, p => {
                for (i, r) in p.map_task_unordered(explore_job, inputs).take(take) {
                    results.push((i as u32, r));
                }
            }),
        }
        let mut seen = self.seen.lock().unwrap();
        let mut got = vec![false; n as usize];
        for (i, result) in results {
            got[i as usize] = true;
            seen.push(Seen {
                key: base + i,
                body: body_of(i),
                timeout: false,
                result,
            });
        }
        drop(seen);
        let mut detached = self.detached.lock().unwrap();
        detached.extend((0..n).filter(|&i| !got[i as usize]).map(|i| base + i));
    }

    fn par(&self, n: u32, panic_at: Option<u32>) {
        self.key();
        let expect = |x: u64| x.wrapping_mul(3).wrapping_add(1);
        match &self.pool {
            Under::Threads(p) => {
                let data: Vec<u64> = (0..u64::from(n)).collect();
                let out = p.par(&data).map(|&x| {
                    if panic_at.is_some_and(|at| u64::from(at) == x) {
                        panic!("explorer par item {x} panics on purpose");
                    }
                    expect(x)
                });
                match (out, panic_at.filter(|&at| at < n)) {
                    (Ok(v), None) => {
                        if v.iter().enumerate().any(|(i, &y)| y != expect(i as u64)) {
                            self.problem(format!("par over {n} items gave wrong values"));
                        }
                    }
                    (Err(e), Some(_)) if e.is_panicked() => {}
                    (Err(e), _) if self.shutdown.load(SeqCst) && e.is_shutdown() => {}
                    (other, at) => self.problem(format!(
                        "par over {n} items (panic at {at:?}) gave {:?}",
                        other.map(|v| v.len())
                    )),
                }
            }
            Under::Processes(p) => {
                let data: Vec<u64> = (0..u64::from(n)).collect();
                match p.par(&data).map(explore_pod) {
                    Ok(v) => {
                        if v.iter().enumerate().any(|(i, &y)| y != expect(i as u64)) {
                            self.problem(format!("process par over {n} items gave wrong values"));
                        }
                    }
                    Err(e) => {
                        let excused = self.killed.load(SeqCst)
                            || self.shutdown.load(SeqCst)
                            || self.sc.pool.job_timeout()
                            || self.squeezed.load(SeqCst);
                        if !excused {
                            self.problem(format!("process par over {n} items failed: {e}"));
                        }
                    }
                }
            }
            Under::Either(_) => {}
        }
    }

    fn scope(&self, n: u32) {
        self.key();
        let Under::Threads(p) = &self.pool else {
            return;
        };
        let base = 1000u64;
        let results: Vec<Result<u64, JobError>> = p.scope(|s| {
            let handles: Vec<_> = (0..u64::from(n))
                .map(|i| {
                    let base = &base;
                    s.spawn(move || *base + i)
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(v) if v == base + i as u64 => {}
                Err(e) if self.shutdown.load(SeqCst) && (e.is_shutdown() || e.is_cancelled()) => {}
                other => self.problem(format!("scope job {i} of {n} gave {other:?}")),
            }
        }
    }

    /// Holds every worker at a gate, submits `k` jobs behind them, cancels
    /// those, then opens the gate.
    fn gate(&self, k: u32) {
        let gate = Event::new().unwrap();
        let workers = self.sc.pool.workers();
        let mut holders = Vec::new();
        for _ in 0..workers {
            let (key, h, r) = self.submit(Body::WaitEvent, Carry::Event(gate.clone()), None);
            holders.push(key);
            self.track(key, Body::WaitEvent, false, h, r);
        }
        // Every worker must be held before the jobs behind them count as
        // queued; a gate that does not close in time proves nothing.
        let deadline = Instant::now() + Duration::from_secs(5);
        let held = loop {
            if holders
                .iter()
                .all(|&key| jobs::entry(&self.ledger, key).started > 0)
            {
                break true;
            }
            if Instant::now() > deadline || self.shutdown.load(SeqCst) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        for _ in 0..k {
            let (key, h, r) = self.submit(Body::Tiny, Carry::Nothing, None);
            let i = self.track(key, Body::Tiny, false, h, r);
            if self.cancel(i) == Some(true) && held {
                self.gated.lock().unwrap().push(key);
            }
        }
        gate.set();
    }

    /// Whether `result` is one a job of `body` may have, and whether the
    /// ledger agrees with it. `cancelled`: what `cancel()` returned.
    fn judge(
        &self,
        key: u32,
        body: Body,
        timeout: bool,
        cancelled: Option<bool>,
        result: &Result<u64, JobError>,
        cancelled_pids: &mut Vec<(u32, u32)>,
    ) {
        let e: Entry = jobs::entry(&self.ledger, key);
        let procs = self.sc.pool.processes();
        let killed = self.killed.load(SeqCst);
        let retries = self.sc.pool.retries();
        let what =
            |why: &str| format!("job {key} ({body:?}) resolved {result:?}: {why}; ledger {e:?}");
        if cancelled == Some(true) && !matches!(result, Err(JobError::Cancelled)) {
            self.problem(what("cancel() returned true, so it must resolve Cancelled"));
        }
        match result {
            Ok(v) => {
                if *v != jobs::expected(key) {
                    self.problem(what("a value that is not this job's"));
                }
                // Only a crash retry runs a body again.
                let runs = if killed { 1 + u64::from(retries) } else { 1 };
                if e.finished == 0 || e.finished > runs {
                    self.problem(what("Ok, but its body did not run to the end exactly once"));
                }
                let may_succeed = match body {
                    Body::Panic => false,
                    b if b.crashes() => false,
                    Body::CrashOnce => retries > 0,
                    _ => true,
                };
                if !may_succeed {
                    self.problem(what("a body that cannot return returned"));
                }
            }
            Err(JobError::Panicked(_)) => {
                if body != Body::Panic {
                    self.problem(what("a panic from a body that does not panic"));
                }
            }
            Err(JobError::Crashed { .. }) => {
                let may_crash = body.crashes() || body == Body::CrashOnce || killed;
                if !may_crash {
                    self.problem(what("Crashed, yet nothing crashed its worker"));
                } else if e.started == 0 && !killed {
                    self.problem(what("Crashed, yet the job never started"));
                }
            }
            Err(JobError::Cancelled) => {
                let excused = cancelled == Some(true) || self.shutdown_now.load(SeqCst);
                if !excused {
                    self.problem(what("Cancelled, yet nobody cancelled it"));
                }
                if procs && e.finished > 0 {
                    // It ran to the end: only a worker killed while it ran
                    // excuses that, and then that worker is gone.
                    cancelled_pids.push((key, e.pid));
                }
            }
            Err(JobError::TimedOut { .. }) => {
                if !(timeout || self.sc.pool.job_timeout()) {
                    self.problem(what("TimedOut without a timeout"));
                }
            }
            Err(JobError::Shutdown) => {
                if !self.shutdown.load(SeqCst) {
                    self.problem(what("Shutdown before any shutdown"));
                }
            }
            Err(JobError::NoWorker { .. }) => {
                if !self.squeezed.load(SeqCst) {
                    self.problem(what("NoWorker, yet workers could start"));
                }
                if e.started > 0 {
                    self.problem(what("NoWorker, yet the job started"));
                }
            }
            Err(_) => self.problem(what("an error no job of this scenario can have")),
        }
    }
}

/// Samples a pool's stats while it runs: `running` never exceeds the
/// workers, no counter ever goes down, and no more jobs are resolved than
/// were submitted.
fn watch_stats(pool: &Under, workers: usize, stop: &AtomicBool, problems: &Mutex<Vec<String>>) {
    let mut last = pool.stats();
    let counters = |s: &Stats| [s.submitted, s.completed, s.failed, s.cancelled, s.timed_out];
    while !stop.load(SeqCst) {
        let s = pool.stats();
        watchdog::note_stats(&s);
        let problem = if s.running > workers as u64 {
            Some(format!(
                "stats say {} jobs run on {workers} workers: {s:?}",
                s.running
            ))
        } else if counters(&s)
            .iter()
            .zip(counters(&last))
            .any(|(now, then)| *now < then)
        {
            Some(format!("a stats counter went down: {last:?} then {s:?}"))
        } else if s.finished() > s.submitted {
            Some(format!(
                "stats show more jobs resolved than submitted: {s:?}"
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            problems.lock().unwrap().push(p);
            return;
        }
        last = s;
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `sc` and returns every invariant it broke (empty: it held).
pub(crate) fn run(sc: &Scenario) -> Vec<String> {
    let baseline = Census::take();
    let max_keys = sc.keys();
    let ledger = SharedMem::new(max_keys as usize * jobs::WORDS * 8).unwrap();
    jobs::set_ledger(Some(ledger.clone()));
    watchdog::phase("building the pool");
    let pool = Under::build(sc.pool, &ledger);
    let ctx = Ctx {
        sc,
        pool,
        ledger,
        next_key: AtomicU32::new(0),
        max_keys,
        objects: Objects {
            mem: SharedMem::new(64).unwrap(),
            event: Event::new().unwrap(),
            mutex: IpcMutex::new(0).unwrap(),
        },
        tracked: Mutex::new(Vec::new()),
        seen: Mutex::new(Vec::new()),
        detached: Mutex::new(Vec::new()),
        gated: Mutex::new(Vec::new()),
        submitted: AtomicU64::new(0),
        killed: AtomicBool::new(false),
        squeezed: AtomicBool::new(false),
        shutdown: AtomicBool::new(false),
        shutdown_now: AtomicBool::new(false),
        problems: Mutex::new(Vec::new()),
    };
    let workers = sc.pool.workers();
    let stop = AtomicBool::new(false);
    let lanes_done = AtomicBool::new(false);
    watchdog::phase("lanes running");
    std::thread::scope(|s| {
        s.spawn(|| watch_stats(&ctx.pool, workers, &stop, &ctx.problems));
        if sc.canceller {
            s.spawn(|| {
                let mut rng = Rng::new(sc.seed ^ 0xc0ffee);
                while !lanes_done.load(SeqCst) {
                    let n = ctx.tracked.lock().unwrap().len();
                    if n > 0 && rng.chance(30) {
                        ctx.cancel((rng.next() % n as u64) as usize);
                    }
                    std::thread::sleep(Duration::from_micros(rng.range(0, 800)));
                }
            });
        }
        let lanes: Vec<_> = sc
            .lanes
            .iter()
            .enumerate()
            .map(|(i, lane)| {
                let ctx = &ctx;
                s.spawn(move || ctx.run_lane(lane, sc.seed.wrapping_add(i as u64 + 1)))
            })
            .collect();
        match sc.ending {
            Ending::Join => {}
            Ending::Shutdown { after_ms }
            | Ending::ShutdownNow { after_ms }
            | Ending::Close { after_ms } => {
                std::thread::sleep(Duration::from_millis(u64::from(after_ms)));
                ctx.shutdown.store(true, SeqCst);
                match sc.ending {
                    Ending::ShutdownNow { .. } => {
                        ctx.shutdown_now.store(true, SeqCst);
                        watchdog::phase("shutdown_now mid-flight");
                        ctx.pool.shutdown_now();
                    }
                    Ending::Close { .. } => {
                        watchdog::phase("close mid-flight");
                        ctx.pool.close();
                    }
                    _ => {
                        watchdog::phase("shutdown mid-flight");
                        ctx.pool.shutdown();
                    }
                }
            }
        }
        for lane in lanes {
            if let Err(p) = lane.join() {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                ctx.problem(format!("a lane panicked: {msg}"));
            }
        }
        lanes_done.store(true, SeqCst);
        watchdog::phase("joining handles");
        let outcomes = check_handles(&ctx);
        watchdog::phase("waiting for the stats to come to rest");
        check_rest(&ctx, &outcomes);
        stop.store(true, SeqCst);
    });
    let Ctx {
        pool,
        problems,
        objects,
        ledger,
        tracked,
        seen,
        ..
    } = ctx;
    watchdog::phase("dropping the pool");
    let dropping = Instant::now();
    drop(pool);
    let mut problems = problems.into_inner().unwrap();
    if dropping.elapsed() > Duration::from_secs(20) {
        problems.push(format!("dropping the pool took {:?}", dropping.elapsed()));
    }
    drop((objects, ledger, tracked, seen));
    jobs::set_ledger(None);
    watchdog::phase("counting what is left");
    if let Some(left) = Census::leftover(&baseline, Duration::from_secs(5)) {
        problems.push(left);
    }
    problems
}

/// Joins every tracked handle (within the watchdog's bound) and judges
/// every result.
fn check_handles(ctx: &Ctx<'_>) -> Outcomes {
    let mut outcomes = Outcomes::default();
    let tracked = std::mem::take(&mut *ctx.tracked.lock().unwrap());
    let total = tracked.len();
    let mut cancelled_pids = Vec::new();
    for (i, mut t) in tracked.into_iter().enumerate() {
        if i % 256 == 0 {
            watchdog::phase(&format!("joining handles: {i} of {total} resolved"));
        }
        let Some(handle) = t.handle.take() else {
            continue;
        };
        let result = handle.join();
        let calls = t.resolutions.load(SeqCst);
        if calls != 1 {
            ctx.problem(format!(
                "job {} resolved, but its on_done callback ran {calls} times",
                t.key
            ));
        }
        ctx.judge(
            t.key,
            t.body,
            t.timeout,
            t.cancelled,
            &result,
            &mut cancelled_pids,
        );
        outcomes.add(&result);
    }
    let seen = std::mem::take(&mut *ctx.seen.lock().unwrap());
    for s in seen {
        ctx.judge(
            s.key,
            s.body,
            s.timeout,
            None,
            &s.result,
            &mut cancelled_pids,
        );
        outcomes.add(&s.result);
    }
    // Every key: a body never runs to the end twice (but for a crash
    // retry, after a worker was killed with its result).
    let used = ctx.next_key.load(SeqCst).min(ctx.max_keys);
    let runs = if ctx.killed.load(SeqCst) {
        1 + u64::from(ctx.sc.pool.retries())
    } else {
        1
    };
    for key in 0..used {
        let e = jobs::entry(&ctx.ledger, key);
        if e.finished > runs {
            ctx.problem(format!(
                "job {key}'s body ran to the end {} times",
                e.finished
            ));
        }
    }
    for &key in ctx.gated.lock().unwrap().iter() {
        let e = jobs::entry(&ctx.ledger, key);
        if e.started > 0 {
            ctx.problem(format!(
                "job {key} was cancelled while queued behind a closed gate, yet it started ({e:?})"
            ));
        }
    }
    if !ctx.shutdown.load(SeqCst) {
        // The worker is killed (or ends by itself) as the job is stopped;
        // dying takes a moment on a busy machine.
        for (key, pid) in cancelled_pids {
            let deadline = Instant::now() + Duration::from_secs(10);
            while ctx.pool.worker_pids().contains(&pid) && census::alive(pid) {
                if Instant::now() > deadline {
                    ctx.problem(format!(
                        "job {key} resolved Cancelled, ran to the end, and its worker {pid} lives on"
                    ));
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    outcomes
}

/// Waits for the pool's stats to come to rest and checks that they add up
/// (and, where the explorer saw every handle resolve, that they say what
/// the handles said).
fn check_rest(ctx: &Ctx<'_>, outcomes: &Outcomes) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let s = loop {
        let s = ctx.pool.stats();
        if s.queued == 0 && s.running == 0 && s.finished() == s.submitted {
            break s;
        }
        if Instant::now() > deadline {
            ctx.problem(format!(
                "the stats never came to rest (nothing queued or running, submitted = resolved): {s:?}"
            ));
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if !ctx.sc.single_jobs_only() {
        return;
    }
    let submitted = ctx.submitted.load(SeqCst);
    if s.submitted != submitted {
        ctx.problem(format!(
            "stats say {} jobs were submitted, the explorer submitted {submitted}: {s:?}",
            s.submitted
        ));
    }
    if ctx.detached.lock().unwrap().is_empty() {
        let seen = (
            outcomes.ok,
            outcomes.failed,
            outcomes.cancelled,
            outcomes.timed_out,
        );
        let said = (s.completed, s.failed, s.cancelled, s.timed_out);
        if seen != said {
            ctx.problem(format!(
                "handles resolved (ok, failed, cancelled, timed out) = {seen:?}, stats say {said:?}"
            ));
        }
    }
}

/// What the handles resolved to, by the stats' categories.
#[derive(Debug, Default)]
struct Outcomes {
    ok: u64,
    failed: u64,
    cancelled: u64,
    timed_out: u64,
}

impl Outcomes {
    fn add(&mut self, result: &Result<u64, JobError>) {
        match result {
            Ok(_) => self.ok += 1,
            Err(JobError::Cancelled | JobError::Shutdown) => self.cancelled += 1,
            Err(JobError::TimedOut { .. }) => self.timed_out += 1,
            Err(_) => self.failed += 1,
        }
    }
}
