//! No process job waits behind a blocked one; workers belong to the pool,
//! not to the thread that built it; a crash in a map fails one item; crash
//! details say what the evidence says.

use std::time::{Duration, Instant};

use parpool::ipc::{Event, Queue, SharedMem};
use parpool::{Executor, ExitStatus, JobError, ProcessPool, WorkerOutput};

use crate::common::JoinWithin;

parpool::task!(
    fn echo(x: u64) -> u64 {
        x
    }
);
parpool::task!(
    fn sleep_ms(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
);
parpool::task!(
    fn consume(q: Queue<u64>) -> Option<u64> {
        q.recv_timeout(Duration::from_secs(2)).ok()
    }
);
parpool::task!(
    fn produce((q, v): (Queue<u64>, u64)) -> bool {
        q.send(v).is_ok()
    }
);
parpool::task!(
    fn wait_event(e: Event) -> bool {
        e.wait_timeout(Duration::from_secs(2))
    }
);
parpool::task!(
    fn set_event(e: Event) -> () {
        e.set()
    }
);
parpool::task!(
    fn abort_at((x, at): (u64, u64)) -> u64 {
        if x == at {
            std::process::abort();
        }
        x * 2
    }
);
parpool::task!(
    /// Aborts on item `at` the first time only (a marker file remembers).
    fn abort_once_at((x, at, marker): (u64, u64, String)) -> u64 {
        if x == at && std::fs::File::create_new(&marker).is_ok() {
            std::process::abort();
        }
        x * 2
    }
);
parpool::task!(
    fn abort_now(_x: ()) -> u64 {
        std::process::abort()
    }
);
parpool::task!(
    fn allocate_mib(mib: usize) -> usize {
        let mut v: Vec<u8> = Vec::new();
        v.reserve_exact(mib << 20);
        v.resize(mib << 20, 1);
        std::hint::black_box(&v);
        v.len()
    }
);
parpool::task!(
    /// Allocates a MiB at a time, keeping each.
    fn grow_mib(mib: usize) -> usize {
        let blocks: Vec<Box<[u8]>> = (0..mib)
            .map(|_| vec![1u8; 1 << 20].into_boxed_slice())
            .collect();
        std::hint::black_box(&blocks);
        blocks.len()
    }
);
parpool::task!(
    /// Counts a run of job `i` in slot `i` of `counts`.
    fn count_run((counts, i): (SharedMem, usize)) -> () {
        if let Some(word) = counts.atomic_u64(i) {
            word.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
);
parpool::task!(
    fn my_pid(_x: ()) -> u32 {
        std::process::id()
    }
);

use crate::common::quiet_pool as pool;

/// Teaches the pool that jobs are tiny, so it pipelines deeply.
fn warm(pool: &ProcessPool) {
    let handles: Vec<_> = (0..10_000).map(|i| pool.submit(echo, i)).collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join_within(), Ok(i as u64));
    }
}

/// How long the tests below wait for a job that should be quick.
const PATIENCE: Duration = Duration::from_secs(10);

#[test]
fn a_producer_is_never_stranded_behind_its_blocked_consumer_queue() {
    let pool = pool(2);
    warm(&pool);
    let q: Queue<u64> = Queue::new().unwrap();
    for round in 0..200 {
        let consumer = pool.submit(consume, q.clone());
        let producer = pool.submit(produce, (q.clone(), round));
        let got = consumer
            .join_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("round {round}: the consumer hung"));
        assert_eq!(
            got,
            Ok(Some(round)),
            "round {round}: the consumer gave up waiting"
        );
        assert_eq!(producer.join_timeout(PATIENCE).ok(), Some(Ok(true)));
    }
}

#[test]
fn a_setter_is_never_stranded_behind_its_blocked_waiter_event() {
    let pool = pool(2);
    warm(&pool);
    for round in 0..200 {
        let e = Event::new().unwrap();
        let waiter = pool.submit(wait_event, e.clone());
        let setter = pool.submit(set_event, e);
        let woke = waiter
            .join_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("round {round}: the waiter hung"));
        assert_eq!(woke, Ok(true), "round {round}: the waiter gave up waiting");
        assert_eq!(setter.join_timeout(PATIENCE).ok(), Some(Ok(())));
    }
}

