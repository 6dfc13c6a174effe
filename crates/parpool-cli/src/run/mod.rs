//! `parpool run`: GNU parallel's way of running commands, on parpool.

mod exec;
mod halt;
mod input;
mod interrupt;
mod joblog;
mod jobs;
mod limits;
mod onall;
mod options;
mod output;
mod pack;
mod perl;
mod pipe;
mod pipepart;
mod plan;
mod plus;
mod progress;
mod remote;
mod report;
mod results;
mod rpl;
mod sem;
mod slots;
mod sql;
mod stop;
mod template;

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use options::values::job_slots;

use anyhow::bail;

pub(crate) use options::{RunArgs, command};

/// What the fuzz targets (`fuzz/`, `cargo fuzz`) reach: the option parser
/// and the replacement-string templates, fed arbitrary words.
#[cfg(fuzzing)]
pub(crate) mod fuzz {
    use std::ffi::OsString;

    /// Parses `words` as `parpool run`'s arguments.
    pub(crate) fn parse_args(words: Vec<OsString>) {
        let _ = super::options::parse(words);
    }

    /// Parses `word` as a command word with replacement strings (with and
    /// without `--plus`) and fills it with `args`, quoted and not.
    pub(crate) fn fill_template(word: &std::ffi::OsStr, args: &[OsString]) {
        use std::os::unix::ffi::OsStrExt;
        for plus in [false, true] {
            let parsed = super::template::parse_word_with(word, word.as_bytes(), plus);
            let fill = super::template::Fill::new(args, 7, 2, Some(9));
            let _ = super::template::fill_word(&parsed, &fill, true);
            let _ = super::template::fill_word(&parsed, &fill, false);
        }
    }
}

use exec::{Mode, Outcome, OutputMode, Plan, Runner};
use halt::Tally;
pub(crate) use halt::{Halt, parse_halt};
use jobs::{Inputs, inputs, job_items, name_columns, packed, pipepart_file};
use report::{dry_run, finish_status};

/// Descriptors one running job holds: its two pipes (both ends while it
/// starts), a pidfd, and a spool file, with room to spare.
const FDS_PER_JOB: u64 = 8;
/// Descriptors kept for everything else.
const FDS_RESERVED: u64 = 16;

/// How many jobs the open-file limit lets run at once, and the limit.
fn descriptor_fit() -> (usize, u64) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let fit = usize::try_from(limit.saturating_sub(FDS_RESERVED) / FDS_PER_JOB)
        .unwrap_or(usize::MAX)
        .max(1);
    (fit, limit)
}

/// Caps the jobs at once to what the open-file limit allows, as GNU
/// parallel does: one warning, and every job still runs.
fn cap_by_descriptors(slots: usize) -> usize {
    let (fit, limit) = descriptor_fit();
    if slots > fit {
        eprintln!(
            "parpool: warning: only enough file handles to run {fit} jobs in parallel \
             (the open-file limit is {limit}; raise it with 'ulimit -n')"
        );
        return fit;
    }
    slots
}

/// `-j` on a machine with `cores` cores (1 if the spec does not read).
fn remote_slots(spec: &str, cores: usize) -> usize {
    job_slots(spec, cores).unwrap_or(1)
}

