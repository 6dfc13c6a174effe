//! `parpool compare -- CMD ::: INPUTS`: the user's own command, run by
//! `parpool run` one at a time, at several numbers of jobs at once,
//! and all at once, each several times.

use std::ffi::OsString;
use std::process::{Command, Stdio};

use serde::Serialize;

use parpool::compare::{Sample, format_seconds as fmt_secs, within_spread};

/// One number of jobs at once, measured.
#[derive(Debug, Clone, Serialize)]
struct Level {
    /// `-j`'s value (0: all at once).
    jobs: usize,
    label: String,
    seconds: f64,
    min_seconds: f64,
    max_seconds: f64,
    speedup: f64,
    cpu_percent: f64,
    peak_mib: f64,
    failed_runs: u32,
}

#[derive(Debug, Serialize)]
struct Output {
    cores: usize,
    repeat: u32,
    command: String,
    results: Vec<Level>,
    fastest: String,
    tied_with: Vec<String>,
    verdict: String,
}

fn label(jobs: usize) -> String {
    match jobs {
        0 => "all at once (-j 0)".into(),
        1 => "one at a time (-j 1)".into(),
        n => format!("-j {n}"),
    }
}

/// Times `parpool run -j jobs WORDS` once: wall seconds, CPU percent,
/// peak MiB of the whole tree, whether it succeeded.
fn run_once(words: &[OsString], jobs: usize) -> anyhow::Result<(f64, f64, f64, bool)> {
    let me = std::env::current_exe()?;
    let (sample, status) = Sample::of(|| {
        Command::new(me)
            .arg("run")
            .arg("-j")
            .arg(jobs.to_string())
            .args(words)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    });
    Ok((
        sample.seconds,
        sample.cpu_percent,
        sample.peak_mib,
        status?.success(),
    ))
}

pub(super) fn main(words: &[OsString], repeat: u32, json: bool) -> anyhow::Result<i32> {
    if !words.iter().any(|w| w == ":::" || w == "::::") {
        anyhow::bail!(
            "give the command its inputs in GNU parallel's syntax: \
             parpool compare -- CMD {{}} ::: A B C (or :::: FILE)"
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut levels: Vec<usize> = vec![1, 2, cores, 2 * cores, 4 * cores];
    levels.sort_unstable();
    levels.dedup();
    levels.push(0);
    let command = words
        .iter()
        .map(|w| w.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    if !json {
        eprintln!("measuring: {command}");
    }
    let mut runs: Vec<Vec<(f64, f64, f64, bool)>> = vec![Vec::new(); levels.len()];
    for _ in 0..repeat {
        for (i, &jobs) in levels.iter().enumerate() {
            runs[i].push(run_once(words, jobs)?);
        }
    }
    let mut results: Vec<Level> = levels
        .iter()
        .zip(runs)
        .map(|(&jobs, mut r)| {
            r.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (seconds, cpu_percent, _, _) = r[r.len() / 2];
            Level {
                jobs,
                label: label(jobs),
                seconds,
                min_seconds: r[0].0,
                max_seconds: r[r.len() - 1].0,
                speedup: 1.0,
                cpu_percent,
                peak_mib: r.iter().map(|x| x.2).fold(0.0, f64::max),
                failed_runs: r.iter().filter(|x| !x.3).count() as u32,
            }
        })
        .collect();
    let base = results[0].seconds;
    for r in &mut results {
        r.speedup = base / r.seconds;
    }
    let out = verdict(cores, repeat, command, results);
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&out));
    }
    Ok(0)
}

fn verdict(cores: usize, repeat: u32, command: String, results: Vec<Level>) -> Output {
    let mut ranked: Vec<&Level> = results.iter().collect();
    ranked.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let best = ranked[0];
    let tied: Vec<&Level> = ranked[1..]
        .iter()
        .copied()
        .filter(|m| within_spread((best.seconds, best.max_seconds), (m.seconds, m.min_seconds)))
        .collect();
    let busy = best.cpu_percent / 100.0;
    let why = if best.jobs == 1 {
        "running jobs side by side does not pay here: they contend for one thing \
         (a core, a disk, a lock) or cost more to start than they run"
            .to_string()
    } else if best.jobs != 0 && best.jobs <= cores {
        format!(
            "the jobs compute: {busy:.1} cores busy at best, so more at once than the \
             {cores} cores only queue them"
        )
    } else {
        format!(
            "the jobs mostly wait ({busy:.1} cores busy): more at once than the {cores} \
             cores overlap the waiting"
        )
    };
    let verdict = if tied.is_empty() {
        format!(
            "{} is fastest ({:.1}× one at a time, ahead by more than the spread): {why}.",
            best.label, best.speedup
        )
    } else {
        let mut names = vec![format!("{} ({:.1}×)", best.label, best.speedup)];
        names.extend(
            tied.iter()
                .map(|m| format!("{} ({:.1}×)", m.label, m.speedup)),
        );
        format!(
            "tie between {}, within the spread: {why}.",
            names.join(" and ")
        )
    };
    let fastest = best.label.clone();
    let tied_with = tied.iter().map(|m| m.label.clone()).collect();
    Output {
        cores,
        repeat,
        command,
        results,
        fastest,
        tied_with,
        verdict,
    }
}

fn render(out: &Output) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "parpool compare: {} cores, each way {} time{} (the median, and the spread from \
         fastest to slowest)\n\nYour command: {}",
        out.cores,
        out.repeat,
        if out.repeat == 1 { "" } else { "s" },
        out.command
    );
    let _ = writeln!(
        s,
        "  {:<22} {:>10} {:>21} {:>9} {:>9} {:>11}",
        "jobs at once", "time", "spread", "speed-up", "CPU use", "peak memory"
    );
    for m in &out.results {
        let mark = if m.label == out.fastest && out.tied_with.is_empty() {
            " <"
        } else if m.label == out.fastest || out.tied_with.contains(&m.label) {
            " = (tie)"
        } else {
            ""
        };
        let failed = if m.failed_runs > 0 {
            format!(" ({} run(s) had failed jobs)", m.failed_runs)
        } else {
            String::new()
        };
        let spread = format!("{} – {}", fmt_secs(m.min_seconds), fmt_secs(m.max_seconds));
        let _ = writeln!(
            s,
            "  {:<22} {:>10} {:>21} {:>8.2}× {:>8.0}% {:>7.1} MiB{mark}{failed}",
            m.label,
            fmt_secs(m.seconds),
            spread,
            m.speedup,
            m.cpu_percent,
            m.peak_mib
        );
    }
    let _ = writeln!(s, "  verdict: {}", out.verdict);
    s
}
