//! Async waits on ipc objects, from tokio and smol, woken by other
//! processes.

use std::future::Future;
use std::time::{Duration, Instant};

use parpool::ipc::{Event, Queue};
use parpool::{Executor, ProcessPool};

parpool::task! {
    fn set_later(args: (Event, u64)) -> () {
        std::thread::sleep(Duration::from_millis(args.1));
        args.0.set();
    }
}

parpool::task! {
    fn produce(args: (Queue<u64>, u64)) -> () {
        for i in 0..args.1 {
            args.0.send(i).unwrap();
        }
    }
}

parpool::task! {
    fn consume_slowly(args: (Queue<u64>, u64)) -> u64 {
        let mut sum = 0;
        for _ in 0..args.1 {
            sum += args.0.recv().unwrap();
            if sum % 100 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        sum
    }
}

/// One test at a time: one counts this process's threads.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn pool() -> ProcessPool {
    ProcessPool::builder().workers(2).build().unwrap()
}

#[test]
fn an_event_set_in_a_worker_wakes_a_tokio_task() {
    let _serial = serial();
    let pool = pool();
    let event = Event::new().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let t = Instant::now();
    let job = pool.submit(set_later, (event.clone(), 100));
    rt.block_on(async {
        let mut wait = std::pin::pin!(event.wait_async());
        // Not set yet: the future is pending.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        wait.await;
    });
    assert!(t.elapsed() >= Duration::from_millis(100));
    job.join().unwrap();
}

#[test]
fn recv_async_takes_every_message_in_order() {
    let _serial = serial();
    let pool = pool();
    let q: Queue<u64> = Queue::with_capacity(4096, None).unwrap();
    let job = pool.submit(produce, (q.clone(), 20_000));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..20_000 {
            assert_eq!(q.recv_async().await.unwrap(), i);
        }
    });
    job.join().unwrap();
    q.close();
    assert!(futures::executor::block_on(q.recv_async()).is_err());
}

#[test]
fn send_async_waits_for_room_on_smol() {
    let _serial = serial();
    let pool = pool();
    let q: Queue<u64> = Queue::with_capacity(4096, Some(4)).unwrap();
    let consumer = pool.submit(consume_slowly, (q.clone(), 2_000));
    smol::block_on(async {
        for i in 0..2_000u64 {
            q.send_async(i).await.unwrap();
        }
    });
    assert_eq!(consumer.join().unwrap(), (0..2_000u64).sum::<u64>());
}

#[test]
fn hundreds_of_waits_share_one_waiter_thread() {
    // It measures this whole process: alone, in a child process.
    if crate::common::isolated("ipc_async::hundreds_of_waits_share_one_waiter_thread") {
        return;
    }
    let _serial = serial();
    let events: Vec<Event> = (0..300).map(|_| Event::new().unwrap()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let threads_before = std::fs::read_dir("/proc/self/task").unwrap().count();
    let waits: Vec<_> = events
        .iter()
        .cloned()
        .map(|e| rt.spawn(async move { e.wait_async().await }))
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    // With `futex_waitv`, waiting takes no thread per wait (the runtime's
    // and at most the one shared waiter). A kernel without it (before
    // 5.16) gets a thread per waited word instead.
    let threads_now = std::fs::read_dir("/proc/self/task").unwrap().count();
    let allowed = match parpool_ipc::waiter_mode() {
        "futex_waitv" => 1,
        _ => events.len(),
    };
    assert!(
        threads_now <= threads_before + allowed,
        "{threads_before} -> {threads_now} ({})",
        parpool_ipc::waiter_mode()
    );
    for e in &events {
        e.set();
    }
    rt.block_on(async {
        for w in waits {
            w.await.unwrap();
        }
    });
}
