//! Side-by-side benchmarks: parpool against its peers, in one run.
//!
//! See `benches/README.md` for the rows and flags.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;

mod cli;
mod ipc;
#[cfg(feature = "mpi")]
mod mpi;
mod peers;
mod process;

/// One contender's timing on one row.
#[derive(Debug, Clone, Serialize)]
struct Timing {
    name: String,
    median_s: f64,
    runs_s: Vec<f64>,
}

/// A parpool-vs-peer ratio with its target.
#[derive(Debug, Clone, Serialize)]
struct Ratio {
    row: String,
    peer: String,
    /// parpool's speed divided by the peer's (above 1: parpool is faster).
    speed_ratio: f64,
    target: Option<f64>,
    met: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    quick: bool,
    reps: usize,
    rows: Vec<Row>,
    ratios: Vec<Ratio>,
}

#[derive(Debug, Serialize)]
struct Row {
    suite: &'static str,
    name: String,
    unit: String,
    work: u64,
    timings: Vec<Timing>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    os: String,
    date_unix: u64,
}

struct Options {
    quick: bool,
    reps: usize,
    only: Option<String>,
    contender: Option<String>,
    suite: Option<String>,
    write: bool,
}

impl Options {
    /// `small` with `--quick`, else `full`.
    fn sized(&self, small: u64, full: u64) -> u64 {
        if self.quick { small } else { full }
    }

    /// Whether row `name` is wanted (`--only`).
    fn wanted(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|o| name.contains(o))
    }
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        quick: false,
        reps: 5,
        only: None,
        contender: None,
        suite: None,
        write: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-write" => o.write = false,
            "--reps" => {
                o.reps = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--reps needs a positive number")?;
            }
            "--only" => o.only = Some(args.next().ok_or("--only needs a row name")?),
            "--suite" => {
                let v = args
                    .next()
                    .ok_or("--suite needs threads, processes, cli, ipc or mpi")?;
                if !SUITES.contains(&v.as_str()) {
                    return Err(format!(
                        "unknown suite `{v}` (threads, processes, cli, ipc or mpi)"
                    ));
                }
                o.suite = Some(v);
            }
            "--contender" => {
                o.contender = Some(args.next().ok_or("--contender needs a name")?);
                o.write = false;
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--reps N] [--suite threads|processes|cli|ipc|mpi|mpi-spin] [--only ROW] [--contender NAME] [--no-write]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    if o.quick && o.reps == 5 {
        o.reps = 2;
    }
    Ok(o)
}

/// Every suite, in the order they run.
const SUITES: [&str; 6] = ["threads", "processes", "cli", "ipc", "mpi", "mpi-spin"];

type Contender<'a> = (&'a str, Box<dyn FnMut() + 'a>);

/// Runs every contender `reps` times, interleaved, and returns their timings.
fn measure(reps: usize, contenders: &mut Vec<Contender<'static>>) -> Vec<Timing> {
    let mut timed: Vec<process::TimedContender> = contenders
        .drain(..)
        .map(|(name, mut f)| {
            let f: Box<dyn FnMut() -> Option<f64>> = Box::new(move || {
                f();
                None
            });
            (name, f)
        })
        .collect();
    measure_timed(reps, &mut timed)
}

