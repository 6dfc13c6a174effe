//! The scenario explorer: random scenarios, from seeds that replay, against
//! the real pools, with every invariant the README promises checked after
//! each one.
//!
//! ```text
//! cargo test --release -p parpool --test explore          # fixed seeds, then random ones for EXPLORE_SECS (30)
//! EXPLORE_SECS=1800 cargo test --release -p parpool --test explore
//! EXPLORE_SEED=1234 cargo test --release -p parpool --test explore   # one scenario, as a failure printed it
//! ```
//!
//! Unoptimized (`cargo test` without `--release`) it runs the fixed seeds
//! only, unless `EXPLORE_SECS` says otherwise: most of what it finds
//! depends on timing, and an unoptimized pool's timing is not a user's.
//!
//! Environment: `EXPLORE_SECS` (time for random scenarios after the fixed
//! ones), `EXPLORE_SEED` (run that scenario only; `EXPLORE_REPEAT` times),
//! `EXPLORE_MASTER` (the seed random scenarios derive from; by default the
//! clock's), `EXPLORE_KEEP_GOING=1` (report every failing scenario, not
//! only the first), `EXPLORE_VERBOSE=1` (one line per scenario),
//! `EXPLORE_DRY=n` (print what the first `n` seeds of `EXPLORE_MASTER`
//! would run, and run nothing).
//!
//! A scenario (`scenario.rs`) is a pool (threads, processes, or `Pool`
//! chosen at run time, with random settings; one process pool in five in
//! the low-latency mode) and lanes of operations run
//! at the same time: jobs that return, sleep, spin, panic, abort,
//! segfault, exit, run out of memory, print, or wait on an `ipc` object
//! that a later job releases; payloads of plain values, `SharedBytes`, one
//! `ipc` object shared by many jobs, or a fresh one per job; `map`,
//! `map_unordered`, `map_task`, `par`, `scope`; cancels at random moments,
//! timeouts, `cancel_on_drop` under a tokio timeout, dropped handles,
//! workers killed from outside, a descriptor limit that stops workers from
//! starting, and `shutdown`/`shutdown_now` mid-flight.
//!
//! The invariants (`run.rs`): every handle resolves exactly once, within
//! the scenario's bound (the watchdog's); `Ok` carries the job's own value
//! and means its body ran to the end exactly once; no body ever runs to
//! the end twice; every error is one the scenario can cause (a crash needs
//! a crashing body or a kill, and a job that never started is not a
//! crash); `cancel()` returning `true` means the job resolves `Cancelled`;
//! a cancelled process job never ran to the end unless its worker was
//! killed while it ran; a job cancelled while queued never starts; the
//! stats never show more jobs running than workers, never count down, and
//! add up at rest; dropping the pool returns in bounded time and leaves no
//! worker process, descriptor or `/dev/shm` entry behind; memory stays
//! bounded over a long run.

mod census;
mod jobs;
mod run;
mod scenario;
mod watchdog;

use std::time::{Duration, Instant};

use scenario::{Op, PoolSpec, Scenario, scenario_seed};

/// Seeds run first on every run: each was a failure once (on the code
/// before the fix named), or covers an ingredient random seeds reach
/// rarely.
const FIXED: &[u64] = &[
    // 3,000 jobs sharing one SharedMem on one worker; the pool hung for
    // good (both directions of the socket full).
    7_900_551_048_021_634_840,
    // 12,000 jobs sharing one Event on two workers.
    12_192_817_696_752_764_081,
    // 3,000 jobs sharing one Mutex, every n-th cancelled while the burst
    // goes on.
    7_126_807_817_404_212_542,
    // Cancelled process jobs that ran to the end on a worker that lived.
    13_256_884_654_264_350_419,
    // `running` below zero after a worker died with a pipeline.
    6_408_619_104_195_180_384,
    // A job cancelled at the head of a pipeline took the next, finished,
    // job's reply with it; that job ran twice.
    11_897_122_670_224_867_588,
    9_307_787_576_995_613_799,
    // Stats that did not add up at rest.
    8_112_701_866_118_703_412,
    // Workers that cannot be replaced (no descriptor left): jobs that
    // never started were failed as Crashed.
    17_347_742_616_547_619_630,
    13_223_915_468_400_683_597,
    7_953_156_045_056_374_114,
    // Jobs cancelled behind a gate that holds every worker.
    10_197_429_358_261_526_176,
    10_808_960_493_918_221_292,
    // Workers killed from outside, with retries.
    1_424_621_495_192_830_126,
    // A canceller thread and shutdown_now mid-flight.
    6_160_896_010_960_606_539,
    // A map whose item aborts; a barrier; a blocking pair on a Queue.
    12_837_431_017_058_764_009,
    12_303_184_768_967_004_122,
    2_901_438_818_882_724_984,
    // Out of memory; a crash that a retry heals; captured output.
    14_142_597_463_755_272_326,
    14_867_341_819_806_398_998,
    4_316_521_744_792_593_217,
    // A thread pool's scope and par; `Pool` chosen at run time.
    6_211_003_377_375_889_266,
    3_371_196_509_836_570_512,
];

/// How long one scenario may take before it counts as a hang.
const BOUND: Duration = Duration::from_secs(120);

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            eprintln!("explorer: {name}={v:?} is not a number; ignored");
            None
        }
    }
}

fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v != "0" && !v.is_empty())
}

/// Totals over a run.
#[derive(Default)]
struct Totals {
    scenarios: u64,
    threads: u64,
    processes: u64,
    either: u64,
    ops: u64,
    failures: Vec<(u64, Vec<String>)>,
}