/// Runs `parpool run` with the words after `run`; returns the exit status.
pub(crate) fn cli(words: Vec<OsString>) -> i32 {
    // GNU parallel's default options come first: its config file, then
    // `$PARALLEL`; the command line's own come after and win.
    let words = match options::default_options() {
        Ok(mut defaults) => {
            defaults.extend(words);
            defaults
        }
        Err(why) => {
            eprintln!("parpool run: {why}");
            return 255;
        }
    };
    match options::parse(words) {
        Ok(options::Parsed::Run(args)) => match if args.semaphore {
            sem::main(&args)
        } else {
            main(*args)
        } {
            Ok(code) => code,
            Err(e) => {
                // One prefix for every error `run` reports.
                eprintln!("parpool run: {e:#}");
                255
            }
        },
        Ok(options::Parsed::Help) => {
            print!("{}", options::help_for_here());
            0
        }
        Ok(options::Parsed::Say(text)) => {
            println!("{text}");
            0
        }
        Ok(options::Parsed::Version) => {
            println!("parpool {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Err(options::UsageError(why)) => {
            eprintln!(
                "parpool run: {why}\n\nUsage: parpool run [OPTIONS] [COMMAND [ARGS]...] [::: INPUTS]...\nTry 'parpool run --help' for more."
            );
            255
        }
    }
}

/// The machines jobs run on (this one, or the `-S` logins), each with its
/// job slots.
fn machines(args: &RunArgs, local_slots: usize) -> anyhow::Result<Vec<(remote::Host, usize)>> {
    Ok(if args.sshlogins.is_empty() {
        vec![(
            remote::Host {
                ssh: None,
                slots: Some(local_slots),
                name: ":".into(),
            },
            local_slots,
        )]
    } else {
        let ssh = args
            .ssh
            .clone()
            .or_else(|| std::env::var("PARALLEL_SSH").ok())
            .unwrap_or_else(|| "ssh".into());
        let hosts = remote::parse_logins(&args.sshlogins, &ssh).map_err(anyhow::Error::msg)?;
        let jobs = args.jobs.clone().unwrap_or_else(|| "100%".into());
        remote::prepare(hosts, local_slots, remote_slots, jobs)
    })
}

/// Settings refused before anything runs; `--tmpdir` put in place.
fn check_settings(args: &RunArgs, hosts: &[(remote::Host, usize)]) -> anyhow::Result<()> {
    if let Some(dir) = &args.tmpdir {
        if !dir.is_dir() {
            bail!("--tmpdir {}: no such directory", dir.display());
        }
        let _ = output::SPOOL_DIR.set(dir.clone());
    }
    if args.compress {
        // As GNU parallel: a given compressor reads back with `-dc`.
        let programs = match &args.compress_program {
            Some(c) => (
                c.clone(),
                args.decompress_program
                    .clone()
                    .unwrap_or_else(|| format!("{c} -dc")),
            ),
            None => {
                let (c, d) = output::compression_programs();
                (c, args.decompress_program.clone().unwrap_or(d))
            }
        };
        let _ = output::COMPRESS.set(programs);
    }
    if args.nice.is_some() && hosts.iter().any(|(h, _)| h.ssh.is_some()) {
        bail!("--nice with jobs on other machines (-S) is not supported");
    }
    Ok(())
}

/// How every job runs: its command's template (refused if it holds
/// what parpool does not do), output, tags, pacing, machines and retries.
fn runner(
    args: &RunArgs,
    command: Vec<OsString>,
    names: &input::Names,
    (n_sources, record, at_once): (usize, usize, usize),
    hosts: Vec<(remote::Host, usize)>,
    slot_host: Vec<usize>,
) -> anyhow::Result<Arc<Runner>> {
    let command = rpl::join_spanning(name_columns(command, names));
    let whole = args.replace.as_deref().unwrap_or("{}").as_bytes();
    let mut rpls = if args.plus {
        rpl::Rpl::plus()
    } else {
        Vec::new()
    };
    for r in &args.rpl {
        rpls.push(rpl::Rpl::parse(r).map_err(|e| anyhow::anyhow!("--rpl: {e}"))?);
    }
    let parse = |w: &std::ffi::OsStr, whole: &[u8]| {
        let expanded = rpl::expand(w.as_bytes(), &rpls);
        let w = std::ffi::OsStr::from_bytes(&expanded);
        match template::refused(w, args.plus) {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(template::parse_word_with(w, whole, args.plus)),
        }
    };
    let mut words: Vec<template::Word> = command
        .iter()
        .map(|w| parse(w, whole))
        .collect::<anyhow::Result<_>>()?;
    let files = |list: &[String]| -> anyhow::Result<Vec<template::Word>> {
        list.iter()
            .map(|t| parse(std::ffi::OsStr::new(t), b"{}"))
            .collect()
    };
    let mut transfer = files(&args.transfer)?;
    let mut returns = files(&args.returns)?;
    let mut tag = match (&args.tagstring, args.tag) {
        (Some(t), _) => exec::Tag::Template(parse(std::ffi::OsStr::new(t), b"{}")?),
        (None, true) => exec::Tag::Values,
        (None, false) => exec::Tag::None,
    };
    let mode = if words.is_empty() {
        Mode::InputIsCommand
    } else {
        Mode::Template
    };
    // With --pipe, input arrives on the jobs' stdin, not as arguments.
    let append = mode != Mode::InputIsCommand
        && (!args.pipe || args.cat || args.fifo)
        && !template::has_replacement(&words);
    if mode == Mode::InputIsCommand {
        words.clear();
    }
    let tag_word = match &mut tag {
        exec::Tag::Template(word) => Some(word),
        _ => None,
    };
    let all = words
        .iter_mut()
        .chain(tag_word)
        .chain(&mut transfer)
        .chain(&mut returns);
    let perl = template::compile_perl(all, at_once)?;
    Ok(Arc::new(Runner {
        plan: Plan {
            context: args.group.is_some_and(|g| g.context),
            ..Plan::new(words, mode, append, args.quote, n_sources)
        },
        fifo: args.fifo,
        output: if args.ungroup {
            OutputMode::Ungroup
        } else if args.line_buffer {
            OutputMode::Lines
        } else {
            OutputMode::Group
        },
        tag,
        delay: args.delay,
        limits: limits::Limits::new(args.memfree, args.load, args.noswap),
        termseq: args.termseq.clone().unwrap_or_else(exec::default_termseq),
        nice: args.nice,
        tmpdir: args.tmpdir.clone(),
        next_start: Mutex::new(None),
        timeout: args.timeout,
        succeeded: Mutex::new(Vec::new()),
        hosts: hosts.into_iter().map(|(h, _)| h).collect(),
        slot_host,
        transfer,
        returns,
        cleanup: args.cleanup,
        env: args.env.clone(),
        tries: args.retries.max(1),
        running: Mutex::new(Default::default()),
        stop: AtomicBool::new(false),
        kill: AtomicBool::new(false),
        output_closed: AtomicBool::new(false),
        interrupted: AtomicBool::new(false),
        total: std::sync::atomic::AtomicU64::new(u64::MAX),
        perl,
        record,
        turn: (args.keep_order && args.line_buffer).then(|| std::sync::atomic::AtomicU64::new(0)),
    }))
}

/// Where jobs run: the machines and their slots (`-j FILE`'s file too).
struct Machines {
    hosts: Vec<(remote::Host, usize)>,
    /// Which machine each job slot (less one) is on.
    slot_host: Vec<usize>,
    /// `--progress`'s list: name, cores, job slots.
    listed: Vec<(String, usize, usize)>,
    jobs_file: Option<slots::JobsFile>,
}

/// The machines for `args`, checked against the options.
fn where_jobs_run(args: &RunArgs, cores: usize) -> anyhow::Result<Machines> {
    // `-j FILE`: the number read from FILE, again as it changes.
    let jobs_file = slots::JobsFile::open(args.jobs.as_deref(), cores)?;
    // With -j FILE the slots are as many as the file may ever ask for
    // (and the open files allow); the file's number says how many run.
    let local_slots = match &jobs_file {
        Some(file) => {
            cap_by_descriptors(file.wanted()).max(slots::MOST_FROM_FILE.min(descriptor_fit().0))
        }
        None => cap_by_descriptors(job_slots(args.jobs.as_deref().unwrap_or("100%"), cores)?),
    };
    let hosts = machines(args, local_slots)?;
    let slot_host: Vec<usize> = hosts
        .iter()
        .enumerate()
        .flat_map(|(i, (_, n))| std::iter::repeat_n(i, *n))
        .collect();
    if slot_host.is_empty() {
        bail!("no machine is left to run jobs on");
    }
    check_settings(args, &hosts)?;
    if jobs_file.is_some() && hosts.iter().any(|(h, _)| h.ssh.is_some()) {
        bail!("-j FILE with other machines (-S) is not supported; give -j a number");
    }
    let listed = hosts
        .iter()
        .map(|(h, n)| match h.ssh {
            None => ("local".to_owned(), cores, *n),
            Some(_) => (h.name.clone(), *n, *n),
        })
        .collect();
    Ok(Machines {
        hosts,
        slot_host,
        listed,
        jobs_file,
    })
}

/// A job ready to run: its values, its stdin, its number and its place
/// in the dispatch order.
pub(crate) type Numbered = (Vec<OsString>, Option<pipepart::Feed>, u64, u64);

/// The jobs numbered (`{#}`), those a resumed run skips left out, the
/// first input error kept in `input_error` (it ends the input).
fn numbered(
    jobs: Box<dyn Iterator<Item = io::Result<jobs::Item>> + Send>,
    skip: std::collections::HashSet<u64>,
    input_error: Arc<Mutex<Option<io::Error>>>,
) -> impl Iterator<Item = Numbered> + Send {
    jobs.map_while(move |r| match r {
        Ok(v) => Some(v),
        Err(e) => {
            *input_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            None
        }
    })
    .zip(1u64..)
    .filter(move |(_, seq)| !skip.contains(seq))
    .zip(0u64..)
    .map(|(((values, stdin), seq), order)| (values, stdin, seq, order))
}

/// `--pipepart` and `--roundrobin` checked against the other options;
/// `--pipepart`'s file taken from the inputs.
fn check_pipe_settings(args: &mut RunArgs, machines: &Machines) -> anyhow::Result<()> {
    if args.pipepart {
        if args.group.is_some() || args.header_value.is_some() {
            bail!(
                "--pipepart cannot count records (-N, -n, -L, -X, -m) or take a --header; \
                 cut by --recstart and --recend, or use --pipe"
            );
        }
        args.pipepart_file = Some(pipepart_file(args)?);
    }
    if args.roundrobin && machines.jobs_file.is_some() {
        bail!("--roundrobin deals its blocks to a fixed set of jobs: give -j a number, not a file");
    }
    if args.roundrobin && args.retries > 1 {
        bail!("--roundrobin deals its blocks once: a job cannot be retried (--retries)");
    }
    if args.roundrobin && args.cat {
        bail!("--roundrobin deals blocks to running jobs: it cannot put them in --cat's files");
    }
    Ok(())
}

/// Runs `parpool run`; returns the exit status.
fn main(mut args: RunArgs) -> anyhow::Result<i32> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    sql::check(&args)?;
    if args.sql_worker.is_some() && args.sql_master.is_none() {
        return sql::work(args, cores);
    }
    let mut machines = where_jobs_run(&args, cores)?;
    if args.onall {
        if args.sshlogins.is_empty() || args.pipe {
            bail!("--onall and --nonall need machines (-S) and cannot take --pipe");
        }
        // One slot a machine (`{%}` is its number).
        machines.slot_host = (0..machines.hosts.len()).collect();
    }
    // Jobs at once: -j FILE's number now, or the slots.
    let slots = machines
        .jobs_file
        .as_ref()
        .map_or(machines.slot_host.len(), slots::JobsFile::wanted);
    check_pipe_settings(&mut args, &machines)?;
    let rest = std::mem::take(&mut args.rest);
    let Inputs {
        command,
        names,
        jobs,
        n_sources,
        record,
        pipe_cut,
    } = if args.nonall {
        // The command once on each machine, with no input.
        Inputs {
            command: rest,
            names: Vec::new(),
            jobs: Box::new(std::iter::once(Ok(Vec::new()))),
            n_sources: 1,
            record: 0,
            pipe_cut: None,
        }
    } else {
        inputs(&args, rest)?
    };
    let runner = runner(
        &args,
        command,
        &names,
        (n_sources, record, slots),
        machines.hosts,
        machines.slot_host,
    )?;
    let jobs = packed(&args, jobs, &runner, slots)?;
    if args.sql_master.is_some() {
        return sql::submit(args, &runner, jobs, cores);
    }
    let results = match &args.results {
        Some(spec) => Some(results::Results::open(spec, &names, args.header, record)?),
        None => None,
    };
    let resume = match (args.resume, args.resume_failed) {
        (true, _) => Some(joblog::Resume::Logged),
        (_, true) => Some(joblog::Resume::Succeeded),
        _ => None,
    };
    let log_target = args.joblog.as_deref().map(joblog::Target::parse);
    let skip = match (resume, log_target.as_ref().and_then(joblog::Target::path)) {
        (Some(r), Some(path)) => joblog::skipped(path, r)?,
        _ => Default::default(),
    };
    // Each job's values, and its standard input (`--pipe`).
    let jobs = job_items(&args, pipe_cut, jobs, slots)?;
    let known_total = jobs.size_hint().1;
    if let Some(n) = known_total {
        runner.total.store(n as u64, Ordering::Relaxed);
    }
    // Jobs not skipped by `--resume`, if their number is known.
    let left = known_total.map(|n| n.saturating_sub(skip.len()) as u64);
    // Input errors stop the input (jobs already read still run) and make
    // the exit status 255.
    let input_error: Arc<Mutex<Option<io::Error>>> = Arc::default();
    let jobs = numbered(jobs, skip, input_error.clone());
    if args.dry_run {
        let skipped = dry_run(
            jobs.map(|(values, _, seq, _)| (values, seq)),
            &runner,
            slots,
        )?;
        return Ok(finish_status(skipped.min(101) as i32, &input_error));
    }
    let joblog = match &log_target {
        Some(target) => Some(joblog::open(target, resume.is_some())?),
        None => None,
    };
    let reporter = report::Reporter::new(&args, runner.clone(), results, joblog, left);
    onall::send_basefiles(&args, &runner)?;
    if args.onall {
        let status = onall::execute(&args, &runner, jobs, reporter);
        onall::remove_basefiles(&args, &runner);
        return Ok(finish_status(status?, &input_error));
    }
    let status = execute(
        &args,
        &runner,
        jobs,
        machines.jobs_file,
        Shape {
            listed: &machines.listed,
            left,
            at_once: slots,
        },
        reporter,
    );
    onall::remove_basefiles(&args, &runner);
    Ok(finish_status(status?, &input_error))
}

