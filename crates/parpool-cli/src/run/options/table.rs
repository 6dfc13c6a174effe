//! The options `parpool run` takes: one table, read by the parser, the
//! help, the man page and the shell completions.

/// Whether an option takes a value (and the value's name, for help).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Takes {
    Nothing,
    Value(&'static str),
}

/// One option: its short letter, its long names (the first is the one
/// shown), whether it takes a value, and one line of help (for the shell
/// completions and the man page; `--help` prints [`HELP`]).
pub(super) struct Spec {
    pub(super) short: Option<char>,
    pub(super) long: &'static [&'static str],
    pub(super) takes: Takes,
    pub(super) help: &'static str,
}

pub(super) const SPECS: &[Spec] = &[
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
    pub(super) fn name(&self) -> String {
        match (self.long.first(), self.short) {
            (Some(long), _) => format!("--{long}"),
            (None, Some(short)) => format!("-{short}"),
            (None, None) => String::new(),
        }
    }
}
