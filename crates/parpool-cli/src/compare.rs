//! `parpool compare`: threads, processes or async? Runs built-in
//! workloads every way on this machine and says which model wins and why.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;
use parpool::compare::{Compare, Comparison, Measurement, Model, table};
use serde::Serialize;

parpool::task! {
    /// One job of any workload: count primes below `limit` (CPU), then
    /// wait `ms` milliseconds (a stand-in for I/O).
    fn work(job: (u64, u64)) -> u64 {
        run_job(job.0, job.1)
    }
}

/// Options of `parpool compare`.
#[derive(Debug, Args)]
#[command(after_help = COMPARE_AFTER_HELP)]
pub(crate) struct CompareArgs {
    /// Small workloads: the whole comparison takes a few seconds.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Measure each way this many times: the median is shown with the
    /// spread (fastest and slowest), and a winner is named only when it
    /// is ahead by more than the spread.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Your own command and its inputs, in GNU parallel's syntax
    /// (`-- CMD {} ::: A B C`): timed one at a time, at several numbers of
    /// jobs at once, and all at once.
    #[arg(last = true, value_name = "CMD ::: INPUTS")]
    command: Vec<std::ffi::OsString>,
}

/// What `parpool compare --help` shows after the options.
const COMPARE_AFTER_HELP: &str = "\
EXAMPLES:
  parpool compare                      built-in CPU, waiting, mixed and tiny jobs
  parpool compare --quick --repeat 5   smaller, measured five times
  parpool compare -- gzip -k {} ::: *.log
                                       your command: how many at once is best";

/// What a workload is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Cpu,
    Io,
    Mixed,
    Tiny,
}

#[derive(Debug, Clone, Copy)]
struct Workload {
    kind: Kind,
    jobs: u64,
    /// Primes are counted below this, per job.
    limit: u64,
    /// Milliseconds each job waits.
    ms: u64,
}

impl Kind {
    /// The plain-word title of a section.
    fn title(self) -> &'static str {
        match self {
            Kind::Cpu => "CPU-bound",
            Kind::Io => "Waits like I/O",
            Kind::Mixed => "Computes, then waits",
            Kind::Tiny => "Tiny jobs",
        }
    }
}

impl Workload {
    fn describe(&self) -> String {
        match self.kind {
            Kind::Cpu => format!("{} jobs counting primes below {}", self.jobs, self.limit),
            Kind::Io => format!("{} jobs each waiting {} ms (like I/O)", self.jobs, self.ms),
            Kind::Mixed => format!(
                "{} jobs counting primes below {}, then waiting {} ms",
                self.jobs, self.limit, self.ms
            ),
            Kind::Tiny => format!(
                "{} tiny jobs (counting primes below {})",
                self.jobs, self.limit
            ),
        }
    }

    /// Workers for the thread and process pools: one per core for work
    /// that computes, more for work that mostly waits.
    fn workers(&self, cores: usize) -> usize {
        match self.kind {
            Kind::Cpu | Kind::Tiny => cores,
            Kind::Io | Kind::Mixed => (self.jobs as usize).clamp(cores, 32),
        }
    }
}

fn workloads(quick: bool) -> Vec<Workload> {
    let scale = if quick { 1 } else { 5 };
    vec![
        Workload {
            kind: Kind::Cpu,
            jobs: 16 * scale,
            limit: 200_000,
            ms: 0,
        },
        Workload {
            kind: Kind::Io,
            jobs: 32 * scale,
            limit: 0,
            ms: 20,
        },
        Workload {
            kind: Kind::Mixed,
            jobs: 32 * scale,
            limit: 60_000,
            ms: 10,
        },
        Workload {
            kind: Kind::Tiny,
            jobs: 50_000 * scale,
            limit: 30,
            ms: 0,
        },
    ]
}

fn count_primes(limit: u64) -> u64 {
    (2..limit)
        .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

fn run_job(limit: u64, ms: u64) -> u64 {
    let n = count_primes(limit);
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
    n
}

/// One workload's results and verdict.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) workload: Kind,
    pub(crate) title: &'static str,
    pub(crate) description: String,
    pub(crate) results: Vec<Measurement>,
    /// The fastest by median, and the models it does not beat by more
    /// than the spread (a tie: no winner is named).
    pub(crate) fastest: Model,
    pub(crate) tied_with: Vec<Model>,
    pub(crate) verdict: String,
}

