//! The low-latency mode (`ProcessPoolBuilder::spin`) keeps every promise
//! of a process pool — each job resolves once, as what happened to it
//! says, whatever crashes, is cancelled or times out around it — and an
//! idle spinning pool stops using CPU once its window has passed.

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use parpool::ipc::SharedMem;
use parpool::{Executor, JobError, JobOptions, ProcessPool, WorkerOutput};

use crate::common::{JoinWithin, wait_until};

const WINDOW: Duration = Duration::from_micros(200);

fn spinning(name: &str, workers: usize) -> ProcessPool {
    ProcessPool::builder()
        .name(name)
        .workers(workers)
        .spin(WINDOW)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap()
}

parpool::task!(
    /// `x`, after `x % 1000` microseconds (0 for most).
    fn echo(x: u64) -> u64 {
        if !x.is_multiple_of(1000) {
            std::thread::sleep(Duration::from_micros(x % 1000));
        }
        x
    }
);

parpool::task!(
    fn crash(code: i32) -> u64 {
        std::process::exit(code)
    }
);

parpool::task!(
    fn panics(x: u64) -> u64 {
        panic!("job {x} panics")
    }
);

parpool::task!(
    fn nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
);

parpool::task!(
    /// Adds 1 to the shared counter it is given: a job whose request
    /// carries a descriptor.
    fn bump(counter: SharedMem) -> u64 {
        counter.atomic_u64(0).unwrap().fetch_add(1, SeqCst) + 1
    }
);

parpool::task!(
    /// Its input reversed: with a large input, a request and a reply larger
    /// than the low-latency rings and the reply log.
    fn mirror(data: Vec<u8>) -> Vec<u8> {
        data.into_iter().rev().collect()
    }
);

/// A job of either kind, to join in order.
enum Job {
    Number(parpool::JobHandle<u64>, Expect),
    Bytes(parpool::JobHandle<Vec<u8>>, Vec<u8>),
}

/// What each job should come back as.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Value(u64),
    Crashed,
    Panicked,
    Cancelled,
    TimedOut,
}

/// Seeded (`SPIN_SEED` replays one run): 3,000 jobs on two spinning
/// workers, submitted in bursts and one by one, of values, crashes,
/// panics, descriptors, payloads larger than the rings that carry
/// requests and replies in the mode, cancels (queued and running) and
/// timeouts. Every
/// job resolves within the test's patience, as its kind says; the stats
/// add up at rest.
#[test]
fn a_spinning_pool_keeps_every_promise() {
    let mut rng = crate::common::Seeded::from_env("SPIN_SEED");
    let seed = rng.seed;
    let pool = spinning("spin-truth", 2);
    let counter = SharedMem::new(64).unwrap();
    let mut bumps = 0;
    let mut done = 0u64;
    // Values, failures (crashes and panics), cancels, timeouts.
    let mut tally = [0u64; 4];
    while done < 3_000 {
        // A burst (pipelined) or a single job (a round trip).
        let burst = if rng.below(4) == 0 {
            1 + rng.below(200)
        } else {
            1
        };
        let mut jobs = Vec::new();
        for _ in 0..burst {
            let i = done;
            done += 1;
            let (handle, expect) = match rng.below(40) {
                0 => (pool.submit(crash, 3), Expect::Crashed),
                1 => (pool.submit(panics, i), Expect::Panicked),
                2 => {
                    let h = pool.submit(nap, 10_000);
                    assert!(
                        h.cancel(),
                        "job {i}: a long job was cancelled; SPIN_SEED={seed}"
                    );
                    (h, Expect::Cancelled)
                }
                3 => {
                    let options = JobOptions::default().timeout(Duration::from_millis(5));
                    (pool.submit_with(options, nap, 10_000), Expect::TimedOut)
                }
                4..=7 => {
                    bumps += 1;
                    (pool.submit(bump, counter.clone()), Expect::Value(u64::MAX))
                }
                8..=10 => {
                    // Mostly a few kilobytes; one in eight past the rings.
                    let len = if rng.below(8) == 0 {
                        rng.below(300_000)
                    } else {
                        rng.below(5_000)
                    };
                    let data: Vec<u8> = (0..len).map(|k| (k ^ i) as u8).collect();
                    let want = data.iter().rev().copied().collect();
                    jobs.push((i, Job::Bytes(pool.submit(mirror, data), want)));
                    continue;
                }
                _ => {
                    let x = i * 1000 + rng.below(3) * rng.below(300);
                    (pool.submit(echo, x), Expect::Value(x))
                }
            };
            jobs.push((i, Job::Number(handle, expect)));
        }
        for (i, job) in jobs {
            let (handle, expect) = match job {
                Job::Number(handle, expect) => (handle, expect),
                Job::Bytes(handle, want) => {
                    let got = handle.join_within();
                    assert!(
                        got.as_ref().is_ok_and(|v| *v == want),
                        "job {i}: {} bytes came back wrong: {:?}; SPIN_SEED={seed}",
                        want.len(),
                        got.map(|v| v.len())
                    );
                    tally[0] += 1;
                    continue;
                }
            };
            let got = handle.join_within();
            let ok = match (expect, &got) {
                (Expect::Value(u64::MAX), Ok(n)) => *n >= 1,
                (Expect::Value(x), Ok(v)) => *v == x,
                (Expect::Crashed, Err(JobError::Crashed { .. })) => true,
                (Expect::Panicked, Err(JobError::Panicked(_))) => true,
                (Expect::Cancelled, Err(JobError::Cancelled)) => true,
                (Expect::TimedOut, Err(JobError::TimedOut { .. })) => true,
                _ => false,
            };
            assert!(
                ok,
                "job {i}: expected {expect:?}, got {got:?}; SPIN_SEED={seed}"
            );
            tally[match expect {
                Expect::Value(_) => 0,
                Expect::Crashed | Expect::Panicked => 1,
                Expect::Cancelled => 2,
                Expect::TimedOut => 3,
            }] += 1;
        }
    }
    assert_eq!(
        counter.atomic_u64(0).unwrap().load(SeqCst),
        bumps,
        "each bump ran once"
    );
    wait_until("the pool to come to rest", || pool.stats().running == 0);
    let s = pool.stats();
    assert_eq!(s.submitted, done, "{s:?}");
    assert_eq!(
        [s.completed, s.failed, s.cancelled, s.timed_out],
        tally,
        "every job counted once, as it ended: {s:?}; SPIN_SEED={seed}"
    );
}