/// What `execute` needs to know of the run's size: the machines for
/// `--progress`, the jobs left when known, the jobs at once.
struct Shape<'a> {
    listed: &'a [(String, usize, usize)],
    left: Option<u64>,
    at_once: usize,
}

/// Runs the jobs on the pool, reports each as it ends (in input order with
/// `-k`); the exit status, as `--halt` and the failures make it.
fn execute(
    args: &RunArgs,
    runner: &Arc<Runner>,
    jobs: impl Iterator<Item = Numbered> + Send + 'static,
    jobs_file: Option<slots::JobsFile>,
    shape: Shape<'_>,
    mut reporter: report::Reporter,
) -> anyhow::Result<i32> {
    let Shape {
        listed,
        left,
        at_once,
    } = shape;
    let slots = runner.slot_host.len();
    let interrupts = interrupt::watch(runner.clone())?;
    let pool = parpool::ThreadPool::builder()
        .workers(slots)
        .name("parpool-run")
        .build()?;
    let slots_taken = Arc::new(slots::Slots::new(slots, jobs_file));
    let job_runner = runner.clone();
    let tally = Arc::new(Mutex::new(Tally {
        total: left,
        ..Tally::default()
    }));
    let job_tally = tally.clone();
    let halt = args.halt;
    let status =
        (args.progress || args.eta).then(|| progress::Status::start(listed, left, args.eta));
    let job_status = status.as_ref().map(|(s, _)| s.clone());
    let run_one = move |(values, stdin, seq, order): Numbered| {
        let (slot, perl) = slots_taken.take(order, |slot| job_runner.evaluate(seq, &values, slot));
        if let Some(s) = &job_status {
            s.job_started();
        }
        let outcome = match perl {
            Ok(perl) => job_runner.run((seq, order), values, slot, stdin, perl),
            Err(e) => Outcome::not_started(seq, values, format!("perl stopped answering: {e}")),
        };
        // Counted, and `--halt` decided, before this worker can start
        // another job: no job starts after the deciding one.
        job_tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .count(&outcome, halt, &job_runner);
        if let Some(s) = &job_status {
            s.job_done();
        }
        slots_taken.give_back(slot);
        outcome
    };
    // Room for finished jobs to wait for a slower earlier one (`-k`)
    // while the slots stay busy; held output is bounded by it. `--pipe`
    // blocks are read only as slots come free: each may be large.
    // `--sqlworker` takes a row only as a slot comes free: other workers
    // share the rest.
    let window = if args.pipe || args.sql_worker.is_some() {
        at_once + 1
    } else {
        at_once * 16
    };
    // A fatal error stops everything: no job still queued may run.
    let mut report = |r: Result<Outcome, parpool::JobError>| -> anyhow::Result<()> {
        let done = r
            .map_err(anyhow::Error::from)
            .and_then(|o| reporter.report(o));
        if done.is_err() {
            runner.kill_all();
        }
        done
    };
    if args.keep_order {
        for r in pool.map(run_one, jobs).chunk_size(1).window(window) {
            report(r)?;
            if let Some(turn) = &runner.turn {
                turn.fetch_add(1, Ordering::AcqRel);
            }
        }
    } else {
        for (_, r) in pool
            .map_unordered(run_one, jobs)
            .chunk_size(1)
            .window(window)
        {
            report(r)?;
        }
    }
    drop(interrupts);
    if let Some((status, thread)) = status {
        status.finish(thread);
    }
    reporter.finish();
    if args.cat || args.fifo {
        // Blocks written for jobs that never ran (a halt, an interrupt).
        pipe::remove_cat_files();
    }
    let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    Ok(if runner.interrupted.load(Ordering::SeqCst) {
        // Stopped by an interrupt, as GNU parallel reports it.
        255
    } else {
        tally.status(args.halt)
    })
}