#[test]
fn jobs_taken_back_from_a_blocked_pipeline_run_exactly_once() {
    // Rounds of a blocker with tiny jobs pipelined behind it: the tiny jobs
    // are taken back and moved, and each must run once, never twice.
    let pool = pool(2);
    warm(&pool);
    const JOBS: usize = 200;
    for round in 0..10 {
        let counts = SharedMem::new(JOBS * 8).unwrap();
        // Jobs queued ahead, so that the workers take the blocker and the
        // jobs after it in one batch: those are pipelined behind it.
        let ahead: Vec<_> = (0..5_000).map(|i| pool.submit(echo, i)).collect();
        let blocker = pool.submit(sleep_ms, 300);
        let jobs: Vec<_> = (0..JOBS)
            .map(|i| pool.submit(count_run, (counts.clone(), i)))
            .collect();
        for h in ahead {
            h.join_within().unwrap();
        }
        for h in jobs {
            assert_eq!(h.join_timeout(PATIENCE).ok(), Some(Ok(())), "round {round}");
        }
        // They did not wait behind the blocker: whatever was pipelined
        // behind it was taken back and run by the other worker.
        assert!(!blocker.is_finished(), "round {round}: jobs waited");
        assert_eq!(blocker.join_within(), Ok(300));
        for i in 0..JOBS {
            let runs = counts
                .atomic_u64(i)
                .unwrap()
                .load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!(runs, 1, "round {round}: job {i} ran {runs} times");
        }
    }
    assert_eq!(pool.respawns(), 0);
}

#[test]
fn a_flood_of_tiny_jobs_never_fills_the_socket_both_ways() {
    // One-request writes, each charged about 1 KiB by the kernel, once
    // filled a worker's socket while replies filled the other direction,
    // and the supervisor and its worker both blocked writing. That was seen
    // under the benchmark's load and does not reproduce reliably here; this
    // guards the property (a flood always completes), every wait bounded.
    let pool = pool(2);
    for round in 0..5u64 {
        let handles: Vec<_> = (0..20_000).map(|i| pool.submit(echo, i)).collect();
        let sum: u64 = handles
            .into_iter()
            .map(|h| {
                h.join_within()
                    .unwrap_or_else(|e| panic!("round {round}: {e}"))
            })
            .sum();
        assert_eq!(sum, 20_000 * 19_999 / 2, "round {round}");
    }
}

#[test]
fn tiny_jobs_finish_while_a_long_one_runs() {
    let pool = pool(2);
    warm(&pool);
    let started = Instant::now();
    let long = pool.submit(sleep_ms, 3000);
    let tiny: Vec<_> = (0..100).map(|i| pool.submit(echo, i)).collect();
    for (i, h) in tiny.into_iter().enumerate() {
        assert_eq!(h.join_timeout(PATIENCE).ok(), Some(Ok(i as u64)));
    }
    assert!(
        !long.is_finished() && started.elapsed() < Duration::from_millis(2500),
        "the tiny jobs waited for the long one ({:?})",
        started.elapsed()
    );
    assert_eq!(long.join_within(), Ok(3000));
}

#[test]
fn a_finished_reply_is_not_held_back_by_a_job_that_blocks_after_it() {
    // One worker, deep pipeline: `echo` and then a job that blocks until
    // the test has seen echo's result. The worker must send echo's reply
    // without waiting for the blocked job to end.
    let pool = pool(1);
    warm(&pool);
    let e = Event::new().unwrap();
    let first = pool.submit(echo, 7);
    let blocked = pool.submit(wait_event, e.clone());
    let got = first.join_timeout(Duration::from_secs(1));
    e.set();
    assert_eq!(got.ok(), Some(Ok(7)), "the finished job's reply waited");
    assert_eq!(blocked.join_within(), Ok(true));
}

#[test]
fn stats_count_jobs_waiting_in_a_pipeline_as_queued() {
    let pool = pool(1);
    warm(&pool);
    let e = Event::new().unwrap();
    let blocked = pool.submit(wait_event, e.clone());
    let behind: Vec<_> = (0..5).map(|i| pool.submit(echo, i)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let stats = pool.stats();
    assert_eq!(stats.running, 1, "{stats:?}");
    assert_eq!(stats.queued, 5, "{stats:?}");
    e.set();
    assert_eq!(blocked.join_within(), Ok(true));
    for h in behind {
        h.join_within().unwrap();
    }
    assert_eq!(pool.stats().queued, 0);
}

#[test]
fn workers_outlive_the_thread_that_built_the_pool() {
    let (pool, running) = std::thread::spawn(|| {
        let pool = pool(2);
        let running = pool.submit(sleep_ms, 2000);
        // Let the job start before this thread ends.
        std::thread::sleep(Duration::from_millis(200));
        (pool, running)
    })
    .join()
    .unwrap();
    assert_eq!(running.join_within(), Ok(2000));
    assert_eq!(pool.respawns(), 0);
    assert_eq!(pool.submit(echo, 5).join_within(), Ok(5));
    assert_eq!(pool.worker_pids().len(), 2);
}

#[test]
fn a_dead_idle_worker_leaves_worker_pids_at_once() {
    let pool = pool(2);
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    let victim = pids[0];
    std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.worker_pids().contains(&victim) {
        assert!(Instant::now() < deadline, "the dead worker is still listed");
        std::thread::sleep(Duration::from_millis(1));
    }
    // And the pool still runs jobs on both slots.
    let handles: Vec<_> = (0..10).map(|i| pool.submit(echo, i)).collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join_within(), Ok(i as u64));
    }
}

