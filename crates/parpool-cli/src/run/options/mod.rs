//! `parpool run`'s options: the table of them ([`table`]), what each
//! does to [`RunArgs`] (`apply`), their values' parsers ([`values`]) and
//! the help made from the table (`help`). They are read as GNU parallel reads its own (Perl's
//! `Getopt::Long` with bundling and `require_order`):
//!
//! * short options bundle (`-kj1`), and a short option's value may be
//!   attached (`-j4`) or the next word (`-j 4`);
//! * long options take `--opt=value` or `--opt value`, and may be
//!   shortened to any unambiguous prefix (`--keep` for `--keep-order`);
//! * options end at the first word that is not one (the command, or an
//!   input separator such as `:::`), or after `--`;
//! * an unknown option is a usage error: exit status 255, nothing runs.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

mod apply;
mod help;
mod table;
pub(crate) mod values;

pub(crate) use help::{command, help_for_here};
use table::{SPECS, Spec, Takes};

/// Options of `parpool run`, and the words after them: the command, then
/// the inputs.
#[derive(Debug, Default)]
pub(crate) struct RunArgs {
    pub(crate) jobs: Option<String>,
    pub(crate) keep_order: bool,
    pub(crate) ungroup: bool,
    pub(crate) line_buffer: bool,
    pub(crate) delay: Option<Duration>,
    pub(crate) bar: bool,
    pub(crate) tag: bool,
    pub(crate) quote: bool,
    pub(crate) timeout: Option<crate::run::exec::Timeout>,
    pub(crate) retries: u32,
    pub(crate) halt: Option<crate::run::Halt>,
    pub(crate) joblog: Option<std::path::PathBuf>,
    pub(crate) resume: bool,
    pub(crate) resume_failed: bool,
    pub(crate) dry_run: bool,
    pub(crate) null: bool,
    pub(crate) colsep: Option<String>,
    /// `-a FILE`: input files, as `:::: FILE` before the other sources.
    pub(crate) arg_files: Vec<std::path::PathBuf>,
    /// `-d DELIM`: the input delimiter (one byte, after `\n`-style escapes).
    pub(crate) delimiter: Option<u8>,
    /// `--trim`: strip spaces and tabs on the left, the right, or both.
    pub(crate) trim: (bool, bool),
    /// `--header`: the first input line (or argument) names its columns.
    pub(crate) header: bool,
    /// `--header`'s value (`:`, or a regular expression for `--pipe`).
    pub(crate) header_value: Option<String>,
    /// `-r`: skip inputs that are empty or only blanks.
    pub(crate) no_run_if_empty: bool,
    /// `--nice N`: jobs run at niceness N.
    pub(crate) nice: Option<i32>,
    /// `--shuf`: jobs run in a random order.
    pub(crate) shuf: bool,
    /// `--link`: every input source linked, the shorter ones recycled.
    pub(crate) link: bool,
    /// `--tmpdir DIR`: the jobs' `$TMPDIR`, and where output is spooled.
    pub(crate) tmpdir: Option<std::path::PathBuf>,
    /// `--cat`: `--pipe`'s block in a file named by `{}`, not on stdin.
    pub(crate) cat: bool,
    /// `--fifo`: `--pipe`'s block through a named pipe named by `{}`.
    pub(crate) fifo: bool,
    /// `--semaphore` (`sem`): wait for a slot of semaphore `sem_id`, run
    /// the command holding it (in the background unless `--fg`), or with
    /// `--wait` wait for the semaphore's commands; `--st` gives up (below
    /// 0) or goes ahead (above 0) after so many seconds.
    pub(crate) semaphore: bool,
    /// `--sqlmaster DBURL`: the jobs written to an SQLite table, not run
    /// (`--wait`: until workers have run them); `--sqlworker DBURL`: the
    /// jobs taken from it; `--sqlandworker`: both.
    pub(crate) sql_master: Option<String>,
    pub(crate) sql_worker: Option<String>,
    pub(crate) sem_id: Option<String>,
    pub(crate) sem_fg: bool,
    pub(crate) sem_wait: bool,
    pub(crate) sem_timeout: Option<f64>,
    /// `--pipepart`: `--pipe` on the parts of a file (`-a FILE`, `::::
    /// FILE`), which `pipepart_file` names once the command line is read.
    pub(crate) pipepart: bool,
    pub(crate) pipepart_file: Option<std::path::PathBuf>,
    /// `--termseq`: how jobs are stopped (a timeout, a halt, an
    /// interrupt).
    pub(crate) termseq: Option<crate::run::exec::TermSeq>,
    /// `--compress`: spooled output compressed (`--compress-program`,
    /// `--decompress-program`).
    pub(crate) compress: bool,
    pub(crate) compress_program: Option<String>,
    pub(crate) decompress_program: Option<String>,
    /// `--onall` (every job on every machine), `--nonall` (the command
    /// once on each, no input); `--basefile` files sent to each first.
    pub(crate) onall: bool,
    pub(crate) nonall: bool,
    pub(crate) basefiles: Vec<String>,
    /// `--roundrobin`: one job a slot, `--pipe`'s blocks dealt to them in
    /// turn.
    pub(crate) roundrobin: bool,
    /// `--block` was given (else `--pipepart` makes 10 parts a slot).
    pub(crate) block_given: bool,
    /// `-I STR`: STR stands for the input instead of `{}`.
    pub(crate) replace: Option<String>,
    /// `-v`: print each job's command before its output.
    pub(crate) verbose: bool,
    /// `--tagstring STR`: tag output lines with STR, filled per job.
    pub(crate) tagstring: Option<String>,
    /// `-N`, `-n`, `-L`, `-X`, `-m`: several inputs per job.
    pub(crate) group: Option<Group>,
    /// `--pipe`: standard input cut into blocks, one per job's stdin.
    pub(crate) pipe: bool,
    /// `--plus`: the extra replacement strings.
    pub(crate) plus: bool,
    /// `--rpl 'TAG PERL'`: replacement strings defined in perl.
    pub(crate) rpl: Vec<String>,
    /// `--memfree`, `--load`, `--noswap`: when this machine may start a
    /// job.
    pub(crate) memfree: Option<u64>,
    pub(crate) load: Option<f64>,
    pub(crate) noswap: bool,
    /// `--progress`, `--eta`: GNU parallel's status line on stderr.
    pub(crate) progress: bool,
    pub(crate) eta: bool,
    /// `-s N`: the longest command line a job may have.
    pub(crate) max_chars: Option<usize>,
    /// `--results DIR`: each job's output in files under DIR.
    pub(crate) results: Option<std::path::PathBuf>,
    /// `-S`, `--sshloginfile`: the machines to run on.
    pub(crate) sshlogins: Vec<String>,
    /// `--ssh`: the command that reaches them.
    pub(crate) ssh: Option<String>,
    /// `--transferfile`: files sent to a machine before each job there.
    pub(crate) transfer: Vec<String>,
    /// `--return`: files fetched back after each job.
    pub(crate) returns: Vec<String>,
    /// `--cleanup`: both removed from the machine afterwards.
    pub(crate) cleanup: bool,
    /// `--env VAR`: set on other machines as here.
    pub(crate) env: Vec<String>,
    /// How `--pipe` cuts (`--block`, `--recstart`, `--recend`).
    pub(crate) cut: crate::run::pipe::Cut,
    /// `--recend` was given (else `--recstart` alone clears it).
    pub(crate) recend_given: bool,
    /// The command, then the inputs.
    pub(crate) rest: Vec<OsString>,
}