#[derive(Debug, Serialize)]
struct Output {
    cores: usize,
    quick: bool,
    repeat: u32,
    workloads: Vec<Report>,
}

/// Runs `parpool compare`; returns the exit status.
pub(crate) fn main(args: CompareArgs) -> anyhow::Result<i32> {
    if !args.command.is_empty() {
        return user::main(&args.command, args.repeat, args.json);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut reports = Vec::new();
    for w in workloads(args.quick) {
        if !args.json {
            eprintln!("measuring: {}", w.describe());
        }
        let report = Compare::new(vec![(w.limit, w.ms); w.jobs as usize], |(limit, ms)| {
            run_job(limit, ms)
        })
        .task(work)
        .async_fn(|(limit, ms)| async move {
            let n = count_primes(limit);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            n
        })
        .workers(w.workers(cores))
        .repeat(args.repeat)
        .run()?;
        let verdict = report.verdict_because(&why(w, &report, cores));
        reports.push(Report {
            workload: w.kind,
            title: w.kind.title(),
            description: w.describe(),
            results: report.measurements().to_vec(),
            fastest: report.fastest(),
            tied_with: report.tied_with().to_vec(),
            verdict,
        });
    }
    let out = Output {
        cores,
        quick: args.quick,
        repeat: args.repeat,
        workloads: reports,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&out));
    }
    Ok(0)
}

/// Why the ways of workload `w` rank as they do, from what it is made of
/// and the figures.
fn why(w: Workload, report: &Comparison, cores: usize) -> String {
    let results = report.measurements();
    let of = |m: Model| results.iter().find(|r| r.model == m);
    let speed = |m: Model| of(m).map_or(0.0, |r| r.speedup);
    let mut why = String::new();
    match w.kind {
        Kind::Cpu if cores == 1 => {
            why.push_str("there is one core, so running jobs side by side only adds overhead")
        }
        Kind::Cpu => {
            let (p, t) = (speed(Model::Processes), speed(Model::Threads));
            let processes = if p < 0.95 * t {
                "so processes only add start-up and copying"
            } else {
                "so processes gain nothing by escaping one, though the work is long enough \
                 to hide their start-up"
            };
            let _ = write!(
                why,
                "CPU-bound work scales with cores ({cores} here); Rust threads share no \
                 interpreter lock, {processes} ({p:.1}× vs threads {t:.1}×); async tasks run \
                 on {cores} executor threads, as many as the cores, so they do as well as \
                 threads at best ({:.1}×)",
                speed(Model::Async),
            );
        }
        Kind::Io => {
            let _ = write!(
                why,
                "the jobs mostly wait, so what counts is how many wait at once: async waits \
                 for all {} on {cores} threads ({:.1}×), threads for {} at a time ({:.1}×), \
                 processes for as many as they have workers at a higher memory cost \
                 ({:.1}×, {:.0} MiB vs {:.0} MiB for threads)",
                w.jobs,
                speed(Model::Async),
                w.workers(cores),
                speed(Model::Threads),
                speed(Model::Processes),
                of(Model::Processes).map_or(0.0, |r| r.peak_mib),
                of(Model::Threads).map_or(0.0, |r| r.peak_mib),
            );
        }
        Kind::Mixed => {
            let _ = write!(
                why,
                "each job computes, then waits: many threads overlap both ({:.1}×); async \
                 overlaps the waits but computes on only {cores} threads ({:.1}×); processes \
                 overlap both at the cost of starting {} workers ({:.1}×)",
                speed(Model::Threads),
                speed(Model::Async),
                w.workers(cores),
                speed(Model::Processes),
            );
        }
        Kind::Tiny => {
            let _ = write!(
                why,
                "each job is far cheaper than handing it to another thread, so the pools \
                 win only by batching: ThreadPool's map sends chunks ({:.1}×), ProcessPool \
                 must also encode every item ({:.1}×), and async spawns a task per job \
                 ({:.1}×); keep such work sequential or batch it yourself",
                speed(Model::Threads),
                speed(Model::Processes),
                speed(Model::Async),
            );
        }
    }
    why
}

