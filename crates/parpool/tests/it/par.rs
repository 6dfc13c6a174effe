//! `ThreadPool::par`: eager, indexed maps over borrowed data.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parpool::{JobError, ThreadPool};
use proptest::prelude::*;

fn pool(workers: usize) -> ThreadPool {
    ThreadPool::builder().workers(workers).build().unwrap()
}

#[test]
fn results_equal_the_sequential_map_for_many_lengths() {
    let pool = pool(4);
    for len in [0usize, 1, 2, 3, 7, 97, 1000, 4099, 1_000_000] {
        let data: Vec<u64> = (0..len as u64).map(|x| x * 7 + 1).collect();
        let expected: Vec<u64> = data.iter().map(|x| x ^ 0x5555).collect();
        assert_eq!(
            pool.par(&data).map(|x| x ^ 0x5555).unwrap(),
            expected,
            "len {len}"
        );
        assert_eq!(
            pool.par(data.as_slice()).map(|x| x ^ 0x5555).unwrap(),
            expected
        );
    }
}

#[test]
fn uneven_items_are_all_done_and_spread_over_threads() {
    let pool = pool(4);
    let threads = Mutex::new(HashSet::new());
    let out = pool
        .par(0..400u32)
        .map(|i| {
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
            threads.lock().unwrap().insert(std::thread::current().id());
            i * 2
        })
        .unwrap();
    assert_eq!(out, (0..400).map(|i| i * 2).collect::<Vec<_>>());
    assert!(threads.lock().unwrap().len() >= 2, "one thread did it all");
}

#[test]
fn ranges_of_every_integer_type_and_arrays() {
    let pool = pool(3);
    assert_eq!(pool.par(-128i8..=127).map(|x| x).unwrap().len(), 256);
    assert_eq!(
        pool.par(-128i8..=127).map(i16::from).unwrap(),
        (-128i16..=127).collect::<Vec<_>>()
    );
    assert_eq!(pool.par(5u8..5).map(|x| x).unwrap(), Vec::<u8>::new());
    let (hi, lo) = (std::hint::black_box(9i64), 3);
    assert_eq!(pool.par(hi..lo).map(|x| x).unwrap(), Vec::<i64>::new());
    let reversed = std::hint::black_box(3u32)..=1;
    assert_eq!(pool.par(reversed).map(|x| x).unwrap(), Vec::<u32>::new());
    assert_eq!(
        pool.par(u64::MAX - 3..=u64::MAX).map(|x| x).unwrap(),
        [u64::MAX - 3, u64::MAX - 2, u64::MAX - 1, u64::MAX]
    );
    // Too many items to collect is an error, not a panic; `for_each` over
    // as many stops at the first panic.
    let err = pool.par(0..u64::MAX).map(|x| x).unwrap_err();
    assert!(err.is_too_large(), "{err:?}");
    let err = pool
        .par(0..u64::MAX)
        .for_each(|x| assert_ne!(x, 1000, "the one bad item"))
        .unwrap_err();
    assert!(
        matches!(&err, JobError::Panicked(p) if p.item == Some(1000)),
        "{err:?}"
    );
    let array = [1, 2, 3, 4, 5];
    assert_eq!(
        pool.par(&array).map(|x| x * 10).unwrap(),
        [10, 20, 30, 40, 50]
    );
}

#[test]
fn a_panicking_item_fails_with_its_index_and_drops_what_was_done() {
    let pool = pool(4);
    let token = Arc::new(());
    let err = pool
        .par(0..10_000usize)
        .map(|i| {
            if i == 6_789 {
                panic!("item {i} is bad");
            }
            token.clone()
        })
        .unwrap_err();
    match &err {
        JobError::Panicked(p) => {
            assert_eq!(p.item, Some(6_789));
            assert_eq!(p.message, "item 6789 is bad");
            assert!(err.to_string().contains("on item 6789"), "{err}");
        }
        other => panic!("{other:?}"),
    }
    // Every result made before the panic was dropped, none leaked.
    assert_eq!(Arc::strong_count(&token), 1);
    // The pool keeps working.
    assert_eq!(pool.par(0..3u8).map(|x| x + 1).unwrap(), [1, 2, 3]);
    assert_eq!(pool.spawn(|| 5).join(), Ok(5));
}

#[test]
fn for_each_and_a_panic_in_it() {
    let pool = pool(2);
    let seen = AtomicUsize::new(0);
    pool.par(0..12_345u32)
        .for_each(|_| {
            seen.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), 12_345);
    let err = pool
        .par(0..100u32)
        .for_each(|i| assert_ne!(i, 42, "no 42"))
        .unwrap_err();
    assert!(
        matches!(&err, JobError::Panicked(p) if p.item == Some(42)),
        "{err:?}"
    );
}