static CONTENDER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Runs every contender `reps` times, interleaved (after one untimed
/// warm-up each), and returns their timings: the time a contender reports,
/// or the wall time of the call when it reports `None`.
fn measure_timed(reps: usize, contenders: &mut Vec<process::TimedContender>) -> Vec<Timing> {
    measure_with(reps, true, contenders)
}

/// One run each, no warm-up: for peers so slow that repeating them would
/// take minutes, on rows whose ratios dwarf the noise.
fn measure_once(contenders: &mut Vec<process::TimedContender>) -> Vec<Timing> {
    measure_with(1, false, contenders)
}

fn measure_with(
    reps: usize,
    warm_up: bool,
    contenders: &mut Vec<process::TimedContender>,
) -> Vec<Timing> {
    if let Some(only) = CONTENDER.get().and_then(Option::as_deref) {
        // Profiling one contender: keep it alone (results are not compared).
        contenders.retain(|(name, _)| name.contains(only));
    }
    // Each contender's warm-up time; without a warm-up all count as fast.
    let mut warm_up_s = vec![0.0; contenders.len()];
    if warm_up {
        for (i, (_, f)) in contenders.iter_mut().enumerate() {
            let t = Instant::now();
            let reported = f();
            warm_up_s[i] = reported.unwrap_or_else(|| t.elapsed().as_secs_f64());
        }
    }
    let order = Order::new(&warm_up_s);
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for rep in 0..reps {
        for i in order.rep(rep) {
            let f = &mut contenders[i].1;
            let t = Instant::now();
            let reported = f();
            runs[i].push(reported.unwrap_or_else(|| t.elapsed().as_secs_f64()));
        }
    }
    contenders
        .iter()
        .zip(runs)
        .map(|((name, _), r)| timing(name, r))
        .collect()
}

/// Per-operation latency: returns the p50 and p99 timings of each contender
/// over all samples of all repetitions.
fn measure_latency(
    reps: usize,
    contenders: &mut Vec<process::LatencyContender>,
) -> (Vec<Timing>, Vec<Timing>) {
    if let Some(only) = CONTENDER.get().and_then(Option::as_deref) {
        contenders.retain(|(name, _)| name.contains(only));
    }
    // Each contender's samples, one list per repetition.
    let mut samples: Vec<Vec<Vec<f64>>> = vec![Vec::new(); contenders.len()];
    let order = Order::new(&vec![0.0; contenders.len()]);
    for rep in 0..reps {
        for i in order.rep(rep) {
            samples[i].push((contenders[i].1)());
        }
    }
    fn quantile(samples: &[f64], q: f64) -> f64 {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(at).copied().unwrap_or(f64::NAN)
    }
    // The quantile over all samples, and each repetition's (its spread).
    let pick = |q: f64| -> Vec<Timing> {
        contenders
            .iter()
            .zip(&samples)
            .map(|((name, _), reps)| Timing {
                name: (*name).to_owned(),
                median_s: quantile(&reps.concat(), q),
                runs_s: reps.iter().map(|r| quantile(r, q)).collect(),
            })
            .collect()
    };
    (pick(0.5), pick(0.99))
}

/// The order in which contenders run, repetition by repetition.
///
/// Right after a slow peer (seconds of Python churning gigabytes), memory
/// reads on the machines measured here are up to a third slower for tens
/// of milliseconds, so whoever runs next loses. Slow contenders (a warm-up
/// over ten times the fastest's) therefore run last in each repetition,
/// and the fast ones rotate: each takes the seat after the slow ones once
/// every few repetitions, which a median over three or more discards.
struct Order {
    fast: Vec<usize>,
    slow: Vec<usize>,
}

impl Order {
    fn new(warm_up_s: &[f64]) -> Order {
        let fastest = warm_up_s.iter().copied().fold(f64::INFINITY, f64::min);
        let (slow, fast) = (0..warm_up_s.len()).partition(|&i| warm_up_s[i] > 10.0 * fastest);
        Order { fast, slow }
    }

    fn rep(&self, rep: usize) -> impl Iterator<Item = usize> + '_ {
        fn rotate(v: &[usize], by: usize) -> impl Iterator<Item = usize> + '_ {
            (0..v.len()).map(move |k| v[(k + by) % v.len()])
        }
        rotate(&self.fast, rep).chain(rotate(&self.slow, rep))
    }
}

fn timing(name: &str, runs: Vec<f64>) -> Timing {
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    Timing {
        name: name.to_owned(),
        median_s: sorted[sorted.len() / 2],
        runs_s: runs,
    }
}

/// procspawn keeps descriptors open per pending job: let the process have
/// as many as the hard limit allows.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