fn render(out: &Output) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "parpool compare: {} cores{}, each way {} time{} (the median, and the spread from \
         fastest to slowest; times include starting each pool)",
        out.cores,
        if out.quick { ", quick" } else { "" },
        out.repeat,
        if out.repeat == 1 { "" } else { "s" }
    );
    for r in &out.workloads {
        let _ = writeln!(s, "\n{}: {}", r.title, r.description);
        s.push_str(&table(&r.results, r.fastest, &r.tied_with));
        let _ = writeln!(s, "  verdict: {}", r.verdict);
    }
    s
}

mod user;

#[cfg(test)]
mod tests {
    use super::*;

    /// The winner, its ties and the verdict, as `main` makes them.
    fn verdict(w: Workload, results: &[Measurement], cores: usize) -> (Model, Vec<Model>, String) {
        let report = Comparison::new(results.to_vec(), 1, 1).unwrap();
        let text = report.verdict_because(&why(w, &report, cores));
        (report.fastest(), report.tied_with().to_vec(), text)
    }

    fn m(model: Model, seconds: f64) -> Measurement {
        Measurement {
            model,
            workers: 2,
            seconds,
            min_seconds: seconds,
            max_seconds: seconds,
            speedup: 1.0 / seconds,
            cpu_percent: 100.0,
            peak_mib: 10.0,
        }
    }

    #[test]
    fn the_fastest_model_wins_and_the_verdict_gives_the_figures() {
        let w = workloads(true)[1];
        let results = [
            m(Model::Sequential, 1.0),
            m(Model::Threads, 0.05),
            m(Model::Processes, 0.2),
            m(Model::Async, 0.04),
        ];
        let (winner, tied, text) = verdict(w, &results, 2);
        assert_eq!(winner, Model::Async);
        assert!(tied.is_empty());
        assert!(
            text.starts_with("async (tokio) wins (25.0× sequential"),
            "{text}"
        );
        assert!(text.contains("threads for 32 at a time (20.0×)"), "{text}");
    }

    #[test]
    fn a_clear_lead_is_a_win() {
        let w = workloads(true)[0];
        let results = [
            m(Model::Sequential, 1.0),
            m(Model::Threads, 0.5),
            m(Model::Processes, 0.8),
            m(Model::Async, 0.6),
        ];
        let (winner, _, text) = verdict(w, &results, 2);
        assert_eq!(winner, Model::Threads);
        assert!(
            text.starts_with("ThreadPool wins (2.0× sequential"),
            "{text}"
        );
        assert!(text.contains("processes only add start-up"), "{text}");
    }

    #[test]
    fn a_lead_within_the_spread_is_a_tie() {
        let w = workloads(true)[0];
        let spread = |mut x: Measurement, lo: f64, hi: f64| {
            x.min_seconds = lo;
            x.max_seconds = hi;
            x
        };
        let results = [
            m(Model::Sequential, 1.0),
            spread(m(Model::Threads, 0.5), 0.45, 0.62),
            m(Model::Processes, 0.8),
            spread(m(Model::Async, 0.58), 0.55, 0.7),
        ];
        let (winner, tied, text) = verdict(w, &results, 2);
        assert_eq!(winner, Model::Threads);
        assert_eq!(tied, [Model::Async]);
        assert!(
            text.starts_with("tie between ThreadPool (2.0×) and async (tokio) (1.7×)"),
            "{text}"
        );
        // Apart by more than the spread: a win.
        let results = [
            m(Model::Sequential, 1.0),
            spread(m(Model::Threads, 0.5), 0.45, 0.52),
            m(Model::Processes, 0.8),
            spread(m(Model::Async, 0.58), 0.55, 0.7),
        ];
        let (_, tied, _) = verdict(w, &results, 2);
        assert!(tied.is_empty());
        // The median of the repetitions, with the spread and the highest
        // memory.
        let runs = vec![
            m(Model::Threads, 0.3),
            m(Model::Threads, 0.9),
            m(Model::Threads, 0.5),
        ];
        let one = Measurement::median(runs).unwrap();
        assert_eq!(
            (one.seconds, one.min_seconds, one.max_seconds),
            (0.5, 0.3, 0.9)
        );
    }

    #[test]
    fn primes_are_counted_right() {
        assert_eq!(count_primes(10), 4);
        assert_eq!(count_primes(100), 25);
        assert_eq!(count_primes(0), 0);
    }
}
