//! The `parpool` command.

mod run;

use clap::{Parser, Subcommand};

/// Run commands in parallel, on parpool's engine.
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
}

fn main() {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Run(args) => run::main(args),
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
