//! The same code on a `ThreadPool`, a `ProcessPool` and an `MpiPool`.
//!
//! ```text
//! cargo run --example pools -- threads
//! cargo run --example pools -- processes
//! mpirun -n 3 target/debug/examples/pools mpi       # rank 0 + 2 serving ranks
//! target/debug/examples/pools spawn 2               # spawns 2 serving ranks
//! ```

use parpool::{Executor, ProcessPool, ThreadPool};
use parpool_mpi::MpiPool;

parpool::task! {
    /// Counts the primes below `n`, slowly enough to be worth sending.
    fn primes_below(n: u64) -> u64 {
        (2..n).filter(|&k| (2..k).take_while(|d| d * d <= k).all(|d| k % d != 0)).count() as u64
    }
}

parpool::task! {
    /// Where a job ran.
    fn hostname(_x: ()) -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    }
}

/// Written once against `Executor`: runs on every pool.
fn work(pool: &impl Executor) -> Result<(u64, String), parpool::JobError> {
    let counts: Vec<u64> = pool
        .map_task(primes_below, (0..64).map(|i| 1_000 + i * 100))
        .collect::<Result<_, _>>()?;
    let host = pool.submit(hostname, ()).join()?;
    Ok((counts.iter().sum(), host))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    parpool_mpi::init();
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "threads".into());
    let (total, host) = match kind.as_str() {
        "threads" => work(&ThreadPool::builder().build()?)?,
        "processes" => work(&ProcessPool::builder().build()?)?,
        "mpi" => work(&MpiPool::builder().build()?)?,
        "spawn" => {
            let n = args.next().and_then(|n| n.parse().ok()).unwrap_or(2);
            work(&MpiPool::builder().spawn(n).build()?)?
        }
        other => {
            return Err(format!("unknown pool `{other}`: threads, processes, mpi or spawn").into());
        }
    };
    println!("{kind}: {total} primes counted; a job ran on {host}");
    Ok(())
}
