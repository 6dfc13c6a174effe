//! wait() in all three modes and as_completed() as iterator and stream.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use parpool::{JobHandle, ThreadPool, WaitFor, as_completed, wait};

/// A job that finishes when its sender sends (or is dropped).
fn gated(pool: &ThreadPool, value: u32) -> (mpsc::Sender<()>, JobHandle<u32>) {
    let (tx, rx) = mpsc::channel::<()>();
    let h = pool.spawn(move || {
        let _ = rx.recv();
        value
    });
    (tx, h)
}

fn pool() -> ThreadPool {
    ThreadPool::builder().workers(4).build().unwrap()
}

#[test]
fn wait_first_completed_returns_on_the_first_finish() {
    let pool = pool();
    let (ga, a) = gated(&pool, 1);
    let (_gb, b) = gated(&pool, 2);
    let (_gc, c) = gated(&pool, 3);
    ga.send(()).unwrap();
    let r = wait(
        [a, b, c],
        WaitFor::FirstCompleted,
        Some(Duration::from_secs(10)),
    );
    assert_eq!(r.done.len(), 1);
    assert_eq!(r.pending.len(), 2);
    assert_eq!(r.done.into_iter().next().unwrap().join(), Ok(1));
    // Pending handles come back in input order and still work.
    let ids: Vec<_> = r.pending.iter().map(|h| h.id()).collect();
    assert!(ids[0] < ids[1]);
}

#[test]
fn wait_first_error_returns_on_the_first_failure() {
    let pool = pool();
    let (_ga, a) = gated(&pool, 1);
    let failing = pool.spawn(|| -> u32 { panic!("first error") });
    let (_gc, c) = gated(&pool, 3);
    let r = wait(
        [a, failing, c],
        WaitFor::FirstError,
        Some(Duration::from_secs(10)),
    );
    assert_eq!(
        r.done.len(),
        1,
        "returns on the error without waiting for the rest"
    );
    let err = r.done.into_iter().next().unwrap().join().unwrap_err();
    assert_eq!(err.panic_message(), Some("first error"));
    assert_eq!(r.pending.len(), 2);
}

#[test]
fn wait_first_error_without_errors_waits_for_all() {
    let pool = pool();
    let hs: Vec<_> = (0..5).map(|i| pool.spawn(move || i)).collect();
    let r = wait(hs, WaitFor::FirstError, None);
    assert_eq!((r.done.len(), r.pending.len()), (5, 0));
}

#[test]
fn wait_all_completed_and_timeout() {
    let pool = pool();
    let (ga, a) = gated(&pool, 1);
    let (gb, b) = gated(&pool, 2);
    let start = Instant::now();
    let r = wait(
        [a, b],
        WaitFor::AllCompleted,
        Some(Duration::from_millis(40)),
    );
    assert!(start.elapsed() >= Duration::from_millis(40));
    assert_eq!(
        (r.done.len(), r.pending.len()),
        (0, 2),
        "timed out: nothing lost"
    );
    ga.send(()).unwrap();
    gb.send(()).unwrap();
    let r = wait(
        r.pending,
        WaitFor::AllCompleted,
        Some(Duration::from_secs(10)),
    );
    assert_eq!(r.pending.len(), 0);
    let values: Vec<_> = r.done.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(values, [1, 2], "done keeps input order");
}

#[test]
fn wait_on_nothing_returns_at_once() {
    let r = wait(Vec::<JobHandle<u8>>::new(), WaitFor::AllCompleted, None);
    assert!(r.done.is_empty() && r.pending.is_empty());
}

#[test]
fn as_completed_yields_in_completion_order() {
    let pool = pool();
    let gates: Vec<_> = (0..4).map(|i| gated(&pool, i)).collect();
    let (senders, handles): (Vec<_>, Vec<_>) = gates.into_iter().unzip();
    let mut it = as_completed(handles);
    assert_eq!(it.remaining(), 4);
    for &i in &[2usize, 0, 3, 1] {
        senders[i].send(()).unwrap();
        let (index, r) = it.next().unwrap();
        assert_eq!(index, i);
        assert_eq!(r, Ok(i as u32));
    }
    assert!(it.next().is_none());
}

#[test]
fn as_completed_next_timeout_does_not_lose_jobs() {
    let pool = pool();
    let (g, h) = gated(&pool, 5);
    let mut it = as_completed([h]);
    assert!(it.next_timeout(Duration::from_millis(20)).is_none());
    assert_eq!(it.remaining(), 1);
    g.send(()).unwrap();
    assert_eq!(it.next_timeout(Duration::from_secs(10)), Some((0, Ok(5))));
}

#[test]
fn as_completed_mixes_handles_from_different_pools() {
    let a = ThreadPool::builder().workers(1).name("a").build().unwrap();
    let b = ThreadPool::builder().workers(1).name("b").build().unwrap();
    let (ga, ha) = gated(&a, 1);
    let (_gb, hb) = gated(&b, 2);
    ga.send(()).unwrap();
    let mut it = as_completed([hb, ha]);
    assert_eq!(it.next(), Some((1, Ok(1))));
    drop(_gb);
    assert_eq!(it.next(), Some((0, Ok(2))));
}

#[test]
fn as_completed_is_a_stream() {
    use futures::StreamExt;
    let pool = pool();
    let gates: Vec<_> = (0..3).map(|i| gated(&pool, i)).collect();
    let (senders, handles): (Vec<_>, Vec<_>) = gates.into_iter().unzip();
    let mut stream = as_completed(handles).into_stream();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let order = rt.block_on(async move {
        let mut order = Vec::new();
        for i in [1usize, 2, 0] {
            senders[i].send(()).unwrap();
            let (index, r) = stream.next().await.unwrap();
            assert_eq!(r, Ok(i as u32));
            order.push(index);
        }
        assert!(stream.next().await.is_none());
        order
    });
    assert_eq!(order, [1, 2, 0]);
}
