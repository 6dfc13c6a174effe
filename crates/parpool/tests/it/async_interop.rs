//! Handles are plain `std::future::Future`s: they work in any runtime.

use std::time::Duration;

use parpool::{JobError, ThreadPool};

/// A one-thread tokio runtime with timers.
fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn pool() -> ThreadPool {
    ThreadPool::builder().workers(2).build().unwrap()
}

#[test]
fn await_in_tokio_multi_thread() {
    let pool = pool();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let results = rt.block_on(async {
        let a = pool.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            1
        });
        let b = pool.spawn(|| 2);
        let failing = pool.spawn(|| -> i32 { panic!("async panic") });
        let (a, b, f) = tokio::join!(a, b, failing);
        (a, b, f)
    });
    assert_eq!(results.0, Ok(1));
    assert_eq!(results.1, Ok(2));
    assert_eq!(results.2.unwrap_err().panic_message(), Some("async panic"));
}

#[test]
fn await_in_tokio_current_thread_with_timeout() {
    let pool = pool();
    let rt = current_thread_runtime();
    rt.block_on(async {
        let slow = pool.spawn(|| std::thread::sleep(Duration::from_millis(300)));
        let timed = tokio::time::timeout(Duration::from_millis(10), slow).await;
        assert!(
            timed.is_err(),
            "the runtime's timeout fires while the job runs"
        );
        let quick = pool.spawn(|| "quick");
        assert_eq!(quick.await, Ok("quick"));
    });
}

#[test]
fn await_in_futures_executor() {
    let pool = pool();
    let h = pool.spawn(|| (1..=10).sum::<u32>());
    assert_eq!(futures::executor::block_on(h), Ok(55));
    // Both workers wait at a gate, so the next two jobs stay queued until
    // the cancel has happened.
    let (open, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Arc::new(std::sync::Mutex::new(gate));
    let blockers: Vec<_> = (0..2)
        .map(|_| {
            let gate = gate.clone();
            pool.spawn(move || {
                let _ = gate.lock().unwrap().recv();
            })
        })
        .collect();
    let queued = pool.spawn(|| 1);
    let queued2 = pool.spawn(|| 2);
    assert!(queued2.cancel());
    drop(open);
    assert_eq!(
        futures::executor::block_on(queued2),
        Err(JobError::Cancelled)
    );
    assert_eq!(futures::executor::block_on(queued), Ok(1));
    for b in blockers {
        assert_eq!(futures::executor::block_on(b), Ok(()));
    }
}

#[test]
fn await_in_smol() {
    let pool = pool();
    let h = pool.spawn(|| "smol");
    assert_eq!(smol::block_on(h), Ok("smol"));
}

#[test]
fn many_handles_joined_concurrently_in_tokio() {
    let pool = pool();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let sum = rt.block_on(async {
        let handles: Vec<_> = (0..1000u64).map(|i| pool.spawn(move || i)).collect();
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap();
        }
        sum
    });
    assert_eq!(sum, 999 * 1000 / 2);
}

/// Runs until its cancel token trips, then records that it saw it.
fn until_cancelled(stopped: std::sync::Arc<std::sync::atomic::AtomicBool>) -> impl FnOnce() {
    move || {
        let job = parpool::current_job().unwrap();
        let started = std::time::Instant::now();
        while !job.is_cancelled() && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        stopped.store(job.is_cancelled(), std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_timeout_that_drops_a_cancel_on_drop_handle_stops_the_job() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let pool = pool();
    let rt = current_thread_runtime();
    let stopped = Arc::new(AtomicBool::new(false));
    let guarded = pool
        .spawn(until_cancelled(stopped.clone()))
        .cancel_on_drop();
    let token = guarded.cancel_token();
    let gave_up =
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(30), guarded).await });
    assert!(
        gave_up.is_err(),
        "the job cannot finish before it is cancelled"
    );
    assert!(token.is_cancelled());
    pool.shutdown();
    assert!(
        stopped.load(Ordering::SeqCst),
        "the running job saw its token trip"
    );
    let s = pool.stats();
    assert_eq!((s.submitted, s.cancelled), (1, 1), "{s:?}");

    // A plain handle detaches instead: the job runs on.
    let pool = self::pool();
    let mut plain = pool.spawn(until_cancelled(Arc::new(AtomicBool::new(false))));
    let gave_up =
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(30), &mut plain).await });
    assert!(gave_up.is_err());
    assert!(!plain.cancel_token().is_cancelled());
    plain.cancel();
}

