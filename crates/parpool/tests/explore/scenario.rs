//! Scenarios: what the explorer runs, generated from a seed.
//!
//! A scenario is a pool and one or more *lanes*: threads that each run a
//! list of operations at the same time (submissions, maps, cancels, kills,
//! pauses), and an ending (everything joined, or a shutdown mid-flight).
//! The same seed always gives the same scenario; its `Debug` form is what
//! a failure prints.

use crate::jobs::Body;

/// SplitMix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// One of `choices`, each weighted.
    pub(crate) fn pick<T: Copy>(&mut self, choices: &[(u64, T)]) -> T {
        let total: u64 = choices.iter().map(|c| c.0).sum();
        let mut at = self.next() % total;
        for &(w, c) in choices {
            if at < w {
                return c;
            }
            at -= w;
        }
        choices[choices.len() - 1].1
    }
}

/// The seed of the `index`-th scenario of a run seeded `master`.
pub(crate) fn scenario_seed(master: u64, index: u64) -> u64 {
    Rng::new(master ^ index.wrapping_mul(0xd134_2543_de82_ef95)).next()
}

/// The pool a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolSpec {
    Threads {
        workers: usize,
    },
    Processes {
        workers: usize,
        retries: u32,
        /// 512 MiB per worker, so that `Oom` bodies fail alone.
        memory_limit: bool,
        job_timeout_ms: Option<u32>,
        capture: bool,
        max_jobs_per_worker: Option<u64>,
        /// The low-latency mode (`spin`, 200 µs).
        spin: bool,
    },
    /// `parpool::Pool`, chosen at run time, with its defaults.
    Either {
        processes: bool,
        workers: usize,
    },
}

impl PoolSpec {
    pub(crate) fn processes(&self) -> bool {
        match *self {
            PoolSpec::Threads { .. } => false,
            PoolSpec::Processes { .. } => true,
            PoolSpec::Either { processes, .. } => processes,
        }
    }

    pub(crate) fn workers(&self) -> usize {
        match *self {
            PoolSpec::Threads { workers }
            | PoolSpec::Processes { workers, .. }
            | PoolSpec::Either { workers, .. } => workers,
        }
    }

    pub(crate) fn retries(&self) -> u32 {
        match *self {
            PoolSpec::Processes { retries, .. } => retries,
            _ => 0,
        }
    }

    pub(crate) fn job_timeout(&self) -> bool {
        matches!(
            self,
            PoolSpec::Processes {
                job_timeout_ms: Some(_),
                ..
            }
        )
    }

    fn memory_limit(&self) -> bool {
        matches!(
            self,
            PoolSpec::Processes {
                memory_limit: true,
                ..
            }
        )
    }

    /// A plain `ThreadPool` (the only pool with closures, scopes and `par`
    /// over borrowed data).
    pub(crate) fn thread_pool(&self) -> bool {
        matches!(self, PoolSpec::Threads { .. })
    }

    /// A plain `ProcessPool` (`par` over plain data, worker pids).
    pub(crate) fn process_pool(&self) -> bool {
        matches!(self, PoolSpec::Processes { .. })
    }
}

/// The kinds of `ipc` object a job may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjKind {
    Mem,
    Event,
    Mutex,
}

/// What a job carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CarrySpec {
    Nothing,
    /// A fresh `SharedBytes` of this many bytes.
    Bytes(u32),
    /// The scenario's one object of this kind, shared by every job that
    /// names it.
    Shared(ObjKind),
    /// A new object for this job alone.
    Fresh(ObjKind),
}

/// What happens to a job's handle after submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Joined at the end.
    Keep,
    /// Dropped at once (the job is detached).
    Drop,
    /// Cancelled this many microseconds after submission (by the lane).
    Cancel { after_us: u32 },
    /// Awaited under a tokio timeout of this many milliseconds, through
    /// `cancel_on_drop`.
    CancelOnDrop { within_ms: u32 },
}

/// How a map is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapStyle {
    /// `ThreadPool::map` over a closure.
    Closures,
    /// `ThreadPool::map_unordered` over a closure.
    ClosuresUnordered,
    /// `Executor::map_task`.
    Task,
    /// `Executor::map_task_unordered`.
    TaskUnordered,
}

/// What waits for what, in a blocking pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PairKind {
    Event,
    Queue,
}

