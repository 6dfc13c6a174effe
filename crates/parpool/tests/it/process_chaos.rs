//! Chaos: workers SIGKILLed at random while thousands of jobs run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use parpool::{Executor, JobError, ProcessPool, WorkerOutput};

parpool::task!(
    fn work(x: u64) -> u64 {
        // A little work so that kills land mid-job.
        let mut h = x;
        for _ in 0..2_000 {
            h = std::hint::black_box(h.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        x
    }
);

fn kill_randomly(pool: Arc<ProcessPool>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut kills = 0;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        while !stop.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            let pids = pool.worker_pids();
            if pids.is_empty() {
                continue;
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let pid = pids[(seed % pids.len() as u64) as usize];
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
                && rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()
            {
                kills += 1;
            }
        }
        kills
    })
}

fn chaos(retries: u32) -> (u64, u64, u32) {
    const JOBS: u64 = 20_000;
    let pool = Arc::new(
        ProcessPool::builder()
            .workers(2)
            .retries(retries)
            .stderr(WorkerOutput::Null)
            .build()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let killer = kill_randomly(pool.clone(), stop.clone());
    let handles: Vec<_> = (0..JOBS).map(|i| pool.submit(work, i)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut ok, mut crashed) = (0, 0);
    for (i, h) in handles.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        match h.join_timeout(left) {
            Ok(Ok(v)) => {
                assert_eq!(v, i as u64);
                ok += 1;
            }
            Ok(Err(JobError::Crashed { status, detail })) => {
                eprintln!("job {i} crashed: {status} {detail:?}");
                crashed += 1
            }
            Ok(Err(e)) => panic!("job {i}: unexpected {e}"),
            Err(_) => panic!("job {i} hung"),
        }
    }
    stop.store(true, SeqCst);
    let kills = killer.join().unwrap();
    // Let the last SIGKILL land: a worker killed at the very moment a job
    // is sent to it takes that job down (by design: it cannot be told
    // apart from a crash), which is not what this check is about.
    std::thread::sleep(Duration::from_millis(100));
    // The pool still works after the storm.
    assert_eq!(pool.submit(work, 7).join(), Ok(7));
    (ok, crashed, kills)
}

#[test]
fn chaos_every_handle_resolves() {
    let (ok, crashed, kills) = chaos(0);
    assert_eq!(ok + crashed, 20_000, "every handle resolved exactly once");
    assert!(kills > 0, "the killer never struck");
    assert!(
        crashed <= u64::from(kills),
        "only running jobs fail: {crashed} > {kills} kills"
    );
}

#[test]
fn chaos_with_retries_everything_succeeds() {
    let (ok, crashed, kills) = chaos(3);
    assert!(kills > 0);
    assert_eq!(
        (ok, crashed),
        (20_000, 0),
        "with retries(3) no job is lost ({kills} kills)"
    );
}
