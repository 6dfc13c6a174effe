//! Floors for the CLI's rows: the least a minimal Rust program needs to
//! do what a row asks of `parpool run`.
//!
//! - `spawn-floor FILE`: the memory row (read a file of inputs a line at a
//!   time, run `sleep 0.2` two at a time until four have succeeded);
//! - `spawn-floor --splice FILE…`: the `--pipepart` row through pipes
//!   (each file spliced into the stdin of a `wc -l` of its own, through a
//!   1 MiB pipe, all at once): the cheapest way to hand a job its part on
//!   stdin.

use std::io::BufRead;
use std::process::{Command, Stdio};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "--splice") {
        splice_into_wc(&args[1..]);
        return;
    }
    let Some(path) = args.first() else {
        eprintln!("usage: spawn-floor FILE | spawn-floor --splice FILE...");
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

/// Each file spliced into a `wc -l`'s stdin, all at once.
fn splice_into_wc(files: &[std::ffi::OsString]) {
    let jobs: Vec<_> = files
        .iter()
        .map(|path| {
            let file = std::fs::File::open(path).expect("a file");
            let len = file.metadata().expect("metadata").len();
            let mut child = Command::new("wc")
                .arg("-l")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("wc");
            let pipe = child.stdin.take().expect("stdin");
            let _ = rustix::pipe::fcntl_setpipe_size(&pipe, 1 << 20);
            let feeder = std::thread::spawn(move || {
                let mut at = 0u64;
                while at < len {
                    let want = (len - at).min(1 << 30) as usize;
                    match rustix::pipe::splice(
                        &file,
                        Some(&mut at),
                        &pipe,
                        None,
                        want,
                        rustix::pipe::SpliceFlags::MORE,
                    ) {
                        Ok(0) => break,
                        Ok(_) | Err(rustix::io::Errno::INTR) => {}
                        Err(e) => panic!("splice: {e}"),
                    }
                }
            });
            (child, feeder)
        })
        .collect();
    for (mut child, feeder) in jobs {
        feeder.join().expect("feeder");
        assert!(child.wait().expect("wait").success());
    }
}