fn main() {
    procspawn::init();
    raise_fd_limit();
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    CONTENDER.get_or_init(|| opts.contender.clone());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut t = Table::default();

    let suite = |s: &str| opts.suite.as_deref().is_none_or(|o| o == s);
    if suite("threads") {
        threads_suite(&opts, cores, &mut t);
    }

    if suite("processes") {
        processes_suite(&opts, cores, &mut t);
    }

    if suite("cli") {
        cli_suite(&opts, &mut t);
    }

    if suite("ipc") {
        ipc_suite(&opts, &mut t);
    }

    // The MPI suite runs inside an MPI job: rank 0 of a relaunch of this
    // binary under `mpirun` measures it (see `mpi.rs`).
    #[cfg(feature = "mpi")]
    let relaunch_mpi: Vec<&str> = ["mpi", "mpi-spin"]
        .into_iter()
        .filter(|s| suite(s) && mpi_suite(&opts, &mut t, *s == "mpi-spin"))
        .collect();
    #[cfg(not(feature = "mpi"))]
    if suite("mpi") || suite("mpi-spin") {
        println!(
            "\nmpi suite skipped: it needs Open MPI and the `mpi` feature \
             (cargo run --release -p parpool-bench --features mpi -- --suite mpi)"
        );
    }

    let report = Report {
        machine: Machine {
            cores,
            os: std::env::consts::OS.into(),
            date_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        },
        quick: opts.quick,
        reps: opts.reps,
        rows: t.rows,
        ratios: t.ratios,
    };
    let suites: Vec<&str> = SUITES
        .into_iter()
        .filter(|suite| report.rows.iter().any(|r| r.suite == *suite))
        .collect();
    for suite in &suites {
        println!("\n{}", markdown(&report, suite));
    }
    if opts.write {
        write_results(&report, suites);
    }
    // One MPI job per suite: an MPI pool's mode is set when it is built,
    // and a process builds one.
    #[cfg(feature = "mpi")]
    for mpi_suite in relaunch_mpi {
        let mut args = vec!["--suite".to_owned(), mpi_suite.to_owned()];
        args.extend(["--reps".to_owned(), opts.reps.to_string()]);
        if opts.quick {
            args.push("--quick".into());
        }
        if !opts.write {
            args.push("--no-write".into());
        }
        if let Some(only) = &opts.only {
            args.extend(["--only".to_owned(), only.clone()]);
        }
        if let Err(e) = mpi::relaunch(&args) {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    }
    black_box(());
}

/// The `threads` suite's rows.
fn threads_suite(opts: &Options, cores: usize, t: &mut Table) {
    let reps = opts.reps;
    let n = opts.sized(50_000, 1_000_000);
    let name = format!("tiny jobs: submit {n}, then collect");
    if opts.wanted(&name) {
        let timings = measure(reps, &mut peers::tiny_jobs(cores, n));
        let targets = [
            ("tokio spawn_blocking", 1.25),
            ("rayon spawn + oneshot", 5.0),
        ];
        t.record("threads", name, "jobs", n, timings, &targets);
    }
    let n = opts.sized(5_000, 100_000);
    let name = format!("round trip: submit, wait, repeat x{n}");
    if opts.wanted(&name) {
        let timings = measure(reps, &mut peers::round_trip(cores, n));
        // "≤ 0.8x rayon+oneshot's time" is a speed ratio of 1.25.
        t.record(
            "threads",
            name,
            "round trips",
            n,
            timings,
            &[("rayon spawn + oneshot", 1.25)],
        );
    }
    let n = opts.sized(500_000, 10_000_000);
    let name = format!("map: ordered, {n} trivial items");
    if opts.wanted(&name) {
        // The lazy map streams any iterator; data already in memory is
        // `par`'s job (the row below, with rayon's target).
        let timings = measure(reps, &mut peers::map(cores, n));
        t.record("threads", name, "items", n, timings, &[]);
    }
    let n = opts.sized(20_000, 200_000);
    let name = format!("map: ordered, {n} items of ~1 µs");
    if opts.wanted(&name) {
        let timings = measure(reps, &mut peers::map_light(cores, n));
        t.record("threads", name, "items", n, timings, &[]);
    }
    let n = opts.sized(500_000, 10_000_000);
    let name = format!("par map: ordered, {n} trivial items in memory");
    if opts.wanted(&name) {
        let timings = measure(reps, &mut peers::par_map(cores, n));
        let targets = [("rayon par_iter().map().collect()", 0.9)];
        t.record("threads", name, "items", n, timings, &targets);
    }
    let n = opts.sized(20_000, 200_000);
    let name = format!("par map: {n} items of ~1 µs in memory");
    if opts.wanted(&name) {
        let mut timings = measure(reps, &mut peers::par_map_light(cores, n));
        // CPU-bound work split perfectly can go no faster than the
        // sequential time over the cores: the physical floor, a peer.
        if let Some(seq) = timings.iter().find(|t| t.name == "sequential") {
            let floor = Timing {
                name: format!("floor: sequential / {cores} cores"),
                median_s: seq.median_s / cores as f64,
                runs_s: seq.runs_s.iter().map(|r| r / cores as f64).collect(),
            };
            timings.push(floor);
        }
        let targets = [("rayon par_iter().map().collect()", 1.0)];
        t.record("threads", name, "items", n, timings, &targets);
    }
    let n = opts.sized(20_000, 200_000);
    let name = format!("par map: {n} uneven items (1 in 100 costs 100x) in memory");
    if opts.wanted(&name) {
        let timings = measure(reps, &mut peers::par_map_uneven(cores, n));
        let targets = [("rayon par_iter().map().collect()", 0.95)];
        t.record("threads", name, "items", n, timings, &targets);
    }
    let n = opts.sized(1_000_000, 100_000_000);
    let name = format!("par map_reduce: sum of {n} u64 in memory");
    if opts.wanted(&name) {
        let timings = measure(reps, &mut peers::par_sum(cores, n));
        let targets = [("rayon par_iter().sum()", 0.9)];
        t.record("threads", name, "items", n, timings, &targets);
    }
    let (jobs, ms) = (opts.sized(16, 64), opts.sized(1, 5));
    let name = format!("cpu batch: {jobs} jobs of ~{ms} ms on {cores} cores");
    if opts.wanted(&name) {
        let timings = measure(reps, &mut peers::cpu_batch(cores, jobs, ms));
        let targets = [("sequential", 1.9_f64.min(cores as f64 * 0.95))];
        t.record("threads", name, "jobs", jobs, timings, &targets);
    }
}

/// The `processes` suite's rows of the low-latency mode
/// (`ProcessPoolBuilder::spin`).
fn low_latency_rows(opts: &Options, workers: usize, t: &mut Table) {
    let reps = opts.reps;
    let n = opts.sized(2_000, 20_000);
    let spin = std::time::Duration::from_micros(100);
    let name = format!("process round trip x{n}, low-latency mode (spin 100 µs, 1 worker)");
    if opts.wanted(&name) {
        let (p50, p99) = measure_latency(reps, &mut process::round_trip_spin(n, spin));
        // Within the budget is a speed ratio of at least 1.
        t.record(
            "processes",
            format!("{name}: p50 latency"),
            "round trips",
            1,
            p50,
            &[("budget: 10 µs", 1.0)],
        );
        t.record(
            "processes",
            format!("{name}: p99 latency"),
            "round trips",
            1,
            p99,
            &[("budget: 50 µs", 1.0)],
        );
    }
    let n = opts.sized(2_000, 20_000);
    let name = format!(
        "process tiny jobs, low-latency mode: submit {n}, then collect ({workers} workers)"
    );
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut process::tiny_spin(workers, n, spin));
        let targets = [("parpool ProcessPool, default (sleeps)", 1.5)];
        t.record("processes", name, "jobs", n, timings, &targets);
    }
}

