//! Threads or processes, chosen by a flag at run time: one code path for
//! both, through [`parpool::Pool`].
//!
//! `cargo run --release --example choose_pool -- --pool processes`
//! (`--pool threads` is the default; `--workers N`).

use parpool::{Executor, Pool, PoolKind};

parpool::task! {
    /// Counts the primes below `n` the slow way: CPU-bound work.
    fn primes_below(n: u64) -> u64 {
        (2..n).filter(|&k| (2..k).take_while(|d| d * d <= k).all(|d| k % d != 0)).count() as u64
    }
}

/// Where a job ran: this process, or a worker process.
fn describe(pool: &Pool) -> String {
    format!("{} workers ({})", pool.workers(), pool.kind())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    parpool::init();
    let mut kind = PoolKind::Threads;
    let mut workers = std::thread::available_parallelism().map_or(2, usize::from);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--pool" => kind = args.next().ok_or("--pool needs a value")?.parse()?,
            "--workers" => workers = args.next().ok_or("--workers needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let pool = Pool::new(kind, workers)?;
    let counts: Vec<u64> = pool
        .map_task(primes_below, [10_000, 20_000, 30_000, 40_000])
        .collect::<Result<_, _>>()?;
    println!("{}: primes below 10k..40k: {counts:?}", describe(&pool));
    assert_eq!(counts, [1229, 2262, 3245, 4203]);
    Ok(())
}
