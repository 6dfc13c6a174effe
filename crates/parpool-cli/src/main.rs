//! The `parpool` command.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "the parpool command runs on Linux only (it compares process pools and watches jobs \
     through pidfds); the parpool library's thread pool works everywhere"
);

#[cfg(target_os = "linux")]
mod compare;
#[cfg(target_os = "linux")]
mod generate;
#[cfg(target_os = "linux")]
mod run;

#[cfg(target_os = "linux")]
use clap::{CommandFactory, Parser, Subcommand};

/// What `parpool --help` and parpool(1) show after the subcommands.
#[cfg(target_os = "linux")]
const EXAMPLES: &str = "\
EXAMPLES:
  parpool run gzip -9 ::: *.log
  find . -name '*.c' | parpool run -k wc -l
  parpool run --help
  parpool compare
  parpool man --dir ~/.local/share/man/man1";

#[cfg(target_os = "linux")]
/// Run commands in parallel on parpool's engine, and find out whether
/// threads, processes or async suit a workload on this machine.
#[derive(Debug, Parser)]
#[command(name = "parpool", version, about, long_about = None, after_long_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[cfg(target_os = "linux")]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command once per input, in parallel (GNU parallel's syntax;
    /// `parpool run --help` for its options).
    #[command(disable_help_flag = true)]
    Run {
        /// Options as GNU parallel's, the command, then the inputs.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<std::ffi::OsString>,
    },
    /// Run built-in workloads (CPU-bound, I/O-bound, mixed, tiny jobs)
    /// sequentially, on threads, on processes and on async tasks, and say
    /// which wins here and why.
    Compare(compare::CompareArgs),
    /// GNU's `sem`: run a command holding a slot of a semaphore shared by
    /// every invocation (`parpool run --semaphore`; `parpool run --help`
    /// lists its options).
    #[command(disable_help_flag = true)]
    Sem {
        /// Options as GNU sem's, then the command.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<std::ffi::OsString>,
    },
    /// Print a completion script for a shell (bash, zsh, fish, powershell,
    /// elvish) on standard output; `parpool completions --help` says where
    /// to put it.
    Completions(generate::CompletionsArgs),
    /// Print parpool's man page in roff on standard output, or a
    /// subcommand's, or write them all with `--dir DIR`.
    Man(generate::ManArgs),
}

#[cfg(target_os = "linux")]
/// The whole command's description for the completion and man page
/// generators: clap's, with `run` described option by option from the
/// table its own parser reads (clap never parses `run`'s words).
fn described() -> clap::Command {
    Cli::command().mut_subcommand("run", |_| run::command())
}

#[cfg(target_os = "linux")]
fn main() {
    // `run` reads its options as GNU parallel does (bundled, attached,
    // abbreviated; an unknown one is exit status 255), not as clap does.
    let mut argv = std::env::args_os();
    let program = argv.next();
    let words: Vec<std::ffi::OsString> = argv.collect();
    // Called as `sem` (a link to parpool, as GNU's sem is to parallel), or
    // `parpool sem`: `parpool run --semaphore`.
    let as_sem = program
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "sem");
    if as_sem || words.first().is_some_and(|w| w == "sem") {
        let rest = if as_sem { &words[..] } else { &words[1..] };
        let mut run_words: Vec<std::ffi::OsString> = vec!["--semaphore".into()];
        run_words.extend(rest.iter().cloned());
        std::process::exit(run::cli(run_words));
    }
    if words.first().is_some_and(|w| w == "run") {
        std::process::exit(run::cli(words[1..].to_vec()));
    }
    // `parpool help run` is `parpool run --help`, not clap's stub.
    if words.len() >= 2 && words[0] == "help" && words[1] == "run" {
        std::process::exit(run::cli(vec!["--help".into()]));
    }
    let cli = Cli::parse_from(program.into_iter().chain(words));
    let status = match cli.command {
        Command::Run { words } => Ok(run::cli(words)),
        Command::Sem { words } => {
            let mut run_words: Vec<std::ffi::OsString> = vec!["--semaphore".into()];
            run_words.extend(words);
            Ok(run::cli(run_words))
        }
        Command::Compare(args) => compare::main(args),
        Command::Completions(args) => generate::completions(args, described()),
        Command::Man(args) => generate::man(args, described()),
    };
    let code = match status {
        Ok(code) => code,
        Err(e) => {
            eprintln!("parpool: {e:#}");
            255
        }
    };
    std::process::exit(code);
}

/// Elsewhere the `compile_error!` above is the whole story.
#[cfg(not(target_os = "linux"))]
fn main() {}
