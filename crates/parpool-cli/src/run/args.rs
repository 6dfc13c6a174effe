//! `parpool run`'s options, read as GNU parallel reads its own (Perl's
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
    pub(crate) timeout: Option<super::exec::Timeout>,
    pub(crate) retries: u32,
    pub(crate) halt: Option<super::Halt>,
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
    pub(crate) cut: super::pipe::Cut,
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

/// Whether an option takes a value (and the value's name, for help).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    Nothing,
    Value(&'static str),
}

/// One option: its short letter, its long names (the first is the one
/// shown), whether it takes a value, and one line of help (for the shell
/// completions and the man page; `--help` prints [`HELP`]).
struct Spec {
    short: Option<char>,
    long: &'static [&'static str],
    takes: Takes,
    help: &'static str,
}

const SPECS: &[Spec] = &[
    Spec {
        short: Some('j'),
        long: &["jobs", "max-procs"],
        takes: Takes::Value("N"),
        help: "jobs at once: N, N% of the cores, +N or -N (0: as many as possible)",
    },
    Spec {
        short: Some('P'),
        long: &[],
        takes: Takes::Value("N"),
        help: "the same as -j",
    },
    Spec {
        short: Some('k'),
        long: &["keep-order"],
        takes: Takes::Nothing,
        help: "print output in the order of the inputs",
    },
    Spec {
        short: Some('u'),
        long: &["ungroup"],
        takes: Takes::Nothing,
        help: "let jobs write straight to the terminal",
    },
    Spec {
        short: None,
        long: &["line-buffer", "lb", "line-buffered", "linebuffer"],
        takes: Takes::Nothing,
        help: "pass output on a whole line at a time",
    },
    Spec {
        short: None,
        long: &["delay"],
        takes: Takes::Value("D"),
        help: "wait at least D between job starts",
    },
    Spec {
        short: None,
        long: &["bar"],
        takes: Takes::Nothing,
        help: "progress bar with ETA on a terminal",
    },
    Spec {
        short: None,
        long: &["tag"],
        takes: Takes::Nothing,
        help: "prefix each output line with the job's input and a tab",
    },
    Spec {
        short: None,
        long: &["shell"],
        takes: Takes::Nothing,
        help: "accepted and ignored (commands run through the shell already)",
    },
    Spec {
        short: Some('q'),
        long: &["quote"],
        takes: Takes::Nothing,
        help: "quote the command's own words too (no shell syntax in it)",
    },
    Spec {
        short: None,
        long: &["timeout"],
        takes: Takes::Value("D"),
        help: "kill a job's process group after D (10, 1.5s, 2m), or P% of the median run time of the jobs that succeeded so far",
    },
    Spec {
        short: None,
        long: &["retries"],
        takes: Takes::Value("N"),
        help: "run a failing job up to N times in all",
    },
    Spec {
        short: None,
        long: &["halt", "halt-on-error"],
        takes: Takes::Value("WHEN,COND"),
        help: "stop early: now|soon, fail|success|done=N or =P%; or 0, 1, 2",
    },
    Spec {
        short: None,
        long: &["joblog"],
        takes: Takes::Value("FILE"),
        help: "log each job in GNU parallel's format (-: stdout; +FILE: append)",
    },
    Spec {
        short: None,
        long: &["resume"],
        takes: Takes::Nothing,
        help: "skip the jobs the joblog lists",
    },
    Spec {
        short: None,
        long: &["resume-failed"],
        takes: Takes::Nothing,
        help: "skip the jobs the joblog lists, but run again those that failed",
    },
    Spec {
        short: None,
        long: &["dry-run", "dryrun"],
        takes: Takes::Nothing,
        help: "print the commands instead of running them",
    },
    Spec {
        short: Some('0'),
        long: &["null"],
        takes: Takes::Nothing,
        help: "inputs are separated by NUL",
    },
    Spec {
        short: Some('C'),
        long: &["colsep"],
        takes: Takes::Value("REGEX"),
        help: "split each input line into columns {1} {2}...",
    },
    Spec {
        short: None,
        long: &["link", "xapply"],
        takes: Takes::Nothing,
        help: "link the input sources: the Nth job gets each one's Nth value (shorter ones recycled)",
    },
    Spec {
        short: None,
        long: &["tmpdir", "tempdir"],
        takes: Takes::Value("DIR"),
        help: "temporary files (spooled output) in DIR, which is also the jobs' $TMPDIR",
    },
    Spec {
        short: None,
        long: &["cat"],
        takes: Takes::Nothing,
        help: "with --pipe: each block in a temporary file named by {}, not on stdin",
    },
    Spec {
        short: None,
        long: &["shuf"],
        takes: Takes::Nothing,
        help: "make every job first, then run them in a random order",
    },
    Spec {
        short: None,
        long: &["nice"],
        takes: Takes::Value("N"),
        help: "run the jobs, and all they start, at niceness N",
    },
    Spec {
        short: None,
        long: &["group"],
        takes: Takes::Nothing,
        help: "print each job's output in one piece when it ends (the default)",
    },
    Spec {
        short: Some('r'),
        long: &["no-run-if-empty"],
        takes: Takes::Nothing,
        help: "skip inputs that are empty or only blanks",
    },
    Spec {
        short: None,
        long: &["number-of-cores"],
        takes: Takes::Nothing,
        help: "print the number of physical CPU cores and exit",
    },
    Spec {
        short: None,
        long: &["number-of-cpus"],
        takes: Takes::Nothing,
        help: "print the number of physical CPU cores and exit (as GNU parallel's)",
    },
    Spec {
        short: None,
        long: &["number-of-threads"],
        takes: Takes::Nothing,
        help: "print the number of CPU threads and exit",
    },
    Spec {
        short: None,
        long: &["number-of-sockets"],
        takes: Takes::Nothing,
        help: "print the number of CPU sockets and exit",
    },
    Spec {
        short: None,
        long: &["will-cite"],
        takes: Takes::Nothing,
        help: "accepted and ignored",
    },
    Spec {
        short: Some('a'),
        long: &["arg-file"],
        takes: Takes::Value("FILE"),
        help: "inputs from FILE (as :::: FILE)",
    },
    Spec {
        short: Some('d'),
        long: &["delimiter"],
        takes: Takes::Value("D"),
        help: "inputs end at D, not newline (\\n, \\t, \\0 allowed)",
    },
    Spec {
        short: None,
        long: &["trim"],
        takes: Takes::Value("SIDES"),
        help: "strip spaces and tabs around each input: lr, l, r or n",
    },
    Spec {
        short: None,
        long: &["header"],
        takes: Takes::Value("STR"),
        help: "the first input line names the columns: {name} (--header :)",
    },
    Spec {
        short: Some('I'),
        long: &[],
        takes: Takes::Value("STR"),
        help: "STR stands for the input, instead of {}",
    },
    Spec {
        short: Some('v'),
        long: &["verbose"],
        takes: Takes::Nothing,
        help: "print each job's command before its output",
    },
    Spec {
        short: None,
        long: &["tagstring"],
        takes: Takes::Value("STR"),
        help: "prefix each output line with STR (replacement strings allowed)",
    },
    Spec {
        short: None,
        long: &["env"],
        takes: Takes::Value("VAR"),
        help: "set VAR on other machines as here (local jobs inherit it all)",
    },
    Spec {
        short: Some('N'),
        long: &[],
        takes: Takes::Value("N"),
        help: "N inputs per job ({1}..{N}; a word with {} repeats per input)",
    },
    Spec {
        short: Some('n'),
        long: &["max-args"],
        takes: Takes::Value("N"),
        help: "at most N inputs per job",
    },
    Spec {
        short: Some('L'),
        long: &["max-lines"],
        takes: Takes::Value("N"),
        help: "at most N lines of input per job",
    },
    Spec {
        short: Some('X'),
        long: &["xargs"],
        takes: Takes::Nothing,
        help: "as many inputs per job as spread them over the job slots, a word with {} repeated per input",
    },
    Spec {
        short: Some('m'),
        long: &[],
        takes: Takes::Nothing,
        help: "as many inputs per job as spread them over the job slots",
    },
    Spec {
        short: None,
        long: &["pipe", "spreadstdin"],
        takes: Takes::Nothing,
        help: "cut stdin into blocks at record ends, one block per job's stdin",
    },
    Spec {
        short: None,
        long: &["plus"],
        takes: Takes::Nothing,
        help: "also {+/} {+.} {..} {+..} {/..} {...} {+...} {/...} {##} {0#}",
    },
    Spec {
        short: Some('s'),
        long: &["max-chars"],
        takes: Takes::Value("N"),
        help: "command lines of at most N characters (several inputs a job are fewer to fit)",
    },
    Spec {
        short: None,
        long: &["rpl"],
        takes: Takes::Value("'TAG PERL'"),
        help: "define TAG as {= PERL =} (TAG may hold one (regex) whose groups PERL reads as $$1, $$2)",
    },
    Spec {
        short: None,
        long: &["results", "res"],
        takes: Takes::Value("DIR"),
        help: "each job's stdout, stderr and seq in DIR/1/<input>/ (not printed)",
    },
    Spec {
        short: Some('S'),
        long: &["sshlogin"],
        takes: Takes::Value("LIST"),
        help: "run on these machines: [N/][user@]host, or : for this one",
    },
    Spec {
        short: None,
        long: &["sshloginfile", "slf"],
        takes: Takes::Value("FILE"),
        help: "run on the machines FILE lists, one sshlogin a line (.. is ~/.parallel/sshloginfile)",
    },
    Spec {
        short: None,
        long: &["ssh"],
        takes: Takes::Value("CMD"),
        help: "how to reach the machines (default $PARALLEL_SSH or ssh)",
    },
    Spec {
        short: None,
        long: &["transferfile", "tf"],
        takes: Takes::Value("FILE"),
        help: "send FILE (replacement strings allowed) to the machine before the job",
    },
    Spec {
        short: None,
        long: &["transfer"],
        takes: Takes::Nothing,
        help: "send the input file to the machine before the job (--transferfile {})",
    },
    Spec {
        short: None,
        long: &["return"],
        takes: Takes::Value("FILE"),
        help: "fetch FILE back from the machine after the job",
    },
    Spec {
        short: None,
        long: &["cleanup"],
        takes: Takes::Nothing,
        help: "remove the files sent and fetched back from the machine afterwards",
    },
    Spec {
        short: None,
        long: &["trc"],
        takes: Takes::Value("FILE"),
        help: "--transfer --return FILE --cleanup",
    },
    Spec {
        short: None,
        long: &["block", "block-size"],
        takes: Takes::Value("SIZE"),
        help: "--pipe's block size (default 1M; k=1000, K=1024, ...)",
    },
    Spec {
        short: None,
        long: &["recstart"],
        takes: Takes::Value("STR"),
        help: "a record starts with STR",
    },
    Spec {
        short: None,
        long: &["recend"],
        takes: Takes::Value("STR"),
        help: "a record ends with STR (default \\n)",
    },
    Spec {
        short: Some('h'),
        long: &["help"],
        takes: Takes::Nothing,
        help: "print this help",
    },
    Spec {
        short: Some('V'),
        long: &["version"],
        takes: Takes::Nothing,
        help: "print the version",
    },
];