#[test]
fn a_cancel_on_drop_handle_leaves_a_finished_job_alone_and_can_be_detached() {
    let pool = pool();
    let guarded = pool.spawn(|| 5).cancel_on_drop();
    let rt = current_thread_runtime();
    assert_eq!(
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), guarded).await })
            .unwrap(),
        Ok(5)
    );
    assert_eq!(pool.spawn(|| 6).cancel_on_drop().join(), Ok(6));
    let finished = pool.spawn(|| 7).cancel_on_drop();
    crate::common::wait_until("the job to finish", || finished.is_finished());
    let token = finished.cancel_token();
    drop(finished);
    assert!(
        !token.is_cancelled(),
        "a resolved job is not cancelled by the drop"
    );
    let detached = pool.spawn(|| 8).cancel_on_drop().detach();
    assert_eq!(detached.join(), Ok(8));
}

#[cfg(all(feature = "process", target_os = "linux"))]
parpool::task! {
    fn sleep_long(seconds: u64) -> () { std::thread::sleep(Duration::from_secs(seconds)) }
}

#[cfg(all(feature = "process", target_os = "linux"))]
#[test]
fn a_timeout_that_drops_a_cancel_on_drop_process_job_kills_its_worker() {
    use parpool::Executor;
    let pool = crate::common::quiet_pool(1);
    let before = pool.worker_pids();
    let rt = current_thread_runtime();
    let guarded = pool.submit(sleep_long, 60).cancel_on_drop();
    assert!(
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(200), guarded).await })
            .is_err()
    );
    // The worker running it was killed and replaced: the next job runs now,
    // not in a minute.
    let started = std::time::Instant::now();
    assert_eq!(pool.submit(sleep_long, 0).join(), Ok(()));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_ne!(pool.worker_pids(), before);
    assert_eq!(pool.stats().running, 0);
}

/// Thousands of async submitters on one runtime thread share a two-place
/// queue: none blocks the thread (it would deadlock: the jobs' results are
/// awaited on it too), none is lost when others give up waiting, and a
/// close wakes those still waiting with `Shutdown`.
#[test]
fn spawn_async_waits_for_room_without_blocking_the_runtime() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

    let pool = Arc::new(
        ThreadPool::builder()
            .workers(2)
            .queue_capacity(2)
            .build()
            .unwrap(),
    );
    let ran = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (accepted, abandoned) = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..3_000u64 {
            let pool = pool.clone();
            let ran = ran.clone();
            tasks.push(tokio::spawn(async move {
                let submit = pool.spawn_async(move || {
                    ran.fetch_add(1, SeqCst);
                    i
                });
                // Every seventh gives up after a moment: its place must
                // pass to someone else.
                let handle = if i % 7 == 0 {
                    match tokio::time::timeout(Duration::from_micros(50), submit).await {
                        Ok(h) => h,
                        Err(_) => return None,
                    }
                } else {
                    submit.await
                };
                Some(handle.await)
            }));
        }
        let mut accepted = 0u64;
        let mut abandoned = 0u64;
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("an async submitter hung")
                .unwrap()
            {
                Some(result) => {
                    result.unwrap();
                    accepted += 1;
                }
                None => abandoned += 1,
            }
        }
        (accepted, abandoned)
    });
    assert_eq!(accepted + abandoned, 3_000);
    assert_eq!(
        ran.load(SeqCst),
        accepted,
        "each accepted job ran once, no other"
    );

    // Submitters still waiting when the pool closes are refused, not left.
    let (go, gate) = std::sync::mpsc::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(gate));
    let blockers: Vec<_> = (0..4)
        .map(|_| {
            let gate = gate.clone();
            pool.spawn(move || {
                let _ = gate.lock().unwrap().recv();
            })
        })
        .collect();
    let refused = rt.block_on(async {
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.spawn_async(|| ()).await.await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        pool.close();
        tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("a waiting submitter was not woken by close")
            .unwrap()
    });
    assert!(refused.unwrap_err().is_shutdown());
    for _ in 0..4 {
        let _ = go.send(());
    }
    for b in blockers {
        assert!(b.join_timeout(Duration::from_secs(60)).is_ok());
    }
}
