//! The `parpool` command.

mod compare;
mod run;

use clap::{Parser, Subcommand};

/// Run commands in parallel on parpool's engine, and find out whether
/// threads, processes or async suit a workload on this machine.
#[derive(Debug, Parser)]
#[command(name = "parpool", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command once per input, in parallel (GNU parallel's syntax).
    Run(run::RunArgs),
    /// Run built-in workloads (CPU-bound, I/O-bound, mixed, tiny jobs)
    /// sequentially, on threads, on processes and on async tasks, and say
    /// which wins here and why.
    Compare(compare::CompareArgs),
}

fn main() {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Run(args) => run::main(args),
        Command::Compare(args) => compare::main(args),
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
