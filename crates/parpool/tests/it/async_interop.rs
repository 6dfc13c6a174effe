//! Handles are plain `std::future::Future`s: they work in any runtime.

use std::time::Duration;

use parpool::{JobError, ThreadPool};

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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
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