/// One operation of a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// One job.
    Submit {
        body: Body,
        carry: CarrySpec,
        timeout_ms: Option<u32>,
        fate: Fate,
    },
    /// `n` jobs in a row, each carrying `carry`; every `cancel_every`-th
    /// is cancelled `lag` submissions later (while the burst goes on).
    Burst {
        n: u32,
        body: Body,
        carry: CarrySpec,
        cancel_every: Option<u32>,
        lag: u32,
    },
    /// A job that waits, then, `gap_ms` later (at once below 5 ms), the
    /// job that releases it, then [`Op::pair_followers`] tiny jobs,
    /// cancelled at once.
    Pair { kind: PairKind, gap_ms: u32 },
    /// `parties` jobs meeting at one `Barrier`.
    Barrier { parties: u32 },
    /// A map over `n` items, the `poison`-th item having another body;
    /// only the first `take` results are read when set.
    Map {
        style: MapStyle,
        n: u32,
        body: Body,
        poison: Option<(u32, Body)>,
        take: Option<u32>,
    },
    /// `par(..).map(..)` over `n` items (on a `ThreadPool` or a
    /// `ProcessPool`).
    Par { n: u32, panic_at: Option<u32> },
    /// A `ThreadPool::scope` spawning `n` borrowing jobs.
    Scope { n: u32 },
    /// Every worker held by a job waiting at a gate; `k` jobs submitted
    /// behind them and cancelled; then the gate opens. Those `k` must
    /// never start.
    Gate { k: u32 },
    /// A worker process SIGKILLed from outside.
    Kill,
    /// The descriptor limit lowered to what is open now for `ms`, while
    /// `n` jobs are submitted: replacement workers cannot start.
    Squeeze { n: u32, ms: u32 },
    /// The lane sleeps.
    Pause { ms: u32 },
}

impl Op {
    /// How many jobs a pair sends after its two, cancelled at once (read
    /// from its gap, so that the generator draws nothing more for it and
    /// seeds keep their scenarios).
    pub(crate) fn pair_followers(gap_ms: u32) -> u32 {
        gap_ms % 5
    }

    /// How many ledger keys the operation may use, at most.
    pub(crate) fn keys(&self, workers: usize) -> u32 {
        match *self {
            Op::Submit { .. } | Op::Kill | Op::Pause { .. } | Op::Par { .. } => 1,
            Op::Burst { n, .. } | Op::Map { n, .. } | Op::Scope { n } | Op::Squeeze { n, .. } => n,
            Op::Pair { gap_ms, .. } => 2 + Op::pair_followers(gap_ms),
            Op::Barrier { parties } => parties,
            Op::Gate { k } => k + workers as u32,
        }
    }
}

/// How a scenario ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Every handle is joined, then the pool is dropped.
    Join,
    /// `shutdown` from another thread this long after the start.
    Shutdown { after_ms: u32 },
    /// `shutdown_now` from another thread this long after the start.
    ShutdownNow { after_ms: u32 },
    /// `close` (Python's `shutdown(wait=False)`) from another thread this
    /// long after the start: every job still resolves, the pool is dropped
    /// without waiting, and nothing is left behind.
    Close { after_ms: u32 },
}

/// A whole scenario.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) seed: u64,
    pub(crate) pool: PoolSpec,
    pub(crate) lanes: Vec<Vec<Op>>,
    /// A thread that cancels kept handles at random moments.
    pub(crate) canceller: bool,
    pub(crate) ending: Ending,
}

impl Scenario {
    /// Ledger keys the scenario may use, at most.
    pub(crate) fn keys(&self) -> u32 {
        let w = self.pool.workers();
        self.lanes
            .iter()
            .flatten()
            .map(|op| op.keys(w))
            .sum::<u32>()
            + 1
    }

    /// Whether every job of the scenario is one the explorer can count
    /// itself (no map, par or scope, whose chunks are jobs of their own).
    pub(crate) fn single_jobs_only(&self) -> bool {
        self.lanes.iter().flatten().all(|op| {
            !matches!(
                op,
                Op::Map { .. } | Op::Par { .. } | Op::Scope { .. } | Op::Squeeze { .. }
            )
        })
    }