fn main() {
    // `cargo test <filter>` passes its filter here too; run only when it
    // names this test (or nothing does).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if std::env::args().any(|a| a == "--list") {
        println!("explore: test");
        return;
    }
    if !filters.is_empty() && !filters.iter().any(|f| "explore".contains(f.as_str())) {
        return;
    }
    // Jobs panic on purpose by the thousand; their messages are noise.
    std::panic::set_hook(Box::new(|_| {}));
    watchdog::start();
    let verbose = flag("EXPLORE_VERBOSE");
    let keep_going = flag("EXPLORE_KEEP_GOING");
    let started = Instant::now();
    let rss_start = census::rss_kib();
    let mut totals = Totals::default();

    let mut run_one = |seed: u64, label: &str| -> bool {
        let sc = Scenario::generate(seed);
        let replay =
            format!("replay: EXPLORE_SEED={seed} cargo test --release -p parpool --test explore");
        watchdog::arm(BOUND, format!("{replay}\n{sc:#?}"));
        let t = Instant::now();
        let mut problems = run::run(&sc);
        watchdog::disarm();
        let rss = census::rss_kib();
        if rss > rss_start + 1024 * 1024 {
            problems.push(format!(
                "resident memory grew from {rss_start} KiB to {rss} KiB over the run"
            ));
        }
        totals.scenarios += 1;
        totals.ops += sc.lanes.iter().map(Vec::len).sum::<usize>() as u64;
        match sc.pool {
            PoolSpec::Threads { .. } => totals.threads += 1,
            PoolSpec::Processes { .. } => totals.processes += 1,
            PoolSpec::Either { .. } => totals.either += 1,
        }
        if verbose {
            println!(
                "explorer: {label} seed {seed}: {} in {:?}: {}",
                summary(&sc),
                t.elapsed(),
                if problems.is_empty() { "ok" } else { "FAILED" }
            );
        }
        if problems.is_empty() {
            return true;
        }
        eprintln!("\nexplorer: FAILED ({label}): {replay}\n{sc:#?}");
        for p in problems.iter().take(12) {
            eprintln!("  - {p}");
        }
        if problems.len() > 12 {
            eprintln!("  - ... and {} more", problems.len() - 12);
        }
        totals.failures.push((seed, problems));
        keep_going
    };

    if let Some(n) = env_u64("EXPLORE_DRY") {
        // What the seeds would run, without running it.
        let master = env_u64("EXPLORE_MASTER").unwrap_or(0);
        for i in 0..n {
            let seed = scenario_seed(master, i);
            println!("{seed} {}", summary(&Scenario::generate(seed)));
        }
        return;
    }
    if let Some(seed) = env_u64("EXPLORE_SEED") {
        for _ in 0..env_u64("EXPLORE_REPEAT").unwrap_or(1) {
            if !run_one(seed, "replay") {
                break;
            }
        }
    } else {
        // Unoptimized, the pool's timing is far from what users run: only
        // the fixed seeds, unless asked (`./test` runs the explorer
        // optimized, with random scenarios).
        let default = if cfg!(debug_assertions) { 0 } else { 30 };
        let budget = Duration::from_secs(env_u64("EXPLORE_SECS").unwrap_or(default));
        let mut go = true;
        for &seed in FIXED {
            if !run_one(seed, "fixed") {
                go = false;
                break;
            }
        }
        let master = env_u64("EXPLORE_MASTER").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        println!("explorer: random scenarios from EXPLORE_MASTER={master} for {budget:?}");
        let random_start = Instant::now();
        let mut i = 0;
        while go && random_start.elapsed() < budget {
            go = run_one(scenario_seed(master, i), &format!("random #{i}"));
            i += 1;
        }
    }
    println!(
        "explorer: {} scenarios ({} thread pools, {} process pools, {} chosen at run time; {} operations) in {:?}; {} failed",
        totals.scenarios,
        totals.threads,
        totals.processes,
        totals.either,
        totals.ops,
        started.elapsed(),
        totals.failures.len()
    );
    if !totals.failures.is_empty() {
        for (seed, problems) in &totals.failures {
            eprintln!("explorer: EXPLORE_SEED={seed}: {}", problems[0]);
        }
        std::process::exit(1);
    }
}

/// One line about a scenario.
fn summary(sc: &Scenario) -> String {
    let ops: Vec<String> = sc
        .lanes
        .iter()
        .flatten()
        .map(|op| match op {
            Op::Submit { body, fate, .. } => format!("submit:{body:?}:{fate:?}"),
            Op::Burst {
                n,
                carry,
                cancel_every,
                ..
            } => format!("burst{n}:{carry:?}:cancel-every:{cancel_every:?}"),
            Op::Pair { kind, .. } => format!("pair:{kind:?}"),
            Op::Barrier { parties } => format!("barrier{parties}"),
            Op::Map { style, n, .. } => format!("map{n}:{style:?}"),
            Op::Par { n, .. } => format!("par{n}"),
            Op::Scope { n } => format!("scope{n}"),
            Op::Gate { k } => format!("gate{k}"),
            Op::Kill => "kill".into(),
            Op::Squeeze { n, ms } => format!("squeeze{n}/{ms}ms"),
            Op::Pause { ms } => format!("pause{ms}ms"),
        })
        .collect();
    format!(
        "{:?} lanes {} canceller {} [{}] {:?}",
        sc.pool,
        sc.lanes.len(),
        sc.canceller,
        ops.join(" "),
        sc.ending
    )
}
