//! ThreadPool behaviour: queueing, shutdown, initializer, scope, stats, idleness.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::{Duration, Instant};

use parpool::{BuildError, Executor, JobError, Task, ThreadPool};

#[test]
fn zero_workers_is_a_typed_build_error() {
    let err = ThreadPool::builder().workers(0).build().unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::InvalidSetting {
                setting: "workers",
                ..
            }
        ),
        "{err}"
    );
    let err = ThreadPool::builder().queue_capacity(0).build().unwrap_err();
    assert!(matches!(
        err,
        BuildError::InvalidSetting {
            setting: "queue_capacity",
            ..
        }
    ));
}

#[test]
fn workers_are_named_and_initialized_once_each() {
    let inits = Arc::new(AtomicUsize::new(0));
    let i = inits.clone();
    let pool = ThreadPool::builder()
        .workers(3)
        .name("crunch")
        .stack_size(4 << 20)
        .initializer(move || {
            i.fetch_add(1, SeqCst);
        })
        .build()
        .unwrap();
    assert_eq!(
        inits.load(SeqCst),
        3,
        "build returns after every initializer ran"
    );
    let name = pool
        .spawn(|| std::thread::current().name().unwrap().to_owned())
        .join()
        .unwrap();
    assert!(name.starts_with("crunch-"), "{name}");
    assert_eq!(pool.workers(), 3);
}

#[test]
fn initializer_panic_fails_the_build() {
    let err = ThreadPool::builder()
        .workers(2)
        .initializer(|| panic!("no config"))
        .build()
        .unwrap_err();
    match err {
        BuildError::Initializer { error, .. } => {
            assert_eq!(error.panic_message(), Some("no config"))
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn bounded_queue_applies_backpressure_and_try_spawn_hands_the_job_back() {
    let pool = ThreadPool::builder()
        .workers(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let (started_tx, started_rx) = mpsc::channel();
    let running = pool.spawn(move || {
        started_tx.send(()).unwrap();
        g.wait();
    });
    started_rx.recv().unwrap();
    let a = pool.spawn(|| 1);
    let b = pool.spawn(|| 2);
    assert_eq!(pool.stats().queued, 2);

    // Full: try_spawn returns the very closure, which still works.
    let rejected = pool.try_spawn(|| 3).expect_err("queue is full");
    assert!(rejected.is_full());
    let f = rejected.into_inner();
    assert_eq!(f(), 3);

    // A blocking spawn waits for room.
    let unblocked = Arc::new(AtomicUsize::new(0));
    let flag = unblocked.clone();
    let pool = Arc::new(pool);
    let p = pool.clone();
    let submitter = std::thread::spawn(move || {
        let h = p.spawn(|| 4);
        flag.store(1, SeqCst);
        h.join()
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        unblocked.load(SeqCst),
        0,
        "spawn must block while the queue is full"
    );
    gate.wait();
    assert_eq!(submitter.join().unwrap(), Ok(4));
    assert_eq!((a.join(), b.join()), (Ok(1), Ok(2)));
    running.join().unwrap();
}

#[test]
fn spawn_after_shutdown_resolves_shutdown() {
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    pool.shutdown();
    assert!(pool.is_shutdown());
    assert_eq!(pool.spawn(|| 1).join(), Err(JobError::Shutdown));
    let back = pool.try_spawn(|| 2).expect_err("closed");
    assert!(!back.is_full());
    assert_eq!(back.into_inner()(), 2);
}

#[test]
fn shutdown_drains_the_queue() {
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let d = done.clone();
            pool.spawn(move || {
                std::thread::sleep(Duration::from_micros(200));
                d.fetch_add(1, SeqCst);
            })
        })
        .collect();
    pool.shutdown();
    assert_eq!(
        done.load(SeqCst),
        50,
        "shutdown runs every queued job before returning"
    );
    assert!(handles.into_iter().all(|h| h.join().is_ok()));
}

#[test]
fn shutdown_now_cancels_queued_and_waits_for_running() {
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    let running = pool.spawn(move || {
        started_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        f.fetch_add(1, SeqCst);
        "finished"
    });
    started_rx.recv().unwrap();
    let queued: Vec<_> = (0..20).map(|i| pool.spawn(move || i)).collect();
    pool.shutdown_now();
    assert_eq!(
        finished.load(SeqCst),
        1,
        "shutdown_now waits for the running job"
    );
    assert_eq!(running.join(), Ok("finished"));
    for h in queued {
        assert_eq!(h.join(), Err(JobError::Cancelled));
    }
    let s = pool.stats();
    assert_eq!((s.completed, s.cancelled, s.queued), (1, 20, 0));
}

#[test]
fn drop_is_a_graceful_shutdown() {
    let done = Arc::new(AtomicUsize::new(0));
    {
        let pool = ThreadPool::builder().workers(2).build().unwrap();
        for _ in 0..100 {
            let d = done.clone();
            drop(pool.spawn(move || d.fetch_add(1, SeqCst)));
        }
    }
    assert_eq!(done.load(SeqCst), 100);
}

#[test]
fn shutdown_from_inside_a_job_does_not_deadlock() {
    let pool = Arc::new(ThreadPool::builder().workers(2).build().unwrap());
    let p = pool.clone();
    let h = pool.spawn(move || {
        p.shutdown();
        p.is_shutdown()
    });
    assert_eq!(h.join(), Ok(true));
}

#[test]
fn scope_jobs_borrow_from_the_stack() {
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let data: Vec<u64> = (1..=100).collect();
    let total = Mutex::new(0);
    pool.scope(|s| {
        for chunk in data.chunks(10) {
            let total = &total;
            s.spawn(move || *total.lock().unwrap() += chunk.iter().sum::<u64>());
        }
    });
    assert_eq!(
        *total.lock().unwrap(),
        5050,
        "scope returns after every job finished"
    );
}

#[test]
fn scope_waits_for_its_jobs_even_when_the_body_panics() {
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let finished = AtomicUsize::new(0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                finished.fetch_add(1, SeqCst);
            });
            panic!("body failed");
        })
    }));
    assert!(r.is_err());
    assert_eq!(
        finished.load(SeqCst),
        1,
        "the borrowed job finished before the unwind left"
    );
}

