//! 100k jobs with random panics, cancels and timeouts: nothing is lost and
//! the counts add up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use parpool::{JobError, JobOptions, ThreadPool};

/// A small deterministic generator (xorshift), so failures reproduce.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[test]
fn soak_100k_jobs_with_random_panics_loses_nothing() {
    const JOBS: u64 = 100_000;
    let pool = ThreadPool::builder()
        .workers(4)
        .queue_capacity(1024)
        .build()
        .unwrap();
    let ran_ok = Arc::new(AtomicU64::new(0));
    let mut next = rng(0x9e37_79b9_7f4a_7c15);
    let mut handles = Vec::with_capacity(JOBS as usize);
    let mut expect_panics = 0u64;
    for i in 0..JOBS {
        let r = next();
        let panics = r.is_multiple_of(17);
        expect_panics += u64::from(panics);
        let ran_ok = ran_ok.clone();
        let opts = if r % 1000 == 1 {
            JobOptions::new().timeout(Duration::from_secs(60))
        } else {
            JobOptions::new()
        };
        handles.push(pool.spawn_with(opts, move || {
            if panics {
                panic!("job {i} failed on purpose");
            }
            ran_ok.fetch_add(1, SeqCst);
            i
        }));
    }
    // Cancel a scattering of jobs; some will already have run.
    let mut cancelled_won = 0u64;
    for h in handles.iter().skip(3).step_by(997) {
        cancelled_won += u64::from(h.cancel());
    }
    let (mut ok, mut panicked, mut cancelled) = (0u64, 0u64, 0u64);
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(v) => {
                assert_eq!(v, i as u64);
                ok += 1;
            }
            Err(JobError::Panicked(p)) => {
                assert_eq!(p.message, format!("job {i} failed on purpose"));
                panicked += 1;
            }
            Err(JobError::Cancelled) => cancelled += 1,
            Err(other) => panic!("unexpected error for job {i}: {other}"),
        }
    }
    assert_eq!(
        ok + panicked + cancelled,
        JOBS,
        "every handle resolved exactly once"
    );
    assert_eq!(cancelled, cancelled_won);
    assert!(panicked <= expect_panics);
    pool.shutdown();
    let s = pool.stats();
    assert_eq!(
        s.finished(),
        JOBS,
        "pool counters account for every job: {s:?}"
    );
    assert_eq!(
        (s.submitted, s.completed, s.failed, s.cancelled),
        (JOBS, ok, panicked, cancelled),
        "the stats say what the handles said"
    );
    // A job cancelled while it ran may have run to the end on its thread.
    let ran = ran_ok.load(SeqCst);
    assert!(ran >= ok && ran <= ok + cancelled, "{ran} ran, {ok} ok");
    assert_eq!((s.queued, s.running), (0, 0));
}

#[test]
fn concurrent_submitters_and_shutdown_strand_no_job() {
    for round in 0..20 {
        let pool = Arc::new(ThreadPool::builder().workers(2).build().unwrap());
        let submitters: Vec<_> = (0..3)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    (0..2_000)
                        .map(|i| pool.spawn(move || i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_micros(200 * round));
        pool.shutdown();
        for s in submitters {
            for h in s.join().unwrap() {
                // Either it ran, or it was refused: it never hangs.
                match h.join_timeout(Duration::from_secs(20)) {
                    Ok(Ok(_)) | Ok(Err(JobError::Shutdown)) => {}
                    Ok(Err(e)) => panic!("unexpected {e}"),
                    Err(_) => panic!("a job submitted during shutdown was stranded"),
                }
            }
        }
    }
}
