//! Test bodies written once against `Executor`, run on every pool: the
//! thread and process pools (in `tests/it/executor_suite.rs`) and the MPI
//! pool (in `parpool-mpi`'s tests, which include this file).
//!
//! [`cases`] hold for every pool; [`isolation_cases`] for pools that run
//! tasks in worker processes. Each case leaves the pool as it found it:
//! idle and usable.

#![allow(dead_code)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use parpool::{
    Executor, ExitStatus, JobError, JobOptions, SharedBytes, Task, WaitFor, as_completed, wait,
};

parpool::task!(
    pub(crate) fn square(x: u64) -> u64 {
        x * x
    }
);
parpool::task!(
    fn concat((a, b): (String, String)) -> String {
        a + &b
    }
);
parpool::task!(
    /// Several parameters, no return type.
    fn check_words(a: String, b: String, len: usize) {
        assert_eq!(a.len() + b.len(), len);
    }
);
parpool::task!(
    fn forty_two() -> u64 {
        42
    }
);
parpool::task!(
    fn boom(message: String) -> u64 {
        panic!("{message}")
    }
);
parpool::task!(
    fn panic_on_seven(x: u64) -> u64 {
        assert_ne!(x, 7, "item seven");
        x + 1
    }
);
parpool::task!(
    /// Sleeps `ms`, in steps, returning early once the job is cancelled
    /// (a thread pool's jobs can only stop themselves); returns `ms`.
    pub(crate) fn nap(ms: u64) -> u64 {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            if parpool::current_job().is_some_and(|job| job.is_cancelled()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        ms
    }
);
parpool::task!(
    /// Sleeps without looking at any cancel token.
    pub(crate) fn sleep_hard(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
);
parpool::task!(
    fn abort_now(_x: ()) -> u64 {
        std::process::abort()
    }
);
parpool::task!(
    fn exit_with(code: i32) -> u64 {
        std::process::exit(code)
    }
);
parpool::task!(
    fn segfault(_x: ()) -> u64 {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::SEGV);
        std::thread::sleep(Duration::from_secs(10));
        0
    }
);
parpool::task!(
    fn abort_on_five(x: u64) -> u64 {
        if x == 5 {
            std::process::abort();
        }
        x * 10
    }
);
parpool::task!(
    fn byte_sum(bytes: SharedBytes) -> u64 {
        bytes.iter().map(|&b| u64::from(b)).sum()
    }
);
parpool::task!(
    fn make_bytes(len: usize) -> SharedBytes {
        SharedBytes::copy_from_slice(&vec![7u8; len]).unwrap()
    }
);

/// An error type that is not serde, with a cause.
#[derive(Debug)]
pub(crate) struct ConfigError {
    file: String,
    cause: std::num::ParseIntError,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad number in {}", self.file)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

parpool::task!(
    /// Returns an `io::Result`, which crosses as itself.
    fn file_len(path: String) -> std::io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }
);
parpool::task!(
    /// Returns an error that is not serde, with a cause.
    fn parse_setting(text: String) -> Result<u64, ConfigError> {
        text.parse().map_err(|cause| ConfigError {
            file: "settings.toml".into(),
            cause,
        })
    }
);
parpool::task!(
    /// Returns a serde error.
    fn checked_half(x: u64) -> Result<u64, String> {
        if x.is_multiple_of(2) {
            Ok(x / 2)
        } else {
            Err(format!("{x} is odd"))
        }
    }
);

/// A task no worker has registered: a binary built without it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unregistered;

impl Task for Unregistered {
    const NAME: &'static str = "parpool_tests::a_task_no_binary_registers";
    type Input = u64;
    type Output = u64;
    type Wire = u64;
    fn run(&self, input: u64) -> u64 {
        input
    }
    fn to_wire(output: u64) -> u64 {
        output
    }
    fn from_wire(wire: u64) -> Result<u64, parpool::JobError> {
        Ok(wire)
    }
}

/// How long a case waits for something that should take milliseconds:
/// generous, for loaded machines.
const PATIENCE: Duration = Duration::from_secs(30);

/// A named test body.
pub(crate) type Case<E> = (&'static str, fn(&E));

/// The cases every pool passes.
pub(crate) fn cases<E: Executor>() -> Vec<Case<E>> {
    vec![
        ("submit_and_join", submit_and_join::<E>),
        (
            "map_in_order_and_unordered",
            map_in_order_and_unordered::<E>,
        ),
        ("a_panic_is_a_typed_error", a_panic_is_a_typed_error::<E>),
        (
            "a_panicking_map_item_fails_alone",
            a_panicking_map_item_fails_alone::<E>,
        ),
        ("poll_then_join", poll_then_join::<E>),
        (
            "a_job_timeout_is_a_typed_error",
            a_job_timeout_is_a_typed_error::<E>,
        ),
        ("cancel_a_running_job", cancel_a_running_job::<E>),
        (
            "on_done_callbacks_run_once",
            on_done_callbacks_run_once::<E>,
        ),
        ("a_handle_is_a_future", a_handle_is_a_future::<E>),
        ("wait_and_as_completed", wait_and_as_completed::<E>),
        ("shared_bytes_in_and_out", shared_bytes_in_and_out::<E>),
        (
            "call_closures_run_anywhere",
            call_closures_run_anywhere::<E>,
        ),
        ("returned_errors_cross", returned_errors_cross::<E>),
        (
            "a_map_timeout_ends_the_map",
            a_map_timeout_ends_the_map::<E>,
        ),
    ]
}

/// The cases of pools that run tasks in worker processes.
pub(crate) fn isolation_cases<E: Executor>() -> Vec<Case<E>> {
    vec![
        (
            "abort_segfault_exit_fail_alone",
            abort_segfault_exit_fail_alone::<E>,
        ),
        (
            "a_crash_in_a_map_fails_one_item",
            a_crash_in_a_map_fails_one_item::<E>,
        ),
        (
            "a_timeout_kills_a_blocked_worker",
            a_timeout_kills_a_blocked_worker::<E>,
        ),
        (
            "an_unknown_task_is_a_typed_error",
            an_unknown_task_is_a_typed_error::<E>,
        ),
    ]
}

/// Runs `cases` on `pool`, saying which runs (a failure names its case).
pub(crate) fn run<E: Executor>(pool: &E, cases: Vec<Case<E>>) {
    for (name, case) in cases {
        eprintln!("executor case: {name}");
        let start = Instant::now();
        case(pool);
        eprintln!("executor case: {name} ok in {:?}", start.elapsed());
    }
}

fn call_closures_run_anywhere<E: Executor>(pool: &E) {
    assert_eq!(
        pool.submit(parpool::call!(|x: u64| x * 3), 14).join(),
        Ok(42)
    );
    let pair = parpool::call!(|a: u64, b: String| format!("{b}{a}"));
    assert_eq!(
        pool.submit(pair, (7, "n".into())).join().as_deref(),
        Ok("n7")
    );
    assert_eq!(pool.submit(parpool::call!(|| 5u8), ()).join(), Ok(5));
    let pattern = parpool::call!(|(a, b): (u32, u32)| a.max(b));
    assert_eq!(pool.submit(pattern, (3, 9)).join(), Ok(9));
    let plus_one: Vec<u64> = pool
        .map_task(parpool::call!(|x: u64| x + 1), 0..100)
        .map(Result::unwrap)
        .collect();
    assert_eq!(plus_one, (1..=100).collect::<Vec<_>>());
    // Two closures written apart are two tasks, even with one type.
    let a = pool.submit(parpool::call!(|x: u64| x + 1), 1);
    let b = pool.submit(parpool::call!(|x: u64| x + 2), 1);
    assert_eq!((a.join(), b.join()), (Ok(2), Ok(3)));
}

fn a_map_timeout_ends_the_map<E: Executor>(pool: &E) {
    let start = Instant::now();
    let results: Vec<_> = pool
        .map_task(nap, [1, 1, 60_000, 1, 1])
        .chunk_size(1)
        .window(2)
        .timeout(Duration::from_secs(2))
        .collect();
    assert!(
        start.elapsed() < PATIENCE,
        "the map waited past its timeout"
    );
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(results[..2], [Ok(1), Ok(1)]);
    assert!(
        matches!(results[2], Err(JobError::TimedOut { .. })),
        "{results:?}"
    );
    // The late job was cancelled: the pool is free again soon.
    assert_eq!(
        pool.submit(square, 3).join_timeout(PATIENCE).ok(),
        Some(Ok(9))
    );
    let unordered: Vec<_> = pool
        .map_task_unordered(nap, [60_000, 1])
        .chunk_size(1)
        .timeout(Duration::from_secs(1))
        .collect();
    assert!(
        unordered.iter().any(|(i, r)| *i == 1 && r == &Ok(1)),
        "{unordered:?}"
    );
    assert!(
        unordered
            .iter()
            .any(|(_, r)| matches!(r, Err(JobError::TimedOut { .. }))),
        "{unordered:?}"
    );
}

fn returned_errors_cross<E: Executor>(pool: &E) {
    // `io::Error` comes back as itself: same kind, same message.
    let missing = pool.submit(file_len, "/no/such/file".into()).join();
    match missing {
        Ok(Err(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
            assert_eq!(e.raw_os_error(), Some(2));
        }
        other => panic!("expected the io::Error back, got {other:?}"),
    }
    assert!(matches!(
        pool.submit(file_len, "/".into()).join(),
        Ok(Ok(_))
    ));
    // A serde error type comes back as itself.
    assert_eq!(
        pool.submit(checked_half, 3).join(),
        Ok(Err("3 is odd".into()))
    );
    assert_eq!(pool.submit(checked_half, 4).join(), Ok(Ok(2)));
    // Any other error comes back as itself where it never left the
    // process, else as its report: message, type and cause, whole.
    let chain = |r: Result<Result<u64, ConfigError>, JobError>| match r {
        Ok(Err(e)) => {
            let cause = std::error::Error::source(&e).map(ToString::to_string);
            format!("{e}: {}", cause.unwrap_or_default())
        }
        Err(JobError::Returned(report)) => {
            assert!(report.type_name().ends_with("ConfigError"), "{report:?}");
            let shown = JobError::Returned(report.clone()).to_string();
            assert!(shown.contains(&report.full_message()), "{shown}");
            report.full_message()
        }
        other => panic!("expected the error or its report, got {other:?}"),
    };
    let bad = pool.submit(parse_setting, "x".into()).join();
    assert_eq!(
        chain(bad),
        "bad number in settings.toml: invalid digit found in string"
    );
    // The same in a map, item by item.
    let mut items = pool.map_task(parse_setting, ["1".to_string(), "y".into(), "3".into()]);
    assert!(matches!(items.next(), Some(Ok(Ok(1)))));
    let second = items.next().expect("three items");
    assert_eq!(
        chain(second),
        "bad number in settings.toml: invalid digit found in string"
    );
    assert!(matches!(items.next(), Some(Ok(Ok(3)))));
    assert!(items.next().is_none());
}

fn submit_and_join<E: Executor>(pool: &E) {
    assert_eq!(pool.submit(square, 12).join(), Ok(144));
    let joined = pool.submit(concat, ("ab".into(), "cd".into())).join();
    assert_eq!(joined.as_deref(), Ok("abcd"));
    let checked = pool.submit(check_words, ("ab".into(), "cde".into(), 5));
    assert_eq!(checked.join(), Ok(()));
    assert_eq!(pool.submit(forty_two, ()).join(), Ok(42));
    let handles: Vec<_> = (0..50).map(|i| pool.submit(square, i)).collect();
    let results: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results, (0..50).map(|i| i * i).collect::<Vec<_>>());
}

fn map_in_order_and_unordered<E: Executor>(pool: &E) {
    let expected: Vec<u64> = (0..2000).map(|i| i * i).collect();
    let got: Vec<u64> = pool.map_task(square, 0..2000).map(Result::unwrap).collect();
    assert_eq!(got, expected);
    assert_eq!(pool.map_task(square, Vec::new()).count(), 0);
    let mut unordered: Vec<(usize, u64)> = pool
        .map_task_unordered(square, 0..300)
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    unordered.sort_unstable();
    let expected: Vec<(usize, u64)> = (0..300).map(|i| (i as usize, i * i)).collect();
    assert_eq!(unordered, expected);
}

fn a_panic_is_a_typed_error<E: Executor>(pool: &E) {
    let err = pool.submit(boom, "bad input".into()).join().unwrap_err();
    assert!(err.is_panicked(), "{err}");
    assert_eq!(err.panic_message(), Some("bad input"));
    assert_eq!(pool.submit(square, 3).join(), Ok(9), "the pool carries on");
}

fn a_panicking_map_item_fails_alone<E: Executor>(pool: &E) {
    let results: Vec<_> = pool.map_task(panic_on_seven, 0..20).collect();
    assert_eq!(results.len(), 20);
    for (i, r) in results.into_iter().enumerate() {
        if i == 7 {
            let err = r.unwrap_err();
            assert!(err.is_panicked(), "{err}");
            assert!(err.panic_message().unwrap().contains("item seven"), "{err}");
        } else {
            assert_eq!(r, Ok(i as u64 + 1));
        }
    }
}

fn poll_then_join<E: Executor>(pool: &E) {
    let handle = pool.submit(nap, 400);
    let handle = handle
        .join_timeout(Duration::from_millis(10))
        .expect_err("a 400 ms job is not done after 10 ms");
    assert!(!handle.is_finished());
    let handle = handle.try_result().expect_err("still running");
    assert_eq!(handle.join(), Ok(400));
}

fn a_job_timeout_is_a_typed_error<E: Executor>(pool: &E) {
    let start = Instant::now();
    let opts = JobOptions::new().timeout(Duration::from_millis(100));
    let handle = pool.submit_with(opts, nap, 20_000);
    while !handle.is_finished() {
        assert!(start.elapsed() < PATIENCE, "not resolved");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!handle.is_cancelled(), "a timeout is not a cancel");
    let err = handle.join().unwrap_err();
    assert_eq!(
        err,
        JobError::TimedOut {
            after: Duration::from_millis(100)
        }
    );
    assert!(start.elapsed() < PATIENCE, "took {:?}", start.elapsed());
    assert_eq!(pool.submit(square, 4).join(), Ok(16));
}

fn cancel_a_running_job<E: Executor>(pool: &E) {
    let handle = pool.submit(nap, 20_000);
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    assert!(!handle.is_cancelled());
    assert!(handle.cancel(), "the job was not finished");
    assert!(handle.is_cancelled() && handle.is_finished());
    assert_eq!(handle.join(), Err(JobError::Cancelled));
    assert!(start.elapsed() < PATIENCE);
    // The worker it ran on is free again (stopped or replaced).
    let all: Vec<u64> = pool
        .map_task(square, 0..(pool.workers() as u64 * 2))
        .map(Result::unwrap)
        .collect();
    assert_eq!(all.len(), pool.workers() * 2);
}

fn on_done_callbacks_run_once<E: Executor>(pool: &E) {
    let (tx, rx) = mpsc::channel();
    let handle = pool.submit(square, 7);
    let tx2 = tx.clone();
    handle.on_done(move |r| tx.send(r.clone()).unwrap());
    handle.on_done(move |r| tx2.send(r.clone()).unwrap());
    assert_eq!(handle.join(), Ok(49));
    assert_eq!(rx.recv_timeout(PATIENCE), Ok(Ok(49)));
    assert_eq!(rx.recv_timeout(PATIENCE), Ok(Ok(49)));
    assert!(rx.try_recv().is_err());
}

fn a_handle_is_a_future<E: Executor>(pool: &E) {
    let handles = vec![pool.submit(square, 5), pool.submit(square, 6)];
    let results = futures::executor::block_on(futures::future::join_all(handles));
    assert_eq!(results, [Ok(25), Ok(36)]);
}

fn wait_and_as_completed<E: Executor>(pool: &E) {
    let slow = pool.submit(nap, 1500);
    let fast = pool.submit(square, 2);
    let r = wait([slow, fast], WaitFor::FirstCompleted, Some(PATIENCE));
    assert_eq!(r.done.len(), 1, "the quick job finished first");
    assert_eq!(r.pending.len(), 1);
    let mut done = r.done;
    assert_eq!(done.pop().unwrap().join(), Ok(4));
    let all = wait(r.pending, WaitFor::AllCompleted, Some(PATIENCE));
    assert!(all.pending.is_empty());

    let handles = vec![pool.submit(nap, 1500), pool.submit(square, 3)];
    let order: Vec<(usize, Result<u64, JobError>)> = as_completed(handles).collect();
    assert_eq!(order, [(1, Ok(9)), (0, Ok(1500))]);
}

fn shared_bytes_in_and_out<E: Executor>(pool: &E) {
    let data = SharedBytes::copy_from_slice(&[1u8; 100_000]).unwrap();
    assert_eq!(pool.submit(byte_sum, data).join(), Ok(100_000));
    let made = pool.submit(make_bytes, 50_000).join().unwrap();
    assert_eq!(made.len(), 50_000);
    assert!(made.iter().all(|&b| b == 7));
}

fn abort_segfault_exit_fail_alone<E: Executor>(pool: &E) {
    let aborted = pool.submit(abort_now, ()).join().unwrap_err();
    assert!(
        matches!(
            aborted,
            JobError::Crashed {
                status: ExitStatus::Signal(6),
                ..
            }
        ),
        "{aborted}"
    );
    let segv = pool.submit(segfault, ()).join().unwrap_err();
    assert!(
        matches!(
            segv,
            JobError::Crashed {
                status: ExitStatus::Signal(11),
                ..
            }
        ),
        "{segv}"
    );
    let exited = pool.submit(exit_with, 3).join().unwrap_err();
    assert!(
        matches!(
            exited,
            JobError::Crashed {
                status: ExitStatus::Code(3),
                ..
            }
        ),
        "{exited}"
    );
    assert_eq!(pool.submit(square, 5).join(), Ok(25), "the pool carries on");
}

fn a_crash_in_a_map_fails_one_item<E: Executor>(pool: &E) {
    let results: Vec<_> = pool.map_task(abort_on_five, 0..40).collect();
    assert_eq!(results.len(), 40);
    for (i, r) in results.into_iter().enumerate() {
        if i == 5 {
            assert!(r.as_ref().is_err_and(JobError::is_crashed), "{r:?}");
        } else {
            assert_eq!(r, Ok(i as u64 * 10), "item {i}");
        }
    }
}

fn a_timeout_kills_a_blocked_worker<E: Executor>(pool: &E) {
    let start = Instant::now();
    let opts = JobOptions::new().timeout(Duration::from_millis(200));
    let err = pool
        .submit_with(opts, sleep_hard, 60_000)
        .join()
        .unwrap_err();
    assert!(err.is_timed_out(), "{err}");
    assert!(start.elapsed() < PATIENCE);
    assert_eq!(pool.submit(square, 6).join(), Ok(36));
}

fn an_unknown_task_is_a_typed_error<E: Executor>(pool: &E) {
    let err = pool.submit(Unregistered, 1).join().unwrap_err();
    assert_eq!(
        err,
        JobError::UnknownTask {
            name: Unregistered::NAME.into()
        }
    );
    assert_eq!(pool.submit(square, 8).join(), Ok(64));
}