/// CPU time (user + system) of the threads of this process whose name
/// starts with `prefix`, and of process `pid`, in clock ticks.
fn ticks(prefix: &str, pid: u32) -> (u64, u64) {
    let used = |stat: &str| -> u64 {
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let mut threads = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) {
            threads += used(&std::fs::read_to_string(dir.join("stat")).unwrap());
        }
    }
    let worker = used(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
    (threads, worker)
}

#[test]
fn an_idle_spinning_pool_uses_no_cpu_after_its_window() {
    let pool = spinning("spinidle", 1);
    let pid = pool.worker_pids()[0];
    // Busy for a while: round trips, each followed by a spin.
    let until = Instant::now() + Duration::from_millis(200);
    let mut i = 0;
    while Instant::now() < until {
        assert_eq!(pool.submit(echo, i * 1000).join_within(), Ok(i * 1000));
        i += 1;
    }
    // Well past the window, every spinner is asleep.
    std::thread::sleep(Duration::from_millis(50));
    let (threads, worker) = ticks("spinidle", pid);
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let (threads_after, worker_after) = ticks("spinidle", pid);
    // A spinner would burn ~50 ticks (at 100 Hz) in 500 ms.
    assert!(
        threads_after - threads <= 2 && worker_after - worker <= 2,
        "an idle spinning pool used {} ticks in its supervisor and {} in its worker in {:?}",
        threads_after - threads,
        worker_after - worker,
        start.elapsed()
    );
    assert!(i > 10, "only {i} round trips in 200 ms");
}

/// A round trip of a spinning pool carries descriptors and maps as any
/// pool's does, and a job that waits longer than the window is still
/// answered (the spinners sleep and are woken as without the mode).
#[test]
fn spinning_changes_nothing_but_the_waiting() {
    let pool = spinning("spin-same", 2);
    let counter = SharedMem::new(64).unwrap();
    for n in 1..=100 {
        assert_eq!(pool.submit(bump, counter.clone()).join_within(), Ok(n));
    }
    let squares: Vec<u64> = pool
        .map_task(echo, (0..10_000).map(|i| i * 1000))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(squares, (0..10_000).map(|i| i * 1000).collect::<Vec<_>>());
    // Longer than the window: the worker and supervisor sleep meanwhile.
    assert_eq!(pool.submit(nap, 30).join_within(), Ok(30));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(pool.submit(echo, 5_000).join_within(), Ok(5_000));
}

/// A window past a second is taken as a second (polling longer would only
/// burn a core), and a pool says which window it runs with.
#[test]
fn a_window_past_a_second_is_a_second() {
    let pool = ProcessPool::builder()
        .workers(1)
        .spin(Duration::MAX)
        .build()
        .unwrap();
    assert_eq!(pool.spin(), Duration::from_secs(1));
    assert_eq!(pool.submit(echo, 7).join_within(), Ok(7));
    let plain = ProcessPool::builder().workers(1).build().unwrap();
    assert_eq!(plain.spin(), Duration::ZERO);
}