/// The `processes` suite's rows.
fn processes_suite(opts: &Options, cores: usize, t: &mut Table) {
    let reps = opts.reps;
    let workers = 2.min(cores);
    let n = opts.sized(2_000, 20_000);
    let name = format!("process tiny jobs: submit {n}, then collect ({workers} workers)");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut process::tiny(workers, n));
        let targets = [
            ("procspawn Pool", 40.0),
            ("Python ProcessPoolExecutor", 100.0),
        ];
        t.record("processes", name, "jobs", n, timings, &targets);
    }
    let n = opts.sized(200, 2_000);
    let name = format!("process round trip x{n}");
    if opts.wanted(&name) {
        let (p50, p99) = measure_latency(reps, &mut process::round_trip(workers, n));
        let targets = [("procspawn Pool", 1.0)];
        t.record(
            "processes",
            format!("{name}: p50 latency"),
            "round trips",
            1,
            p50,
            &targets,
        );
        t.record(
            "processes",
            format!("{name}: p99 latency"),
            "round trips",
            1,
            p99,
            &[],
        );
    }
    low_latency_rows(opts, workers, t);
    let n = opts.sized(100, 1_000);
    let name = format!("dependent pair x{n} (consumer, then its producer)");
    if opts.wanted(&name) {
        let (p50, p99) = measure_latency(reps, &mut process::dependent_pair(workers, n));
        t.record(
            "processes",
            format!("{name}: p50 latency"),
            "pairs",
            1,
            p50,
            &[],
        );
        // Within the budget is a speed ratio of at least 1.
        t.record(
            "processes",
            format!("{name}: p99 latency"),
            "pairs",
            1,
            p99,
            &[("budget: 2 ms", 1.0)],
        );
    }
    let n = opts.sized(100_000, 1_000_000);
    let name = format!("process map: {n} tiny items ({workers} workers)");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut process::map(workers, n));
        let targets = [("Python multiprocessing.Pool.map", 2.0)];
        t.record("processes", name, "items", n, timings, &targets);
    }
    let n = opts.sized(200_000, 10_000_000);
    let name = format!("process par map: {n} f64 squared, in memory ({workers} workers)");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut process::par_square(workers, n));
        let targets = [
            ("parpool ThreadPool par().map()", 0.7),
            ("Python multiprocessing.Pool.map, best chunksize", 20.0),
        ];
        t.record("processes", name, "items", n, timings, &targets);
    }
    let name = "worker start: spawn to first result".to_owned();
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut process::start());
        t.record(
            "processes",
            name,
            "starts",
            1,
            timings,
            &[("procspawn::spawn", 1.0)],
        );
    }
    let bytes = opts.sized(16 << 20, 256 << 20);
    let name = format!("payload: {} MiB in and out", bytes >> 20);
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut process::payload(bytes));
        let targets = [("parpool ProcessPool, bytes through the socket", 20.0)];
        t.record("processes", name, "round trips", 1, timings, &targets);
    }
    let (jobs, ms) = (opts.sized(16, 64), opts.sized(1, 5));
    let name = format!("process cpu batch: {jobs} jobs of ~{ms} ms, {workers} workers");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut process::cpu(workers, jobs, ms));
        t.record(
            "processes",
            name,
            "jobs",
            jobs,
            timings,
            &[("parpool ThreadPool", 0.95)],
        );
    }
}

