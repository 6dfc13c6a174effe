//! Python's `asyncio` meeting executors (`run_in_executor`, `wait_for`,
//! `gather`), written with parpool and tokio: process jobs awaited from an
//! async runtime, each with a timeout, without blocking its threads.
//!
//! ```sh
//! cargo run --release --example python_asyncio
//! ```

use std::time::Duration;

use parpool::prelude::*;

parpool::task! {
    /// Sleeps `ms`, then returns it: a job that is sometimes too slow.
    fn nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = ProcessPool::builder().workers(4).build()?;

    // await loop.run_in_executor(pool, fn, x)
    let x = pool.submit(call!(|x: u64| x + 1), 41).await?;
    println!("awaited a process job: {x}");

    // results = await asyncio.gather(*(asyncio.wait_for(run(n), 0.2) for n in ...))
    // The per-job limit is the job's own: time spent queued does not count,
    // and a job past it has its worker killed (JobOptions::timeout).
    let limit = JobOptions::new().timeout(Duration::from_millis(200));
    let handles: Vec<_> = (0..20u64)
        .map(|i| pool.submit_with(limit.clone(), nap, if i % 5 == 0 { 1_000 } else { 10 }))
        .collect();
    let mut on_time = 0;
    let mut timed_out = 0;
    for h in handles {
        match h.await {
            Ok(_) => on_time += 1,
            Err(e) if e.is_timed_out() => timed_out += 1,
            Err(e) => return Err(e.into()),
        }
    }
    println!("20 jobs with a 200 ms limit each: {on_time} on time, {timed_out} timed out");

    // asyncio.wait_for(fut, timeout): cancels the job when the time is up.
    // Here the clock starts at the call, queued time included.
    let slow = pool.submit(nap, 5_000).cancel_on_drop();
    let waited = tokio::time::timeout(Duration::from_millis(100), slow).await;
    println!(
        "wait_for a slow job: {}",
        if waited.is_err() {
            "timed out, job cancelled"
        } else {
            "done"
        }
    );

    // A bounded thread pool: submitting waits for room without blocking
    // the runtime's one thread.
    let threads = ThreadPool::builder().workers(2).queue_capacity(2).build()?;
    let mut handles = Vec::new();
    for i in 0..10u64 {
        handles.push(threads.spawn_async(move || i * i).await);
    }
    let mut sum = 0;
    for h in handles {
        sum += h.await?;
    }
    println!("submitted with back-pressure, summed: {sum}");

    // await loop.shutdown_default_executor()
    pool.shutdown_async().await;
    threads.shutdown_async().await;
    println!("both pools shut down without blocking the runtime");
    Ok(())
}
