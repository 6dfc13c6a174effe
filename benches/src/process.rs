//! Process-pool rows: parpool's ProcessPool against procspawn and Python.

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use parpool::{Executor, ProcessPool, ThreadPool};

parpool::task!(
    pub(crate) fn ident(x: u64) -> u64 {
        x
    }
);
// Bytes as one string (`serde_bytes`), as a user moving bulk bytes would.
// Both echo tasks read one byte per page, as any consumer would.
parpool::task!(
    fn echo_bytes(b: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
        black_box(touch(&b));
        b
    }
);
parpool::task!(
    fn echo_shared(b: parpool::SharedBytes) -> parpool::SharedBytes {
        black_box(touch(&b));
        b
    }
);

/// Reads one byte per 4 KiB page.
fn touch(bytes: &[u8]) -> u8 {
    bytes.iter().step_by(4096).fold(0, |a, &b| a ^ b)
}
parpool::task!(
    pub(crate) fn burn_ms(ms: u64) -> u64 {
        crate::peers::burn(ms)
    }
);

/// A timed contender that submits `jobs` jobs of about `ms` of CPU each
/// to `pool` at once and joins them all: every CPU batch row's body.
pub(crate) fn burn_batch<E: Executor + Send + Sync + 'static>(
    pool: Arc<E>,
    jobs: u64,
    ms: u64,
) -> Box<dyn FnMut() -> Option<f64>> {
    wall(move || {
        let hs: Vec<_> = (0..jobs).map(|_| pool.submit(burn_ms, ms)).collect();
        for h in hs {
            black_box(h.join().unwrap());
        }
    })
}

fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/python/peers.py").to_owned()
}