    /// Generates the scenario of `seed`.
    pub(crate) fn generate(seed: u64) -> Scenario {
        let mut r = Rng::new(seed);
        let pool = match r.range(0, 99) {
            0..=29 => PoolSpec::Threads {
                workers: r.range(1, 4) as usize,
            },
            30..=84 => {
                let retries = r.pick(&[(6, 0), (3, 1), (1, 3)]);
                PoolSpec::Processes {
                    workers: r.range(1, 3) as usize,
                    retries,
                    memory_limit: r.chance(15),
                    job_timeout_ms: r.chance(8).then(|| r.range(50, 400) as u32),
                    capture: r.chance(20),
                    max_jobs_per_worker: r.chance(10).then(|| r.range(1, 50)),
                    // From the seed, not drawn: the rest of a seed's
                    // scenario stays what it was before the mode existed.
                    spin: seed % 5 == 4,
                }
            }
            _ => PoolSpec::Either {
                processes: r.chance(50),
                workers: r.range(1, 3) as usize,
            },
        };
        let lanes_n = if r.chance(60) {
            1
        } else {
            r.range(2, 4) as usize
        };
        let mut g = Gen {
            r,
            pool,
            blockers: pool.workers().saturating_sub(1),
            lanes: lanes_n,
        };
        let mut lanes = Vec::new();
        for _ in 0..lanes_n {
            let ops_n = g.r.range(1, 6);
            let lane = (0..ops_n).map(|_| g.op()).collect();
            lanes.push(lane);
        }
        let canceller = g.r.chance(20);
        let ending = match g.r.range(0, 99) {
            0..=64 => Ending::Join,
            65..=82 => Ending::Shutdown {
                after_ms: g.r.range(0, 60) as u32,
            },
            83..=92 => Ending::ShutdownNow {
                after_ms: g.r.range(0, 60) as u32,
            },
            _ => Ending::Close {
                after_ms: g.r.range(0, 60) as u32,
            },
        };
        Scenario {
            seed,
            pool,
            lanes,
            canceller,
            ending,
        }
    }
}

/// The generator's state while it writes one scenario.
struct Gen {
    r: Rng,
    pool: PoolSpec,
    /// Jobs that may still block at once (a pool whose every worker waits
    /// for a job queued behind them waits for good, by the user's design,
    /// not the pool's fault): fewer than the workers.
    blockers: usize,
    lanes: usize,
}

impl Gen {
    fn op(&mut self) -> Op {
        let procs = self.pool.processes();
        loop {
            let op = match self.r.range(0, 99) {
                0..=31 => self.submit(),
                32..=46 => self.burst(),
                47..=53 => {
                    if self.blockers == 0 {
                        continue;
                    }
                    self.blockers -= 1;
                    Op::Pair {
                        kind: if self.r.chance(50) {
                            PairKind::Event
                        } else {
                            PairKind::Queue
                        },
                        gap_ms: self.r.range(0, 20) as u32,
                    }
                }
                54..=56 => {
                    // Every party must hold a worker at once.
                    let w = self.pool.workers();
                    if w < 2 || self.blockers + 1 < w || self.lanes > 1 {
                        continue;
                    }
                    self.blockers = 0;
                    Op::Barrier {
                        parties: self.r.range(2, w as u64) as u32,
                    }
                }
                57..=68 => self.map(),
                69..=72 => {
                    if !(self.pool.thread_pool() || self.pool.process_pool()) {
                        continue;
                    }
                    Op::Par {
                        n: self.r.pick(&[(3, 10), (3, 1000), (1, 100_000)]),
                        panic_at: (self.pool.thread_pool() && self.r.chance(20))
                            .then(|| self.r.range(0, 9) as u32),
                    }
                }
                73..=75 => {
                    if !self.pool.thread_pool() {
                        continue;
                    }
                    Op::Scope {
                        n: self.r.range(1, 50) as u32,
                    }
                }
                76..=79 => {
                    // The gate holds every worker: nothing else may block.
                    let w = self.pool.workers();
                    if self.lanes > 1 || self.blockers + 1 < w {
                        continue;
                    }
                    self.blockers = 0;
                    Op::Gate {
                        k: self.r.range(1, 30) as u32,
                    }
                }
                80..=83 => {
                    if !self.pool.process_pool() {
                        continue;
                    }
                    Op::Kill
                }
                84..=85 => {
                    let recycles = matches!(
                        self.pool,
                        PoolSpec::Processes {
                            max_jobs_per_worker: Some(_),
                            ..
                        }
                    );
                    if !recycles || self.lanes > 1 {
                        continue;
                    }
                    Op::Squeeze {
                        n: self.r.range(5, 60) as u32,
                        ms: self.r.range(50, 400) as u32,
                    }
                }
                _ => Op::Pause {
                    ms: self.r.range(0, 30) as u32,
                },
            };
            if procs || !matches!(op, Op::Kill) {
                return op;
            }
        }
    }