/// The `cli` suite's rows.
fn cli_suite(opts: &Options, t: &mut Table) {
    let reps = opts.reps;
    // Each GNU parallel run takes seconds: fewer repetitions.
    let reps = reps.min(3);
    let n = opts.sized(200, 2_000);
    let name = format!("cli: {n} × true, 2 at a time");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut cli::true_jobs(n));
        let targets = [("xargs -P 2 -n 1", 0.95), ("GNU parallel -j 2", 5.0)];
        t.record("cli", name, "jobs", n, timings, &targets);
    }
    let name = format!("cli: {n} × echo {{}}, output in input order");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut cli::echo_keep_order(n));
        t.record("cli", name, "jobs", n, timings, &[("GNU parallel -k", 5.0)]);
    }
    // GNU parallel plans about 400 lines a second here: 100k lines
    // would take minutes per run, so the row uses 10k, run once.
    let n = opts.sized(1_000, 10_000);
    let name = format!("cli: {n} stdin lines, --dry-run");
    if opts.wanted(&name) {
        let timings = measure_once(&mut cli::dry_run(n));
        let targets = [("GNU parallel --dry-run", 20.0)];
        t.record("cli", name, "lines", n, timings, &targets);
    }
    let n = opts.sized(200, 2_000);
    let name = format!("cli: {n} × echo $HOME {{}}, through the shell");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut cli::shell_path(n));
        t.record("cli", name, "jobs", n, timings, &[("GNU parallel", 3.0)]);
    }
    let bytes = opts.sized(64 << 20, 1 << 30);
    let name = format!("cli: --pipe, {} MiB into wc -l, 2 at a time", bytes >> 20);
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut cli::pipe_wc(bytes));
        t.record(
            "cli",
            name,
            "MiB piped",
            bytes >> 20,
            timings,
            &[("GNU parallel --pipe", 5.0)],
        );
    }
    let name = format!(
        "cli: --pipepart, {} MiB file into wc -l, 2 at a time",
        bytes >> 20
    );
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut cli::pipepart_wc(bytes));
        let targets = [("GNU parallel --pipepart", 5.0)];
        t.record("cli", name, "MiB read", bytes >> 20, timings, &targets);
    }
    let n = opts.sized(500, 2_000);
    let name = format!("cli: {n} × echo {{= s/1/one/ =}}, a perl expression a job");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut cli::perl_expression(n));
        let targets = [("GNU parallel {= perl =}", 3.0)];
        t.record("cli", name, "jobs", n, timings, &targets);
    }
    let n = opts.sized(10, 50);
    let name = format!("cli: {n} × sem --fg true in a row (start to end)");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut cli::sem_fg(n));
        t.record("cli", name, "commands", n, timings, &[("GNU sem", 5.0)]);
    }
    let n = opts.sized(100_000, 1_000_000);
    let name = format!("cli: peak memory with {n} queued inputs");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut cli::queued_memory(n));
        // "≤ 0.25× GNU parallel's memory" is a ratio of 4.
        t.record("cli", name, MIB, n, timings, &[("GNU parallel", 4.0)]);
    }
}