/// Runs the Python peer and returns what it reported.
pub(crate) fn python(mode: &str, n: u64, workers: usize) -> serde_json::Value {
    let out = Command::new("python3")
        .args([
            script(),
            mode.to_owned(),
            n.to_string(),
            workers.to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("python3 {mode}: {e}"));
    assert!(
        out.status.success(),
        "python3 {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python peer printed JSON")
}

/// The per-operation samples (seconds) the Python peer measured itself.
fn python_samples(mode: &str, n: u64, workers: usize) -> Vec<f64> {
    python(mode, n, workers)["samples"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default()
}

/// A contender whose time is what the Python peer measured itself.
fn python_timed(mode: &'static str, n: u64, workers: usize) -> Box<dyn FnMut() -> Option<f64>> {
    Box::new(move || python(mode, n, workers)["seconds"].as_f64())
}

pub(crate) type TimedContender = (&'static str, Box<dyn FnMut() -> Option<f64>>);

pub(crate) fn wall(mut f: impl FnMut() + 'static) -> Box<dyn FnMut() -> Option<f64>> {
    Box::new(move || {
        let t = Instant::now();
        f();
        Some(t.elapsed().as_secs_f64())
    })
}

fn pool(workers: usize) -> ProcessPool {
    ProcessPool::builder()
        .workers(workers)
        .build()
        .expect("process pool")
}

/// Submit `n` tiny jobs, then collect all results.
pub(crate) fn tiny(workers: usize, n: u64) -> Vec<TimedContender> {
    let pp = pool(workers);
    let ps = procspawn::Pool::new(workers).expect("procspawn pool");
    let expect = n * (n - 1) / 2;
    vec![
        (
            "parpool ProcessPool",
            wall(move || {
                let hs: Vec<_> = (0..n).map(|i| pp.submit(ident, i)).collect();
                let sum: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
                assert_eq!(sum, expect);
            }),
        ),
        (
            "procspawn Pool",
            wall(move || {
                // procspawn holds descriptors for every pending job, so 20k
                // at once exceed the fd limit here: keep at most 4096
                // pending, which still keeps its workers busy.
                let mut sum = 0u64;
                let mut pending = std::collections::VecDeque::new();
                for i in 0..n {
                    if pending.len() == 4096 {
                        let h: procspawn::JoinHandle<u64> = pending.pop_front().unwrap();
                        sum += h.join().unwrap();
                    }
                    pending.push_back(ps.spawn(i, |i| i));
                }
                sum += pending.into_iter().map(|h| h.join().unwrap()).sum::<u64>();
                assert_eq!(sum, expect);
            }),
        ),
        (
            "Python ProcessPoolExecutor",
            python_timed("ppe_tiny", n, workers),
        ),
        (
            "Python multiprocessing.Pool imap_unordered",
            python_timed("mp_imap_unordered", n, workers),
        ),
    ]
}

pub(crate) type LatencyContender = (&'static str, Box<dyn FnMut() -> Vec<f64>>);

/// Times `trip(i)` for each `i` in `0..n`, one after another: the
/// samples, in seconds.
pub(crate) fn trips(n: u64, mut trip: impl FnMut(u64)) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            trip(i);
            t.elapsed().as_secs_f64()
        })
        .collect()
}

/// Submit one job, wait for it, `n` times: per-round-trip samples.
pub(crate) fn round_trip(workers: usize, n: u64) -> Vec<LatencyContender> {
    let pp = pool(workers);
    let ps = procspawn::Pool::new(workers).expect("procspawn pool");
    vec![
        (
            "parpool ProcessPool",
            Box::new(move || trips(n, |i| assert_eq!(pp.submit(ident, i).join(), Ok(i)))),
        ),
        (
            "procspawn Pool",
            Box::new(move || trips(n, |i| assert_eq!(ps.spawn(i, |i| i).join().unwrap(), i))),
        ),
        (
            "OS floor: 1 byte to cat and back (pipes)",
            Box::new(move || ping_pong_floor(n)),
        ),
        (
            "Python ProcessPoolExecutor",
            Box::new(move || python_samples("ppe_roundtrip", n, workers)),
        ),
    ]
}

/// The opt-in low-latency mode: a pool whose idle worker and supervisor
/// spin for `spin` before they sleep, beside the default pool, a budget and
/// the physical scale (two processes that spin, on shared memory and on a
/// socket).
pub(crate) fn round_trip_spin(n: u64, spin: std::time::Duration) -> Vec<LatencyContender> {
    let fast = ProcessPool::builder()
        .workers(1)
        .spin(spin)
        .build()
        .expect("spinning pool");
    let plain = pool(1);
    let ps = procspawn::Pool::new(1).expect("procspawn pool");
    let floors = std::sync::Arc::new(pool(1));
    let floors2 = floors.clone();
    vec![
        (
            "parpool ProcessPool, spin",
            Box::new(move || trips(n, |i| assert_eq!(fast.submit(ident, i).join(), Ok(i)))),
        ),
        (
            "parpool ProcessPool, default (sleeps)",
            Box::new(move || trips(n, |i| assert_eq!(plain.submit(ident, i).join(), Ok(i)))),
        ),
        (
            "procspawn Pool",
            Box::new(move || trips(n, |i| assert_eq!(ps.spawn(i, |i| i).join().unwrap(), i))),
        ),
        ("budget: 10 µs", Box::new(move || vec![10e-6; n as usize])),
        ("budget: 50 µs", Box::new(move || vec![50e-6; n as usize])),
        (
            "floor: two processes spinning on shared memory",
            Box::new(move || spin_floor_shm(&floors, n)),
        ),
        (
            "floor: two processes spinning on a socket",
            Box::new(move || spin_floor_socket(&floors2, n)),
        ),
    ]
}

/// Submit `n` tiny jobs, then collect: a pool in the low-latency mode
/// against the default one.
pub(crate) fn tiny_spin(workers: usize, n: u64, spin: std::time::Duration) -> Vec<TimedContender> {
    let fast = ProcessPool::builder()
        .workers(workers)
        .spin(spin)
        .build()
        .expect("spinning pool");
    let plain = pool(workers);
    let expect = n * (n - 1) / 2;
    let batch = move |pp: &ProcessPool| {
        let hs: Vec<_> = (0..n).map(|i| pp.submit(ident, i)).collect();
        let sum: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, expect);
    };
    let plain = std::sync::Arc::new(plain);
    let floor = plain.clone();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    vec![
        ("parpool ProcessPool, spin", wall(move || batch(&fast))),
        (
            "parpool ProcessPool, default (sleeps)",
            wall(move || batch(&plain)),
        ),
        (
            "floor: the default's CPU time spread over every core (no waiting at all)",
            Box::new(move || {
                let pids = floor.worker_pids();
                let before = cpu_seconds(&pids);
                batch(&floor);
                Some((cpu_seconds(&pids) - before) / cores)
            }),
        ),
    ]
}

/// CPU time used so far by this process and the processes `pids`, all
/// their threads, in seconds (nanosecond counts from `schedstat`).
fn cpu_seconds(pids: &[u32]) -> f64 {
    let tasks = |dir: String| -> u64 {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    };
    let mut ns = tasks("/proc/self/task".to_owned());
    for pid in pids {
        ns += tasks(format!("/proc/{pid}/task"));
    }
    ns as f64 / 1e9
}

parpool::task!(
    fn shm_pong((mem, n): (parpool::ipc::SharedMem, u64)) -> u64 {
        use std::sync::atomic::Ordering;
        let (ping, back) = (
            mem.atomic_u64(0).expect("ping"),
            mem.atomic_u64(8).expect("pong"),
        );
        for i in 1..=n {
            while ping.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            back.store(i, Ordering::Release);
        }
        n
    }
);

