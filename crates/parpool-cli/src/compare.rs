//! `parpool compare`: threads, processes or async? Runs built-in
//! workloads every way on this machine and says which model wins and why.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Args;
use parpool::{Executor, ProcessPool, ThreadPool};
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
pub(crate) struct CompareArgs {
    /// Small workloads: the whole comparison takes a few seconds.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

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

/// The four ways to run a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Model {
    #[serde(rename = "sequential")]
    Sequential,
    #[serde(rename = "threads")]
    Threads,
    #[serde(rename = "processes")]
    Processes,
    #[serde(rename = "async")]
    Async,
}

impl Model {
    const ALL: [Model; 4] = [
        Model::Sequential,
        Model::Threads,
        Model::Processes,
        Model::Async,
    ];

    fn label(self) -> &'static str {
        match self {
            Model::Sequential => "sequential",
            Model::Threads => "ThreadPool",
            Model::Processes => "ProcessPool",
            Model::Async => "async (tokio)",
        }
    }
}

/// One model's run of one workload.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Measurement {
    pub(crate) model: Model,
    /// Threads, processes or executor threads used.
    pub(crate) workers: usize,
    pub(crate) seconds: f64,
    /// Sequential time divided by this one's.
    pub(crate) speedup: f64,
    /// CPU time over wall time, in percent of one core (workers included).
    pub(crate) cpu_percent: f64,
    /// Highest resident memory seen, this process and its workers, in MiB.
    pub(crate) peak_mib: f64,
}

/// One workload's results and verdict.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) workload: Kind,
    pub(crate) description: String,
    pub(crate) results: Vec<Measurement>,
    pub(crate) winner: Model,
    pub(crate) verdict: String,
}

#[derive(Debug, Serialize)]
struct Output {
    cores: usize,
    quick: bool,
    workloads: Vec<Report>,
}

/// Runs `parpool compare`; returns the exit status.
pub(crate) fn main(args: CompareArgs) -> anyhow::Result<i32> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut reports = Vec::new();
    for w in workloads(args.quick) {
        if !args.json {
            eprintln!("measuring: {}", w.describe());
        }
        let mut results = Vec::new();
        let mut expected = None;
        for model in Model::ALL {
            let (m, answer) = measure(model, w, cores)?;
            // Every model must compute the same thing.
            match expected {
                None => expected = Some(answer),
                Some(e) if e != answer => {
                    anyhow::bail!("{} computed {answer}, sequential {e}", model.label())
                }
                Some(_) => {}
            }
            results.push(m);
        }
        let base = results[0].seconds;
        for r in &mut results {
            r.speedup = base / r.seconds;
        }
        let (winner, verdict) = verdict(w, &results, cores);
        reports.push(Report {
            workload: w.kind,
            description: w.describe(),
            results,
            winner,
            verdict,
        });
    }
    let out = Output {
        cores,
        quick: args.quick,
        workloads: reports,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&out));
    }
    Ok(0)
}

/// Runs workload `w` on `model`; times include starting the pool.
fn measure(model: Model, w: Workload, cores: usize) -> anyhow::Result<(Measurement, u64)> {
    let sampler = usage::PeakSampler::start();
    let cpu0 = usage::cpu_seconds();
    let t = Instant::now();
    let jobs = move || (0..w.jobs).map(move |_| (w.limit, w.ms));
    let (answer, workers) = match model {
        Model::Sequential => (jobs().map(|(l, ms)| run_job(l, ms)).sum(), 1),
        Model::Threads => {
            let n = w.workers(cores);
            let pool = ThreadPool::builder().workers(n).build()?;
            let sum = pool.map_task(work, jobs()).map(|r| r.unwrap_or(0)).sum();
            drop(pool);
            (sum, n)
        }
        Model::Processes => {
            let n = w.workers(cores);
            let pool = ProcessPool::builder().workers(n).build()?;
            let sum: u64 = pool.map_task(work, jobs()).map(|r| r.unwrap_or(0)).sum();
            // Dropping the pool reaps the workers, so their CPU time counts.
            drop(pool);
            (sum, n)
        }
        Model::Async => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cores)
                .enable_time()
                .build()?;
            let sum = rt.block_on(async {
                let tasks: Vec<_> = jobs()
                    .map(|(limit, ms)| {
                        tokio::spawn(async move {
                            let n = count_primes(limit);
                            if ms > 0 {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            n
                        })
                    })
                    .collect();
                let mut sum = 0;
                for t in tasks {
                    sum += t.await.unwrap_or(0);
                }
                sum
            });
            drop(rt);
            (sum, cores)
        }
    };
    let seconds = t.elapsed().as_secs_f64();
    let cpu = usage::cpu_seconds() - cpu0;
    let peak = sampler.stop();
    Ok((
        Measurement {
            model,
            workers,
            seconds,
            speedup: 1.0,
            cpu_percent: 100.0 * cpu / seconds,
            peak_mib: peak,
        },
        answer,
    ))
}