/// The `ipc` suite's rows.
fn ipc_suite(opts: &Options, t: &mut Table) {
    let reps = opts.reps;
    let reps = reps.min(3);
    let n = opts.sized(100_000, 1_000_000);
    let name = format!("ipc: queue, {n} u64 messages, 1 producer process to 1 consumer");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut ipc::queue_1to1(n));
        let targets = [("Python multiprocessing.Queue", 50.0), ("ipc-channel", 5.0)];
        t.record("ipc", name, "messages", n, timings, &targets);
    }
    let n = opts.sized(40_000, 400_000);
    let name = format!("ipc: queue, {n} 64-byte messages, 4 producer to 4 consumer processes");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut ipc::queue_4x4(n));
        let targets = [("Python multiprocessing.Queue", 50.0)];
        t.record("ipc", name, "messages", n, timings, &targets);
    }
    let n = opts.sized(50, 500);
    let name = format!("ipc: queue, {n} 1 MiB messages, process to process");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut ipc::queue_1mib(n));
        let targets = [("Python multiprocessing.Queue", 10.0)];
        t.record("ipc", name, "messages", n, timings, &targets);
    }
    let n = opts.sized(100_000, 1_000_000);
    let name = format!("ipc: {n} uncontended lock/unlock pairs");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut ipc::lock(n));
        let targets = [("Python multiprocessing.Lock", 20.0)];
        t.record("ipc", name, "pairs", n, timings, &targets);
    }
    let n = opts.sized(20, 200);
    let name = format!("ipc: {n} one-shot Processes, start to result, one after another");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut ipc::process_start(n));
        let targets = [(
            "Python multiprocessing.Process (spawn), result through a Pipe",
            5.0,
        )];
        t.record("ipc", name, "processes", n, timings, &targets);
    }
    let n = opts.sized(10_000, 100_000);
    let name = format!("ipc: Pipe, {n} round trips to a worker process");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut ipc::pipe_round_trip(n));
        let targets = [("Python multiprocessing.Pipe", 10.0)];
        t.record("ipc", name, "round trips", n, timings, &targets);
    }
    let n = opts.sized(100_000, 1_000_000);
    let name = format!("ipc: shared map, {n} get/set pairs from 4 processes");
    if opts.wanted(&name) {
        let timings = measure_timed(reps, &mut ipc::shared_map(n));
        let targets = [(
            "Python Manager().dict() (time of 40k pairs, scaled to all)",
            50.0,
        )];
        t.record("ipc", name, "pairs", n, timings, &targets);
    }
    let bytes = opts.sized(64 << 20, 1 << 30);
    for (kept, how) in [(false, "handed in each job"), (true, "kept by each worker")] {
        let name = format!(
            "ipc: {} MiB array {how}, two workers sum half each",
            bytes >> 20
        );
        if opts.wanted(&name) {
            let timings = measure_timed(reps, &mut ipc::sum_halves(bytes, kept));
            let targets = [("parpool ThreadPool, the same memory in process", 0.9)];
            t.record("ipc", name, "arrays", 1, timings, &targets);
        }
    }
}

