//! What a process pool reports is what happened, at the scale where it
//! once did not: thousands of jobs sharing one `ipc` object all finish;
//! a cancelled job that had not started never starts, and one that ran to
//! the end is never reported cancelled; the stats add up; a job that never
//! started is not a crash; a worker costs the parent three descriptors.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::Duration;

use parpool::ipc::{Event, Mutex, SharedMem};
use parpool::{Executor, JobError, JobHandle, ProcessPool, WorkerOutput};

use crate::common::{JoinWithin, isolated, wait_until};

/// One of the `ipc` objects many jobs may carry.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
enum Shared {
    Mem(SharedMem),
    Event(Event),
    Mutex(Mutex<u64>),
}

parpool::task!(
    fn touch(object: Shared) -> u64 {
        match object {
            Shared::Mem(m) => m.len() as u64,
            Shared::Event(e) => u64::from(e.is_set()),
            Shared::Mutex(m) => {
                let mut g = m.lock().unwrap();
                *g += 1;
                *g
            }
        }
    }
);

/// Each job carries the same object, as Python's
/// `pool.apply_async(f, (lock, i))` in a loop does. Both directions of the
/// socket once filled (a request with descriptors is a write of its own,
/// and the worker answers each with a write of its own) and the pool hung
/// for good after a few hundred jobs.
#[test]
fn thousands_of_jobs_sharing_one_ipc_object_all_finish() {
    for workers in [1, 2] {
        let pool = ProcessPool::builder().workers(workers).build().unwrap();
        let objects = [
            Shared::Mem(SharedMem::new(4096).unwrap()),
            Shared::Event(Event::new().unwrap()),
            Shared::Mutex(Mutex::new(0).unwrap()),
        ];
        for object in &objects {
            for n in [3_000, 30_000] {
                let handles: Vec<_> = (0..n).map(|_| pool.submit(touch, object.clone())).collect();
                for h in handles {
                    h.join_within().unwrap();
                }
            }
        }
        let Shared::Mutex(m) = &objects[2] else {
            unreachable!()
        };
        assert_eq!(
            *m.lock().unwrap(),
            33_000,
            "every job ran once ({workers} workers)"
        );
        let s = pool.stats();
        assert_eq!((s.submitted, s.completed), (99_000, 99_000), "{s:?}");
        // Dropping the pool returns: nothing is stuck.
        drop(pool);
    }
}

/// Where the jobs below record that their body started and that it ran to
/// the end: one `SharedMem`, handed to each worker by its initializer.
static LEDGER: RwLock<Option<SharedMem>> = RwLock::new(None);

parpool::task!(
    fn keep_ledger(ledger: SharedMem) -> () {
        *LEDGER.write().unwrap() = Some(ledger);
    }
);

parpool::task!(
    /// Records its start (and its pid), then its end, in slot `i`.
    fn record(i: u64) -> u64 {
        let ledger = LEDGER.read().unwrap().clone().expect("the initializer ran");
        let word = |k: u64| ledger.atomic_u64((i * 3 + k) as usize).unwrap();
        word(0).fetch_add(1, SeqCst);
        word(2).store(u64::from(std::process::id()), SeqCst);
        word(1).fetch_add(1, SeqCst);
        i
    }
);

