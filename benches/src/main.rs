//! Side-by-side benchmarks: parpool against its peers, in one run.
//!
//! See `benches/README.md` for the rows and flags.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;

mod peers;

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
    write: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        quick: false,
        reps: 5,
        only: None,
        contender: None,
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
            "--contender" => {
                o.contender = Some(args.next().ok_or("--contender needs a name")?);
                o.write = false;
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--reps N] [--only ROW] [--contender NAME] [--no-write]"
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

type Contender<'a> = (&'a str, Box<dyn FnMut() + 'a>);

/// Runs every contender `reps` times, interleaved, and returns their timings.
fn measure(reps: usize, contenders: &mut Vec<Contender<'_>>) -> Vec<Timing> {
    if let Some(only) = CONTENDER.get().and_then(Option::as_deref) {
        // Profiling one contender: keep it alone (results are not compared).
        contenders.retain(|(name, _)| name.contains(only));
    }
    // One untimed warm-up each.
    for (_, f) in contenders.iter_mut() {
        f();
    }
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for _ in 0..reps {
        for (i, (_, f)) in contenders.iter_mut().enumerate() {
            let t = Instant::now();
            f();
            runs[i].push(t.elapsed().as_secs_f64());
        }
    }
    contenders
        .iter()
        .zip(runs)
        .map(|((name, _), mut r)| {
            let mut sorted = r.clone();
            sorted.sort_by(f64::total_cmp);
            r.shrink_to_fit();
            Timing {
                name: (*name).to_owned(),
                median_s: sorted[sorted.len() / 2],
                runs_s: r,
            }
        })
        .collect()
}

static CONTENDER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    CONTENDER.get_or_init(|| opts.contender.clone());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = |name: &str| opts.only.as_deref().is_none_or(|o| name.contains(o));
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let mut add = |row: Row, targets: &[(&str, f64)]| {
        if row.timings.is_empty() {
            return;
        }
        let ours = row.timings[0].median_s;
        for t in &row.timings[1..] {
            let speed_ratio = t.median_s / ours;
            let target = targets.iter().find(|(p, _)| *p == t.name).map(|(_, v)| *v);
            ratios.push(Ratio {
                row: row.name.clone(),
                peer: t.name.clone(),
                speed_ratio,
                target,
                met: target.map(|v| speed_ratio >= v),
            });
        }
        print_row(&row);
        rows.push(row);
    };

    let tiny_n: u64 = if opts.quick { 50_000 } else { 1_000_000 };
    let name = format!("tiny jobs: submit {tiny_n}, then collect");
    if wanted(&name) {
        let mut c = peers::tiny_jobs(cores, tiny_n);
        let row = Row {
            name,
            unit: "jobs".into(),
            work: tiny_n,
            timings: measure(opts.reps, &mut c),
        };
        add(
            row,
            &[
                ("tokio spawn_blocking", 1.25),
                ("rayon spawn + oneshot", 5.0),
            ],
        );
    }

    let rt_n: u64 = if opts.quick { 5_000 } else { 100_000 };
    let name = format!("round trip: submit, wait, repeat x{rt_n}");
    if wanted(&name) {
        let mut c = peers::round_trip(cores, rt_n);
        let row = Row {
            name,
            unit: "round trips".into(),
            work: rt_n,
            timings: measure(opts.reps, &mut c),
        };
        // "≤ 0.8x rayon+oneshot's time" is a speed ratio of 1.25.
        add(row, &[("rayon spawn + oneshot", 1.25)]);
    }

    let map_n: u64 = if opts.quick { 500_000 } else { 10_000_000 };
    let name = format!("map: ordered, {map_n} trivial items");
    if wanted(&name) {
        let mut c = peers::map(cores, map_n);
        let row = Row {
            name,
            unit: "items".into(),
            work: map_n,
            timings: measure(opts.reps, &mut c),
        };
        add(row, &[("rayon par_iter().map().collect()", 0.9)]);
    }

    let light_n: u64 = if opts.quick { 20_000 } else { 200_000 };
    let name = format!("map: ordered, {light_n} items of ~1 µs");
    if wanted(&name) {
        let mut c = peers::map_light(cores, light_n);
        let row = Row {
            name,
            unit: "items".into(),
            work: light_n,
            timings: measure(opts.reps, &mut c),
        };
        add(row, &[]);
    }

    let (jobs, ms) = if opts.quick { (16, 1) } else { (64, 5) };
    let name = format!("cpu batch: {jobs} jobs of ~{ms} ms on {cores} cores");
    if wanted(&name) {
        let mut c = peers::cpu_batch(cores, jobs, ms);
        let row = Row {
            name,
            unit: "jobs".into(),
            work: jobs,
            timings: measure(opts.reps, &mut c),
        };
        add(row, &[("sequential", 1.9_f64.min(cores as f64 * 0.95))]);
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
        rows,
        ratios,
    };
    let md = markdown(&report);
    println!("\n{md}");
    if opts.write {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("threads.md"), &md))
            .and_then(|()| {
                let json = serde_json::to_string_pretty(&report).expect("report serializes");
                std::fs::write(dir.join("threads.json"), json)
            });
        match written {
            Ok(()) => println!("written to {}", dir.display()),
            Err(e) => {
                eprintln!("bench: could not write results to {}: {e}", dir.display());
                std::process::exit(1);
            }
        }
    }
    black_box(());
}

fn print_row(row: &Row) {
    println!("\n{}", row.name);
    let ours = row.timings[0].median_s;
    for t in &row.timings {
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

fn markdown(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "## parpool vs peers: thread pools ({} cores, median of {} runs{})\n\n",
        r.machine.cores,
        r.reps,
        if r.quick { ", quick sizes" } else { "" }
    ));
    s.push_str(
        "| row | peer | parpool | peer time | speed ratio (parpool ÷ peer) | target | met |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|\n");
    for row in &r.rows {
        let ours = row.timings[0].median_s;
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
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {} | {} |\n",
                row.name,
                t.name,
                fmt_time(ours),
                fmt_time(t.median_s),
                t.median_s / ours,
                target,
                met
            ));
        }
    }
    s
}

fn fmt_time(secs: f64) -> String {
    let d = Duration::from_secs_f64(secs);
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", secs)
    } else {
        format!("{:.2} ms", secs * 1e3)
    }
}