/// The `mpi` suite's rows, measured here when this process runs under an
/// MPI launcher; `true` when it must be relaunched under one.
#[cfg(feature = "mpi")]
fn mpi_suite(opts: &Options, t: &mut Table, spinning: bool) -> bool {
    let reps = opts.reps;
    let mut relaunch_mpi = false;
    if mpi::under_launcher() && spinning {
        // The mpi4py peer takes seconds per run.
        let reps = reps.min(3);
        let spin = std::time::Duration::from_micros(100);
        let pool = mpi::pool(spin);
        let n = opts.sized(200, 2_000);
        let name = format!("mpi round trip x{n}, low-latency mode (spin 100 µs)");
        if opts.wanted(&name) {
            let (p50, p99) = measure_latency(reps, &mut mpi::round_trip(&pool, n, spin));
            let targets = [("mpi4py.futures MPIPoolExecutor", 10.0)];
            for (q, timings, targets) in [("p50", p50, &targets[..]), ("p99", p99, &[][..])] {
                let row = format!("{name}: {q} latency");
                t.record("mpi-spin", row, "round trips", 1, timings, targets);
            }
        }
        pool.shutdown();
    } else if mpi::under_launcher() {
        // The mpi4py peer takes seconds per run.
        let reps = reps.min(3);
        let pool = mpi::pool(std::time::Duration::ZERO);
        let ranks = mpi::SERVING_RANKS;
        let n = opts.sized(2_000, 20_000);
        let name = format!("mpi tiny jobs: submit {n}, then collect ({ranks} ranks x 1 worker)");
        if opts.wanted(&name) {
            let timings = measure_timed(reps, &mut mpi::tiny(&pool, n));
            let targets = [("mpi4py.futures MPIPoolExecutor submit", 20.0)];
            t.record("mpi", name, "jobs", n, timings, &targets);
        }
        let n = opts.sized(200, 2_000);
        let name = format!("mpi round trip x{n}");
        if opts.wanted(&name) {
            let (p50, p99) = measure_latency(
                reps,
                &mut mpi::round_trip(&pool, n, std::time::Duration::ZERO),
            );
            // "p50 at most a tenth of mpi4py's" is a speed ratio of 10.
            let targets = [("mpi4py.futures MPIPoolExecutor", 10.0)];
            t.record(
                "mpi",
                format!("{name}: p50 latency"),
                "round trips",
                1,
                p50,
                &targets,
            );
            t.record(
                "mpi",
                format!("{name}: p99 latency"),
                "round trips",
                1,
                p99,
                &[],
            );
        }
        let n = opts.sized(100_000, 1_000_000);
        let name = format!("mpi map: {n} tiny items ({ranks} ranks x 1 worker)");
        if opts.wanted(&name) {
            let timings = measure_timed(reps, &mut mpi::map(&pool, n));
            let targets = [("mpi4py.futures map, best chunksize of 100/1000/10000", 2.0)];
            t.record("mpi", name, "items", n, timings, &targets);
        }
        let (jobs, ms) = (opts.sized(16, 64), opts.sized(1, 5));
        let name = format!("mpi cpu batch: {jobs} jobs of ~{ms} ms, {ranks} ranks x 1 worker");
        if opts.wanted(&name) {
            let timings = measure_timed(reps, &mut mpi::cpu(&pool, jobs, ms));
            let targets = [("parpool ProcessPool, same cores", 0.95)];
            t.record("mpi", name, "jobs", jobs, timings, &targets);
        }
        pool.shutdown();
    } else {
        match mpi::missing() {
            Some(why) => println!("\nmpi suite skipped: {why}"),
            None => relaunch_mpi = true,
        }
    }

    relaunch_mpi
}

/// Writes each suite's table and JSON under `results/`.
fn write_results(report: &Report, suites: Vec<&str>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    for suite in suites {
        let rows: Vec<&Row> = report.rows.iter().filter(|r| r.suite == suite).collect();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        let ratios: Vec<&Ratio> = report
            .ratios
            .iter()
            .filter(|r| names.contains(&r.row.as_str()))
            .collect();
        let json = serde_json::json!({
            "machine": &report.machine,
            "quick": report.quick,
            "reps": report.reps,
            "rows": rows,
            "ratios": ratios,
        });
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(format!("{suite}.md")), markdown(report, suite)))
            .and_then(|()| {
                let text = serde_json::to_string_pretty(&json).expect("report serializes");
                std::fs::write(dir.join(format!("{suite}.json")), text)
            });
        match written {
            Ok(()) => println!("written to {}", dir.join(format!("{suite}.md")).display()),
            Err(e) => {
                eprintln!("bench: could not write results to {}: {e}", dir.display());
                std::process::exit(1);
            }
        }
    }
}

/// The rows measured so far and their ratios against parpool.
#[derive(Default)]
struct Table {
    rows: Vec<Row>,
    ratios: Vec<Ratio>,
}

impl Table {
    /// Records a row whose first timing is parpool's, computing its speed
    /// ratio against each peer and checking the `targets` (peer, minimum).
    fn record(
        &mut self,
        suite: &'static str,
        name: String,
        unit: &str,
        work: u64,
        timings: Vec<Timing>,
        targets: &[(&str, f64)],
    ) {
        let Some(ours) = timings.first().map(|t| t.median_s) else {
            return;
        };
        for t in &timings[1..] {
            let speed_ratio = t.median_s / ours;
            let target = targets.iter().find(|(p, _)| *p == t.name).map(|(_, v)| *v);
            self.ratios.push(Ratio {
                row: name.clone(),
                peer: t.name.clone(),
                speed_ratio,
                target,
                met: target.map(|v| speed_ratio >= v),
            });
        }
        let row = Row {
            suite,
            name,
            unit: unit.to_owned(),
            work,
            timings,
        };
        print_row(&row);
        self.rows.push(row);
    }
}

