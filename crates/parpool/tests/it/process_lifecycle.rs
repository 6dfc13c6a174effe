//! Worker processes die with their parent; no fds, memory or processes
//! leak; logs, types and handles work across the boundary.

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parpool::{Executor, ProcessPool, WaitFor, as_completed, wait};
use serde::{Deserialize, Serialize};

parpool::task!(
    fn echo(x: u64) -> u64 {
        x
    }
);

/// The tests here count this process's fds and memory, so they run one at
/// a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

const ORPHAN_FILE: &str = "PARPOOL_TEST_ORPHAN_PIDS_FILE";

/// Run as a separate process by `killing_the_parent_leaves_no_orphans`:
/// starts a pool, writes the worker pids to a file, and waits to be killed.
#[test]
fn orphan_parent_role() {
    let Some(path) = std::env::var_os(ORPHAN_FILE) else {
        return;
    };
    parpool::task!(
        fn busy(ms: u64) -> u64 {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        }
    );
    let pool = ProcessPool::builder().workers(3).build().unwrap();
    // Keep every worker inside a job, deaf to its socket: only the death
    // signal can stop it when this process is killed.
    let _busy: Vec<_> = (0..3).map(|_| pool.submit(busy, 60_000)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    let tmp = std::path::PathBuf::from(&path).with_extension("tmp");
    std::fs::write(&tmp, pids.join(" ")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn killing_the_parent_leaves_no_orphans() {
    let _serial = serial();
    let path = std::env::temp_dir().join(format!("parpool-orphans-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "process_lifecycle::orphan_parent_role",
            "--test-threads=1",
        ])
        .env(ORPHAN_FILE, &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let pids: Vec<u32> = loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            break text
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the parent never started its pool"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = std::fs::remove_file(&path);
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| is_alive(p)));
    parent.kill().unwrap(); // SIGKILL: no chance to clean up
    parent.wait().unwrap();
    let killed = Instant::now();
    while pids.iter().any(|&p| is_alive(p)) {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "workers outlived their parent by a second: {:?}",
            pids.iter().filter(|&&p| is_alive(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn fds_and_memory_stay_flat_over_100k_jobs() {
    // It measures this whole process: alone, in a child process.
    if crate::common::isolated("process_lifecycle::fds_and_memory_stay_flat_over_100k_jobs") {
        return;
    }
    let _serial = serial();
    let pool = ProcessPool::builder()
        .workers(2)
        .max_jobs_per_worker(25_000)
        .build()
        .unwrap();
    let batch = |n: u64| {
        let hs: Vec<_> = (0..n).map(|i| pool.submit(echo, i)).collect();
        for (i, h) in hs.into_iter().enumerate() {
            assert_eq!(h.join(), Ok(i as u64));
        }
    };
    batch(10_000); // warm up allocator and buffers
    let (fds, rss) = (open_fds(), rss_kib());
    for _ in 0..9 {
        batch(10_000);
    }
    // A worker recycled by the last jobs may still be starting its
    // successor: a leak stays, that does not.
    let settled = Instant::now();
    while open_fds() != fds && settled.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        open_fds(),
        fds,
        "file descriptors leaked (workers were recycled meanwhile)"
    );
    let grown = rss_kib().saturating_sub(rss);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB over 90k jobs");
    assert!(pool.respawns() >= 2, "recycling happened");
}

#[test]
fn shutdown_leaves_no_worker_behind() {
    let _serial = serial();
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let pids = pool.worker_pids();
    assert_eq!(pool.submit(echo, 1).join(), Ok(1));
    drop(pool);
    assert!(
        pids.iter().all(|&p| !is_alive(p)),
        "drop reaps every worker"
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Circle { r: f64 },
    Poly(Vec<(i32, i32)>),
    Empty,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Scene {
    name: String,
    shapes: Vec<Shape>,
    tags: BTreeMap<String, Option<u8>>,
    raw: Vec<u8>,
    nested: Option<Box<Scene>>,
}

parpool::task!(
    fn roundtrip(s: Scene) -> Scene {
        s
    }
);
parpool::task!(
    fn describe((a, b, c, d): (i128, char, bool, String)) -> String {
        format!("{a}|{c}|{b}|{d}")
    }
);

#[test]
fn many_types_round_trip() {
    let _serial = serial();
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let inner = Scene {
        name: "inner ✓".into(),
        shapes: vec![Shape::Empty],
        tags: BTreeMap::new(),
        raw: vec![],
        nested: None,
    };
    let scene = Scene {
        name: "outer — ünïcode".into(),
        shapes: vec![
            Shape::Circle { r: 1.5 },
            Shape::Poly(vec![(1, -2), (i32::MIN, i32::MAX)]),
        ],
        tags: [("a".to_string(), Some(1)), ("b".to_string(), None)]
            .into_iter()
            .collect(),
        raw: (0..=255).collect(),
        nested: Some(Box::new(inner)),
    };
    assert_eq!(pool.submit(roundtrip, scene.clone()).join(), Ok(scene));
    assert_eq!(
        pool.submit(describe, (i128::MIN, 'ß', true, String::new()))
            .join(),
        Ok(format!("{}|true|ß|", i128::MIN))
    );
}

#[test]
fn process_handles_work_with_wait_as_completed_and_await() {
    let _serial = serial();
    parpool::task!(
        fn nap(ms: u64) -> u64 {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        }
    );
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let order: Vec<usize> = as_completed([300u64, 10].map(|ms| pool.submit(nap, ms)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(order, [1, 0]);
    let r = wait(
        [pool.submit(nap, 1), pool.submit(nap, 2_000)],
        WaitFor::FirstCompleted,
        None,
    );
    assert_eq!((r.done.len(), r.pending.len()), (1, 1));
    assert_eq!(futures::executor::block_on(pool.submit(nap, 5)), Ok(5));
    let seen: HashSet<u64> = pool
        .map_task_unordered(nap, [3, 1, 2])
        .map(|(_, r)| r.unwrap())
        .collect();
    assert_eq!(seen, HashSet::from([1, 2, 3]));
    pool.shutdown_now();
}

parpool::task!(
    fn wait_then_echo((go, x): (parpool::ipc::Event, u64)) -> u64 {
        go.wait();
        x
    }
);

#[test]
fn close_returns_at_once_and_the_jobs_still_finish_and_the_workers_go() {
    let _serial = serial();
    let go = parpool::ipc::Event::new().unwrap();
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let pid = pool.worker_pids()[0];
    let running = pool.submit(wait_then_echo, (go.clone(), 1));
    let queued = pool.submit(echo, 2);
    pool.close();
    assert_eq!(
        pool.submit(echo, 3).join(),
        Err(parpool::JobError::Shutdown)
    );
    // Neither `close` nor dropping the pool waits for the gated job.
    drop(pool);
    assert!(!running.is_finished());
    go.set();
    assert_eq!(
        running.join_timeout(Duration::from_secs(60)).ok(),
        Some(Ok(1))
    );
    assert_eq!(
        queued.join_timeout(Duration::from_secs(60)).ok(),
        Some(Ok(2))
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while is_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "worker {pid} outlived its closed pool"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn shutdown_async_resolves_once_the_workers_have_exited() {
    let _serial = serial();
    let go = parpool::ipc::Event::new().unwrap();
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let pids = pool.worker_pids();
    let job = pool.submit(wait_then_echo, (go.clone(), 5));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let shutdown = pool.shutdown_async();
        tokio::pin!(shutdown);
        // Not done while a job runs; the runtime thread is not blocked.
        let early = tokio::time::timeout(Duration::from_millis(50), &mut shutdown).await;
        assert!(early.is_err());
        go.set();
        tokio::time::timeout(Duration::from_secs(60), shutdown)
            .await
            .expect("shutdown finished");
    });
    assert_eq!(job.try_result().ok(), Some(Ok(5)));
    for pid in pids {
        assert!(
            !is_alive(pid),
            "worker {pid} still alive after shutdown_async"
        );
    }
}
