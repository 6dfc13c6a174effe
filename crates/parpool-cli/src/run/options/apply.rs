//! What each option does to [`RunArgs`].

use super::table::Spec;
use super::values;
use super::{Group, Parsed, RunArgs, UsageError};

/// What `--number-of-…` counts.
#[derive(Debug, Clone, Copy)]
enum CpuCount {
    Cores,
    Threads,
    Sockets,
}

/// The machine's CPU sockets, physical cores or threads, read from
/// `/proc/cpuinfo` as GNU parallel reads it (threads where it says
/// nothing of cores: a virtual machine's CPUs count as cores).
fn cpu_count(what: CpuCount) -> usize {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut sockets = std::collections::HashSet::new();
    let mut cores = std::collections::HashSet::new();
    let mut socket = None;
    for line in info.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "physical id" => {
                socket = Some(value.trim().to_owned());
                sockets.insert(value.trim().to_owned());
            }
            "core id" => {
                cores.insert((socket.clone(), value.trim().to_owned()));
            }
            _ => {}
        }
    }
    match what {
        CpuCount::Threads => threads,
        CpuCount::Cores if cores.is_empty() => threads,
        CpuCount::Cores => cores.len(),
        CpuCount::Sockets => sockets.len().max(1),
    }
}

/// Applies one option; `Some` when it answers by itself (help, version).
pub(super) fn apply(
    args: &mut RunArgs,
    spec: &Spec,
    value: Option<String>,
) -> Result<Option<Parsed>, UsageError> {
    let name = spec.long.first().copied().unwrap_or_default();
    let short = spec.short.first().copied();
    let bad = |why: String| UsageError(format!("{}: {why}", spec.name()));
    let value = value.unwrap_or_default();
    match (short, name) {
        (Some('j') | Some('P'), _) => args.jobs = Some(value),
        (Some('k'), _) => args.keep_order = true,
        (Some('u'), _) => args.ungroup = true,
        (_, "line-buffer") => args.line_buffer = true,
        (_, "delay") => args.delay = Some(values::parse_duration(&value).map_err(bad)?),
        (_, "bar") => args.bar = true,
        (_, "tag") => args.tag = true,
        // Commands always run through the shell (or as if they did).
        (_, "shell") => {}
        (Some('q'), _) => args.quote = true,
        (_, "timeout") => {
            args.timeout = Some(match value.strip_suffix('%') {
                Some(p) => crate::run::exec::Timeout::Percent(
                    p.parse()
                        .ok()
                        .filter(|p: &f64| *p > 0.0)
                        .ok_or_else(|| bad(format!("`{value}` is not a percentage")))?,
                ),
                None => {
                    crate::run::exec::Timeout::After(values::parse_duration(&value).map_err(bad)?)
                }
            });
        }
        (_, "retries") => {
            args.retries = value
                .parse()
                .map_err(|_| bad(format!("`{value}` is not a number")))?;
        }
        (_, "halt") => args.halt = Some(crate::run::parse_halt(&value).map_err(bad)?),
        (_, "joblog") => args.joblog = Some(value.into()),
        (_, "resume") => args.resume = true,
        (_, "resume-failed") => args.resume_failed = true,
        (_, "dry-run") => args.dry_run = true,
        (Some('0'), _) => args.null = true,
        (Some('C'), _) => args.colsep = Some(value),
        // Accepted and ignored, as scripts written for GNU parallel pass it.
        (_, "will-cite") => {}
        (_, "group") => {
            args.ungroup = false;
            args.line_buffer = false;
        }
        (Some('r'), _) => args.no_run_if_empty = true,
        (_, "shuf") => args.shuf = true,
        (_, "cat") => args.cat = true,
        (_, "tmpdir") => args.tmpdir = Some(value.into()),
        (_, "link") => args.link = true,
        (_, "nice") => {
            let n: i32 = value
                .trim()
                .parse()
                .map_err(|_| bad(format!("`{value}` is not a niceness (-20 to 19)")))?;
            args.nice = Some(n.clamp(-20, 19));
        }
        (Some('a'), _) => args.arg_files.push(value.into()),
        (Some('d'), _) => args.delimiter = Some(values::parse_delimiter(&value).map_err(bad)?),
        (_, "trim") => {
            args.trim = match value.as_str() {
                "n" => (false, false),
                "l" => (true, false),
                "r" => (false, true),
                "lr" | "rl" => (true, true),
                _ => return Err(bad(format!("`{value}`: expected n, l, r or lr"))),
            };
        }
        (_, "header") => {
            args.header = true;
            args.header_value = Some(value);
        }
        (Some('I'), _) => {
            if value.is_empty() {
                return Err(bad("the replacement string may not be empty".into()));
            }
            args.replace = Some(value);
        }
        (Some('v'), _) => args.verbose = true,
        (_, "tagstring") => args.tagstring = Some(value),
        // Local jobs inherit the whole environment; remote ones get these.
        (_, "env") => {
            if !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                args.env.push(value);
            } else {
                return Err(bad(format!("`{value}` is not a variable name")));
            }
        }
        (Some(c @ ('N' | 'n' | 'L')), _) => {
            let size: usize = value
                .parse()
                .map_err(|_| bad(format!("`{value}` is not a number")))?;
            // `-X -n2` keeps -X's repetition, in either order.
            let context = c == 'N' || args.group.is_some_and(|g| g.context);
            args.group = Some(Group {
                size: Some(size),
                context,
                spread: args.group.is_some_and(|g| g.spread),
            });
        }
        (_, "pipe") => args.pipe = true,
        (_, "plus") => args.plus = true,
        (_, "results") => args.results = Some(value.into()),
        // Other machines, `--pipe`'s cutting, grouping, help.
        _ => return apply_more(args, spec, value),
    }
    Ok(None)
}