fn print_row(row: &Row) {
    println!("\n{}", row.name);
    let ours = row.timings[0].median_s;
    for t in &row.timings {
        if row.unit == MIB {
            println!(
                "  {:<36} {:>10.1} MiB peak  parpool uses {:>6.2}x less",
                t.name,
                t.median_s,
                t.median_s / ours
            );
            continue;
        }
        println!(
            "  {:<36} {:>10.2} ms  {:>14.0} {}/s  parpool is {:>6.2}x its speed",
            t.name,
            t.median_s * 1e3,
            row.work as f64 / t.median_s,
            row.unit,
            t.median_s / ours
        );
    }
}

fn markdown(r: &Report, suite: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "## parpool vs peers: {} ({} cores, median of {} runs{})\n\n",
        match suite {
            "threads" => "thread pools",
            "processes" => "process pools",
            "ipc" => "shared state across processes",
            "mpi" => "MPI pools (rank 0 + 2 serving ranks)",
            "mpi-spin" => "MPI pools in the low-latency mode (rank 0 + 2 serving ranks)",
            _ => "the parpool command",
        },
        r.machine.cores,
        // The cli and ipc suites repeat at most 3 times (slow peers).
        if matches!(suite, "cli" | "ipc" | "mpi" | "mpi-spin") {
            r.reps.min(3)
        } else {
            r.reps
        },
        if r.quick { ", quick sizes" } else { "" }
    ));
    s.push_str(
        "Each figure is the median, with the fastest and slowest repetition in brackets; \
         a row where either side's slowest repetition took over twice its fastest is \
         flagged **unsteady** in the last column.\n\n",
    );
    s.push_str(
        "| row | peer | parpool | peer time | speed ratio (parpool ÷ peer) | target | met | steady |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    if suite == "cli" {
        s.insert_str(
            s.find("| row").unwrap_or(0),
            "The `--dry-run` row runs once, without warm-up: GNU parallel takes \
             seconds per run.\n\n",
        );
    }
    if r.rows
        .iter()
        .any(|row| row.suite == suite && row.unit == MIB)
    {
        s.insert_str(
            s.find("| row").unwrap_or(0),
            "Rows measured in MiB compare peak memory: their ratio is the peer's memory ÷ \
             parpool's.\n\n",
        );
    }
    for row in r.rows.iter().filter(|row| row.suite == suite) {
        let ours = row.timings[0].median_s;
        let mine = &row.timings[0];
        for t in &row.timings[1..] {
            let ratio = r
                .ratios
                .iter()
                .find(|x| x.row == row.name && x.peer == t.name);
            let (target, met) = match ratio.and_then(|x| x.target.zip(x.met)) {
                Some((v, m)) => (
                    format!("≥ {v:.2}"),
                    if m { "yes" } else { "**no**" }.to_owned(),
                ),
                None => ("—".into(), "—".into()),
            };
            let shown = |v: f64| {
                if row.unit == MIB {
                    format!("{v:.1} MiB")
                } else {
                    fmt_time(v)
                }
            };
            let with_spread = |t: &Timing| match spread(t) {
                Some((lo, hi, _)) => format!("{} ({}–{})", shown(t.median_s), shown(lo), shown(hi)),
                None => shown(t.median_s),
            };
            let unsteady: Vec<String> = [("parpool", mine), ("peer", t)]
                .iter()
                .filter_map(|(who, t)| {
                    spread(t)
                        .filter(|&(_, _, ratio)| ratio > UNSTEADY)
                        .map(|(_, _, ratio)| format!("{who} {ratio:.1}×"))
                })
                .collect();
            let steady = if unsteady.is_empty() {
                "yes".to_owned()
            } else {
                format!("**unsteady**: {}", unsteady.join(", "))
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {} | {} | {} |\n",
                row.name,
                t.name,
                with_spread(mine),
                with_spread(t),
                t.median_s / ours,
                target,
                met,
                steady
            ));
        }
    }
    s
}

/// A repetition slower than this many times the fastest flags its row.
const UNSTEADY: f64 = 2.0;

/// The fastest and slowest repetition of `t`, and their ratio; `None`
/// for a figure measured once.
fn spread(t: &Timing) -> Option<(f64, f64, f64)> {
    if t.runs_s.len() < 2 {
        return None;
    }
    let lo = t.runs_s.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = t.runs_s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lo, hi, hi / lo))
}

fn fmt_time(secs: f64) -> String {
    let d = Duration::from_secs_f64(secs);
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", secs)
    } else if d >= Duration::from_millis(1) {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.1} µs", secs * 1e6)
    }
}

/// The unit of rows whose "times" are peak memory in MiB.
const MIB: &str = "MiB";
