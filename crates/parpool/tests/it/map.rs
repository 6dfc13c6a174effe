//! map / map_unordered: ordering, laziness, bounded memory, per-item errors.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use parpool::ThreadPool;

fn pool(n: usize) -> ThreadPool {
    ThreadPool::builder().workers(n).build().unwrap()
}

/// An endless input that counts how many items were pulled.
fn counted(pulled: &Arc<AtomicUsize>) -> impl Iterator<Item = u64> + use<> {
    let pulled = pulled.clone();
    (0u64..).inspect(move |_| {
        pulled.fetch_add(1, SeqCst);
    })
}

#[test]
fn map_keeps_input_order_under_random_durations() {
    let pool = pool(4);
    let out: Vec<u64> = pool
        .map(
            |x: u64| {
                // Later items often finish first.
                std::thread::sleep(Duration::from_micros((x * 7919) % 500));
                x * 3
            },
            0..400,
        )
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(out, (0..400).map(|x| x * 3).collect::<Vec<_>>());
}

#[test]
fn map_over_an_endless_iterator_is_lazy_and_bounded_with_fixed_chunks() {
    let pool = pool(2);
    let pulled = Arc::new(AtomicUsize::new(0));
    let it = pool
        .map(|x: u64| x + 1, counted(&pulled))
        .chunk_size(1)
        .window(8);
    let first: Vec<u64> = it.take(1000).map(Result::unwrap).collect();
    assert_eq!(first, (1..=1000).collect::<Vec<_>>());
    let n = pulled.load(SeqCst);
    assert!(
        n <= 1000 + 8,
        "pulled {n} inputs for 1000 outputs with a window of 8"
    );
}

#[test]
fn map_over_an_endless_iterator_is_bounded_with_auto_chunks() {
    let pool = pool(2);
    let pulled = Arc::new(AtomicUsize::new(0));
    let mut it = pool.map(|x: u64| x * 2, counted(&pulled));
    for i in 0..200_000u64 {
        assert_eq!(it.next().unwrap(), Ok(i * 2));
        // Bounded by window (4 per worker) x the largest automatic chunk.
        assert!(pulled.load(SeqCst) <= i as usize + 1 + 8 * 65_536);
    }
    drop(it);
    assert!(pulled.load(SeqCst) < 200_000 + 8 * 65_536);
}

#[test]
fn map_nothing_is_pulled_before_the_first_next() {
    let pool = pool(2);
    let pulled = Arc::new(AtomicUsize::new(0));
    let it = pool.map(|x: u64| x, counted(&pulled));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(pulled.load(SeqCst), 0);
    drop(it);
}

#[test]
fn map_fails_only_the_panicking_item() {
    let pool = pool(2);
    let out: Vec<_> = pool
        .map(|x: u32| if x == 5 { panic!("item {x}") } else { x }, 0..10)
        .chunk_size(4)
        .collect();
    assert_eq!(out.len(), 10);
    for (i, r) in out.iter().enumerate() {
        if i == 5 {
            assert_eq!(r.as_ref().unwrap_err().panic_message(), Some("item 5"));
        } else {
            assert_eq!(r, &Ok(i as u32));
        }
    }
}

#[test]
fn map_after_shutdown_yields_one_error_per_input() {
    let pool = pool(1);
    pool.shutdown();
    let out: Vec<_> = pool.map(|x: u8| x, 0..7).chunk_size(3).collect();
    assert_eq!(out.len(), 7, "every input yields exactly one result");
    assert!(out.iter().all(|r| r.as_ref().unwrap_err().is_shutdown()));
}

#[test]
fn map_unordered_yields_every_index_once() {
    let pool = pool(4);
    let out: Vec<(usize, u64)> = pool
        .map_unordered(
            |x: u64| {
                std::thread::sleep(Duration::from_micros((x * 31) % 300));
                x * x
            },
            0..500,
        )
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    assert_eq!(out.len(), 500);
    let indices: HashSet<usize> = out.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices.len(), 500);
    assert!(out.iter().all(|&(i, v)| v == (i as u64) * (i as u64)));
}

#[test]
fn map_unordered_yields_fast_items_before_slow_ones() {
    let pool = pool(2);
    let first: Vec<usize> = pool
        .map_unordered(
            |ms: u64| std::thread::sleep(Duration::from_millis(ms)),
            [300u64, 1, 1, 1],
        )
        .chunk_size(1)
        .map(|(i, _)| i)
        .take(3)
        .collect();
    assert!(
        !first.contains(&0),
        "the slow item came before fast ones: {first:?}"
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn map_equals_sequential_map(
            input in proptest::collection::vec(any::<i32>(), 0..300),
            chunk in 1usize..20,
            window in 1usize..6,
        ) {
            let pool = ThreadPool::builder().workers(2).build().unwrap();
            let got: Vec<i64> = pool
                .map(|x: i32| i64::from(x) * 2 - 1, input.clone())
                .chunk_size(chunk)
                .window(window)
                .map(Result::unwrap)
                .collect();
            let want: Vec<i64> = input.iter().map(|&x| i64::from(x) * 2 - 1).collect();
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn map_reports_panics_at_any_position_in_a_chunk() {
    let pool = pool(2);
    // Chunks of 5: panics at the first, middle and last item of chunks,
    // and two in a row.
    let bad = [0u32, 2, 4, 5, 6, 13, 14, 19];
    let out: Vec<_> = pool
        .map(
            move |x: u32| {
                if bad.contains(&x) {
                    panic!("bad {x}")
                } else {
                    x * 10
                }
            },
            0..20,
        )
        .chunk_size(5)
        .collect();
    assert_eq!(out.len(), 20);
    for (i, r) in out.into_iter().enumerate() {
        let i = i as u32;
        if bad.contains(&i) {
            assert_eq!(
                r.unwrap_err().panic_message(),
                Some(format!("bad {i}").as_str())
            );
        } else {
            assert_eq!(r, Ok(i * 10));
        }
    }
}

#[test]
fn map_size_hint_is_exact_for_exact_inputs() {
    let pool = pool(2);
    let mut it = pool.map(|x: u32| x, 0..1000u32);
    assert_eq!(it.size_hint(), (1000, Some(1000)));
    for taken in 1..=1000 {
        it.next().unwrap().unwrap();
        assert_eq!(it.size_hint(), (1000 - taken, Some(1000 - taken)));
    }
    assert!(it.next().is_none());
    let mut un = pool.map_unordered(|x: u32| x, 0..50u32).chunk_size(7);
    un.next();
    assert_eq!(un.size_hint(), (49, Some(49)));
}

#[test]
fn map_reuses_buffers_without_mixing_items_across_chunks() {
    // Many chunks of varying fill through the recycled buffers.
    let pool = pool(3);
    for chunk in [1usize, 3, 64, 1000] {
        let got: Vec<String> = pool
            .map(|x: u64| format!("v{x}"), 0..5_000u64)
            .chunk_size(chunk)
            .window(3)
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            got,
            (0..5_000u64).map(|x| format!("v{x}")).collect::<Vec<_>>()
        );
    }
}
