//! `parpool run --help`, and `run` described for clap (man page, shell
//! completions), both from the options table.

use super::table::{SPECS, Spec, Takes};

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