/// Two processes spinning on two words of shared memory: the physical
/// scale of a round trip between processes (no system call at all).
fn spin_floor_shm(pool: &ProcessPool, n: u64) -> Vec<f64> {
    use std::sync::atomic::Ordering;
    let mem = parpool::ipc::SharedMem::new(128).expect("shared memory");
    // Words 0 and 8: one cache line each way.
    let job = pool.submit(shm_pong, (mem.clone(), n));
    let (ping, back) = (
        mem.atomic_u64(0).expect("ping"),
        mem.atomic_u64(8).expect("pong"),
    );
    let samples = trips(n, |i| {
        ping.store(i + 1, Ordering::Release);
        while back.load(Ordering::Acquire) != i + 1 {
            std::hint::spin_loop();
        }
    });
    assert_eq!(job.join(), Ok(n));
    samples
}

parpool::task!(
    fn socket_pong((fd, n): (parpool::ipc::Descriptor, u64)) -> u64 {
        let mut s = std::os::unix::net::UnixStream::from(fd.take().expect("socket"));
        let mut b = [0u8; 8];
        for _ in 0..n {
            spin_read(&mut s, &mut b);
            std::io::Write::write_all(&mut s, &b).expect("write");
        }
        n
    }
);

/// Reads exactly `b.len()` bytes from a non-blocking socket, spinning.
fn spin_read(s: &mut std::os::unix::net::UnixStream, b: &mut [u8]) {
    s.set_nonblocking(true).expect("non-blocking");
    let mut got = 0;
    while got < b.len() {
        match std::io::Read::read(s, &mut b[got..]) {
            Ok(0) => panic!("peer closed"),
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Two processes spinning on a socket (non-blocking reads): what a round
/// trip costs when it crosses the kernel but nobody sleeps.
fn spin_floor_socket(pool: &ProcessPool, n: u64) -> Vec<f64> {
    let (mut a, b) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    let job = pool.submit(socket_pong, (parpool::ipc::Descriptor::new(b.into()), n));
    let mut buf = [0u8; 8];
    let samples = trips(n, |i| {
        std::io::Write::write_all(&mut a, &i.to_le_bytes()).expect("write");
        spin_read(&mut a, &mut buf);
    });
    assert_eq!(job.join(), Ok(n));
    samples
}

parpool::task!(
    fn dep_consume(q: parpool::ipc::Queue<u64>) -> u64 {
        q.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the producer ran")
    }
);
parpool::task!(
    fn dep_produce((q, v): (parpool::ipc::Queue<u64>, u64)) -> bool {
        q.send(v).is_ok()
    }
);

/// A consumer job, then a producer job it waits for, on a warm pool that
/// has learned that jobs are tiny (so it pipelines): from submitting both
/// to both done. The producer must not wait behind its blocked consumer.
pub(crate) fn dependent_pair(workers: usize, n: u64) -> Vec<LatencyContender> {
    let pp = pool(workers);
    let q: parpool::ipc::Queue<u64> = parpool::ipc::Queue::new().expect("queue");
    vec![
        (
            "parpool ProcessPool",
            Box::new(move || {
                let warm: Vec<_> = (0..10_000).map(|i| pp.submit(ident, i)).collect();
                warm.into_iter().for_each(|h| drop(h.join()));
                (0..n)
                    .map(|i| {
                        let t = Instant::now();
                        let c = pp.submit(dep_consume, q.clone());
                        let p = pp.submit(dep_produce, (q.clone(), i));
                        assert_eq!(c.join(), Ok(i));
                        assert_eq!(p.join(), Ok(true));
                        t.elapsed().as_secs_f64()
                    })
                    .collect()
            }),
        ),
        ("budget: 2 ms", Box::new(move || vec![0.002; n as usize])),
        (
            "Python ProcessPoolExecutor, multiprocessing.Queue",
            Box::new(move || python_samples("ppe_dependent_pair", n, workers)),
        ),
    ]
}

/// The operating system's own price for a round trip to another process
/// that blocks waiting for it: one byte written to `cat`, read back.
/// No pool that sleeps between jobs can beat it.
fn ping_pong_floor(n: u64) -> Vec<f64> {
    use std::io::{Read, Write};
    let mut cat = Command::new("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cat");
    let mut to = cat.stdin.take().expect("stdin");
    let mut from = cat.stdout.take().expect("stdout");
    let mut byte = [7u8];
    let samples = (0..n)
        .map(|_| {
            let t = Instant::now();
            to.write_all(&byte).expect("write to cat");
            from.read_exact(&mut byte).expect("read from cat");
            t.elapsed().as_secs_f64()
        })
        .collect();
    drop(to);
    let _ = cat.wait();
    samples
}

/// Ordered map over `n` tiny items.
pub(crate) fn map(workers: usize, n: u64) -> Vec<TimedContender> {
    let pp = pool(workers);
    vec![
        (
            "parpool ProcessPool",
            wall(move || {
                let out: Vec<u64> = pp.map_task(ident, 0..n).collect::<Result<_, _>>().unwrap();
                assert_eq!(out.len() as u64, n);
                black_box(out);
            }),
        ),
        (
            "Python multiprocessing.Pool.map",
            python_timed("mp_map", n, workers),
        ),
    ]
}

parpool::task!(
    fn square(x: f64) -> f64 {
        x * x
    }
);

/// `n` floats squared, split across workers: the process pool's
/// shared-memory `par`, the thread pool's `par`, and Python's
/// `multiprocessing.Pool.map` at its best chunksize.
pub(crate) fn par_square(workers: usize, n: u64) -> Vec<TimedContender> {
    let pp = pool(workers);
    let tp = ThreadPool::builder().workers(workers).build().unwrap();
    let data: std::sync::Arc<Vec<f64>> =
        std::sync::Arc::new((0..n).map(|i| i as f64 * 0.5).collect());
    let check = data[3] * data[3];
    let data2 = data.clone();
    vec![
        (
            "parpool ProcessPool par().map()",
            wall(move || {
                let out = pp.par(&data).map(square).unwrap();
                assert_eq!(out[3], check);
                black_box(out);
            }),
        ),
        (
            "parpool ThreadPool par().map()",
            wall(move || {
                let out = tp.par(data2.as_slice()).map(|x| x * x).unwrap();
                assert_eq!(out[3], check);
                black_box(out);
            }),
        ),
        (
            "Python multiprocessing.Pool.map, best chunksize",
            python_timed("mp_map_square_best", n, workers),
        ),
    ]
}

/// From nothing to the first result of a fresh one-worker pool.
pub(crate) fn start() -> Vec<TimedContender> {
    vec![
        (
            "parpool ProcessPool",
            wall(|| {
                let pool = pool(1);
                assert_eq!(pool.submit(ident, 1).join(), Ok(1));
            }),
        ),
        (
            "procspawn::spawn",
            wall(|| {
                assert_eq!(procspawn::spawn(1u64, |x| x).join().unwrap(), 1);
            }),
        ),
        (
            "Python multiprocessing spawn",
            python_timed("start_spawn", 1, 1),
        ),
        (
            "Python multiprocessing fork",
            python_timed("start_fork", 1, 1),
        ),
    ]
}

/// `bytes` in and out of one worker.
pub(crate) fn payload(bytes: u64) -> Vec<TimedContender> {
    let pp = ProcessPool::builder()
        .workers(1)
        .max_payload(1 << 31)
        .build()
        .expect("pool");
    let pp = std::sync::Arc::new(pp);
    let copy_pool = pp.clone();
    // Each round trip's output is the next one's input: no copy is made
    // outside the pool.
    let mut data = Some(serde_bytes::ByteBuf::from(vec![7u8; bytes as usize]));
    let mut shared =
        Some(parpool::SharedBytes::new(bytes as usize, |b| b.fill(7)).expect("shared memory"));
    vec![
        (
            "parpool ProcessPool, SharedBytes",
            wall(move || {
                let input = shared.take().expect("data");
                let back = pp.submit(echo_shared, input).join().unwrap();
                assert_eq!(touch(&back), 0);
                assert_eq!(back.len() as u64, bytes);
                shared = Some(back);
            }),
        ),
        (
            "parpool ProcessPool, bytes through the socket",
            wall(move || {
                let input = data.take().expect("data");
                let back = copy_pool.submit(echo_bytes, input).join().unwrap();
                assert_eq!(touch(&back), 0);
                assert_eq!(back.len() as u64, bytes);
                data = Some(back);
            }),
        ),
        (
            "Python ProcessPoolExecutor (pickle)",
            python_timed("ppe_bytes", bytes, 1),
        ),
    ]
}

/// `jobs` CPU-bound jobs of ~`ms` each, processes against threads.
pub(crate) fn cpu(workers: usize, jobs: u64, ms: u64) -> Vec<TimedContender> {
    let pp = pool(workers);
    let tp = ThreadPool::builder()
        .workers(workers)
        .build()
        .expect("thread pool");
    vec![
        ("parpool ProcessPool", burn_batch(Arc::new(pp), jobs, ms)),
        ("parpool ThreadPool", burn_batch(Arc::new(tp), jobs, ms)),
    ]
}
