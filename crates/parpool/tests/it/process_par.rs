//! `ProcessPool::par`: an eager map over plain data in worker processes,
//! through shared memory.

use parpool::{JobError, PodMapError};

parpool::task!(
    fn square(x: f64) -> f64 {
        x * x
    }
);

parpool::task! {
    /// Sums and scales a 4-vector: arrays of numbers are plain data too.
    fn norm1(v: [f32; 4]) -> f32 { v.iter().map(|x| x.abs()).sum::<f32>() * 2.0 }
}

parpool::task! {
    /// Kills its worker on one item.
    fn abort_on_5000(x: f64) -> f64 {
        if x == 5000.0 {
            std::process::abort();
        }
        x + 1.0
    }
}

parpool::task! {
    fn panic_on_777(x: u32) -> u32 {
        if x == 777 {
            panic!("no 777");
        }
        x
    }
}

#[test]
fn ten_million_floats_squared_equal_the_sequential_result() {
    let pool = crate::common::quiet_pool(2);
    let data: Vec<f64> = (0..10_000_000).map(|i| f64::from(i) * 0.5).collect();
    let got = pool.par(&data).map(square).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got.iter().zip(&data).all(|(g, x)| *g == x * x));
    // Every worker took part: the jobs are ranges, not one big job.
    let stats = pool.stats();
    assert!(stats.completed >= 8, "{stats:?}");
}

#[test]
fn arrays_lengths_and_range_counts() {
    let pool = crate::common::quiet_pool(2);
    let vectors: Vec<[f32; 4]> = (0..1000).map(|i| [i as f32, -1.0, 0.5, -0.5]).collect();
    let norms = pool.par(&vectors).map(norm1).unwrap();
    assert_eq!(norms[10], (10.0 + 2.0) * 2.0);
    for len in [0usize, 1, 2, 3, 1023] {
        let data: Vec<f64> = (0..len).map(|i| i as f64).collect();
        for ranges in [1, 2, 7, 5000] {
            let got = pool.par(&data).ranges(ranges).map(square).unwrap();
            assert_eq!(
                got,
                data.iter().map(|x| x * x).collect::<Vec<_>>(),
                "len {len}, {ranges} ranges"
            );
        }
    }
}

#[test]
fn a_crash_fails_only_its_range_and_the_rest_come_back() {
    let pool = crate::common::quiet_pool(2);
    let data: Vec<f64> = (0..20_000).map(f64::from).collect();
    let err: PodMapError<f64> = pool.par(&data).ranges(8).map(abort_on_5000).unwrap_err();
    assert_eq!(err.failed.len(), 1, "{err:?}");
    let (range, e) = &err.failed[0];
    assert!(range.contains(&5000), "{range:?}");
    assert!(matches!(e, JobError::Crashed { .. }), "{e:?}");
    assert_eq!(err.failed_items(), range.len());
    for (i, r) in err.results.iter().enumerate() {
        let want = if range.contains(&i) {
            0.0
        } else {
            i as f64 + 1.0
        };
        assert_eq!(*r, want, "item {i}");
    }
    assert!(
        err.to_string().contains("2500 of 20000 items failed"),
        "{err}"
    );
    // The pool healed.
    assert_eq!(pool.par(&data[..10]).map(square).unwrap()[3], 9.0);
}

#[test]
fn a_panic_names_its_item_and_is_not_retried() {
    let pool = crate::common::quiet_pool(2);
    let data: Vec<u32> = (0..2000).collect();
    let err = pool.par(&data).ranges(4).map(panic_on_777).unwrap_err();
    assert_eq!(err.failed.len(), 1);
    assert_eq!(err.failed[0].0, 500..1000);
    match err.first() {
        Some(JobError::Panicked(p)) => {
            assert_eq!(p.item, Some(777));
            assert_eq!(p.message, "no 777");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.results[1500], 1500);
}

#[test]
fn progress_reaches_the_total_once_and_a_shut_down_pool_fails_whole() {
    let pool = crate::common::quiet_pool(2);
    let data: Vec<f64> = (0..100_000).map(f64::from).collect();
    let mut calls = Vec::new();
    pool.par(&data)
        .ranges(10)
        .on_progress(|d, t| calls.push((d, t)))
        .map(square)
        .unwrap();
    assert!(calls.windows(2).all(|w| w[0].0 < w[1].0), "{calls:?}");
    assert_eq!(calls.last(), Some(&(100_000, Some(100_000))));
    assert_eq!(calls.iter().filter(|c| c.0 == 100_000).count(), 1);
    pool.shutdown();
    let err = pool.par(&data).map(square).unwrap_err();
    assert_eq!(err.failed_items(), data.len());
    assert!(
        err.failed.iter().all(|(_, e)| *e == JobError::Shutdown),
        "{err:?}"
    );
}