/// Several inputs per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Group {
    /// Inputs per job; `None`: spread them over the job slots (`-X`, `-m`).
    pub(crate) size: Option<usize>,
    /// A word holding `{}` is repeated for each input (`-N`, `-X`).
    pub(crate) context: bool,
    /// `-X`, `-m`: the inputs left at the end are spread over the slots.
    pub(crate) spread: bool,
}

/// What the words ask for.
#[derive(Debug)]
pub(crate) enum Parsed {
    Run(Box<RunArgs>),
    Help,
    Version,
    /// Print this and exit (`--number-of-cores`, …).
    Say(String),
}

/// A usage error: what was wrong, for one line on stderr.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UsageError(pub(crate) String);

/// Finds a long option by name or unambiguous prefix.
fn find_long(name: &str) -> Result<&'static Spec, UsageError> {
    if let Some(spec) = SPECS.iter().find(|s| s.long.contains(&name)) {
        return Ok(spec);
    }
    let matches: Vec<&Spec> = SPECS
        .iter()
        .filter(|s| s.long.iter().any(|l| l.starts_with(name)))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(UsageError(format!("unknown option: --{name}"))),
        several => Err(UsageError(format!(
            "option --{name} is ambiguous ({})",
            several
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn find_short(c: char) -> Result<&'static Spec, UsageError> {
    SPECS
        .iter()
        .find(|s| s.short.contains(&c))
        .ok_or_else(|| UsageError(format!("unknown option: -{c}")))
}

/// GNU parallel's default options, to go before the command line's: the
/// lines of `$PARALLEL_HOME/config` (`~/.parallel/config`; `#` starts a
/// comment line), then `$PARALLEL`; each split at spaces, a backslash
/// taking the next character as it is.
pub(crate) fn default_options() -> Result<Vec<OsString>, String> {
    let mut words = Vec::new();
    let home = std::env::var_os("PARALLEL_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".parallel")));
    if let Some(path) = home.map(|h| h.join("config"))
        && path.exists()
    {
        let text = std::fs::read(&path)
            .map_err(|e| format!("cannot read the default options in {}: {e}", path.display()))?;
        for line in text.split(|&b| b == b'\n') {
            if line.first() != Some(&b'#') {
                words.extend(split_options(line));
            }
        }
    }
    if let Some(env) = std::env::var_os("PARALLEL") {
        words.extend(split_options(env.as_bytes()));
    }
    Ok(words)
}

/// Splits default options at unescaped spaces and tabs; a backslash takes
/// the next character as it is.
fn split_options(text: &[u8]) -> Vec<OsString> {
    use std::os::unix::ffi::OsStringExt;
    let mut words = Vec::new();
    let mut word: Option<Vec<u8>> = None;
    let mut bytes = text.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b' ' | b'\t' | b'\r' => {
                if let Some(w) = word.take() {
                    words.push(OsString::from_vec(w));
                }
            }
            b'\\' => {
                let next = bytes.next().unwrap_or(b'\\');
                word.get_or_insert_with(Vec::new).push(next);
            }
            _ => word.get_or_insert_with(Vec::new).push(b),
        }
    }
    if let Some(w) = word {
        words.push(OsString::from_vec(w));
    }
    words
}

/// Reads `words` (what follows `parpool run`).
pub(crate) fn parse(words: Vec<OsString>) -> Result<Parsed, UsageError> {
    let mut args = RunArgs {
        retries: 1,
        ..RunArgs::default()
    };
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let bytes = word.as_bytes();
        if bytes == b"--" {
            break;
        }
        if let Some(long) = bytes.strip_prefix(b"--") {
            let text = String::from_utf8_lossy(long).into_owned();
            let (name, attached) = match text.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (text, None),
            };
            let spec = find_long(&name)?;
            let value = match (spec.takes, attached) {
                (Takes::Nothing, None) => None,
                (Takes::Nothing, Some(_)) => {
                    return Err(UsageError(format!("option {} takes no value", spec.name())));
                }
                (Takes::Value(_), Some(v)) => Some(v),
                (Takes::Value(_), None) => Some(next_value(&mut words, spec)?),
            };
            if let Some(done) = apply::apply(&mut args, spec, value)? {
                return Ok(done);
            }
            continue;
        }
        // `-` alone, and anything not starting with `-`, begins the command.
        if bytes.len() < 2 || bytes[0] != b'-' {
            args.rest.push(word);
            break;
        }
        let bundle = String::from_utf8_lossy(&bytes[1..]).into_owned();
        for (at, c) in bundle.char_indices() {
            let spec = find_short(c)?;
            let value = match spec.takes {
                Takes::Nothing => None,
                Takes::Value(_) => {
                    let attached = &bundle[at + c.len_utf8()..];
                    if attached.is_empty() {
                        Some(next_value(&mut words, spec)?)
                    } else {
                        Some(attached.to_owned())
                    }
                }
            };
            let took_rest = value.is_some();
            if let Some(done) = apply::apply(&mut args, spec, value)? {
                return Ok(done);
            }
            if took_rest {
                break;
            }
        }
    }
    args.rest.extend(words);
    // `--wait` waits for the table's jobs with `--sqlmaster`, else for
    // the semaphore's.
    if args.sem_wait && args.sql_master.is_none() {
        args.semaphore = true;
    }
    if args.semaphore && (args.sql_master.is_some() || args.sql_worker.is_some()) {
        return Err(UsageError(
            "--semaphore cannot be used with --sqlmaster or --sqlworker".into(),
        ));
    }
    if args.resume && args.resume_failed {
        return Err(UsageError(
            "--resume and --resume-failed cannot be used together".into(),
        ));
    }
    if (args.resume || args.resume_failed) && args.joblog.is_none() {
        return Err(UsageError(
            "--resume and --resume-failed need --joblog FILE".into(),
        ));
    }
    if args.ungroup && args.line_buffer {
        return Err(UsageError(
            "--ungroup and --line-buffer cannot be used together".into(),
        ));
    }
    Ok(Parsed::Run(Box::new(args)))
}

