//! Progress hooks on every map: lazy (`map`, `map_unordered`, `map_task`
//! on any pool) and eager (`par`).

use std::cell::RefCell;

use parpool::ThreadPool;

#[cfg(all(feature = "process", target_os = "linux"))]
parpool::task!(
    fn double(x: u64) -> u64 {
        x * 2
    }
);

/// Checks a map's reports: `done` only grows, `total` is what the input
/// said (or `None` until the end), and `(n, Some(n))` comes exactly once,
/// last.
fn check(calls: &[(u64, Option<u64>)], n: u64, total_known: bool) {
    assert!(!calls.is_empty());
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "{calls:?}");
    assert_eq!(calls.last(), Some(&(n, Some(n))), "{calls:?}");
    assert_eq!(
        calls.iter().filter(|c| **c == (n, Some(n))).count(),
        1,
        "{calls:?}"
    );
    for &(_, total) in &calls[..calls.len() - 1] {
        assert_eq!(total, total_known.then_some(n), "{calls:?}");
    }
}

#[test]
fn lazy_maps_report_on_threads_with_known_and_unknown_lengths() {
    let pool = ThreadPool::builder().workers(3).build().unwrap();
    for n in [0u64, 1, 7, 10_000] {
        let calls = RefCell::new(Vec::new());
        let out: Vec<u64> = pool
            .map(|x: u64| x + 1, 0..n)
            .on_progress(|d, t| calls.borrow_mut().push((d, t)))
            .map(Result::unwrap)
            .collect();
        assert_eq!(out.len() as u64, n);
        check(&calls.borrow(), n, true);

        // An input that cannot say its length: the total comes at the end.
        let calls = RefCell::new(Vec::new());
        let count = pool
            .map_unordered(|x: u64| x, (0..n * 2).filter(|x| x % 2 == 0))
            .on_progress(|d, t| calls.borrow_mut().push((d, t)))
            .count();
        assert_eq!(count as u64, n);
        check(&calls.borrow(), n, false);
    }
}

#[test]
fn failed_items_count_as_done() {
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let calls = RefCell::new(Vec::new());
    let failed = pool
        .map(
            |x: u64| {
                if x.is_multiple_of(10) {
                    panic!("tens")
                } else {
                    x
                }
            },
            0..100,
        )
        .on_progress(|d, t| calls.borrow_mut().push((d, t)))
        .filter(Result::is_err)
        .count();
    assert_eq!(failed, 10);
    check(&calls.borrow(), 100, true);
}

#[cfg(all(feature = "process", target_os = "linux"))]
#[test]
fn map_task_reports_on_a_process_pool() {
    use parpool::Executor;
    let pool = crate::common::quiet_pool(2);
    let calls = RefCell::new(Vec::new());
    let sum: u64 = pool
        .map_task(double, (0..5000u64).collect::<Vec<_>>())
        .on_progress(|d, t| calls.borrow_mut().push((d, t)))
        .map(Result::unwrap)
        .sum();
    assert_eq!(sum, 5000 * 4999);
    check(&calls.borrow(), 5000, true);
}

#[test]
fn par_reports_too() {
    let pool = ThreadPool::builder().workers(4).build().unwrap();
    let calls = std::sync::Mutex::new(Vec::new());
    pool.par(0..100_000u64)
        .on_progress(|d, t| calls.lock().unwrap().push((d, t)))
        .for_each(|_| {})
        .unwrap();
    let calls = calls.into_inner().unwrap();
    assert!(calls.windows(2).all(|w| w[0].0 < w[1].0), "{calls:?}");
    check(&calls, 100_000, true);
}

#[cfg(feature = "progress")]
#[test]
fn progress_bars_follow_both_kinds_of_map() {
    use indicatif::{ProgressBar, ProgressDrawTarget};
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    let n = pool
        .map(|x: u32| x, 0..1234)
        .progress_bar_with(bar.clone())
        .count();
    assert_eq!(n, 1234);
    assert_eq!((bar.position(), bar.length()), (1234, Some(1234)));
    assert!(bar.is_finished());
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    pool.par(0..777u32)
        .progress_bar_with(bar.clone())
        .map(|x| x)
        .unwrap();
    assert_eq!((bar.position(), bar.length()), (777, Some(777)));
    assert!(bar.is_finished());
    // The default bar draws to standard error only on a terminal.
    assert_eq!(
        pool.par(0..10u8).progress_bar().map(|x| x).unwrap().len(),
        10
    );
}
