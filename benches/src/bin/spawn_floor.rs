//! The floor of the CLI's memory row: the least a Rust program can hold
//! while it does what that row asks of `parpool run` (read a file of
//! inputs a line at a time, run `sleep 0.2` two at a time until four
//! have succeeded). Usage: `spawn-floor FILE`.

use std::io::BufRead;
use std::process::Command;

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: spawn-floor FILE");
        std::process::exit(2);
    };
    let file = std::fs::File::open(path).expect("the input file");
    let mut lines = std::io::BufReader::new(file).lines();
    let mut succeeded = 0;
    while succeeded < 4 {
        let pair: Vec<_> = (0..2)
            .filter_map(|_| lines.next())
            .map(|_| Command::new("sleep").arg("0.2").spawn().expect("sleep"))
            .collect();
        if pair.is_empty() {
            break;
        }
        for mut child in pair {
            succeeded += usize::from(child.wait().is_ok_and(|s| s.success()));
        }
    }
}