    fn body(&mut self) -> Body {
        let procs = self.pool.processes();
        let r = &mut self.r;
        loop {
            let body = match r.range(0, 99) {
                0..=34 => Body::Tiny,
                35..=46 => Body::Sleep(r.range(1, 60) as u32),
                47..=56 => Body::Spin(r.range(10, 3000) as u32),
                57..=64 => Body::Panic,
                65..=67 => Body::Abort,
                68..=69 => Body::Segv,
                70..=71 => Body::Exit(r.range(0, 3) as i32),
                72..=73 => Body::Oom,
                74..=77 => Body::CrashOnce,
                78..=81 => Body::Print,
                _ => Body::Touch,
            };
            let fits = match body {
                Body::Abort | Body::Segv | Body::Exit(_) | Body::Print => procs,
                Body::Oom => self.pool.memory_limit(),
                Body::CrashOnce => procs && self.pool.retries() > 0,
                _ => true,
            };
            if fits {
                return body;
            }
        }
    }

    fn carry(&mut self, body: Body) -> CarrySpec {
        let kind = self
            .r
            .pick(&[(1, ObjKind::Mem), (1, ObjKind::Event), (1, ObjKind::Mutex)]);
        match (body, self.r.range(0, 99)) {
            (Body::Touch, 0..=24) => CarrySpec::Bytes(self.r.range(1, 100_000) as u32),
            (Body::Touch, 25..=74) => CarrySpec::Shared(kind),
            (Body::Touch, _) => CarrySpec::Fresh(kind),
            (_, 0..=79) => CarrySpec::Nothing,
            (_, 80..=89) => CarrySpec::Shared(kind),
            (_, _) => CarrySpec::Bytes(self.r.range(1, 4096) as u32),
        }
    }

    fn submit(&mut self) -> Op {
        let body = self.body();
        let carry = self.carry(body);
        let timeout_ms = self.r.chance(15).then(|| self.r.range(1, 120) as u32);
        let fate = match self.r.range(0, 99) {
            0..=59 => Fate::Keep,
            60..=69 => Fate::Drop,
            70..=89 => Fate::Cancel {
                after_us: self.r.range(0, 5000) as u32,
            },
            _ => Fate::CancelOnDrop {
                within_ms: self.r.range(1, 60) as u32,
            },
        };
        Op::Submit {
            body,
            carry,
            timeout_ms,
            fate,
        }
    }

    fn burst(&mut self) -> Op {
        let n = self.r.pick(&[(10, 50), (6, 400), (3, 3000), (1, 12_000)]) as u32;
        let (body, carry) = if self.r.chance(45) {
            let kind = self
                .r
                .pick(&[(1, ObjKind::Mem), (1, ObjKind::Event), (1, ObjKind::Mutex)]);
            (Body::Touch, CarrySpec::Shared(kind))
        } else if self.r.chance(15) {
            (Body::Touch, CarrySpec::Bytes(self.r.range(1, 512) as u32))
        } else {
            (Body::Tiny, CarrySpec::Nothing)
        };
        Op::Burst {
            n,
            body,
            carry,
            cancel_every: self.r.chance(35).then(|| self.r.range(2, 100) as u32),
            lag: self.r.range(0, 40) as u32,
        }
    }

    fn map(&mut self) -> Op {
        let style = if self.pool.thread_pool() {
            self.r.pick(&[
                (1, MapStyle::Closures),
                (1, MapStyle::ClosuresUnordered),
                (1, MapStyle::Task),
                (1, MapStyle::TaskUnordered),
            ])
        } else {
            self.r
                .pick(&[(1, MapStyle::Task), (1, MapStyle::TaskUnordered)])
        };
        let n = self.r.pick(&[(4, 20), (3, 500), (1, 5000)]) as u32;
        let body = if self.r.chance(70) {
            Body::Tiny
        } else {
            Body::Spin(self.r.range(1, 300) as u32)
        };
        let poison = self.r.chance(30).then(|| {
            let b = self.body();
            // (A map chunk's captured output goes to this process's own
            // stream: no printing there.)
            let b = if b.blocks() || matches!(b, Body::Touch | Body::Print) {
                Body::Panic
            } else {
                b
            };
            (self.r.range(0, u64::from(n) - 1) as u32, b)
        });
        let take = self
            .r
            .chance(15)
            .then(|| self.r.range(0, u64::from(n)) as u32);
        Op::Map {
            style,
            n,
            body,
            poison,
            take,
        }
    }
}
