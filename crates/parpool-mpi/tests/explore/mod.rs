//! The scenario explorer's MPI part: random scenarios, from seeds that
//! replay, on a real `MpiPool` (rank 0 and two serving ranks), checked as
//! parpool's explorer checks the local pools (`parpool/tests/explore`):
//! every handle resolves, within a bound; `Ok` carries the job's own value;
//! every error is one the scenario can cause (a panic from a panicking
//! body, a crash from a crashing one, a timeout only with a timeout, a
//! cancel only when `cancel()` said it won, `Shutdown` only after a
//! shutdown); and, checked by the harness, no process is left behind.
//!
//! `EXPLORE_SEED=n` runs that scenario alone (printed on a failure);
//! `EXPLORE_MPI_SECS` sets how long random scenarios run after the fixed
//! ones (default 10).

use std::time::{Duration, Instant};

use parpool::{Executor, JobError, JobHandle, JobOptions};
use parpool_mpi::MpiPool;

/// What a job's body does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Body {
    Tiny,
    Sleep(u32),
    Panic,
    Abort,
    Exit,
}

parpool::task!(
    pub(crate) fn explore_mpi_job((key, body): (u32, Body)) -> u64 {
        match body {
            Body::Tiny => {}
            Body::Sleep(ms) => std::thread::sleep(Duration::from_millis(u64::from(ms))),
            Body::Panic => panic!("explorer job {key} panics on purpose"),
            Body::Abort => std::process::abort(),
            Body::Exit => std::process::exit(3),
        }
        expected(key)
    }
);

fn expected(key: u32) -> u64 {
    u64::from(key).wrapping_mul(0x9e37_79b9).wrapping_add(11)
}

/// SplitMix64, as in parpool's explorer.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// One scenario's operations.
#[derive(Debug, Clone, Copy)]
enum Op {
    Submit {
        body: Body,
        timeout_ms: Option<u32>,
        cancel_after_ms: Option<u32>,
    },
    Map {
        n: u32,
        poison: Option<(u32, Body)>,
    },
    Pause(u32),
}

#[derive(Debug)]
struct Scenario {
    seed: u64,
    ops: Vec<Op>,
    /// `shutdown_now` this long after the start, while jobs run.
    shutdown_now_ms: Option<u32>,
}

fn body(r: &mut Rng) -> Body {
    match r.range(0, 99) {
        0..=54 => Body::Tiny,
        55..=74 => Body::Sleep(r.range(1, 80) as u32),
        75..=86 => Body::Panic,
        87..=94 => Body::Abort,
        _ => Body::Exit,
    }
}

fn generate(seed: u64) -> Scenario {
    let mut r = Rng(seed);
    let ops = (0..r.range(1, 12))
        .map(|_| match r.range(0, 99) {
            0..=64 => Op::Submit {
                body: body(&mut r),
                timeout_ms: (r.range(0, 99) < 15).then(|| r.range(5, 150) as u32),
                cancel_after_ms: (r.range(0, 99) < 25).then(|| r.range(0, 40) as u32),
            },
            65..=84 => {
                let n = r.range(1, 300) as u32;
                let poison = (r.range(0, 99) < 30)
                    .then(|| (r.range(0, u64::from(n) - 1) as u32, body(&mut r)));
                Op::Map { n, poison }
            }
            _ => Op::Pause(r.range(0, 30) as u32),
        })
        .collect();
    let shutdown_now_ms = (r.range(0, 99) < 15).then(|| r.range(0, 100) as u32);
    Scenario {
        seed,
        ops,
        shutdown_now_ms,
    }
}

/// What a result may be, given the job's body and what was done to it.
fn judge(
    key: u32,
    body: Body,
    timeout: bool,
    cancelled: Option<bool>,
    shut: bool,
    result: &Result<u64, JobError>,
) -> Result<(), String> {
    let ok = match result {
        Ok(v) => *v == expected(key) && matches!(body, Body::Tiny | Body::Sleep(_)),
        Err(JobError::Panicked(_)) => body == Body::Panic,
        Err(JobError::Crashed { .. }) => matches!(body, Body::Abort | Body::Exit),
        Err(JobError::TimedOut { .. }) => timeout,
        Err(JobError::Cancelled) => cancelled == Some(true) || shut,
        Err(JobError::Shutdown) => shut,
        Err(_) => false,
    };
    let cancel_kept = cancelled != Some(true) || matches!(result, Err(JobError::Cancelled));
    if ok && cancel_kept {
        Ok(())
    } else {
        Err(format!(
            "job {key} ({body:?}, timeout {timeout}, cancel() said {cancelled:?}) resolved {result:?}"
        ))
    }
}