#[test]
fn nested_scope_on_a_single_worker_does_not_deadlock() {
    let pool = Arc::new(ThreadPool::builder().workers(1).build().unwrap());
    let p = pool.clone();
    let h = pool.spawn(move || {
        let values = [1, 2, 3];
        p.scope(|s| {
            let hs: Vec<_> = values.iter().map(|v| s.spawn(move || v * 2)).collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum::<i32>()
        })
    });
    assert_eq!(
        h.join_timeout(Duration::from_secs(20))
            .expect("no deadlock"),
        Ok(12)
    );
}

parpool::task! {
    /// Squares its input.
    fn square(x: u64) -> u64 { x * x }
}

parpool::task!(
    fn concat((a, mut b): (String, String)) -> String {
        b.insert_str(0, &a);
        b
    }
);

#[test]
fn registered_tasks_run_through_the_executor_trait() {
    fn run_all(exec: &impl Executor) -> (u64, Vec<u64>, String) {
        let one = exec.submit(square, 12).join().unwrap();
        let many = exec.map_task(square, 0..5).map(Result::unwrap).collect();
        let s = exec
            .submit(concat, ("ab".into(), "cd".into()))
            .join()
            .unwrap();
        (one, many, s)
    }
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    assert_eq!(
        run_all(&pool),
        (144, vec![0, 1, 4, 9, 16], "abcd".to_owned())
    );
    assert!(square::NAME.ends_with("pool::square"), "{}", square::NAME);
    let mut unordered: Vec<_> = pool
        .map_task_unordered(square, [3, 4])
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    unordered.sort();
    assert_eq!(unordered, [(0, 9), (1, 16)]);
}

/// CPU time used by this process's threads whose name starts with
/// `prefix`, in clock ticks (Linux `/proc`).
fn threads_cpu_ticks(prefix: &str) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
        total += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(total)
}