fn next_value(
    words: &mut impl Iterator<Item = OsString>,
    spec: &Spec,
) -> Result<String, UsageError> {
    let word = words
        .next()
        .ok_or_else(|| UsageError(format!("option {} needs a value", spec.name())))?;
    word.into_string()
        .map_err(|_| UsageError(format!("the value of {} is not UTF-8", spec.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    fn run(s: &[&str]) -> RunArgs {
        match parse(words(s)).unwrap() {
            Parsed::Run(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_options_bundle_and_take_attached_values() {
        let a = run(&["-kj1", "echo", ":::", "a"]);
        assert!(a.keep_order);
        assert_eq!(a.jobs.as_deref(), Some("1"));
        assert_eq!(a.rest, words(&["echo", ":::", "a"]));
        assert_eq!(run(&["-j4", "true"]).jobs.as_deref(), Some("4"));
        assert_eq!(run(&["-j", "0", "true"]).jobs.as_deref(), Some("0"));
        assert_eq!(run(&["-P", "3", "true"]).jobs.as_deref(), Some("3"));
        assert!(run(&["-0k", "true"]).null);
    }

    #[test]
    fn long_options_take_equals_or_the_next_word_and_prefixes() {
        assert_eq!(run(&["--jobs=2", "true"]).jobs.as_deref(), Some("2"));
        assert_eq!(run(&["--jobs", "2", "true"]).jobs.as_deref(), Some("2"));
        assert!(run(&["--keep", "true"]).keep_order);
        assert!(run(&["--lb", "true"]).line_buffer);
        assert_eq!(run(&["--max-procs=5", "true"]).jobs.as_deref(), Some("5"));
        assert!(
            matches!(parse(words(&["--re", "x"])), Err(UsageError(m)) if m.contains("ambiguous"))
        );
    }

    #[test]
    fn options_end_at_the_command_or_double_dash() {
        let a = run(&["-k", "echo", "-j", "3"]);
        assert_eq!(a.jobs, None, "-j after the command is the command's");
        assert_eq!(a.rest, words(&["echo", "-j", "3"]));
        let a = run(&["--", "-k", "x"]);
        assert!(!a.keep_order);
        assert_eq!(a.rest, words(&["-k", "x"]));
        assert_eq!(run(&[":::", "a"]).rest, words(&[":::", "a"]));
    }

    #[test]
    fn the_clap_description_lists_exactly_the_options_parse_accepts() {
        let cmd = command();
        cmd.clone().debug_assert();
        let mut longs = 0;
        for arg in cmd.get_arguments().filter(|a| !a.is_positional()) {
            for long in arg.get_long_and_visible_aliases().unwrap_or_default() {
                assert!(find_long(long).is_ok(), "--{long}");
                longs += 1;
            }
            if let Some(short) = arg.get_short() {
                assert!(find_short(short).is_ok(), "-{short}");
            }
        }
        let names: usize = SPECS.iter().map(|s| s.long.len()).sum();
        assert_eq!(longs, names);
        assert_eq!(
            cmd.get_arguments().filter(|a| !a.is_positional()).count(),
            SPECS.len()
        );
    }

    #[test]
    fn unknown_options_and_missing_values_are_usage_errors() {
        assert_eq!(
            parse(words(&["--bogus", "echo"])).unwrap_err(),
            UsageError("unknown option: --bogus".into())
        );
        assert!(parse(words(&["-kZ", "echo"])).is_err());
        assert!(parse(words(&["-j"])).is_err());
        assert!(parse(words(&["--tag=1", "x"])).is_err());
        assert!(parse(words(&["--resume", "x"])).is_err(), "needs --joblog");
        assert!(matches!(parse(words(&["--help"])), Ok(Parsed::Help)));
        assert!(run(&["--will-cite", "true"]).rest == words(&["true"]));
    }
}
