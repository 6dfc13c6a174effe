//! The `parpool` command.
//!
//! Subcommands (`run`, `compare`) arrive with the process pool; for now the
//! binary describes itself.

use clap::Parser;

/// Run commands in parallel, and measure whether threads, processes or async
/// tasks suit a workload best on this machine.
#[derive(Debug, Parser)]
#[command(name = "parpool", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    use clap::CommandFactory;
    // No subcommand exists yet: show what the tool is.
    let _ = Cli::command().print_help();
    println!();
}