/// Picks the fastest model and says why it wins, from the measurements.
fn verdict(w: Workload, results: &[Measurement], cores: usize) -> (Model, String) {
    let mut ranked: Vec<&Measurement> = results.iter().collect();
    ranked.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let best = ranked[0];
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
    // Within 10%, a difference is within this machine's noise.
    let text = match ranked.get(1) {
        Some(second) if second.seconds <= best.seconds * 1.10 => format!(
            "{} and {} tie ({:.1}× and {:.1}× sequential, within 10%): {why}.",
            best.model.label(),
            second.model.label(),
            best.speedup,
            second.speedup
        ),
        _ => format!(
            "{} wins ({:.1}× sequential): {why}.",
            best.model.label(),
            best.speedup
        ),
    };
    (best.model, text)
}

fn render(out: &Output) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "parpool compare: {} cores{} (times include starting each pool)",
        out.cores,
        if out.quick { ", quick" } else { "" }
    );
    for r in &out.workloads {
        let _ = writeln!(s, "\n{:?}: {}", r.workload, r.description);
        let _ = writeln!(
            s,
            "  {:<15} {:>8} {:>10} {:>9} {:>9} {:>11}",
            "model", "workers", "time", "speed-up", "CPU use", "peak memory"
        );
        for m in &r.results {
            let mark = if m.model == r.winner { " <" } else { "" };
            let _ = writeln!(
                s,
                "  {:<15} {:>8} {:>10} {:>8.2}× {:>8.0}% {:>7.1} MiB{mark}",
                m.model.label(),
                m.workers,
                fmt_secs(m.seconds),
                m.speedup,
                m.cpu_percent,
                m.peak_mib
            );
        }
        let _ = writeln!(s, "  verdict: {}", r.verdict);
    }
    s
}

fn fmt_secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

mod usage {
    //! CPU time and resident memory, from `/proc`.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread::JoinHandle;
    use std::time::Duration;

    /// CPU seconds used by this process and its reaped children.
    pub(super) fn cpu_seconds() -> f64 {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return 0.0;
        };
        // Fields after the command name (which may hold spaces): utime is
        // the 14th field overall, then stime, cutime, cstime.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ticks: f64 = after
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|f| f.parse::<f64>().ok())
            .sum();
        ticks / rustix::param::clock_ticks_per_second() as f64
    }

    fn rss_pages(pid: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    /// Resident memory of this process and its children, in MiB.
    fn rss_mib() -> f64 {
        let me = std::process::id().to_string();
        let mut pages = rss_pages("self");
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
                else {
                    continue;
                };
                let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        let rest = s.rsplit_once(')')?.1.to_owned();
                        rest.split_whitespace().nth(1).map(str::to_owned)
                    });
                if parent.as_deref() == Some(me.as_str()) {
                    pages += rss_pages(pid);
                }
            }
        }
        (pages * rustix::param::page_size() as u64) as f64 / (1024.0 * 1024.0)
    }

    /// Samples memory every 20 ms until stopped; keeps the highest.
    pub(super) struct PeakSampler {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<f64>,
    }

    impl PeakSampler {
        pub(super) fn start() -> Self {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let thread = std::thread::spawn(move || {
                let mut peak = rss_mib();
                while !flag.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(20));
                    peak = peak.max(rss_mib());
                }
                peak
            });
            PeakSampler { stop, thread }
        }

        pub(super) fn stop(self) -> f64 {
            self.stop.store(true, Ordering::Release);
            self.thread.join().unwrap_or(0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(model: Model, seconds: f64) -> Measurement {
        Measurement {
            model,
            workers: 2,
            seconds,
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
        let (winner, text) = verdict(w, &results, 2);
        assert_eq!(winner, Model::Async);
        assert!(
            text.starts_with("async (tokio) wins (25.0× sequential)"),
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
        let (winner, text) = verdict(w, &results, 2);
        assert_eq!(winner, Model::Threads);
        assert!(
            text.starts_with("ThreadPool wins (2.0× sequential)"),
            "{text}"
        );
        assert!(text.contains("processes only add start-up"), "{text}");
    }

    #[test]
    fn within_ten_percent_is_a_tie() {
        let w = workloads(true)[0];
        let results = [
            m(Model::Sequential, 1.0),
            m(Model::Threads, 0.5),
            m(Model::Processes, 0.8),
            m(Model::Async, 0.52),
        ];
        let (winner, text) = verdict(w, &results, 2);
        assert_eq!(winner, Model::Threads);
        assert!(
            text.starts_with("ThreadPool and async (tokio) tie (2.0× and 1.9× sequential"),
            "{text}"
        );
    }

    #[test]
    fn primes_are_counted_right() {
        assert_eq!(count_primes(10), 4);
        assert_eq!(count_primes(100), 25);
        assert_eq!(count_primes(0), 0);
    }
}