impl Spec {
    fn name(&self) -> String {
        match (self.long.first(), self.short) {
            (Some(long), _) => format!("--{long}"),
            (None, Some(short)) => format!("-{short}"),
            (None, None) => String::new(),
        }
    }
}

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
        .find(|s| s.short == Some(c))
        .ok_or_else(|| UsageError(format!("unknown option: -{c}")))
}

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
            if let Some(done) = apply(&mut args, spec, value)? {
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
            if let Some(done) = apply(&mut args, spec, value)? {
                return Ok(done);
            }
            if took_rest {
                break;
            }
        }
    }
    args.rest.extend(words);
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

/// Applies one option; `Some` when it answers by itself (help, version).
fn apply(
    args: &mut RunArgs,
    spec: &Spec,
    value: Option<String>,
) -> Result<Option<Parsed>, UsageError> {
    let name = spec.long.first().copied().unwrap_or_default();
    let short = spec.short;
    let bad = |why: String| UsageError(format!("{}: {why}", spec.name()));
    let value = value.unwrap_or_default();
    match (short, name) {
        (Some('j') | Some('P'), _) => args.jobs = Some(value),
        (Some('k'), _) => args.keep_order = true,
        (Some('u'), _) => args.ungroup = true,
        (_, "line-buffer") => args.line_buffer = true,
        (_, "delay") => args.delay = Some(super::parse_duration(&value).map_err(bad)?),
        (_, "bar") => args.bar = true,
        (_, "tag") => args.tag = true,
        // Commands always run through the shell (or as if they did).
        (_, "shell") => {}
        (Some('q'), _) => args.quote = true,
        (_, "timeout") => {
            args.timeout = Some(match value.strip_suffix('%') {
                Some(p) => super::exec::Timeout::Percent(
                    p.parse()
                        .ok()
                        .filter(|p: &f64| *p > 0.0)
                        .ok_or_else(|| bad(format!("`{value}` is not a percentage")))?,
                ),
                None => super::exec::Timeout::After(super::parse_duration(&value).map_err(bad)?),
            });
        }
        (_, "retries") => {
            args.retries = value
                .parse()
                .map_err(|_| bad(format!("`{value}` is not a number")))?;
        }
        (_, "halt") => args.halt = Some(super::parse_halt(&value).map_err(bad)?),
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
        (Some('d'), _) => args.delimiter = Some(parse_delimiter(&value).map_err(bad)?),
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
            super::rpl::Rpl::parse(&value).map_err(bad)?;
            args.rpl.push(value);
        }
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
    match (spec.short, name) {
        (Some('S'), _) => args.sshlogins.push(value),
        (_, "sshloginfile") => {
            let lines =
                super::remote::read_login_file(std::path::Path::new(&value)).map_err(bad)?;
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
        (_, "block") => args.cut.block = super::pipe::parse_size(&value).map_err(bad)?,
        (_, "recstart") => {
            args.cut.recstart = super::pipe::unescape(&value);
            // As GNU parallel: --recstart alone means records end anywhere.
            if !args.recend_given {
                args.cut.recend.clear();
            }
        }
        (_, "recend") => {
            args.cut.recend = super::pipe::unescape(&value);
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
        _ => return Err(UsageError(format!("option {} is not handled", spec.name()))),
    }
    Ok(None)
}

/// `-d`'s value: one byte, or an escape (`\n`, `\t`, `\0`, `\\`).
fn parse_delimiter(v: &str) -> Result<u8, String> {
    match v.as_bytes() {
        [b] => Ok(*b),
        b"\\n" => Ok(b'\n'),
        b"\\t" => Ok(b'\t'),
        b"\\0" => Ok(0),
        b"\\\\" => Ok(b'\\'),
        _ => Err(format!(
            "`{v}`: the delimiter is one character (or \\n, \\t, \\0)"
        )),
    }
}

/// `parpool run`'s usage line.
const USAGE: &str = "parpool run [OPTIONS] [COMMAND [ARGS]...] [::: INPUTS]...";

/// `parpool run` described for clap, from the table [`parse`] reads, for
/// the shell completions and the man page only: the words after `run` are
/// never parsed by clap (`main` hands them to [`parse`] before clap sees
/// them), so this lists exactly the options `parse` accepts.
pub(crate) fn command() -> clap::Command {
    use clap::{Arg, ArgAction, ValueHint};
    let about = HELP.lines().next().unwrap_or_default();
    // Inputs, replacement strings, exit status, examples: what the man
    // page shows after the options.
    let after = HELP
        .find("\nINPUTS")
        .map_or("", |at| HELP[at + 1..].trim_end());
    let mut cmd = clap::Command::new("run")
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .override_usage(USAGE)
        .after_long_help(after)
        .disable_help_flag(true)
        .disable_version_flag(true);
    for spec in SPECS {
        let id = match (spec.long.first(), spec.short) {
            (Some(long), _) => long,
            (None, Some(short)) => short_id(short),
            (None, None) => continue,
        };
        let mut arg = Arg::new(id);
        if let Some(short) = spec.short {
            arg = arg.short(short);
        }
        arg = match spec.long.split_first() {
            Some((long, [])) => arg.long(long).help(spec.help),
            Some((long, aliases)) => {
                // Man pages do not show aliases: the help line names them.
                let also: Vec<String> = aliases.iter().map(|a| format!("--{a}")).collect();
                arg.long(long).visible_aliases(aliases).help(format!(
                    "{} (also {})",
                    spec.help,
                    also.join(", ")
                ))
            }
            None => arg.help(spec.help),
        };
        arg = match spec.takes {
            Takes::Nothing => arg.action(match spec.short {
                Some('h') => ArgAction::Help,
                Some('V') => ArgAction::Version,
                _ => ArgAction::SetTrue,
            }),
            Takes::Value(name) => {
                let arg = arg
                    .value_name(name)
                    .action(ArgAction::Append)
                    .value_hint(value_hint(spec));
                match spec.long.first() {
                    // The help line lists them already.
                    Some(&"trim") => arg
                        .value_parser(["lr", "rl", "l", "r", "n"])
                        .hide_possible_values(true),
                    _ => arg,
                }
            }
        };
        cmd = cmd.arg(arg);
    }
    cmd.arg(
        Arg::new("command")
            .value_name("COMMAND")
            .help("the command and its arguments, then the inputs (::: A B C, :::: FILE)")
            .num_args(1..)
            .trailing_var_arg(true)
            .allow_hyphen_values(true)
            .value_hint(ValueHint::CommandWithArguments),
    )
}

/// A short option's letter as a `&'static str`, for a clap id.
fn short_id(c: char) -> &'static str {
    const LETTERS: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    LETTERS
        .find(c)
        .map_or("", |at| &LETTERS[at..at + c.len_utf8()])
}

/// What a shell should offer for an option's value.
fn value_hint(spec: &Spec) -> clap::ValueHint {
    use clap::ValueHint;
    match spec.long.first().copied() {
        Some("joblog" | "arg-file" | "sshloginfile" | "transferfile") => ValueHint::FilePath,
        Some("results") => ValueHint::DirPath,
        Some("ssh") => ValueHint::CommandString,
        Some("sshlogin") => ValueHint::Hostname,
        _ => ValueHint::Other,
    }
}

/// What `parpool run --help` prints.
pub(crate) const HELP: &str = "\
Run a command once per input, in parallel (GNU parallel's syntax).

Usage: parpool run [OPTIONS] [COMMAND [ARGS]...] [::: INPUTS]...

OPTIONS (bundle short ones: -kj4; values attached or not: -j4, --jobs=4):
  -j, -P, --jobs N      jobs at once: N, N% of the cores, +N or -N (0: as many as possible)
  -k, --keep-order      print output in the order of the inputs
  -u, --ungroup         let jobs write straight to the terminal
      --line-buffer     pass output on a whole line at a time
      --group           each job's output in one piece when it ends (the default)
      --tag             prefix each output line with the job's input and a tab
      --tagstring STR   ... with STR instead (replacement strings allowed)
  -v                    print each job's command before its output
  -I STR                STR stands for the input, instead of {}
  -N N                  N inputs per job ({1}..{N}; a word with {} repeats per input)
  -n N, -L N            at most N inputs (or lines) per job
      --plus            also {+/} {+.} {..} {+..} {/..} {...} {+...} {/...} {##} {0#},
                        {%suf} {%%suf} {#pre} {##pre} {:-default} {:n} {:n:m}
                        {/from/to} {//from/to} {^a} {^^a} {,A} {,,A} (also {2%.gz})
      --results DIR     each job's stdout, stderr and seq in DIR/1/<input>/ (not printed)
  -S, --sshlogin LIST   run on these machines: [N/][user@]host, or : for this one
      --sshloginfile F  ... one sshlogin per line of F (.. is ~/.parallel/sshloginfile)
      --ssh CMD         how to reach them (default $PARALLEL_SSH or ssh)
      --transferfile F  send F (replacement strings allowed) before the job; --transfer: {}
      --return F        fetch F back after the job; --cleanup removes both there
      --trc F           --transfer --return F --cleanup
      --pipe            cut stdin into blocks at record ends, one block per job's stdin
      --block SIZE      block size (default 1M; k=1000, K=1024, ...)
      --recend STR      a record ends with STR (default \\n)
      --recstart STR    a record starts with STR
                        (-N n: n records per block; --header : or REGEX: the
                        input's header before every block; --cat: each block in
                        a temporary file named by {} instead of on stdin)
  -X, -m                as many inputs per job as spread them over the job slots
                        (-X repeats a word with {} per input)
      --env VAR         set VAR on other machines as here (local jobs inherit it all)
  -q, --quote           quote the command's own words too (no shell syntax in it)
      --timeout D       kill a job's process group after D (10, 1.5s, 1m30s, 1d), or P% of
                        the median run time of the jobs that succeeded so far
      --retries N       run a failing job up to N times in all
      --halt WHEN,COND  now|soon, fail|success|done=N or =P%; or 0, 1, 2
      --joblog FILE     log each job in GNU parallel's format
      --resume          skip the jobs the joblog lists
      --resume-failed   ... and run again those that failed
      --delay D         wait at least D between job starts
      --bar             progress bar with ETA on a terminal
      --dry-run         print the commands instead of running them
  -0, --null            inputs are separated by NUL
  -C, --colsep REGEX    split each input line into columns {1} {2}...
  -a, --arg-file FILE   inputs from FILE (as :::: FILE)
  -d, --delimiter D     inputs end at D, not newline (\\n, \\t, \\0 allowed)
      --trim lr|l|r|n   strip spaces and tabs around each input
      --header :        the first input line names the columns: {name}
  -r, --no-run-if-empty skip inputs that are empty or only blanks
      --nice N          run the jobs, and all they start, at niceness N
      --shuf            make every job first, then run them in a random order
      --tmpdir DIR      spooled output in DIR, which is also the jobs' $TMPDIR
      --number-of-cores, --number-of-threads, --number-of-sockets
                        print that count of this machine's CPUs and exit
      --will-cite       accepted and ignored

DEFAULT OPTIONS: the lines of ~/.parallel/config ($PARALLEL_HOME/config), then
$PARALLEL, go before the command line's.
  -h, --help            this text

INPUTS (after the command):
  ::: A B C      arguments as inputs; several ::: give every combination
  :::+ 1 2 3     paired with the source before (stops at the shorter)
  --link         (an option) pairs every source, recycling the shorter ones
  :::: FILE      lines of FILE (- is standard input); ::::+ pairs it
  (none)         lines of standard input

REPLACEMENT STRINGS:
  {}  input    {.}  without extension    {/}  basename    {//}  directory
  {/.}  basename without extension    {#}  job number    {%}  job slot
  {N} {N.} {N/} {N//} {N/.}  the same for input source N
  Without any, the inputs are appended as arguments.

EXIT STATUS: 0 if every job succeeded, else the number of failed jobs
(at most 101), or what --halt decided (the deciding job's status, the
number of failures, or with fail=P% the percentage failed); 255 on a usage
error, an interrupt, or any other error.

EXAMPLES:
  parpool run gzip -9 ::: *.log
  parpool run -j4 --tag convert {} {.}.png ::: *.jpg
  find . -name '*.c' | parpool run -k wc -l
";

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
