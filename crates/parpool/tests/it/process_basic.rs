//! ProcessPool: round trips through real worker processes.

use std::time::Duration;

use parpool::{Executor, JobError, ProcessPool};

parpool::task!(
    fn double(x: u64) -> u64 {
        x * 2
    }
);
parpool::task!(
    fn whoami(_x: ()) -> u32 {
        std::process::id()
    }
);

#[test]
fn a_job_runs_in_another_process() {
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    assert_eq!(pool.submit(double, 21).join(), Ok(42));
    let pid = pool.submit(whoami, ()).join().unwrap();
    assert_ne!(pid, std::process::id(), "the job ran in a worker process");
    assert!(pool.worker_pids().contains(&pid));
    let out: Vec<u64> = pool
        .map_task(double, 0..1000)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(out, (0..1000).map(|x| x * 2).collect::<Vec<_>>());
    pool.shutdown();
    assert_eq!(pool.submit(double, 1).join(), Err(JobError::Shutdown));
    let _ = Duration::ZERO;
}

#[test]
fn big_frames_both_ways_do_not_deadlock_the_pipeline() {
    // Automatic chunking starts with tiny chunks (the pipeline deepens),
    // then sends chunks of tens of thousands of items: frames of hundreds
    // of KiB in both directions while many are in flight.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let pool = ProcessPool::builder().workers(2).build().unwrap();
        let total: u64 = pool
            .map_task(double, 0..1_000_000u64)
            .map(Result::unwrap)
            .sum();
        let _ = tx.send(total);
    });
    let total = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the pipeline deadlocked");
    assert_eq!(total, 999_999 * 1_000_000);
}
