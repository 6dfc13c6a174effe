//! Python's `concurrent.futures`, written with parpool: the programs every
//! tutorial starts with, one after another, each with its Python beside it.
//!
//! ```sh
//! cargo run --release --example python_futures
//! ```

use std::time::{Duration, Instant};

use parpool::prelude::*;

parpool::task! {
    /// A CPU-bound function: the sum of the squares below `n`.
    fn sum_squares(n: u64) -> u64 {
        (0..n).map(|i| i * i % 7).sum()
    }
}

parpool::task! {
    /// A function that fails the way Python code raises: with an `io::Error`.
    fn file_size(path: String) -> std::io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // with ThreadPoolExecutor(max_workers=4) as ex:
    //     futures = [ex.submit(pow, 2, i) for i in range(10)]
    //     for f in as_completed(futures): print(f.result())
    let threads = ThreadPool::builder().workers(4).build()?;
    let handles: Vec<JobHandle<u64>> = (0..10)
        .map(|i| threads.spawn(move || 2u64.pow(i)))
        .collect();
    let mut powers: Vec<u64> = as_completed(handles).map(|(_, r)| r.unwrap()).collect();
    powers.sort_unstable();
    println!("powers of two, as they completed (sorted): {powers:?}");

    // list(ex.map(str.upper, words, timeout=5))
    let words = ["alpha", "beta", "gamma"];
    let upper: Vec<String> = threads
        .map(|w: &str| w.to_uppercase(), words)
        .timeout(Duration::from_secs(5))
        .collect::<Result<_, _>>()?;
    println!("map with a timeout: {upper:?}");

    // with ProcessPoolExecutor() as ex: results = list(ex.map(sum_squares, sizes))
    let processes = ProcessPool::builder().workers(2).build()?;
    let started = Instant::now();
    let sizes = [200_000u64, 300_000, 400_000, 500_000];
    let sums: Vec<u64> = processes
        .map_task(sum_squares, sizes)
        .collect::<Result<_, _>>()?;
    println!(
        "CPU-bound map in processes: {sums:?} in {:?}",
        started.elapsed()
    );

    // A lambda in a process pool (Python needs cloudpickle for this):
    let doubled = processes.submit(call!(|x: u64| x * 2), 21).join()?;
    println!("a closure in a worker process: {doubled}");

    // try: f.result() except FileNotFoundError as e: ...
    match processes.submit(file_size, "/no/such/file".into()).join()? {
        Ok(size) => println!("size {size}"),
        Err(e) => println!(
            "the task's own error came back as itself: {e} ({:?})",
            e.kind()
        ),
    }

    // A crash is one job's error, not a BrokenProcessPool:
    let crashed = processes
        .submit(call!(|| -> u8 { std::process::abort() }), ())
        .join();
    println!("a worker that aborted: {}", crashed.unwrap_err());
    println!(
        "and the pool goes on: {}",
        processes.submit(sum_squares, 10).join()?
    );

    // done, not_done = wait(fs, timeout=0.1, return_when=FIRST_COMPLETED)
    let quick = threads.spawn(|| "quick");
    let slow = threads.spawn(|| {
        std::thread::sleep(Duration::from_millis(300));
        "slow"
    });
    let first = wait(
        vec![quick, slow],
        WaitFor::FirstCompleted,
        Some(Duration::from_secs(5)),
    );
    println!(
        "wait(FIRST_COMPLETED): {} done, {} pending",
        first.done.len(),
        first.pending.len()
    );

    // f.cancel(), f.cancelled(), f.running()
    let busy: Vec<_> = (0..4)
        .map(|_| threads.spawn(|| std::thread::sleep(Duration::from_millis(100))))
        .collect();
    let queued = threads.spawn(|| ());
    println!(
        "while four jobs hold the four workers: running {}, cancel {}, cancelled {}",
        queued.is_running(),
        queued.cancel(),
        queued.is_cancelled()
    );
    for job in busy {
        job.join()?;
    }

    // ex.shutdown(wait=False)
    threads.close();
    println!(
        "closed without waiting; new jobs are refused: {}",
        threads.spawn(|| ()).join().unwrap_err()
    );
    Ok(())
}