#[test]
fn an_idle_pool_uses_no_cpu() {
    let pool = ThreadPool::builder()
        .workers(4)
        .name("idlecheck")
        .build()
        .unwrap();
    // Let the workers finish their brief spin and fall asleep.
    pool.spawn(|| ()).join().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let Some(before) = threads_cpu_ticks("idlecheck") else {
        return;
    };
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let used = threads_cpu_ticks("idlecheck").unwrap() - before;
    // Four spinning workers would burn ~200 ticks (at 100 Hz) in 500 ms.
    assert!(
        used <= 2,
        "idle pool used {used} ticks in {:?}",
        start.elapsed()
    );
    drop(pool);
}

/// Cancelled jobs once showed as cancelled only when a worker took them
/// off the queue: right after 89 cancellations a busy pool said 0.
#[test]
fn stats_count_each_job_when_its_handle_resolves() {
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let busy = pool.spawn(move || {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    started_rx.recv().unwrap();
    let queued: Vec<_> = (0..89).map(|i| pool.spawn(move || i)).collect();
    for h in &queued {
        assert!(h.cancel());
    }
    let s = pool.stats();
    assert_eq!((s.submitted, s.cancelled, s.running), (90, 89, 1), "{s:?}");
    release_tx.send(()).unwrap();
    busy.join().unwrap();
    // Counted before the joiner woke: no lag after `join`.
    assert_eq!(pool.stats().completed, 1);
    let late = pool.spawn_with(
        parpool::JobOptions::new().timeout(Duration::from_millis(10)),
        || std::thread::sleep(Duration::from_millis(200)),
    );
    assert!(late.join().unwrap_err().is_timed_out());
    let s = pool.stats();
    assert_eq!((s.timed_out, s.failed), (1, 0), "{s:?}");
    pool.shutdown();
    let s = pool.stats();
    assert_eq!(s.finished(), s.submitted, "{s:?}");
    assert_eq!((s.queued, s.running), (0, 0), "{s:?}");
}

#[test]
fn stats_add_up() {
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let hs: Vec<_> = (0..100)
        .map(|i| pool.spawn(move || if i % 10 == 0 { panic!("odd one") } else { i }))
        .collect();
    for h in hs {
        let _ = h.join();
    }
    pool.shutdown();
    let s = pool.stats();
    assert_eq!((s.completed, s.failed, s.running, s.queued), (90, 10, 0, 0));
}

#[test]
fn a_batch_stolen_by_a_busy_worker_does_not_delay_older_jobs() {
    // Worker 0 may take jobs 0 and 1 in one batch; the idle worker must then
    // start job 1 (older) rather than job 2 from the injector.
    for _ in 0..50 {
        let pool = ThreadPool::builder().workers(2).build().unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let gates: Vec<_> = (0..3)
            .map(|i| {
                let (gate_tx, gate_rx) = mpsc::channel::<()>();
                let started = started_tx.clone();
                let h = pool.spawn(move || {
                    started.send(i).unwrap();
                    let _ = gate_rx.recv();
                });
                (gate_tx, h)
            })
            .collect();
        let mut first_two = [
            started_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            started_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        ];
        first_two.sort();
        assert_eq!(first_two, [0, 1], "job 2 started before job 1");
        for (gate, h) in gates {
            drop(gate);
            h.join().unwrap();
        }
    }
}

#[test]
fn jobs_pushed_while_a_worker_searches_all_start() {
    // Every job blocks until all have started: if a wake-up were lost, a
    // job would sit in the queue behind sleeping workers and this hangs.
    for round in 0..200 {
        let workers = 2 + round % 5;
        let pool = ThreadPool::builder().workers(workers).build().unwrap();
        let all = Arc::new(Barrier::new(workers));
        let hs: Vec<_> = (0..workers)
            .map(|_| {
                let all = all.clone();
                pool.spawn(move || {
                    all.wait();
                })
            })
            .collect();
        for h in hs {
            h.join_timeout(Duration::from_secs(10))
                .expect("a queued job never started while workers slept")
                .unwrap();
        }
        if round % 3 == 0 {
            // Let the workers fall asleep between rounds too.
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

#[test]
fn scoped_results_may_borrow_from_outside_the_scope() {
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let words = ["alpha".to_string(), "beta".into(), "epsilon".into()];
    let longest: &str = pool.scope(|s| {
        let hs: Vec<_> = words
            .chunks(2)
            .map(|c| s.spawn(move || c.iter().max_by_key(|w| w.len()).unwrap().as_str()))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .max_by_key(|w| w.len())
            .unwrap()
    });
    assert_eq!(longest, "epsilon");
    // `.await` works too, and a panic is the handle's error.
    let n = 5;
    let (doubled, failed) = pool.scope(|s| {
        let ok = s.spawn(|| &n);
        let bad = s.spawn(|| -> &i32 { panic!("scoped boom") });
        (futures::executor::block_on(ok).map(|r| r * 2), bad.join())
    });
    assert_eq!(doubled, Ok(10));
    assert_eq!(failed.unwrap_err().panic_message(), Some("scoped boom"));
}

/// Counts its drops in a counter it borrows.
struct Noisy<'a>(&'a AtomicUsize);

impl Drop for Noisy<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

#[test]
fn untaken_scoped_results_are_dropped_inside_the_scope() {
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let drops = AtomicUsize::new(0);
    pool.scope(|s| {
        let a = s.spawn(|| Noisy(&drops));
        drop(s.spawn(|| Noisy(&drops))); // result never taken
        let slow = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            Noisy(&drops)
        });
        drop(slow); // dropped before the job finished
        drop(a.join().unwrap());
    });
    // Every result was dropped before `scope` returned (while `drops` is
    // still borrowed), none after.
    assert_eq!(drops.load(SeqCst), 3);
    // A leaked handle leaks its result: it is never dropped late.
    let leaks = AtomicUsize::new(0);
    pool.scope(|s| {
        let h = s.spawn(|| Noisy(&leaks));
        crate::common::wait_until("the job to finish", || h.is_finished());
        std::mem::forget(h);
    });
    assert_eq!(leaks.load(SeqCst), 0);
}

#[test]
fn scope_map_yields_in_order_with_per_item_errors() {
    let pool = ThreadPool::builder().workers(3).build().unwrap();
    let data: Vec<u64> = (0..1000).collect();
    let offset = 7u64;
    let (results, empty) = pool.scope(|s| {
        let results: Vec<Result<u64, parpool::JobError>> = s
            .map(
                |x: &u64| {
                    assert!(*x != 500, "five hundred");
                    x + offset
                },
                &data,
            )
            .collect();
        let empty = s.map(|x: u8| x, Vec::new()).count();
        (results, empty)
    });
    assert_eq!(empty, 0);
    assert_eq!(results.len(), 1000);
    for (i, r) in results.iter().enumerate() {
        if i == 500 {
            assert_eq!(
                r.as_ref().unwrap_err().panic_message(),
                Some("five hundred")
            );
        } else {
            assert_eq!(r, &Ok(i as u64 + 7));
        }
    }
    // A scope on a shut-down pool: every item says so.
    pool.shutdown();
    let after: Vec<_> = pool.scope(|s| s.map(|x: u32| x, 0..5u32).collect());
    assert_eq!(after, vec![Err(parpool::JobError::Shutdown); 5]);
}

#[test]
fn a_closed_thread_pool_drops_without_waiting_and_its_jobs_finish() {
    let (go, gate) = std::sync::mpsc::channel::<()>();
    let pool = parpool::ThreadPool::builder().workers(1).build().unwrap();
    let gated = pool.spawn(move || gate.recv().is_ok());
    let queued = pool.spawn(|| 2);
    pool.close();
    assert!(pool.spawn(|| 3).join().unwrap_err().is_shutdown());
    // Dropping it would deadlock here if it waited: the gate opens after.
    drop(pool);
    assert!(!gated.is_finished());
    go.send(()).unwrap();
    let patience = std::time::Duration::from_secs(60);
    assert_eq!(gated.join_timeout(patience).ok(), Some(Ok(true)));
    assert_eq!(queued.join_timeout(patience).ok(), Some(Ok(2)));
}
