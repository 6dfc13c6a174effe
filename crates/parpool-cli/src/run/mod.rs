//! `parpool run`: GNU parallel's way of running commands, on parpool.

mod exec;
mod input;
mod joblog;
mod limits;
mod options;
mod output;
mod pack;
mod perl;
mod pipe;
mod pipepart;
mod progress;
mod remote;
mod results;
mod rpl;
mod sem;
mod slots;
mod template;

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use options::values::job_slots;

use anyhow::{Context, bail};

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
use input::{Linked, Source, Split};

/// `--halt`: when to stop, and on what.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Halt {
    now: bool,
    on: On,
    threshold: Threshold,
}

/// Which jobs `--halt` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Fail,
    Success,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Threshold {
    Count(u64),
    Percent(f64),
}

pub(crate) fn parse_halt(s: &str) -> Result<Halt, String> {
    let bad = || {
        format!(
            "`{s}`: expected now|soon,fail|success|done=N or =P%, or 0, 1, 2 \
             (e.g. now,fail=1)"
        )
    };
    // The old numeric forms.
    match s {
        "0" => {
            return Ok(Halt {
                now: false,
                on: On::Fail,
                threshold: Threshold::Count(u64::MAX),
            });
        }
        "1" | "2" => {
            return Ok(Halt {
                now: s == "2",
                on: On::Fail,
                threshold: Threshold::Count(1),
            });
        }
        _ => {}
    }
    let (when, cond) = s.split_once(',').ok_or_else(bad)?;
    let now = match when {
        "now" => true,
        "soon" => false,
        _ => return Err(bad()),
    };
    let (kind, value) = cond.split_once('=').ok_or_else(bad)?;
    let on = match kind {
        "fail" => On::Fail,
        "success" => On::Success,
        "done" => On::Done,
        _ => return Err(bad()),
    };
    let threshold = match value.strip_suffix('%') {
        Some(p) => Threshold::Percent(
            p.parse()
                .ok()
                .filter(|p: &f64| *p > 0.0 && *p <= 100.0)
                .ok_or_else(bad)?,
        ),
        None => Threshold::Count(value.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?),
    };
    Ok(Halt { now, on, threshold })
}

/// Descriptors one running job holds: its two pipes (both ends while it
/// starts), a pidfd, and a spool file, with room to spare.
const FDS_PER_JOB: u64 = 8;
/// Descriptors kept for everything else.
const FDS_RESERVED: u64 = 16;

