//! The options `parpool run` takes: one table, read by the parser, the
//! help, the man page and the shell completions.

/// The groups `--help` lists the options in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Input,
    Command,
    Jobs,
    Output,
    Log,
    Pipe,
    Remote,
    Info,
}

impl Section {
    pub(super) const ALL: [Section; 8] = [
        Section::Input,
        Section::Command,
        Section::Jobs,
        Section::Output,
        Section::Log,
        Section::Pipe,
        Section::Remote,
        Section::Info,
    ];

    pub(super) fn title(self) -> &'static str {
        match self {
            Section::Input => "INPUT SOURCES",
            Section::Command => "THE COMMAND AND ITS REPLACEMENT STRINGS",
            Section::Jobs => "JOBS",
            Section::Output => "OUTPUT",
            Section::Log => "JOB LOG AND RESUMING",
            Section::Pipe => "--pipe: STANDARD INPUT IN BLOCKS",
            Section::Remote => "OTHER MACHINES",
            Section::Info => "INFORMATION",
        }
    }
}

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
    /// Where `--help` lists it.
    pub(super) section: Section,
    pub(super) short: &'static [char],
    pub(super) long: &'static [&'static str],
    pub(super) takes: Takes,
    pub(super) help: &'static str,
}

pub(super) const SPECS: &[Spec] = &[
    Spec {
        section: Section::Input,
        short: &['a'],
        long: &["arg-file"],
        takes: Takes::Value("FILE"),
        help: "inputs from FILE (as :::: FILE)",
    },
    Spec {
        section: Section::Input,
        short: &['0'],
        long: &["null"],
        takes: Takes::Nothing,
        help: "inputs are separated by NUL",
    },
    Spec {
        section: Section::Input,
        short: &['d'],
        long: &["delimiter"],
        takes: Takes::Value("D"),
        help: "inputs end at D, not newline (\\n, \\t, \\0 allowed)",
    },
    Spec {
        section: Section::Input,
        short: &['C'],
        long: &["colsep"],
        takes: Takes::Value("REGEX"),
        help: "split each input line into columns {1} {2}...",
    },
    Spec {
        section: Section::Input,
        short: &[],
        long: &["trim"],
        takes: Takes::Value("SIDES"),
        help: "strip spaces and tabs around each input: lr, l, r or n",
    },
    Spec {
        section: Section::Input,
        short: &[],
        long: &["header"],
        takes: Takes::Value("STR"),
        help: "the first input line names the columns: {name} (--header :)",
    },
    Spec {
        section: Section::Input,
        short: &['r'],
        long: &["no-run-if-empty"],
        takes: Takes::Nothing,
        help: "skip inputs that are empty or only blanks",
    },
    Spec {
        section: Section::Input,
        short: &[],
        long: &["link", "xapply"],
        takes: Takes::Nothing,
        help: "link the input sources: the Nth job gets each one's Nth value (shorter ones recycled)",
    },
    Spec {
        section: Section::Input,
        short: &[],
        long: &["shuf"],
        takes: Takes::Nothing,
        help: "make every job first, then run them in a random order",
    },
    Spec {
        section: Section::Command,
        short: &['I'],
        long: &[],
        takes: Takes::Value("STR"),
        help: "STR stands for the input, instead of {}",
    },
    Spec {
        section: Section::Command,
        short: &[],
        long: &["plus"],
        takes: Takes::Nothing,
        help: "the extra replacement strings and editing strings (see REPLACEMENT STRINGS)",
    },
    Spec {
        section: Section::Command,
        short: &[],
        long: &["rpl"],
        takes: Takes::Value("'TAG PERL'"),
        help: "define TAG as {= PERL =} (TAG may hold one (regex) whose groups PERL reads as $$1, $$2)",
    },
    Spec {
        section: Section::Command,
        short: &['q'],
        long: &["quote"],
        takes: Takes::Nothing,
        help: "quote the command's own words too (no shell syntax in it)",
    },
    Spec {
        section: Section::Command,
        short: &[],
        long: &["shell"],
        takes: Takes::Nothing,
        help: "accepted and ignored (commands run through the shell already)",
    },
    Spec {
        section: Section::Command,
        short: &['N'],
        long: &[],
        takes: Takes::Value("N"),
        help: "N inputs per job ({1}..{N}; a word with {} repeats per input)",
    },
    Spec {
        section: Section::Command,
        short: &['n'],
        long: &["max-args"],
        takes: Takes::Value("N"),
        help: "at most N inputs per job",
    },
    Spec {
        section: Section::Command,
        short: &['L'],
        long: &["max-lines"],
        takes: Takes::Value("N"),
        help: "at most N lines of input per job",
    },
    Spec {
        section: Section::Command,
        short: &['X'],
        long: &["xargs"],
        takes: Takes::Nothing,
        help: "as many inputs a job as its command line holds, the last ones spread over the job slots; a word with {} repeated per input",
    },
    Spec {
        section: Section::Command,
        short: &['m'],
        long: &[],
        takes: Takes::Nothing,
        help: "as many inputs a job as its command line holds, the last ones spread over the job slots",
    },
    Spec {
        section: Section::Command,
        short: &['s'],
        long: &["max-chars"],
        takes: Takes::Value("N"),
        help: "command lines of at most N characters (several inputs a job are fewer to fit)",
    },
    Spec {
        section: Section::Jobs,
        short: &['j', 'P'],
        long: &["jobs", "max-procs"],
        takes: Takes::Value("N"),
        help: "jobs at once: N, N% of the cores, +N or -N (0: as many as possible)",
    },
    Spec {
        section: Section::Jobs,
        short: &[],
        long: &["delay"],
        takes: Takes::Value("D"),
        help: "wait at least D between job starts",
    },
    Spec {
        section: Section::Jobs,
        short: &[],
        long: &["nice"],
        takes: Takes::Value("N"),
        help: "run the jobs, and all they start, at niceness N",
    },
    Spec {
        section: Section::Jobs,
        short: &[],
        long: &["tmpdir", "tempdir"],
        takes: Takes::Value("DIR"),
        help: "temporary files (spooled output) in DIR, which is also the jobs' $TMPDIR",
    },
    Spec {
        section: Section::Jobs,
        short: &[],
        long: &["timeout"],
        takes: Takes::Value("D"),
        help: "kill a job's process group after D (10, 1.5s, 2m), or P% of the median run time of the jobs that succeeded so far",
    },
    Spec {
        section: Section::Jobs,
        short: &[],
        long: &["retries"],
        takes: Takes::Value("N"),
        help: "run a failing job up to N times in all",
    },
    Spec {
        section: Section::Jobs,
        short: &[],
        long: &["halt", "halt-on-error"],
        takes: Takes::Value("WHEN,COND"),
        help: "stop early: now|soon, fail|success|done=N or =P%; or 0, 1, 2",
    },
    Spec {
        section: Section::Output,
        short: &['k'],
        long: &["keep-order"],
        takes: Takes::Nothing,
        help: "print output in the order of the inputs",
    },
    Spec {
        section: Section::Output,
        short: &['u'],
        long: &["ungroup"],
        takes: Takes::Nothing,
        help: "let jobs write straight to the terminal",
    },
    Spec {
        section: Section::Output,
        short: &[],
        long: &["line-buffer", "lb", "line-buffered", "linebuffer"],
        takes: Takes::Nothing,
        help: "pass output on a whole line at a time (with -k: the oldest job's at once, the others' in turn)",
    },
    Spec {
        section: Section::Output,
        short: &[],
        long: &["group"],
        takes: Takes::Nothing,
        help: "print each job's output in one piece when it ends (the default)",
    },
    Spec {
        section: Section::Output,
        short: &[],
        long: &["tag"],
        takes: Takes::Nothing,
        help: "prefix each output line with the job's input and a tab",
    },
    Spec {
        section: Section::Output,
        short: &[],
        long: &["tagstring"],
        takes: Takes::Value("STR"),
        help: "prefix each output line with STR (replacement strings allowed)",
    },
    Spec {
        section: Section::Output,
        short: &['v'],
        long: &["verbose"],
        takes: Takes::Nothing,
        help: "print each job's command before its output",
    },
    Spec {
        section: Section::Output,
        short: &[],
        long: &["results", "res"],
        takes: Takes::Value("DIR"),
        help: "each job's stdout, stderr and seq in DIR/1/<input>/..., or a row a job in DIR.csv, .tsv or .json (-.csv: on stdout); nothing printed",
    },
    Spec {
        section: Section::Output,
        short: &[],
        long: &["bar"],
        takes: Takes::Nothing,
        help: "progress bar with ETA on a terminal",
    },
    Spec {
        section: Section::Output,
        short: &[],
        long: &["dry-run", "dryrun"],
        takes: Takes::Nothing,
        help: "print the commands instead of running them",
    },
    Spec {
        section: Section::Log,
        short: &[],
        long: &["joblog"],
        takes: Takes::Value("FILE"),
        help: "log each job in GNU parallel's format (-: stdout; +FILE: append)",
    },
    Spec {
        section: Section::Log,
        short: &[],
        long: &["resume"],
        takes: Takes::Nothing,
        help: "skip the jobs the joblog lists",
    },
    Spec {
        section: Section::Log,
        short: &[],
        long: &["resume-failed"],
        takes: Takes::Nothing,
        help: "skip the jobs the joblog lists, but run again those that failed",
    },
    Spec {
        section: Section::Pipe,
        short: &[],
        long: &["pipe", "spreadstdin"],
        takes: Takes::Nothing,
        help: "cut stdin into blocks at record ends, one block per job's stdin",
    },
    Spec {
        section: Section::Pipe,
        short: &[],
        long: &["block", "block-size"],
        takes: Takes::Value("SIZE"),
        help: "--pipe's block size (default 1M; k=1000, K=1024, ...)",
    },
    Spec {
        section: Section::Pipe,
        short: &[],
        long: &["recstart"],
        takes: Takes::Value("STR"),
        help: "a record starts with STR",
    },
    Spec {
        section: Section::Pipe,
        short: &[],
        long: &["recend"],
        takes: Takes::Value("STR"),
        help: "a record ends with STR (default \\n)",
    },
    Spec {
        section: Section::Pipe,
        short: &[],
        long: &["cat"],
        takes: Takes::Nothing,
        help: "with --pipe: each block in a temporary file named by {}, not on stdin",
    },
    Spec {
        section: Section::Remote,
        short: &['S'],
        long: &["sshlogin"],
        takes: Takes::Value("LIST"),
        help: "run on these machines: [N/][user@]host, or : for this one",
    },
    Spec {
        section: Section::Remote,
        short: &[],
        long: &["sshloginfile", "slf"],
        takes: Takes::Value("FILE"),
        help: "run on the machines FILE lists, one sshlogin a line (.. is ~/.parallel/sshloginfile)",
    },
    Spec {
        section: Section::Remote,
        short: &[],
        long: &["ssh"],
        takes: Takes::Value("CMD"),
        help: "how to reach the machines (default $PARALLEL_SSH or ssh)",
    },
    Spec {
        section: Section::Remote,
        short: &[],
        long: &["transferfile", "tf"],
        takes: Takes::Value("FILE"),
        help: "send FILE (replacement strings allowed) to the machine before the job",
    },
    Spec {
        section: Section::Remote,
        short: &[],
        long: &["transfer"],
        takes: Takes::Nothing,
        help: "send the input file to the machine before the job (--transferfile {})",
    },
    Spec {
        section: Section::Remote,
        short: &[],
        long: &["return"],
        takes: Takes::Value("FILE"),
        help: "fetch FILE back from the machine after the job",
    },
    Spec {
        section: Section::Remote,
        short: &[],
        long: &["cleanup"],
        takes: Takes::Nothing,
        help: "remove the files sent and fetched back from the machine afterwards",
    },
    Spec {
        section: Section::Remote,
        short: &[],
        long: &["trc"],
        takes: Takes::Value("FILE"),
        help: "--transfer --return FILE --cleanup",
    },
    Spec {
        section: Section::Remote,
        short: &[],
        long: &["env"],
        takes: Takes::Value("VAR"),
        help: "set VAR on other machines as here (local jobs inherit it all)",
    },
    Spec {
        section: Section::Info,
        short: &[],
        long: &["number-of-cores"],
        takes: Takes::Nothing,
        help: "print the number of physical CPU cores and exit",
    },
    Spec {
        section: Section::Info,
        short: &[],
        long: &["number-of-cpus"],
        takes: Takes::Nothing,
        help: "print the number of physical CPU cores and exit (as GNU parallel's)",
    },
    Spec {
        section: Section::Info,
        short: &[],
        long: &["number-of-threads"],
        takes: Takes::Nothing,
        help: "print the number of CPU threads and exit",
    },
    Spec {
        section: Section::Info,
        short: &[],
        long: &["number-of-sockets"],
        takes: Takes::Nothing,
        help: "print the number of CPU sockets and exit",
    },
    Spec {
        section: Section::Info,
        short: &['h'],
        long: &["help"],
        takes: Takes::Nothing,
        help: "print this help",
    },
    Spec {
        section: Section::Info,
        short: &['V'],
        long: &["version"],
        takes: Takes::Nothing,
        help: "print the version",
    },
    Spec {
        section: Section::Info,
        short: &[],
        long: &["will-cite"],
        takes: Takes::Nothing,
        help: "accepted and ignored",
    },
];

impl Spec {
    pub(super) fn name(&self) -> String {
        match (self.long.first(), self.short.first()) {
            (Some(long), _) => format!("--{long}"),
            (None, Some(short)) => format!("-{short}"),
            (None, None) => String::new(),
        }
    }
}
