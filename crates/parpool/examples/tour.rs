//! A tour of parpool's thread pool: submit and join, map, as_completed,
//! timeouts, a caught panic, cancellation, a task through the Executor
//! trait, and a handle awaited from async code.
//!
//! Run it with `cargo run --release --example tour`.

use std::time::{Duration, Instant};

use parpool::{Executor, JobOptions, ThreadPool, WaitFor, as_completed, wait};

parpool::task! {
    /// Counts the primes below `n` (deliberately naive: CPU-bound).
    fn count_primes(n: u64) -> u64 {
        (2..n).filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0)).count() as u64
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = ThreadPool::builder().name("tour").build()?;
    println!(
        "parpool tour: a thread pool of {} workers\n",
        pool.workers()
    );

    // 1. Submit a closure, get a handle, join it.
    let answer = pool.spawn(|| 6 * 7).join()?;
    println!("1. spawn + join                 -> {answer}");

    // 2. Ordered, lazy map over a CPU-bound function, against a sequential loop.
    let inputs: Vec<u64> = (0..64).map(|i| 20_000 + i * 100).collect();
    let t = Instant::now();
    let sequential: u64 = inputs.iter().map(|&n| count_primes::run_now(n)).sum();
    let seq_time = t.elapsed();
    let t = Instant::now();
    let parallel: u64 = pool
        .map_task(count_primes, inputs.clone())
        .map(Result::unwrap)
        .sum();
    let par_time = t.elapsed();
    assert_eq!(sequential, parallel);
    println!(
        "2. map_task over 64 inputs      -> {parallel} primes in total; {:.1} ms vs {:.1} ms sequential ({:.2}x)",
        par_time.as_secs_f64() * 1e3,
        seq_time.as_secs_f64() * 1e3,
        seq_time.as_secs_f64() / par_time.as_secs_f64()
    );

    // 3. Results in the order jobs finish.
    let handles: Vec<_> = [40u64, 10, 25]
        .into_iter()
        .map(|ms| {
            pool.spawn(move || {
                std::thread::sleep(Duration::from_millis(ms));
                ms
            })
        })
        .collect();
    let order: Vec<String> = as_completed(handles)
        .map(|(i, r)| format!("#{i} ({} ms)", r.unwrap()))
        .collect();
    println!("3. as_completed                 -> {}", order.join(", "));

    // 4. A timeout: the handle resolves TimedOut and the job's token trips.
    let slow = pool.spawn_with(JobOptions::new().timeout(Duration::from_millis(30)), || {
        let job = parpool::current_job().expect("inside a job");
        while !job.is_cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
        "stopped when asked"
    });
    println!(
        "4. timeout                      -> {}",
        slow.join().unwrap_err()
    );

    // 5. A panic fails its own job only.
    let bad = pool.spawn(|| -> u32 { panic!("division by zero in row {}", 17) });
    let err = bad.join().unwrap_err();
    println!(
        "5. panic caught                 -> message {:?} at {}",
        err.panic_message().unwrap_or_default(),
        err.panic_location()
            .map(ToString::to_string)
            .unwrap_or_default()
    );

    // 6. Cancel a queued job; wait for the first of several to finish.
    let blockers: Vec<_> = (0..pool.workers())
        .map(|_| pool.spawn(|| std::thread::sleep(Duration::from_millis(50))))
        .collect();
    let queued = pool.spawn(|| unreachable!("cancelled before it could start"));
    println!(
        "6. cancel a queued job          -> took effect: {}",
        queued.cancel()
    );
    let r = wait(blockers, WaitFor::FirstCompleted, None);
    println!(
        "   wait(FirstCompleted)         -> {} done, {} pending",
        r.done.len(),
        r.pending.len()
    );

    // 7. Handles are futures: await them from any runtime.
    let h = pool.spawn(|| "awaited");
    let v = futures_lite_block_on(h)?;
    println!("7. .await                       -> {v}");

    let stats = pool.stats();
    pool.shutdown();
    println!(
        "\nstats: {} completed, {} failed, {} cancelled",
        stats.completed, stats.failed, stats.cancelled
    );
    Ok(())
}

/// A minimal executor, to show that handles need no particular runtime.
fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    futures::executor::block_on(fut)
}