/// The rest of [`apply`]: other machines, `--pipe`'s cutting, `-X`/`-m`,
/// the CPU counts, help and version.
fn apply_more(
    args: &mut RunArgs,
    spec: &Spec,
    value: String,
) -> Result<Option<Parsed>, UsageError> {
    let name = spec.long.first().copied().unwrap_or_default();
    let bad = |why: String| UsageError(format!("{}: {why}", spec.name()));
    match (spec.short.first().copied(), name) {
        (Some('S'), _) => args.sshlogins.push(value),
        (_, "sshloginfile") => {
            let lines =
                crate::run::remote::read_login_file(std::path::Path::new(&value)).map_err(bad)?;
            args.sshlogins.extend(lines);
        }
        (_, "ssh") => args.ssh = Some(value),
        (_, "transferfile") => args.transfer.push(value),
        (_, "transfer") => args.transfer.push("{}".into()),
        (_, "return") => args.returns.push(value),
        (_, "cleanup") => args.cleanup = true,
        (_, "trc") => {
            args.transfer.push("{}".into());
            args.returns.push(value);
            args.cleanup = true;
        }
        (_, "block") => {
            args.cut.block = crate::run::pipe::parse_size(&value).map_err(bad)?;
            args.block_given = true;
        }
        (_, "recstart") => {
            args.cut.recstart = crate::run::pipe::unescape(&value);
            // As GNU parallel: --recstart alone means records end anywhere.
            if !args.recend_given {
                args.cut.recend.clear();
            }
        }
        (_, "recend") => {
            args.cut.recend = crate::run::pipe::unescape(&value);
            args.recend_given = true;
        }
        (Some(c @ ('X' | 'm')), _) => {
            let size = args.group.and_then(|g| g.size);
            args.group = Some(Group {
                size,
                context: c == 'X',
                spread: true,
            });
        }
        (_, "number-of-cores" | "number-of-cpus") => {
            return Ok(Some(Parsed::Say(cpu_count(CpuCount::Cores).to_string())));
        }
        (_, "number-of-threads") => {
            return Ok(Some(Parsed::Say(cpu_count(CpuCount::Threads).to_string())));
        }
        (_, "number-of-sockets") => {
            return Ok(Some(Parsed::Say(cpu_count(CpuCount::Sockets).to_string())));
        }
        (Some('h'), _) => return Ok(Some(Parsed::Help)),
        (Some('V'), _) => return Ok(Some(Parsed::Version)),
        _ => return apply_rest(args, spec, value),
    }
    Ok(None)
}

/// The rest of [`apply_more`]: `--progress`, the machine's limits,
/// `--fifo`, `--pipepart`, the semaphore, `-s` and `--rpl`.
fn apply_rest(
    args: &mut RunArgs,
    spec: &Spec,
    value: String,
) -> Result<Option<Parsed>, UsageError> {
    let name = spec.long.first().copied().unwrap_or_default();
    let bad = |why: String| UsageError(format!("{}: {why}", spec.name()));
    match (spec.short.first().copied(), name) {
        (_, "progress") => args.progress = true,
        (_, "memfree") => {
            args.memfree = Some(crate::run::limits::parse_bytes(&value).map_err(bad)?)
        }
        (_, "load") => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            args.load = Some(crate::run::limits::parse_load(&value, cores).map_err(bad)?);
        }
        (_, "noswap") => args.noswap = true,
        (_, "eta") => args.eta = true,
        (_, "fifo") => args.fifo = true,
        (_, "semaphore") => args.semaphore = true,
        (_, "id") => args.sem_id = Some(value),
        (_, "fg") => args.sem_fg = true,
        (_, "bg") => args.sem_fg = false,
        (_, "wait") => args.sem_wait = true,
        (_, "sqlmaster") => args.sql_master = Some(value),
        (_, "sqlworker") => args.sql_worker = Some(value),
        (_, "sqlandworker") => {
            args.sql_master = Some(value.clone());
            args.sql_worker = Some(value);
        }
        (_, "semaphoretimeout") => {
            args.sem_timeout = Some(
                value
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("`{value}` is not a number of seconds")))?,
            );
        }
        (_, "termseq") => {
            args.termseq = Some(crate::run::exec::parse_termseq(&value).map_err(bad)?);
        }
        (_, "compress") => args.compress = true,
        (_, "compress-program") => {
            args.compress = true;
            args.compress_program = Some(value);
        }
        (_, "decompress-program") => args.decompress_program = Some(value),
        (_, "onall") => args.onall = true,
        (_, "nonall") => {
            args.onall = true;
            args.nonall = true;
        }
        (_, "basefile") => args.basefiles.push(value),
        (_, "roundrobin") => {
            args.roundrobin = true;
            args.pipe = true;
        }
        (_, "pipepart") => {
            args.pipepart = true;
            args.pipe = true;
        }
        (Some('s'), _) => {
            args.max_chars = Some(
                value
                    .parse()
                    .ok()
                    .filter(|n: &usize| *n > 0)
                    .ok_or_else(|| bad(format!("`{value}` is not a positive number")))?,
            );
        }
        (_, "rpl") => {
            crate::run::rpl::Rpl::parse(&value).map_err(bad)?;
            args.rpl.push(value);
        }
        _ => return Err(UsageError(format!("option {} is not handled", spec.name()))),
    }
    Ok(None)
}
