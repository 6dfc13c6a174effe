//! The contenders of each row: parpool first, then its peers.

use std::hint::black_box;

use parpool::ThreadPool;
use rayon::prelude::*;

use crate::Contender;

fn parpool(cores: usize) -> ThreadPool {
    ThreadPool::builder()
        .workers(cores)
        .name("bench")
        .build()
        .expect("parpool pool")
}

fn rayon(cores: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(cores)
        .build()
        .expect("rayon pool")
}

fn tokio(cores: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(cores)
        .build()
        .expect("tokio runtime")
}

/// Submit `n` jobs returning their index, then collect every result.
pub(crate) fn tiny_jobs(cores: usize, n: u64) -> Vec<Contender<'static>> {
    let pp = parpool(cores);
    let ry = rayon(cores);
    let tk = tokio(cores);
    let tp = threadpool::ThreadPool::new(cores);
    let expect = n * (n - 1) / 2;
    vec![
        (
            "parpool",
            Box::new(move || {
                let hs: Vec<_> = (0..n).map(|i| pp.spawn(move || i)).collect();
                let sum: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
                assert_eq!(sum, expect);
            }),
        ),
        (
            "tokio spawn_blocking",
            Box::new(move || {
                let hs: Vec<_> = (0..n).map(|i| tk.spawn_blocking(move || i)).collect();
                let sum = tk.block_on(async move {
                    let mut sum = 0;
                    for h in hs {
                        sum += h.await.unwrap();
                    }
                    sum
                });
                assert_eq!(sum, expect);
            }),
        ),
        (
            "rayon spawn + oneshot",
            Box::new(move || {
                let rxs: Vec<_> = (0..n)
                    .map(|i| {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        ry.spawn(move || {
                            let _ = tx.send(i);
                        });
                        rx
                    })
                    .collect();
                let sum: u64 = rxs.into_iter().map(|rx| rx.blocking_recv().unwrap()).sum();
                assert_eq!(sum, expect);
            }),
        ),
        (
            "threadpool + oneshot",
            Box::new(move || {
                let rxs: Vec<_> = (0..n)
                    .map(|i| {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        tp.execute(move || {
                            let _ = tx.send(i);
                        });
                        rx
                    })
                    .collect();
                let sum: u64 = rxs.into_iter().map(|rx| rx.blocking_recv().unwrap()).sum();
                assert_eq!(sum, expect);
            }),
        ),
    ]
}

/// Submit one job, wait for it, `n` times.
pub(crate) fn round_trip(cores: usize, n: u64) -> Vec<Contender<'static>> {
    let pp = parpool(cores);
    let ry = rayon(cores);
    let tk = tokio(cores);
    let tp = threadpool::ThreadPool::new(cores);
    vec![
        (
            "parpool",
            Box::new(move || {
                for i in 0..n {
                    assert_eq!(pp.spawn(move || i).join(), Ok(i));
                }
            }),
        ),
        (
            "tokio spawn_blocking",
            Box::new(move || {
                tk.block_on(async {
                    for i in 0..n {
                        assert_eq!(tk.spawn_blocking(move || i).await.unwrap(), i);
                    }
                })
            }),
        ),
        (
            "rayon spawn + oneshot",
            Box::new(move || {
                for i in 0..n {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    ry.spawn(move || {
                        let _ = tx.send(i);
                    });
                    assert_eq!(rx.blocking_recv().unwrap(), i);
                }
            }),
        ),
        (
            "threadpool + oneshot",
            Box::new(move || {
                for i in 0..n {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    tp.execute(move || {
                        let _ = tx.send(i);
                    });
                    assert_eq!(rx.blocking_recv().unwrap(), i);
                }
            }),
        ),
    ]
}

fn trivial(x: u64) -> u64 {
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (x >> 7)
}

/// How parpool maps in a row.
#[derive(Clone, Copy)]
enum Way {
    /// `ThreadPool::map`: lazy, streaming any iterator.
    Lazy,
    /// `ThreadPool::par`: eager, over the data in memory.
    Par,
}