#[test]
fn map_reduce_keeps_the_order_of_a_non_commutative_reduce() {
    let pool = pool(4);
    let words: Vec<String> = (0..5000).map(|i| format!("{i},")).collect();
    let joined = pool
        .par(&words)
        .map_reduce(|w| w.clone(), String::new, |a, b| a + &b)
        .unwrap();
    assert_eq!(joined, words.concat());
    let sum = pool
        .par(0..10_000_000u64)
        .map_reduce(|x| x, || 0, |a, b| a + b)
        .unwrap();
    assert_eq!(sum, (0..10_000_000u64).sum::<u64>());
    assert_eq!(
        pool.par(0..0u64)
            .map_reduce(|x| x, || 7, |a, b| a + b)
            .unwrap(),
        7
    );
    let err = pool
        .par(0..100u64)
        .map_reduce(
            |x| x,
            || 0,
            |a, b| if b == 50 { panic!("fifty") } else { a + b },
        )
        .unwrap_err();
    assert_eq!(err.panic_message(), Some("fifty"));
}

#[test]
fn progress_is_monotonic_and_reaches_the_total_exactly_once() {
    let pool = pool(4);
    for len in [0usize, 1, 10, 100_000] {
        let calls = Mutex::new(Vec::new());
        pool.par(0..len)
            .on_progress(|done, total| calls.lock().unwrap().push((done, total)))
            .map(|x| x + 1)
            .unwrap();
        let calls = calls.into_inner().unwrap();
        assert!(
            calls.windows(2).all(|w| w[0].0 < w[1].0),
            "not increasing: {calls:?}"
        );
        assert!(calls.iter().all(|&(_, t)| t == Some(len as u64)));
        assert_eq!(
            calls.iter().filter(|&&(d, _)| d == len as u64).count(),
            1,
            "{calls:?}"
        );
        assert_eq!(calls.last().map(|c| c.0), Some(len as u64));
    }
    // A panicking progress callback fails the map, without an item.
    let err = pool
        .par(0..10u8)
        .on_progress(|_, _| panic!("bar broke"))
        .map(|x| x)
        .unwrap_err();
    assert!(matches!(&err, JobError::Panicked(p) if p.item.is_none() && p.message == "bar broke"));
}

#[test]
fn nested_par_calls_inside_jobs_and_inside_par_do_not_deadlock() {
    let pool = pool(2);
    let inner = pool
        .par(0..8u64)
        .map(|i| {
            pool.par(0..1000u64)
                .map_reduce(|x| x * i, || 0, |a, b| a + b)
                .unwrap()
        })
        .unwrap();
    assert_eq!(inner, (0..8u64).map(|i| i * 499_500).collect::<Vec<_>>());
    // From a pool's own job.
    let p = Arc::new(self::pool(2));
    let q = p.clone();
    let from_job = p
        .spawn(move || q.par(0..100u32).map(|x| x * 3).unwrap())
        .join()
        .unwrap();
    assert_eq!(from_job, (0..100u32).map(|x| x * 3).collect::<Vec<_>>());
}

#[test]
fn a_shut_down_pool_refuses_and_a_one_worker_pool_works_alone() {
    let pool = pool(1);
    assert_eq!(pool.par(0..1000u32).map(|x| x).unwrap().len(), 1000);
    pool.shutdown();
    assert_eq!(
        pool.par(0..10u32).map(|x| x).unwrap_err(),
        JobError::Shutdown
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_length_and_chunking_matches_sequential(len in 0usize..5000, min_chunk in 1usize..300, workers in 1usize..5) {
        let pool = pool(workers);
        let data: Vec<u32> = (0..len as u32).collect();
        let got = pool.par(&data).min_chunk(min_chunk).map(|x| x.wrapping_mul(2_654_435_761)).unwrap();
        let want: Vec<u32> = data.iter().map(|x| x.wrapping_mul(2_654_435_761)).collect();
        prop_assert_eq!(got, want);
        let sum = pool.par(&data).min_chunk(min_chunk).map_reduce(|&x| u64::from(x), || 0, |a, b| a + b).unwrap();
        prop_assert_eq!(sum, data.iter().map(|&x| u64::from(x)).sum::<u64>());
    }
}

/// An `Indexed` whose `each` visits more or fewer items than asked.
struct Lying {
    extra: bool,
}

impl parpool::Indexed for Lying {
    type Item = usize;

    fn len(&self) -> usize {
        1000
    }

    fn each(&self, range: std::ops::Range<usize>, mut f: impl FnMut(usize) -> bool) {
        let end = if self.extra {
            range.end + 5
        } else {
            range.end - 1
        };
        for i in range.start..end {
            if !f(i) {
                return;
            }
        }
    }
}

#[test]
fn an_indexed_that_lies_gets_an_error_not_a_wild_write() {
    let pool = pool(2);
    // Extra calls are refused at the block's end: the results stay right.
    assert_eq!(
        pool.par(Lying { extra: true }).map(|i| i).unwrap(),
        (0..1000).collect::<Vec<_>>()
    );
    // Missing items would leave slots unwritten: an error instead.
    let err = pool
        .par(Lying { extra: false })
        .map(|i| i.to_string())
        .unwrap_err();
    assert!(
        err.panic_message()
            .is_some_and(|m| m.contains("Indexed::each visited")),
        "{err:?}"
    );
}