parpool::task!(
    /// Records its start, then waits at the gate.
    fn held(i: u64) -> u64 {
        let ledger = LEDGER.read().unwrap().clone().expect("the initializer ran");
        ledger
            .atomic_u64((i * 3) as usize)
            .unwrap()
            .fetch_add(1, SeqCst);
        let gate = ledger.atomic_u64(0).unwrap();
        while gate.load(SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        i
    }
);

fn ledger_pool(workers: usize, slots: u64) -> (ProcessPool, SharedMem) {
    let ledger = SharedMem::new(slots as usize * 3 * 8).unwrap();
    let pool = ProcessPool::builder()
        .workers(workers)
        .initializer(keep_ledger, ledger.clone())
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap();
    (pool, ledger)
}

fn slot(ledger: &SharedMem, i: u64, k: u64) -> u64 {
    ledger
        .atomic_u64((i * 3 + k) as usize)
        .unwrap()
        .load(SeqCst)
}

/// `cancel()` promises that a queued job never starts. Jobs sent ahead into
/// a busy worker's pipeline are queued too, and were once started anyway
/// when the worker got to them.
#[test]
fn a_job_cancelled_before_it_started_never_runs_on_a_process_pool() {
    const BEHIND: u64 = 300;
    // Slot 0 is the gate; the held job is 1, the others after.
    let (pool, ledger) = ledger_pool(1, 2 + BEHIND);
    // Tiny jobs first, so that the pipeline is deep: the jobs below go to
    // the worker in one batch behind the held one.
    let warm: Vec<_> = (0..2000).map(|_| pool.submit(echo_pid, ())).collect();
    for h in warm {
        h.join_within().unwrap();
    }
    let holder = pool.submit(held, 1);
    let behind: Vec<JobHandle<u64>> = (2..2 + BEHIND).map(|i| pool.submit(record, i)).collect();
    // The one worker is in the held job (or about to be), so none of these
    // can have started: each cancel wins, wherever the job waits.
    for h in &behind {
        assert!(h.cancel(), "a job that has not started can be cancelled");
    }
    ledger.atomic_u64(0).unwrap().store(1, SeqCst);
    assert_eq!(holder.join_within(), Ok(1));
    for (h, i) in behind.into_iter().zip(2..) {
        assert_eq!(h.join_within(), Err(JobError::Cancelled));
        assert_eq!(
            slot(&ledger, i, 0),
            0,
            "job {i} was cancelled while queued, yet it started"
        );
    }
    // A job after them runs, and the stats say what happened.
    pool.submit(echo_pid, ()).join_within().unwrap();
    let s = pool.stats();
    assert_eq!(
        (s.submitted, s.completed, s.cancelled, s.failed),
        (2000 + 1 + BEHIND + 1, 2000 + 2, BEHIND, 0),
        "{s:?}"
    );
}

parpool::task!(
    fn echo_pid(_unit: ()) -> u32 {
        std::process::id()
    }
);

/// Four threads submit tiny jobs while a fifth cancels every 100th: a job
/// that resolves `Cancelled` never ran its body to the end in a worker
/// that lived on (the pool kills a worker running a cancelled job; if the
/// body returned first, that worker ends), and a job resolved any other
/// way ran exactly once.
#[test]
fn cancelled_jobs_that_ran_are_never_reported_cancelled() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 12_000;
    const TOTAL: u64 = THREADS * PER_THREAD;
    let (pool, ledger) = ledger_pool(2, TOTAL);
    let pool = Arc::new(pool);
    let handles: Arc<StdMutex<Vec<Option<JobHandle<u64>>>>> =
        Arc::new(StdMutex::new((0..TOTAL).map(|_| None).collect()));
    let submitted = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let canceller = {
        let (handles, done) = (handles.clone(), done.clone());
        std::thread::spawn(move || {
            let mut cancelled = Vec::new();
            let mut next = 0;
            while next < TOTAL {
                let h = handles.lock().unwrap();
                match &h[next as usize] {
                    Some(handle) => {
                        if handle.cancel() {
                            cancelled.push(next);
                        }
                        next += 100;
                    }
                    None if done.load(SeqCst) => next += 100,
                    None => {
                        drop(h);
                        std::thread::yield_now();
                    }
                }
            }
            cancelled
        })
    };
    let submitters: Vec<_> = (0..THREADS)
        .map(|t| {
            let (pool, handles, submitted) = (pool.clone(), handles.clone(), submitted.clone());
            std::thread::spawn(move || {
                for i in (t * PER_THREAD)..((t + 1) * PER_THREAD) {
                    let h = pool.submit(record, i);
                    handles.lock().unwrap()[i as usize] = Some(h);
                    submitted.fetch_add(1, SeqCst);
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    done.store(true, SeqCst);
    let cancelled = canceller.join().unwrap();
    assert!(
        !cancelled.is_empty(),
        "the canceller never won: the test proves nothing"
    );
    let handles = std::mem::take(&mut *handles.lock().unwrap());
    let mut killed = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let i = i as u64;
        let result = h.expect("every job was submitted").join_within();
        let (started, finished, pid) = (
            slot(&ledger, i, 0),
            slot(&ledger, i, 1),
            slot(&ledger, i, 2),
        );
        match result {
            Ok(v) => {
                assert_eq!(v, i);
                assert_eq!(
                    finished, 1,
                    "job {i}: Ok, so it ran to the end exactly once"
                );
            }
            Err(JobError::Cancelled) => {
                assert!(
                    cancelled.contains(&i),
                    "job {i}: Cancelled, yet no cancel won"
                );
                if finished > 0 {
                    killed.push((i, started, pid as u32));
                }
            }
            Err(e) => panic!("job {i}: {e}"),
        }
    }
    // Those that ran to the end: their workers were killed (or ended by
    // themselves) as they were stopped; dying takes a moment.
    for (i, started, pid) in killed {
        wait_until(
            &format!(
                "job {i}: Cancelled, ran to the end (started {started}), and its worker {pid} lives on"
            ),
            || !pool.worker_pids().contains(&pid),
        );
    }
    let s = pool.stats();
    assert_eq!(s.submitted, TOTAL);
    assert_eq!(s.cancelled, cancelled.len() as u64, "{s:?}");
    assert_eq!(s.completed + s.cancelled, TOTAL, "{s:?}");
}

parpool::task!(
    fn abort_at_seven(x: u64) -> u64 {
        if x == 7 {
            std::process::abort();
        }
        x
    }
);

parpool::task!(
    fn nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
);

/// A crash inside a map chunk once decremented `running` once per job of
/// the dead worker's pipeline (it read 18446744073709551615 on an idle
/// pool). At rest every counter adds up, whatever crashed, timed out or
/// was cancelled.
#[test]
fn stats_add_up_at_rest_after_crashes_timeouts_and_cancels() {
    let pool = quiet_pool(2);
    let results: Vec<_> = pool.map_task(abort_at_seven, 0..1000).collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    let timed = pool.submit_with(
        parpool::JobOptions::new().timeout(Duration::from_millis(50)),
        nap,
        5000,
    );
    let cancelled = pool.submit(nap, 5000);
    std::thread::sleep(Duration::from_millis(100));
    assert!(cancelled.cancel());
    assert!(timed.join_within().unwrap_err().is_timed_out());
    assert!(cancelled.join_within().unwrap_err().is_cancelled());
    wait_until("the pool at rest", || {
        let s = pool.stats();
        s.queued == 0 && s.running == 0
    });
    let s = pool.stats();
    // (A map chunk is one job: the chunk whose item crashed completed,
    // with that item's error inside.)
    assert_eq!((s.timed_out, s.cancelled, s.failed), (1, 1, 0), "{s:?}");
    assert_eq!(s.finished(), s.submitted, "{s:?}");
}

/// A worker that cannot be replaced (no descriptor left) once failed one
/// queued job per failed restart, as `Crashed`, though none had started.
/// Now the jobs wait for a worker; only a pool with no worker at all for
/// `start_timeout` fails them, as `NoWorker`.
#[test]
fn jobs_wait_for_a_worker_that_cannot_start_yet_and_never_crash() {
    if isolated("process_truth::jobs_wait_for_a_worker_that_cannot_start_yet_and_never_crash") {
        return;
    }
    let lower = |limit: u64| {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let old = getrlimit(Resource::Nofile);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(limit),
                maximum: old.maximum,
            },
        )
        .unwrap();
        old
    };
    let recycling = |start_timeout: Duration| {
        ProcessPool::builder()
            .workers(1)
            .max_jobs_per_worker(1)
            .start_timeout(start_timeout)
            .stderr(WorkerOutput::Null)
            .build()
            .unwrap()
    };
    let pool = recycling(Duration::from_secs(30));
    assert_eq!(pool.submit(nap, 0).join_within(), Ok(0));
    // No new descriptor from here: a worker that retires cannot be
    // replaced. (At most one job runs on the worker that replaced the
    // first before the limit came down.)
    let old = lower(3);
    let waiting: Vec<_> = (1..=5).map(|i| pool.submit(nap, i)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let pending = waiting.iter().filter(|h| !h.is_finished()).count();
    assert!(
        pending >= 4,
        "jobs wait for a worker instead of failing: {pending} wait"
    );
    rustix::process::setrlimit(rustix::process::Resource::Nofile, old).unwrap();
    for (h, i) in waiting.into_iter().zip(1..) {
        assert_eq!(h.join_within(), Ok(i), "it ran once a worker could start");
    }
    let s = pool.stats();
    assert_eq!((s.completed, s.failed), (6, 0), "{s:?}");
    drop(pool);

    // Past start_timeout with no worker at all, they fail, as never started.
    let pool = recycling(Duration::from_millis(300));
    assert_eq!(pool.submit(nap, 0).join_within(), Ok(0));
    let old = lower(3);
    let stranded: Vec<_> = (1..=3).map(|i| pool.submit(nap, i)).collect();
    let mut no_worker = 0;
    for h in stranded {
        match h.join_within() {
            Ok(_) => {}
            Err(e @ JobError::NoWorker { .. }) => {
                assert!(e.to_string().contains("never started"), "{e}");
                no_worker += 1;
            }
            Err(e) => panic!("expected NoWorker, got {e:?}"),
        }
    }
    assert!(no_worker >= 2, "{no_worker} failed for want of a worker");
    rustix::process::setrlimit(rustix::process::Resource::Nofile, old).unwrap();
    assert_eq!(pool.submit(nap, 9).join_within(), Ok(9), "the pool heals");
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Each worker once cost the parent five descriptors, so a 16-worker pool
/// did not build under `ulimit -n 64`. Now it is three: the socket, the
/// control block, the chunk journal.
#[test]
fn a_worker_costs_the_parent_three_descriptors() {
    if isolated("process_truth::a_worker_costs_the_parent_three_descriptors") {
        return;
    }
    let before = open_descriptors();
    let pool = ProcessPool::builder().workers(16).build().unwrap();
    assert_eq!(pool.submit(nap, 1).join_within(), Ok(1));
    let per_worker = (open_descriptors() - before) as f64 / 16.0;
    assert!(per_worker <= 3.0, "{per_worker} descriptors per worker");
    drop(pool);
    assert_eq!(
        open_descriptors(),
        before,
        "the pool gave every descriptor back"
    );
    let old = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(64),
            maximum: old.maximum,
        },
    )
    .unwrap();
    let pool = ProcessPool::builder().workers(16).build().unwrap();
    let handles: Vec<_> = (0..64).map(|i| pool.submit(nap, i % 3)).collect();
    for h in handles {
        h.join_within().unwrap();
    }
}

/// `is_running` is the worker's claim, not the pool's send: a job written
/// to a worker's pipeline behind another is not running yet, and a
/// finished one is not running any more.
#[test]
fn a_process_job_is_running_only_while_its_worker_runs_it() {
    let pool = quiet_pool(1);
    let first = pool.submit(nap, 1_000);
    let second = pool.submit(nap, 1);
    wait_until("the first job runs", || first.is_running());
    assert!(!second.is_running(), "queued or pipelined behind the first");
    assert!(!second.is_finished());
    assert_eq!(second.join(), Ok(1));
    assert!(first.is_finished() && !first.is_running());
    assert_eq!(first.join(), Ok(1_000));
}

/// A process pool of `workers` whose workers' stderr (the crashes' noise)
/// is dropped.
fn quiet_pool(workers: usize) -> ProcessPool {
    ProcessPool::builder()
        .workers(workers)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap()
}

/// Once the only job a pool had resolves with a value, a panic or a
/// crash (the worker replaced), `stats().running` is 0 the moment its
/// waiter wakes; one cancelled or timed out while it ran counts until its
/// worker is killed, and then no more (bounded wait). Seeded jobs one at a
/// time on each pool kind (`TRUTH_SEED` replays one run).
#[test]
fn a_resolved_job_no_longer_counts_as_running() {
    let mut rng = crate::common::Seeded::from_env("TRUTH_SEED");
    let seed = rng.seed;
    let pool = crate::common::quiet_pool(1);
    for i in 0..300u64 {
        let kind = rng.below(10);
        let result = match kind {
            0 => pool.submit(abort_at_seven, 7).join(),
            1 => {
                let h = pool.submit(nap, 10_000);
                wait_until("the job to start", || pool.stats().running == 1);
                h.cancel();
                h.join()
            }
            2 => pool
                .submit_with(
                    parpool::JobOptions::default().timeout(Duration::from_millis(20)),
                    nap,
                    10_000,
                )
                .join(),
            _ => pool.submit(abort_at_seven, i % 7).join(),
        };
        if matches!(kind, 1 | 2) {
            wait_until("the stopped job's worker to be killed", || {
                pool.stats().running == 0
            });
            continue;
        }
        assert_eq!(
            pool.stats().running,
            0,
            "job {i} (kind {kind}, {result:?}) still counted as running; TRUTH_SEED={seed}"
        );
    }
    let threads = parpool::ThreadPool::builder().workers(2).build().unwrap();
    for i in 0..3000u64 {
        let r = match i % 30 {
            0 => threads.spawn(|| -> u64 { panic!("boom") }).join().map(drop),
            n if n % 2 == 0 => threads.spawn(move || i).join().map(drop),
            _ => threads.spawn(|| ()).join(),
        };
        assert_eq!(threads.stats().running, 0, "thread job {i}: {r:?}");
    }
}
