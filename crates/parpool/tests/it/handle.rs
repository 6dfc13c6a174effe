//! JobHandle behaviour: join, join_timeout, try_result, cancel, on_done, panics.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use parpool::{JobError, JobOptions, ThreadPool};

fn pool(n: usize) -> ThreadPool {
    ThreadPool::builder().workers(n).build().expect("pool")
}

#[test]
fn panic_is_captured_with_message_and_location() {
    let pool = pool(1);
    let (line_tx, line_rx) = mpsc::channel();
    let err = pool
        .spawn(move || -> u8 {
            line_tx.send(line!() + 1).unwrap();
            panic!("bad value {}", 42)
        })
        .join()
        .unwrap_err();
    let line = line_rx.recv().unwrap();
    assert!(err.is_panicked());
    assert_eq!(err.panic_message(), Some("bad value 42"));
    let loc = err.panic_location().expect("location recorded");
    assert!(loc.file.ends_with("handle.rs"), "{loc}");
    assert_eq!(loc.line, line);
    assert!(err.to_string().contains("bad value 42"), "{err}");
    // The worker survived: the pool still runs jobs.
    assert_eq!(pool.spawn(|| 5).join(), Ok(5));
}

#[test]
fn panic_with_non_string_payload_is_captured() {
    let pool = pool(1);
    let err = pool
        .spawn(|| std::panic::panic_any(17u32))
        .join()
        .unwrap_err();
    assert_eq!(err.panic_message(), Some("Box<dyn Any>"));
}

#[test]
fn join_timeout_gives_the_handle_back() {
    let pool = pool(1);
    let (tx, rx) = mpsc::channel::<()>();
    let h = pool.spawn(move || {
        rx.recv().unwrap();
        9
    });
    let started = Instant::now();
    let h = h
        .join_timeout(Duration::from_millis(30))
        .expect_err("not done yet");
    assert!(started.elapsed() >= Duration::from_millis(30));
    let h = h.try_result().expect_err("still not done");
    assert!(!h.is_finished());
    tx.send(()).unwrap();
    assert_eq!(
        h.join_timeout(Duration::from_secs(10)).expect("done"),
        Ok(9)
    );
}

#[test]
fn try_result_returns_once_finished() {
    let pool = pool(1);
    let mut h = pool.spawn(|| "done");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match h.try_result() {
            Ok(r) => {
                assert_eq!(r, Ok("done"));
                break;
            }
            Err(back) => h = back,
        }
        assert!(Instant::now() < deadline, "job never finished");
        std::thread::yield_now();
    }
}

#[test]
fn timeout_resolves_timed_out_and_trips_the_token() {
    let pool = pool(1);
    let saw_cancel = Arc::new(AtomicUsize::new(0));
    let seen = saw_cancel.clone();
    let h = pool.spawn_with(
        JobOptions::new().timeout(Duration::from_millis(20)),
        move || {
            let job = parpool::current_job().unwrap();
            let start = Instant::now();
            while !job.is_cancelled() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "token never tripped"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            seen.fetch_add(1, SeqCst);
            "value discarded"
        },
    );
    let err = h.join().unwrap_err();
    assert_eq!(
        err,
        JobError::TimedOut {
            after: Duration::from_millis(20)
        }
    );
    // The job saw its token and stopped; the worker is free again.
    assert_eq!(pool.spawn(|| 1).join(), Ok(1));
    assert_eq!(saw_cancel.load(SeqCst), 1);
}

#[test]
fn timeout_counts_from_start_not_from_submit() {
    let pool = pool(1);
    let blocker = pool.spawn(|| std::thread::sleep(Duration::from_millis(100)));
    let quick = pool.spawn_with(JobOptions::new().timeout(Duration::from_millis(50)), || 3);
    assert_eq!(quick.join(), Ok(3), "time spent queued must not count");
    blocker.join().unwrap();
}

#[test]
fn cancel_of_a_queued_job_means_it_never_runs() {
    let pool = pool(1);
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let blocker = pool.spawn(move || {
        g.wait();
    });
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let queued = pool.spawn(move || {
        r.fetch_add(1, SeqCst);
    });
    assert!(queued.cancel(), "cancel of a queued job takes effect");
    assert!(!queued.cancel(), "second cancel is a no-op");
    assert!(queued.is_finished());
    gate.wait();
    blocker.join().unwrap();
    assert_eq!(queued.join(), Err(JobError::Cancelled));
    pool.shutdown();
    assert_eq!(
        ran.load(SeqCst),
        0,
        "a cancelled queued job must never start"
    );
    assert_eq!(pool.stats().cancelled, 1);
}

