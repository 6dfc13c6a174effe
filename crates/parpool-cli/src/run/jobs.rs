//! From the command line to each job's values and standard input: the
//! command and its input sources, `--header`'s names, `-r`, grouping and
//! the line-length limit, `--shuf`, and `--pipe`/`--pipepart`'s blocks.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use anyhow::{Context, bail};

use super::exec::Runner;
use super::input::{self, Linked, Source, Split};
use super::options::{self, RunArgs};
use super::{pack, pipe, pipepart, template};

/// Splits the words after the options into the command and the sources.
pub(crate) fn split_rest(rest: Vec<OsString>) -> anyhow::Result<(Vec<OsString>, Vec<Linked>)> {
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
pub(crate) fn name_columns(command: Vec<OsString>, names: &[String]) -> Vec<OsString> {
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

pub(crate) fn replace_all(text: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
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

/// All of `jobs`, in a random order (Fisher–Yates, seeded from the
/// system's randomness through std's hasher keys).
pub(crate) fn shuffled(jobs: input::Jobs) -> anyhow::Result<input::Jobs> {
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
pub(crate) fn pipe_cut(
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

/// The command's words, the inputs' column names, the jobs' values, how
/// many values a job's `{}` stands for, and how `--pipe` cuts its input.
pub(crate) struct Inputs {
    pub(crate) command: Vec<OsString>,
    pub(crate) names: input::Names,
    pub(crate) jobs: input::Jobs,
    pub(crate) n_sources: usize,
    /// Values per record with several inputs per job (perl's `@arg`
    /// grows a record at a time); 0: the job's values are one record.
    pub(crate) record: usize,
    pub(crate) pipe_cut: Option<pipe::Cut>,
}

/// Reads the command line's rest (`rest`: the command and its inputs) into
/// the inputs' values: `-a` files, columns, `--header`, `-r` (grouping
/// and `--shuf` are [`packed`]'s).
pub(crate) fn inputs(args: &RunArgs, rest: Vec<OsString>) -> anyhow::Result<Inputs> {
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
pub(crate) const CHECKED_FIRST: usize = 100_000;

/// The jobs' values: inputs grouped as `-N`/`-X`/… say, each command
/// line checked against the length limit (all of them before any job
/// runs where the input is known and not huge), `--shuf`fled.
pub(crate) fn packed(
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

/// A job's values, and its standard input (`--pipe`).
pub(crate) type Item = (input::Values, Option<pipepart::Feed>);

/// `--pipepart`'s file, taken from `-a FILE` or `:::: FILE` (one file).
pub(crate) fn pipepart_file(args: &mut RunArgs) -> anyhow::Result<std::path::PathBuf> {
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
pub(crate) fn job_items(
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
            // As GNU parallel: 10 parts a job slot unless --block says;
            // with --roundrobin, one.
            let block = match (args.block_given, args.roundrobin) {
                (true, _) => cut.block as u64,
                (false, false) => 1 + size / slots.max(1) as u64 / 10,
                (false, true) => 1 + size / slots.max(1) as u64,
            };
            Box::new(pipepart::parts(file, block, &cut)?.into_iter().map(Ok))
        }
        None => {
            // Read in bigger pieces where stdin is a pipe.
            let _ = rustix::pipe::fcntl_setpipe_size(io::stdin(), 1 << 20);
            let blocks = pipe::Blocks::new(io::stdin(), cut);
            if args.roundrobin {
                // One job a slot, the blocks dealt to them in turn.
                Box::new(
                    pipepart::RoundRobin::deal(blocks, slots)?
                        .into_iter()
                        .map(Ok),
                )
            } else {
                Box::new(blocks.map(|b| b.map(Feed::Bytes)))
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