/// Ordered map of `cost` over the integers `0..n` (in memory) into a
/// `Vec`: parpool's way, rayon's `par_iter`, and, with `sequential`, a
/// plain loop. Each contender checks its result.
fn map_row(
    cores: usize,
    n: u64,
    cost: fn(u64) -> u64,
    way: Way,
    sequential: bool,
) -> Vec<Contender<'static>> {
    let pp = parpool(cores);
    let ry = rayon(cores);
    let input: std::sync::Arc<Vec<u64>> = std::sync::Arc::new((0..n).collect());
    let check = input.iter().fold(0u64, |a, &x| a.wrapping_add(cost(x)));
    let checked = move |out: Vec<u64>| {
        assert_eq!(out.iter().fold(0u64, |a, &x| a.wrapping_add(x)), check);
        black_box(out);
    };
    let (data, ry_data, seq_data) = (input.clone(), input.clone(), input);
    let mut contenders: Vec<Contender<'static>> = vec![
        (
            "parpool",
            Box::new(move || {
                checked(match way {
                    Way::Lazy => pp
                        .map(cost, data.iter().copied())
                        .collect::<Result<_, _>>()
                        .unwrap(),
                    Way::Par => pp.par(data.as_slice()).map(|&x| cost(x)).unwrap(),
                })
            }),
        ),
        (
            "rayon par_iter().map().collect()",
            Box::new(move || {
                checked(ry.install(|| ry_data.par_iter().map(|&x| cost(x)).collect()))
            }),
        ),
    ];
    if sequential {
        contenders.push((
            "sequential",
            Box::new(move || checked(seq_data.iter().map(|&x| cost(x)).collect())),
        ));
    }
    contenders
}

/// Lazy ordered map of a trivial function over `n` integers.
pub(crate) fn map(cores: usize, n: u64) -> Vec<Contender<'static>> {
    map_row(cores, n, trivial, Way::Lazy, false)
}

/// About a microsecond of arithmetic per item.
fn light(x: u64) -> u64 {
    let mut h = x;
    for _ in 0..1_100 {
        h = black_box(h.rotate_left(5) ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(31);
    }
    h
}

/// Lazy ordered map of a ~1 µs function over `n` integers.
pub(crate) fn map_light(cores: usize, n: u64) -> Vec<Contender<'static>> {
    map_row(cores, n, light, Way::Lazy, true)
}

/// Eager map of a trivial function over `n` integers in memory.
pub(crate) fn par_map(cores: usize, n: u64) -> Vec<Contender<'static>> {
    map_row(cores, n, trivial, Way::Par, false)
}

/// Eager map of a ~1 µs function over `n` integers in memory.
pub(crate) fn par_map_light(cores: usize, n: u64) -> Vec<Contender<'static>> {
    map_row(cores, n, light, Way::Par, true)
}

/// One item in 100 costs 100 times the others (~100 µs against ~1 µs).
fn uneven(x: u64) -> u64 {
    if x.is_multiple_of(100) {
        (0..100).fold(x, |h, i| light(h ^ i))
    } else {
        light(x)
    }
}

/// Eager map of uneven items: one in 100 costs 100 times the others.
pub(crate) fn par_map_uneven(cores: usize, n: u64) -> Vec<Contender<'static>> {
    map_row(cores, n, uneven, Way::Par, true)
}

/// Sum of `n` `u64`s in memory: `par().map_reduce` against rayon's `sum`.
pub(crate) fn par_sum(cores: usize, n: u64) -> Vec<Contender<'static>> {
    let pp = parpool(cores);
    let ry = rayon(cores);
    let input: Vec<u64> = (0..n).map(|x| x ^ 0x5a5a).collect();
    let check = input.iter().fold(0u64, |a, &x| a.wrapping_add(x));
    let input = std::sync::Arc::new(input);
    let input2 = input.clone();
    vec![
        (
            "parpool",
            Box::new(move || {
                let sum = pp
                    .par(input.as_slice())
                    .map_reduce(|&x| x, || 0u64, u64::wrapping_add)
                    .unwrap();
                assert_eq!(sum, check);
            }),
        ),
        (
            "rayon par_iter().sum()",
            Box::new(move || {
                let sum: u64 =
                    ry.install(|| input2.par_iter().copied().reduce(|| 0, u64::wrapping_add));
                assert_eq!(sum, check);
            }),
        ),
    ]
}

/// About `ms` milliseconds of arithmetic.
pub(crate) fn burn(ms: u64) -> u64 {
    // ~1 ns per iteration on current x86; exact time does not matter, only
    // that every contender does the same work.
    let mut x = ms;
    for i in 0..ms * 1_000_000 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

/// `jobs` CPU-bound jobs of ~`ms` each.
pub(crate) fn cpu_batch(cores: usize, jobs: u64, ms: u64) -> Vec<Contender<'static>> {
    let pp = parpool(cores);
    let ry = rayon(cores);
    vec![
        (
            "parpool",
            Box::new(move || {
                let hs: Vec<_> = (0..jobs).map(|_| pp.spawn(move || burn(ms))).collect();
                for h in hs {
                    black_box(h.join().unwrap());
                }
            }),
        ),
        (
            "sequential",
            Box::new(move || {
                for _ in 0..jobs {
                    black_box(burn(ms));
                }
            }),
        ),
        (
            "rayon par_iter",
            Box::new(move || {
                ry.install(|| {
                    (0..jobs).into_par_iter().for_each(|_| {
                        black_box(burn(ms));
                    })
                });
            }),
        ),
    ]
}
