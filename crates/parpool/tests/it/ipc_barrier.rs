//! ipc::Barrier across processes and threads, and when a party dies.

use std::time::{Duration, Instant};

use parpool::ipc::{Barrier, BarrierError, Event};
use parpool::{Executor, JobError, ProcessPool, WorkerOutput};

parpool::task! {
    /// Waits `n` rounds; returns how many it led.
    fn rounds(args: (Barrier, u32)) -> u32 {
        let me = args.0.party().unwrap();
        (0..args.1).filter(|_| me.wait().unwrap()).count() as u32
    }
}

parpool::task! {
    /// Takes a place, says so, and dies before ever waiting.
    fn take_place_and_die(args: (Barrier, Event)) -> () {
        let _me = args.0.party().unwrap();
        args.1.set();
        std::process::abort();
    }
}

parpool::task! {
    /// Takes a place and waits once: the error it got, as text.
    fn wait_once(b: Barrier) -> String {
        match b.party().and_then(|me| me.wait()) {
            Ok(_) => "completed".into(),
            Err(e) => e.to_string(),
        }
    }
}

fn pool(n: usize) -> ProcessPool {
    ProcessPool::builder()
        .workers(n)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap()
}

#[test]
fn every_round_completes_with_exactly_one_leader() {
    let pool = pool(2);
    let barrier = Barrier::new(3).unwrap();
    let a = pool.submit(rounds, (barrier.clone(), 200));
    let b = pool.submit(rounds, (barrier.clone(), 200));
    let me = barrier.party().unwrap();
    let mine = (0..200).filter(|_| me.wait().unwrap()).count() as u32;
    assert_eq!(a.join().unwrap() + b.join().unwrap() + mine, 200);
}

#[test]
fn a_party_that_dies_breaks_the_barrier_instead_of_hanging_the_others() {
    let pool = pool(2);
    let barrier = Barrier::new(3).unwrap();
    let placed = Event::new().unwrap();
    let dying = pool.submit(take_place_and_die, (barrier.clone(), placed.clone()));
    assert!(placed.wait_timeout(Duration::from_secs(10)));
    assert!(matches!(dying.join(), Err(JobError::Crashed { .. })));
    let t = Instant::now();
    let other = pool.submit(wait_once, barrier.clone());
    let mine = barrier.party().and_then(|me| me.wait());
    assert!(matches!(mine, Err(BarrierError::Broken)), "{mine:?}");
    assert!(other.join().unwrap().contains("broken"));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(barrier.is_broken());
}

#[test]
fn a_timed_out_wait_breaks_the_barrier_for_everyone() {
    let barrier = Barrier::new(2).unwrap();
    let me = barrier.party().unwrap();
    let t = Instant::now();
    assert!(matches!(
        me.wait_timeout(Duration::from_millis(50)),
        Err(BarrierError::TimedOut)
    ));
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert!(matches!(me.wait(), Err(BarrierError::Broken)));
}

#[test]
fn places_are_limited_to_the_parties() {
    let barrier = Barrier::new(1).unwrap();
    let me = barrier.party().unwrap();
    let other = barrier.clone();
    let full = std::thread::spawn(move || other.party().map(|_| ()).unwrap_err().to_string())
        .join()
        .unwrap();
    assert!(full.contains("places"), "{full}");
    // One party: every wait leads at once.
    assert!(me.wait().unwrap());
    assert!(Barrier::new(0).is_err());
}

#[test]
fn reset_releases_the_waiting_as_broken_and_the_barrier_works_again() {
    let barrier = parpool::ipc::Barrier::new(2).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = barrier.clone();
    let t = std::thread::spawn(move || {
        let me = waiting.party().unwrap();
        tx.send(()).unwrap();
        me.wait()
    });
    rx.recv().unwrap();
    // Reset until the waiter has arrived and been released (it may not
    // have reached its wait at the first reset).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !t.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiter was never released"
        );
        barrier.reset().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(matches!(
        t.join().unwrap(),
        Err(parpool::ipc::BarrierError::Broken)
    ));
    assert!(!barrier.is_broken());
    // A full round after the reset completes.
    let other = barrier.clone();
    let t = std::thread::spawn(move || other.party().unwrap().wait());
    let here = barrier.party().unwrap().wait().unwrap();
    let there = t.join().unwrap().unwrap();
    assert!(here != there, "one leader");
}