#[test]
fn cancel_of_a_running_job_trips_its_token() {
    let pool = pool(1);
    let (started_tx, started_rx) = mpsc::channel();
    let (stopped_tx, stopped_rx) = mpsc::channel();
    let h = pool.spawn(move || {
        let job = parpool::current_job().unwrap();
        started_tx.send(()).unwrap();
        while !job.is_cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
        stopped_tx.send(()).unwrap();
        7
    });
    started_rx.recv().unwrap();
    let token = h.cancel_token();
    assert!(!token.is_cancelled());
    assert!(h.cancel(), "cancel of a running job resolves it");
    assert!(token.is_cancelled());
    stopped_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("job saw its token");
    assert_eq!(h.join(), Err(JobError::Cancelled));
}

#[test]
fn cancel_after_completion_returns_false_and_keeps_the_value() {
    let pool = pool(1);
    let h = pool.spawn(|| 4);
    crate::common::wait_until("the job to finish", || h.is_finished());
    assert!(!h.cancel());
    assert_eq!(h.join(), Ok(4));
}

#[test]
fn on_done_runs_once_attached_before_completion() {
    let pool = pool(1);
    let (tx, rx) = mpsc::channel::<()>();
    let h = pool.spawn(move || {
        rx.recv().unwrap();
        10
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let (seen_tx, seen_rx) = mpsc::channel();
    for _ in 0..3 {
        let calls = calls.clone();
        let seen_tx = seen_tx.clone();
        h.on_done(move |r| {
            calls.fetch_add(1, SeqCst);
            seen_tx.send(r.clone()).unwrap();
        });
    }
    tx.send(()).unwrap();
    for _ in 0..3 {
        assert_eq!(
            seen_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            Ok(10)
        );
    }
    assert_eq!(h.join(), Ok(10));
    assert_eq!(calls.load(SeqCst), 3, "each callback exactly once");
}

#[test]
fn on_done_attached_after_completion_runs_at_once_on_this_thread() {
    let pool = pool(1);
    let h = pool.spawn(|| -> u8 { panic!("late") });
    crate::common::wait_until("the job to finish", || h.is_finished());
    let me = std::thread::current().id();
    let ran_on = Arc::new(std::sync::Mutex::new(None));
    let slot = ran_on.clone();
    h.on_done(move |r| {
        assert_eq!(r.as_ref().unwrap_err().panic_message(), Some("late"));
        *slot.lock().unwrap() = Some(std::thread::current().id());
    });
    assert_eq!(*ran_on.lock().unwrap(), Some(me));
    assert!(
        h.join().unwrap_err().is_panicked(),
        "the result is still there after on_done"
    );
}

#[test]
fn a_panicking_callback_is_contained() {
    let pool = pool(1);
    let h = pool.spawn(|| 1);
    h.on_done(|_| panic!("callback bug"));
    assert_eq!(h.join(), Ok(1));
    assert_eq!(
        pool.spawn(|| 2).join(),
        Ok(2),
        "the worker survived the callback's panic"
    );
}

#[test]
fn callbacks_race_completion_and_each_runs_exactly_once() {
    let pool = pool(2);
    for _ in 0..2_000 {
        let calls = Arc::new(AtomicUsize::new(0));
        let h = pool.spawn(|| 1u8);
        let c = calls.clone();
        h.on_done(move |_| {
            c.fetch_add(1, SeqCst);
        });
        assert_eq!(h.join(), Ok(1));
        assert_eq!(calls.load(SeqCst), 1);
    }
}

#[test]
fn dropping_a_handle_detaches_the_job() {
    let pool = pool(1);
    let (tx, rx) = mpsc::channel();
    drop(pool.spawn(move || tx.send("ran").unwrap()));
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("ran"));
}

#[test]
fn errors_explain_what_to_do() {
    let e = JobError::Shutdown;
    assert!(e.to_string().contains("shutting down"));
    let e = JobError::TimedOut {
        after: Duration::from_secs(1),
    };
    assert!(e.is_timed_out() && e.to_string().contains("timeout"));
    let e = JobError::Crashed {
        status: parpool::ExitStatus::Signal(11),
        detail: None,
    };
    assert!(e.is_crashed() && e.to_string().contains("signal 11"));
    let e = JobError::UnknownTask {
        name: "x::y".into(),
    };
    assert!(e.is_unknown_task() && e.to_string().contains("parpool::task!"));
}