/// A job whose handle is joined at the end: its key, body, whether it had
/// a timeout, what `cancel()` said, and the handle.
type Kept = (u32, Body, bool, Option<bool>, JobHandle<u64>);

/// Runs one scenario on `pool`; every problem it saw.
fn run(pool: &MpiPool, sc: &Scenario) -> Vec<String> {
    let start = Instant::now();
    let mut problems = Vec::new();
    let mut key = 0u32;
    let mut kept: Vec<Kept> = Vec::new();
    let mut shut = false;
    for op in &sc.ops {
        if let Some(ms) = sc.shutdown_now_ms
            && !shut
            && start.elapsed() >= Duration::from_millis(u64::from(ms))
        {
            pool.shutdown_now();
            shut = true;
        }
        match *op {
            Op::Submit {
                body,
                timeout_ms,
                cancel_after_ms,
            } => {
                let mut opts = JobOptions::new();
                if let Some(ms) = timeout_ms {
                    opts = opts.timeout(Duration::from_millis(u64::from(ms)));
                }
                let h = pool.submit_with(opts, explore_mpi_job, (key, body));
                let cancelled = cancel_after_ms.map(|ms| {
                    std::thread::sleep(Duration::from_millis(u64::from(ms)));
                    h.cancel()
                });
                kept.push((key, body, timeout_ms.is_some(), cancelled, h));
                key += 1;
            }
            Op::Map { n, poison } => {
                let base = key;
                let body_of = move |i: u32| match poison {
                    Some((at, b)) if at == i => b,
                    _ => Body::Tiny,
                };
                let results: Vec<_> = pool
                    .map_task(explore_mpi_job, (0..n).map(|i| (base + i, body_of(i))))
                    .collect();
                if results.len() != n as usize {
                    problems.push(format!("a map of {n} items gave {} results", results.len()));
                }
                for (i, r) in results.iter().enumerate() {
                    let i = i as u32;
                    if let Err(p) = judge(base + i, body_of(i), false, None, shut, r) {
                        problems.push(p);
                    }
                }
                key += n;
            }
            Op::Pause(ms) => std::thread::sleep(Duration::from_millis(u64::from(ms))),
        }
    }
    for (key, body, timeout, cancelled, h) in kept {
        match h.join_timeout(Duration::from_secs(60)) {
            Ok(r) => {
                if let Err(p) = judge(key, body, timeout, cancelled, shut, &r) {
                    problems.push(p);
                }
            }
            Err(_) => problems.push(format!("job {key} ({body:?}) did not resolve within 60 s")),
        }
    }
    problems
}

/// Seeds run first: each covers an ingredient.
const FIXED: &[u64] = &[1, 2, 3, 5, 8, 13];

/// The MPI scenario: fixed seeds, then random ones for the time allowed,
/// all on one pool (MPI starts once per run), then one last scenario that
/// ends in `shutdown_now` mid-flight.
pub(crate) fn explore() {
    let replay = std::env::var("EXPLORE_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let secs = std::env::var("EXPLORE_MPI_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let pool = MpiPool::builder()
        .workers_per_rank(2)
        .quiet()
        .build()
        .expect("the MPI pool starts");
    let master = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let random = (0..).map(move |i| Rng(master ^ i).next());
    let started = Instant::now();
    let mut ran = 0;
    let check = |sc: &Scenario| {
        let problems = run(&pool, sc);
        if !problems.is_empty() {
            eprintln!(
                "MPI explorer: FAILED: replay with EXPLORE_SEED={} cargo test -p parpool-mpi explore\n{sc:#?}",
                sc.seed
            );
            for p in problems.iter().take(12) {
                eprintln!("  - {p}");
            }
            panic!("MPI explorer: scenario {} broke an invariant", sc.seed);
        }
    };
    if let Some(seed) = replay {
        check(&generate(seed));
        return;
    }
    let mut seeds = FIXED.iter().copied().chain(random);
    for (i, seed) in seeds.by_ref().enumerate() {
        if i >= FIXED.len() && started.elapsed() > Duration::from_secs(secs) {
            break;
        }
        let mut sc = generate(seed);
        // The pool serves the scenarios after this one.
        sc.shutdown_now_ms = None;
        check(&sc);
        ran += 1;
    }
    if let Some(seed) = seeds.next() {
        let mut last = generate(seed);
        last.shutdown_now_ms.get_or_insert(20);
        check(&last);
        ran += 1;
    }
    println!(
        "MPI explorer: {ran} scenarios in {:?}, all held",
        started.elapsed()
    );
}