/// Caps the jobs at once to what the open-file limit allows, as GNU
/// parallel does: one warning, and every job still runs.
fn cap_by_descriptors(slots: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let fit = usize::try_from(limit.saturating_sub(FDS_RESERVED) / FDS_PER_JOB)
        .unwrap_or(usize::MAX)
        .max(1);
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

/// Splits the words after the options into the command and the sources.
fn split_rest(rest: Vec<OsString>) -> anyhow::Result<(Vec<OsString>, Vec<Linked>)> {
    let mut command = Vec::new();
    let mut sources: Vec<Linked> = Vec::new();
    let mut current: Option<(bool, bool, Vec<OsString>)> = None; // (file, linked, words)
    let mut finish = |cur: Option<(bool, bool, Vec<OsString>)>| -> anyhow::Result<()> {
        if let Some((file, linked, words)) = cur {
            if file {
                if words.is_empty() {
                    bail!(":::: needs at least one file");
                }
                // `::::+ f1 f2 f3` pairs every one of them.
                for w in words {
                    sources.push(Linked {
                        source: Source::File(w.into()),
                        linked,
                    });
                }
            } else {
                sources.push(Linked {
                    source: Source::Args(words),
                    linked,
                });
            }
        }
        Ok(())
    };
    for word in rest {
        let sep = match word.as_bytes() {
            b":::" => Some((false, false)),
            b":::+" => Some((false, true)),
            b"::::" => Some((true, false)),
            b"::::+" => Some((true, true)),
            _ => None,
        };
        match (sep, current.as_mut()) {
            (Some((file, linked)), _) => {
                finish(current.take())?;
                current = Some((file, linked, Vec::new()));
            }
            (None, Some((_, _, words))) => words.push(word),
            (None, None) => command.push(word),
        }
    }
    finish(current.take())?;
    Ok((command, sources))
}

/// With `--header`, turns `{name}` (and `{name.}`, `{name/}`, ...) into
/// the column's position, `{N}`.
fn name_columns(command: Vec<OsString>, names: &[String]) -> Vec<OsString> {
    if names.is_empty() {
        return command;
    }
    command
        .into_iter()
        .map(|word| {
            let mut text = word.as_bytes().to_vec();
            for (i, name) in names.iter().enumerate() {
                for op in ["", ".", "/", "//", "/."] {
                    let from = format!("{{{name}{op}}}");
                    let to = format!("{{{}{op}}}", i + 1);
                    text = replace_all(&text, from.as_bytes(), to.as_bytes());
                }
            }
            template::os(text)
        })
        .collect()
}

fn replace_all(text: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
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

/// All of `jobs`, in a random order (Fisher–Yates, seeded from the
/// system's randomness through std's hasher keys).
fn shuffled(jobs: input::Jobs) -> anyhow::Result<input::Jobs> {
    use std::hash::BuildHasher;
    let mut all: Vec<input::Values> = jobs.collect::<io::Result<_>>()?;
    let mut state = std::collections::hash_map::RandomState::new().hash_one(std::process::id()) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in (1..all.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        all.swap(i, j);
    }
    Ok(Box::new(all.into_iter().map(Ok)))
}

/// How `--pipe` cuts its input: `--block`, `--recstart`/`--recend`, `-N`
/// records a block, `--header`. Options that would cut otherwise in GNU
/// parallel, and that parpool does not do, are refused.
fn pipe_cut(
    group: Option<options::Group>,
    header: Option<&str>,
    cut: &pipe::Cut,
) -> anyhow::Result<pipe::Cut> {
    let mut cut = cut.clone();
    match group {
        None => {}
        Some(options::Group {
            size: Some(n),
            context: true,
            spread: false,
        }) => cut.records = Some(n.max(1)),
        Some(_) => bail!("with --pipe only -N (records a job) is supported, not -n, -L, -X or -m"),
    }
    if let Some(h) = header {
        cut.header = Some(pipe::Header::parse(h).map_err(|e| anyhow::anyhow!("--header {e}"))?);
    }
    Ok(cut)
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
    if args.nice.is_some() && hosts.iter().any(|(h, _)| h.ssh.is_some()) {
        bail!("--nice with jobs on other machines (-S) is not supported");
    }
    Ok(())
}

/// The command's words, the inputs' column names, the jobs' values, how
/// many values a job's `{}` stands for, and how `--pipe` cuts its input.
struct Inputs {
    command: Vec<OsString>,
    names: input::Names,
    jobs: input::Jobs,
    n_sources: usize,
    /// Values per record with several inputs per job (perl's `@arg`
    /// grows a record at a time); 0: the job's values are one record.
    record: usize,
    pipe_cut: Option<pipe::Cut>,
}

/// Reads the command line's rest (`rest`: the command and its inputs) into
/// the inputs' values: `-a` files, columns, `--header`, `-r` (grouping
/// and `--shuf` are [`packed`]'s).
fn inputs(args: &RunArgs, rest: Vec<OsString>) -> anyhow::Result<Inputs> {
    let (command, mut sources) = split_rest(rest)?;
    // `-a FILE`: input files, before the other sources.
    let files = args.arg_files.iter().map(|path| Linked {
        source: Source::File(path.clone()),
        linked: false,
    });
    sources.splice(0..0, files);
    let colsep = match &args.colsep {
        Some(re) => Some(
            regex::bytes::Regex::new(re)
                .map_err(|e| anyhow::anyhow!("--colsep `{re}` is not a regular expression: {e}"))?,
        ),
        None => None,
    };
    let split = Split {
        delimiter: args.delimiter.unwrap_or(if args.null { 0 } else { b'\n' }),
        colsep,
        trim: args.trim,
    };
    let mut n_sources = if sources.is_empty() { 1 } else { sources.len() };
    let record = if args.group.is_some() { n_sources } else { 0 };
    // `--pipe`'s header is its input's, not the sources'.
    let pipe_cut = if args.pipe {
        Some(pipe_cut(
            args.group,
            args.header_value.as_deref(),
            &args.cut,
        )?)
    } else {
        None
    };
    if !args.pipe
        && let Some(h) = args.header_value.as_deref()
        && h != ":"
        && h != ".*\n"
    {
        bail!(
            "--header `{h}`: without --pipe only `--header :` (the first line names the \
             columns) is supported"
        );
    }
    let (names, jobs) = input::jobs(sources, &split, args.header && !args.pipe, args.link)?;
    // `-r`: inputs of nothing but blanks are skipped.
    let jobs: input::Jobs = if args.no_run_if_empty {
        Box::new(jobs.filter(|r| {
            r.as_ref().map_or(true, |values| {
                !values
                    .iter()
                    .all(|v| v.as_bytes().iter().all(|b| b" \t\r\n".contains(b)))
            })
        }))
    } else {
        jobs
    };
    // Several inputs per job: `{}` is then several values.
    if args.group.is_some() {
        n_sources = n_sources.max(2);
    }
    Ok(Inputs {
        command,
        names,
        jobs,
        n_sources,
        record,
        pipe_cut,
    })
}

/// Most inputs read and checked before the first job starts: with no
/// more, a command line too long is refused before anything runs.
const CHECKED_FIRST: usize = 100_000;

/// The jobs' values: inputs grouped as `-N`/`-X`/… say, each command
/// line checked against the length limit (all of them before any job
/// runs where the input is known and not huge), `--shuf`fled.
fn packed(
    args: &RunArgs,
    jobs: input::Jobs,
    runner: &Arc<Runner>,
    slots: usize,
) -> anyhow::Result<input::Jobs> {
    if args.pipe {
        return Ok(jobs);
    }
    let usable = pack::usable_line_length();
    let limit = match args.max_chars {
        Some(n) if n > usable => {
            eprintln!("parpool: Warning: Value for option -s should be < {usable}.");
            usable
        }
        Some(n) => n,
        None => usable,
    };
    let packing = pack::Packing {
        max_args: args.group.and_then(|g| g.size),
        grouped: args.group.is_some(),
        spread: args.group.filter(|g| g.spread).map(|_| slots),
        limit,
    };
    let known = jobs.size_hint().1.is_some_and(|n| n <= CHECKED_FIRST);
    let jobs = pack::pack(jobs, runner.clone(), packing);
    let jobs: input::Jobs = if known || args.shuf {
        let all: Vec<input::Values> = jobs.collect::<io::Result<_>>()?;
        Box::new(all.into_iter().map(Ok))
    } else {
        jobs
    };
    // `--shuf`: every job made first, then run in a random order (their
    // numbers, `{#}`, follow it, as in GNU parallel).
    if args.shuf { shuffled(jobs) } else { Ok(jobs) }
}

/// How every job runs: its command's template (refused if it holds
/// what parpool does not do), output, tags, pacing, machines and retries.
fn runner(
    args: &RunArgs,
    command: Vec<OsString>,
    names: &input::Names,
    (n_sources, record): (usize, usize),
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
    let perl = perl::compile_all(all, slot_host.len())?;
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

/// A job's values, and its standard input (`--pipe`).
type Item = (input::Values, Option<pipepart::Feed>);

/// `--pipepart`'s file, taken from `-a FILE` or `:::: FILE` (one file).
fn pipepart_file(args: &mut RunArgs) -> anyhow::Result<std::path::PathBuf> {
    let from_rest = args.rest.iter().position(|w| w == "::::");
    let file = match (args.arg_files.len(), from_rest) {
        (1, None) => args.arg_files.remove(0),
        (0, Some(at)) if at + 2 == args.rest.len() => {
            let path = args.rest.pop().unwrap_or_default();
            args.rest.pop();
            path.into()
        }
        (0, None) => bail!("--pipepart needs its file: -a FILE or :::: FILE"),
        _ => bail!("--pipepart takes one file (-a FILE or :::: FILE) and no other input"),
    };
    if !file.is_file() {
        bail!("--pipepart: {} is not a file", file.display());
    }
    Ok(file)
}

/// Each job's values and standard input: the inputs' values, or with
/// `--pipe` the blocks of standard input, with `--pipepart` the parts of
/// its file (in a file named by `{}` with `--cat`, through a fifo named by
/// `{}` with `--fifo`).
fn job_items(
    args: &RunArgs,
    pipe_cut: Option<pipe::Cut>,
    jobs: input::Jobs,
    slots: usize,
) -> anyhow::Result<Box<dyn Iterator<Item = io::Result<Item>> + Send>> {
    use pipepart::Feed;
    if !args.pipe {
        return Ok(Box::new(jobs.map(|r| r.map(|values| (values, None)))));
    }
    let cut = pipe_cut.unwrap_or_default();
    let feeds: Box<dyn Iterator<Item = io::Result<Feed>> + Send> = match &args.pipepart_file {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("--pipepart: cannot read {}", path.display()))?;
            let size = file.metadata()?.len();
            // As GNU parallel: 10 parts a job slot unless --block says.
            let block = match args.block_given {
                true => cut.block as u64,
                false => 1 + size / slots.max(1) as u64 / 10,
            };
            Box::new(pipepart::parts(file, block, &cut)?.into_iter().map(Ok))
        }
        None => {
            // Read in bigger pieces where stdin is a pipe.
            let _ = rustix::pipe::fcntl_setpipe_size(io::stdin(), 1 << 20);
            let blocks = pipe::Blocks::new(io::stdin(), cut);
            Box::new(blocks.map(|b| b.map(Feed::Bytes)))
        }
    };
    let mut n = 0u64;
    let (cat, fifo) = (args.cat, args.fifo);
    Ok(Box::new(feeds.map(move |feed| {
        let feed = feed?;
        n += 1;
        if cat {
            // `--cat`: each block in a file of its own, named by `{}`.
            let path = pipe::cat_file(&feed.bytes()?, n)?;
            Ok((vec![path.into_os_string()], None))
        } else if fifo {
            // `--fifo`: each block through a named pipe of its own.
            Ok((vec![pipe::fifo_file(n)?.into_os_string()], Some(feed)))
        } else {
            Ok((Vec::new(), Some(feed)))
        }
    })))
}

/// `--dry-run`: each job's command, as the shell would read it, one a
/// line, the jobs taking the slots in turn; how many jobs `skip()` would
/// skip (GNU parallel counts them as failed).
fn dry_run(
    jobs: impl Iterator<Item = (input::Values, u64)>,
    runner: &Runner,
    slots: usize,
) -> io::Result<usize> {
    let mut out = io::stdout().lock();
    let mut skipped = 0;
    for (order, (values, seq)) in jobs.enumerate() {
        let slot = order % slots.max(1) + 1;
        let perl = runner.evaluate(seq, &values, slot)?;
        skipped += usize::from(perl.as_ref().is_some_and(|p| p.skip));
        let fill = template::Fill {
            perl: perl.as_ref(),
            ..template::Fill::new(&values, seq, slot, runner.total())
        };
        out.write_all(&runner.plan.argv(&fill).display())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(skipped)
}

/// Runs `parpool run`; returns the exit status.
fn main(mut args: RunArgs) -> anyhow::Result<i32> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // `-j FILE`: the number read from FILE, again as it changes.
    let jobs_file = slots::JobsFile::open(args.jobs.as_deref(), cores)?;
    let local_slots = match &jobs_file {
        Some(file) => cap_by_descriptors(file.wanted().max(slots::MOST_FROM_FILE)),
        None => cap_by_descriptors(job_slots(args.jobs.as_deref().unwrap_or("100%"), cores)?),
    };
    let hosts = machines(&args, local_slots)?;
    let slot_host: Vec<usize> = hosts
        .iter()
        .enumerate()
        .flat_map(|(i, (_, n))| std::iter::repeat_n(i, *n))
        .collect();
    if slot_host.is_empty() {
        bail!("no machine is left to run jobs on");
    }
    check_settings(&args, &hosts)?;
    if jobs_file.is_some() && hosts.iter().any(|(h, _)| h.ssh.is_some()) {
        bail!("-j FILE with other machines (-S) is not supported; give -j a number");
    }
    let slots = slot_host.len();
    // `--progress`'s list: name, cores, job slots.
    let machine_list: Vec<(String, usize, usize)> = hosts
        .iter()
        .map(|(h, n)| match h.ssh {
            None => ("local".to_owned(), cores, *n),
            Some(_) => (h.name.clone(), *n, *n),
        })
        .collect();
    if args.pipepart {
        if args.group.is_some() || args.header_value.is_some() {
            bail!(
                "--pipepart cannot count records (-N, -n, -L, -X, -m) or take a --header; \
                 cut by --recstart and --recend, or use --pipe"
            );
        }
        args.pipepart_file = Some(pipepart_file(&mut args)?);
    }
    let rest = std::mem::take(&mut args.rest);
    let Inputs {
        command,
        names,
        jobs,
        n_sources,
        record,
        pipe_cut,
    } = inputs(&args, rest)?;
    let runner = runner(
        &args,
        command,
        &names,
        (n_sources, record),
        hosts,
        slot_host,
    )?;
    let jobs = packed(&args, jobs, &runner, slots)?;
    let mut results = match &args.results {
        Some(spec) => Some(results::Results::open(spec, &names, args.header, record)?),
        None => None,
    };
    // Input errors stop the input (jobs already read still run) and make
    // the exit status 255.
    let input_error: Arc<Mutex<Option<io::Error>>> = Arc::default();
    let seen_error = input_error.clone();
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
        runner
            .total
            .store(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
    let skipping = skip.len();
    let jobs = jobs
        .map_while(move |r| match r {
            Ok(v) => Some(v),
            Err(e) => {
                *seen_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                None
            }
        })
        .zip(1u64..)
        .filter(move |(_, seq)| !skip.contains(seq))
        .zip(0u64..)
        .map(|(((values, stdin), seq), order)| (values, stdin, seq, order));

    if args.dry_run {
        let skipped = dry_run(
            jobs.map(|(values, _, seq, _)| (values, seq)),
            &runner,
            slots,
        )?;
        return Ok(finish_status(skipped.min(101) as i32, &input_error));
    }

    let mut joblog = match &log_target {
        Some(target) => Some(joblog::open(target, resume.is_some())?),
        None => None,
    };
    let bar = args
        .bar
        .then(|| progress::bar(known_total.map(|n| n.saturating_sub(skipping))));

    let interrupts = interrupt::watch(runner.clone())?;
    let pool = parpool::ThreadPool::builder()
        .workers(slots)
        .name("parpool-run")
        .build()?;
    let slots_taken = Arc::new(slots::Slots::new(slots, jobs_file));
    let job_runner = runner.clone();
    let tally = Arc::new(Mutex::new(Tally {
        total: known_total.map(|n| n.saturating_sub(skipping) as u64),
        ..Tally::default()
    }));
    let job_tally = tally.clone();
    let halt = args.halt;
    let status = (args.progress || args.eta).then(|| {
        let total = known_total.map(|n| n.saturating_sub(skipping) as u64);
        progress::Status::start(&machine_list, total, args.eta)
    });
    let job_status = status.as_ref().map(|(s, _)| s.clone());
    let run_one =
        move |(values, stdin, seq, order): (Vec<OsString>, Option<pipepart::Feed>, u64, u64)| {
            let (slot, perl) =
                slots_taken.take(order, |slot| job_runner.evaluate(seq, &values, slot));
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
    let mut report = |mut outcome: Outcome| -> anyhow::Result<()> {
        if args.cat || args.fifo {
            // The job's `--cat` file or `--fifo` is gone with the job.
            for file in &outcome.values {
                let _ = std::fs::remove_file(file);
            }
        }
        if runner.output_closed.load(Ordering::SeqCst) {
            output_closed(&runner);
        }
        // A job the interrupt killed is neither printed nor logged, as in
        // GNU parallel.
        let killed_by_interrupt = runner.interrupted.load(Ordering::SeqCst) && outcome.exit == -1;
        if outcome.skipped || killed_by_interrupt {
            return Ok(());
        }
        if let Some(results) = results.as_mut() {
            results.save(&mut outcome).with_context(|| {
                format!(
                    "cannot write --results {}",
                    args.results
                        .as_deref()
                        .unwrap_or(std::path::Path::new(""))
                        .display()
                )
            })?;
        }
        let print = |o: &mut Outcome| match &args.results {
            // As GNU parallel's --results: the output goes to the files.
            Some(_) => Ok(()),
            None => print_output(o, args.verbose),
        };
        let printed = match &bar {
            Some(bar) => {
                let printed = bar.suspend(|| print(&mut outcome));
                bar.inc(1);
                printed
            }
            None => print(&mut outcome),
        };
        if let Err(e) = printed {
            if e.kind() == io::ErrorKind::BrokenPipe {
                output_closed(&runner);
            }
            return Err(e.into());
        }
        if let Some(log) = joblog.as_mut() {
            joblog::write(log.as_mut(), &outcome)?;
        }
        Ok(())
    };
    // Room for finished jobs to wait for a slower earlier one (`-k`)
    // while the slots stay busy; held output is bounded by it. `--pipe`
    // blocks are read only as slots come free: each may be large.
    let window = if args.pipe { slots + 1 } else { slots * 16 };
    // A fatal error stops everything: no job still queued may run.
    let mut report = |r: Result<Outcome, parpool::JobError>| -> anyhow::Result<()> {
        let done = r.map_err(anyhow::Error::from).and_then(&mut report);
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
    if let Some(bar) = bar {
        bar.finish();
    }
    let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    if args.cat || args.fifo {
        // Blocks written for jobs that never ran (a halt, an interrupt).
        pipe::remove_cat_files();
    }
    let status = if runner.interrupted.load(Ordering::SeqCst) {
        // Stopped by an interrupt, as GNU parallel reports it.
        255
    } else {
        tally.status(args.halt)
    };
    Ok(finish_status(status, &input_error))
}

/// parpool's stdout was closed (its reader went away): like GNU parallel,
/// which dies of `SIGPIPE`, stop every job and die of it too.
fn output_closed(runner: &exec::Runner) -> ! {
    runner.kill_all();
    let _ = signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGPIPE);
    std::process::exit(141)
}

fn finish_status(status: i32, input_error: &Mutex<Option<io::Error>>) -> i32 {
    match input_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => {
            eprintln!("parpool: {e}");
            255
        }
        None => status,
    }
}

/// Jobs done and failed, and what `--halt` made of them.
#[derive(Debug, Default)]
struct Tally {
    done: u64,
    failed: u64,
    /// How many jobs there are, when known (for `--halt ...=P%`).
    total: Option<u64>,
    /// The exit status `--halt` decided, once it triggered.
    halted: Option<i32>,
}

impl Tally {
    /// Counts a finished job and applies `--halt`.
    fn count(&mut self, o: &Outcome, halt: Option<Halt>, runner: &Runner) {
        if o.skipped || (self.halted.is_some() && runner.kill.load(Ordering::Acquire)) {
            // Never ran, or killed by the halt: not counted.
            return;
        }
        self.done += 1;
        if o.failed() {
            self.failed += 1;
        }
        let Some(halt) = halt else { return };
        if self.halted.is_some() || !self.reached(halt) {
            return;
        }
        self.halted = Some(match (halt.on, halt.threshold) {
            (On::Success, _) => 0,
            (On::Fail, Threshold::Percent(_)) => self.percent_failed(),
            // The deciding job's exit status, as GNU parallel's.
            (On::Fail, Threshold::Count(1)) | (On::Done, _) => {
                if o.signal != 0 {
                    128 + o.signal
                } else {
                    o.exit.clamp(0, 255)
                }
            }
            (On::Fail, Threshold::Count(_)) => self.failed.min(101) as i32,
        });
        // GNU parallel's words, which scripts look for.
        let what = match halt.on {
            On::Done => "finished",
            _ if o.failed() => "failed",
            _ => "succeeded",
        };
        eprintln!(
            "parpool: This job {what}:\n{}",
            String::from_utf8_lossy(&o.command)
        );
        runner.stop.store(true, Ordering::SeqCst);
        if halt.now {
            runner.kill_all();
        }
    }

    fn reached(&self, halt: Halt) -> bool {
        let hits = match halt.on {
            On::Fail => self.failed,
            On::Success => self.done - self.failed,
            On::Done => self.done,
        };
        match halt.threshold {
            Threshold::Count(n) => hits >= n,
            // Of all the jobs when their number is known, as GNU parallel
            // judges it; else of those done so far, once 3 are.
            Threshold::Percent(p) => match self.total {
                Some(total) => hits as f64 * 100.0 >= p * total.max(1) as f64,
                None => self.done >= 3 && hits as f64 * 100.0 >= p * self.done as f64,
            },
        }
    }

    /// Failed jobs as a percentage (rounded up) of all of them.
    fn percent_failed(&self) -> i32 {
        let of = self.total.unwrap_or(self.done).max(1);
        (self.failed * 100).div_ceil(of).min(100) as i32
    }

    /// The run's exit status.
    fn status(&self, halt: Option<Halt>) -> i32 {
        if let Some(status) = self.halted {
            return status;
        }
        match halt {
            // With a percentage, GNU parallel exits with the percentage.
            Some(Halt {
                on: On::Fail,
                threshold: Threshold::Percent(_),
                ..
            }) => self.percent_failed(),
            _ => self.failed.min(101) as i32,
        }
    }
}

/// Writes a job's held output, each stream in one piece (after its
/// command, with `-v`).
fn print_output(o: &mut Outcome, verbose: bool) -> io::Result<()> {
    let prefix = o.tag.as_deref();
    let mut stdout = io::stdout().lock();
    if verbose {
        stdout.write_all(&o.command)?;
        stdout.write_all(b"\n")?;
    }
    o.stdout.write_to(&mut stdout, prefix)?;
    drop(stdout);
    o.stderr.write_to(&mut io::stderr().lock(), prefix)
}

mod interrupt {
    //! SIGINT and SIGTERM, as GNU parallel takes them: start no new job,
    //! kill the running ones (their output and joblog lines are dropped)
    //! and exit with 255. SIGHUP is caught and changes nothing, as in GNU
    //! parallel: the jobs go on (a closed terminal does not orphan them).

    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::{Handle, Signals};

    use super::exec::Runner;

    /// Watches for interrupts until dropped.
    pub(crate) struct Watch {
        handle: Handle,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            self.handle.close();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    pub(crate) fn watch(runner: Arc<Runner>) -> std::io::Result<Watch> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("parpool-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if signal == SIGHUP {
                        continue;
                    }
                    runner.interrupted.store(true, Ordering::SeqCst);
                    runner.kill_all();
                }
            })?;
        Ok(Watch {
            handle,
            thread: Some(thread),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_parses() {
        assert_eq!(
            parse_halt("now,fail=1").unwrap(),
            Halt {
                now: true,
                on: On::Fail,
                threshold: Threshold::Count(1)
            }
        );
        assert_eq!(parse_halt("2").unwrap(), parse_halt("now,fail=1").unwrap());
        assert_eq!(parse_halt("1").unwrap(), parse_halt("soon,fail=1").unwrap());
        assert_eq!(parse_halt("soon,done=3").unwrap().on, On::Done);
        assert!(parse_halt("soon,success=50%").is_ok());
        assert!(parse_halt("soon,fail=0%").is_err());
        assert!(parse_halt("later,fail=1").is_err());
        assert!(parse_halt("now,fail=0").is_err());
    }

    #[test]
    fn the_rest_splits_into_command_and_sources() {
        let words: Vec<OsString> = ["echo", "{}", ":::", "a", "b", ":::+", "1", "::::", "f"]
            .iter()
            .map(OsString::from)
            .collect();
        let (cmd, sources) = split_rest(words).unwrap();
        assert_eq!(cmd, ["echo", "{}"]);
        assert_eq!(sources.len(), 3);
        assert!(sources[1].linked);
        assert_eq!(sources[2].source, Source::File("f".into()));
    }
}