#[test]
fn a_crash_in_map_task_fails_exactly_the_item_that_crashed() {
    let pool = pool(2);
    let results: Vec<_> = pool
        .map_task(abort_at, (0..1000).map(|x| (x, 500)))
        .collect();
    assert_eq!(results.len(), 1000);
    for (x, r) in results.iter().enumerate() {
        if x == 500 {
            assert!(
                matches!(
                    r,
                    Err(JobError::Crashed {
                        status: ExitStatus::Signal(6),
                        ..
                    })
                ),
                "{r:?}"
            );
        } else {
            assert_eq!(r, &Ok(x as u64 * 2), "item {x}");
        }
    }
    // Unordered, and on a bigger map: still one.
    let crashed = pool
        .map_task_unordered(abort_at, (0..200_000).map(|x| (x, 123_456)))
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    assert_eq!(crashed, [123_456]);
}

#[test]
fn a_map_item_that_crashes_once_is_retried_alone() {
    let marker = std::env::temp_dir().join(format!("parpool-abort-once-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let marker_s = marker.to_string_lossy().into_owned();
    let pool = ProcessPool::builder()
        .workers(2)
        .retries(1)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap();
    let results: Vec<u64> = pool
        .map_task(abort_once_at, (0..1000).map(|x| (x, 500, marker_s.clone())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(results, (0..1000).map(|x| x * 2).collect::<Vec<_>>());
    assert!(marker.exists(), "item 500 never crashed");
    assert_eq!(pool.respawns(), 1);
    let _ = std::fs::remove_file(&marker);
}

/// One quiet worker with a memory limit, and `RUST_BACKTRACE` set as
/// given (`None`: inherited).
fn limited_pool(bytes: u64, backtrace: Option<&str>) -> ProcessPool {
    let mut builder = ProcessPool::builder()
        .workers(1)
        .memory_limit(bytes)
        .stderr(WorkerOutput::Null);
    if let Some(value) = backtrace {
        builder = builder.env("RUST_BACKTRACE", value);
    }
    builder.build().unwrap()
}

fn detail(err: JobError) -> String {
    match err {
        JobError::Crashed { detail, .. } => detail.unwrap_or_default(),
        other => panic!("not a crash: {other:?}"),
    }
}

#[test]
fn an_abort_is_not_blamed_on_memory_without_evidence() {
    let pool = limited_pool(4 << 30, None);
    let d = detail(pool.submit(abort_now, ()).join_within().unwrap_err());
    assert_eq!(d, "SIGABRT: aborted");
}

#[test]
fn an_allocation_failure_under_a_memory_limit_says_so() {
    // One allocation larger than the limit: the abort follows the failed
    // allocation directly (no backtrace printed in between, which would
    // hide the allocation's error code).
    let pool = limited_pool(512 << 20, Some("0"));
    let d = detail(pool.submit(allocate_mib, 2048).join_within().unwrap_err());
    assert!(
        d.contains("allocation failed") && d.contains("memory limit"),
        "{d}"
    );
    // The pool carries on.
    assert_eq!(pool.submit(allocate_mib, 16).join_within(), Ok(16 << 20));
}

#[test]
fn memory_that_grows_into_the_limit_is_named_whatever_the_environment() {
    let pool = limited_pool(512 << 20, Some("1"));
    let d = detail(pool.submit(grow_mib, 4096).join_within().unwrap_err());
    assert!(
        d.contains("allocation failed") && d.contains("memory limit"),
        "{d}"
    );
}

#[test]
fn an_external_sigkill_is_described_as_one() {
    let pool = pool(1);
    let pid = pool.submit(my_pid, ()).join_within().unwrap();
    let job = pool.submit(sleep_ms, 5000);
    std::thread::sleep(Duration::from_millis(200));
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let d = detail(job.join_within().unwrap_err());
    assert!(
        d.contains("SIGKILL") && d.contains("another process"),
        "{d}"
    );
    assert!(!d.contains("killed by the pool"), "{d}");
}

#[test]
fn a_cancelled_running_job_is_cancelled_not_crashed_and_the_next_job_is_unharmed() {
    let pool = pool(1);
    let job = pool.submit(sleep_ms, 5000);
    std::thread::sleep(Duration::from_millis(200));
    assert!(job.cancel());
    assert_eq!(job.join_within(), Err(JobError::Cancelled));
    assert_eq!(pool.submit(echo, 3).join_within(), Ok(3));
    let s = pool.stats();
    assert_eq!((s.cancelled, s.failed, s.completed), (1, 0, 1), "{s:?}");
}
