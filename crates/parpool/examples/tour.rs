//! A tour of parpool: a thread pool (submit and join, map, as_completed,
//! timeouts, a caught panic, cancellation, a task through the Executor
//! trait, a handle awaited from async code), then a process pool where a
//! crashing job fails alone and the pool heals.
//!
//! Run it with `cargo run --release --example tour`.

use std::time::{Duration, Instant};

use parpool::{Executor, JobError, JobOptions, ProcessPool, ThreadPool, WaitFor, WorkerOutput};
use parpool::{as_completed, wait};

parpool::task! {
    /// Counts the primes below `n` (deliberately naive: CPU-bound).
    fn count_primes(n: u64) -> u64 {
        (2..n).filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0)).count() as u64
    }
}

parpool::task! {
    /// Takes its worker process down with it.
    fn crash(_x: ()) -> u64 { std::process::abort() }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    parpool::init(); // worker processes of the process pool start here
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
        "   thread pool stats: {} completed, {} failed, {} cancelled",
        stats.completed, stats.failed, stats.cancelled
    );

    on_processes(inputs, sequential)
}

/// 8. The same task on worker processes; a crash fails alone.
fn on_processes(inputs: Vec<u64>, sequential: u64) -> Result<(), Box<dyn std::error::Error>> {
    let procs = ProcessPool::builder()
        .workers(2)
        .stderr(WorkerOutput::Null)
        .build()?;
    let t = Instant::now();
    let in_processes: u64 = procs
        .map_task(count_primes, inputs)
        .map(Result::unwrap)
        .sum();
    assert_eq!(in_processes, sequential);
    println!(
        "8. ProcessPool map_task        -> same {in_processes} primes in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let crashed = procs.submit(crash, ()).join().unwrap_err();
    let healed = procs.submit(count_primes, 100).join()?;
    let how = match &crashed {
        JobError::Crashed { status, .. } => status.to_string(),
        other => other.to_string(),
    };
    println!(
        "   a job that aborts            -> fails alone ({how}); the next job still runs: {healed} primes below 100 ({} worker replaced)",
        procs.respawns()
    );
    Ok(())
}

/// A minimal executor, to show that handles need no particular runtime.
fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    futures::executor::block_on(fut)
}
