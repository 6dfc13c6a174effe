//! A process job that panics, aborts, segfaults, exits, is killed, runs out
//! of memory or past its timeout fails alone; the pool heals.

use std::time::{Duration, Instant};

use parpool::{Executor, ExitStatus, JobError, JobHandle, JobOptions, ProcessPool, WorkerOutput};

parpool::task!(
    fn echo(x: u64) -> u64 {
        x
    }
);
parpool::task!(
    fn slow_echo((x, ms): (u64, u64)) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        x
    }
);
parpool::task!(
    fn boom(msg: String) -> u64 {
        panic!("{msg}")
    }
);
parpool::task!(
    fn abort_now(_x: ()) -> u64 {
        std::process::abort()
    }
);
parpool::task!(
    fn exit_with(code: i32) -> u64 {
        std::process::exit(code)
    }
);
parpool::task!(
    fn segfault(_x: ()) -> u64 {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::SEGV);
        std::thread::sleep(Duration::from_secs(10));
        0
    }
);
parpool::task!(
    fn hog(mib: usize) -> usize {
        let v = vec![1u8; mib << 20];
        std::hint::black_box(&v);
        v.len()
    }
);
parpool::task!(
    fn my_pid(_x: ()) -> u32 {
        std::process::id()
    }
);

fn pool() -> ProcessPool {
    ProcessPool::builder()
        .workers(2)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap()
}

/// Submits `n` slow but good jobs around the bad one, and checks they all
/// succeed while the bad one fails with the expected error.
fn fails_alone(pool: &ProcessPool, bad: JobHandle<u64>) -> JobError {
    let good: Vec<_> = (0..8).map(|i| pool.submit(slow_echo, (i, 20))).collect();
    let err = bad.join().unwrap_err();
    for (i, h) in good.into_iter().enumerate() {
        assert_eq!(
            h.join(),
            Ok(i as u64),
            "a job beside the failing one was harmed"
        );
    }
    assert_eq!(
        pool.submit(echo, 99).join(),
        Ok(99),
        "the pool must still serve"
    );
    err
}

#[test]
fn panic_gives_message_and_location_across_the_boundary() {
    let pool = pool();
    let err = fails_alone(&pool, pool.submit(boom, "bad row 17".to_owned()));
    assert_eq!(err.panic_message(), Some("bad row 17"));
    let loc = err.panic_location().expect("location crosses the boundary");
    assert!(loc.file.ends_with("process_isolation.rs"), "{loc}");
    assert_eq!(
        pool.respawns(),
        0,
        "a panic does not cost the worker its life"
    );
}

#[test]
fn abort_fails_alone_with_sigabrt() {
    let pool = pool();
    let err = fails_alone(&pool, pool.submit(abort_now, ()));
    assert!(
        matches!(
            err,
            JobError::Crashed {
                status: ExitStatus::Signal(6),
                ..
            }
        ),
        "{err}"
    );
    assert!(pool.respawns() >= 1);
}

#[test]
fn segfault_fails_alone_with_sigsegv() {
    let pool = pool();
    let err = fails_alone(&pool, pool.submit(segfault, ()));
    assert!(
        matches!(
            err,
            JobError::Crashed {
                status: ExitStatus::Signal(11),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("segmentation fault"), "{err}");
}

#[test]
fn exit_fails_alone_with_its_code() {
    let pool = pool();
    let err = fails_alone(&pool, pool.submit(exit_with, 3));
    assert!(
        matches!(
            err,
            JobError::Crashed {
                status: ExitStatus::Code(3),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn sigkill_from_outside_fails_only_the_running_job() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let victim = pool.submit(slow_echo, (1, 5_000));
    let queued: Vec<_> = (0..5).map(|i| pool.submit(echo, i)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let pid = pool.worker_pids()[0];
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let err = victim.join().unwrap_err();
    assert!(
        matches!(
            err,
            JobError::Crashed {
                status: ExitStatus::Signal(9),
                ..
            }
        ),
        "{err}"
    );
    for (i, h) in queued.into_iter().enumerate() {
        assert_eq!(h.join(), Ok(i as u64), "queued jobs are untouched");
    }
    assert_ne!(pool.worker_pids()[0], pid, "the worker was replaced");
}

#[test]
fn timeout_kills_the_worker_and_resolves_timed_out() {
    let pool = pool();
    let started = Instant::now();
    let slow = pool.submit_with(
        JobOptions::new().timeout(Duration::from_millis(200)),
        slow_echo,
        (7, 10_000),
    );
    let err = fails_alone(&pool, slow);
    assert_eq!(
        err,
        JobError::TimedOut {
            after: Duration::from_millis(200)
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the job was stopped, not waited for"
    );
}

#[test]
fn pool_wide_job_timeout_applies() {
    let pool = ProcessPool::builder()
        .workers(1)
        .job_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    assert!(
        pool.submit(slow_echo, (1, 5_000))
            .join()
            .unwrap_err()
            .is_timed_out()
    );
    assert_eq!(pool.submit(slow_echo, (2, 1)).join(), Ok(2));
}

#[test]
fn memory_limit_fails_the_hog_alone() {
    let pool = ProcessPool::builder()
        .workers(2)
        .memory_limit(512 << 20)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap();
    let err = pool.submit(hog, 2048).join().unwrap_err();
    assert!(err.is_crashed(), "{err}");
    assert_eq!(
        pool.submit(hog, 16).join(),
        Ok(16 << 20),
        "a modest job still runs"
    );
}

#[test]
fn cancel_of_a_running_job_kills_its_worker() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let running = pool.submit(slow_echo, (1, 10_000));
    std::thread::sleep(Duration::from_millis(200));
    let pid = pool.worker_pids()[0];
    let started = Instant::now();
    assert!(running.cancel());
    assert_eq!(running.join(), Err(JobError::Cancelled));
    assert_eq!(pool.submit(echo, 5).join(), Ok(5));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_ne!(
        pool.worker_pids()[0],
        pid,
        "the worker running it was killed"
    );
}

#[test]
fn cancel_of_a_queued_job_never_sends_it() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let blocker = pool.submit(slow_echo, (0, 300));
    let queued = pool.submit(exit_with, 9);
    assert!(queued.cancel());
    assert_eq!(blocker.join(), Ok(0));
    assert_eq!(queued.join(), Err(JobError::Cancelled));
    assert_eq!(pool.respawns(), 0, "the exiting job never ran");
}

#[test]
fn retries_rerun_a_crashed_job_on_a_fresh_worker() {
    let pool = ProcessPool::builder()
        .workers(1)
        .retries(2)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap();
    let err = pool.submit(abort_now, ()).join().unwrap_err();
    assert!(err.is_crashed());
    assert_eq!(pool.respawns(), 3, "first run plus two retries");
}

#[test]
fn workers_are_recycled_after_max_jobs() {
    let pool = ProcessPool::builder()
        .workers(1)
        .max_jobs_per_worker(3)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..9)
        .map(|_| pool.submit(my_pid, ()).join().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<_> = pids.iter().collect();
    assert_eq!(distinct.len(), 3, "{pids:?}");
    for w in pids.chunks(3) {
        assert!(
            w.iter().all(|p| *p == w[0]),
            "three jobs per worker: {pids:?}"
        );
    }
}

#[test]
fn env_and_current_dir_reach_the_worker() {
    parpool::task!(
        fn read_env(key: String) -> Option<String> {
            std::env::var(key).ok()
        }
    );
    parpool::task!(
        fn cwd(_x: ()) -> String {
            std::env::current_dir().unwrap().display().to_string()
        }
    );
    let dir = std::env::temp_dir();
    let pool = ProcessPool::builder()
        .workers(1)
        .env("PARPOOL_TEST_VALUE", "forty-two")
        .current_dir(&dir)
        .build()
        .unwrap();
    assert_eq!(
        pool.submit(read_env, "PARPOOL_TEST_VALUE".into()).join(),
        Ok(Some("forty-two".into()))
    );
    let got = pool.submit(cwd, ()).join().unwrap();
    assert_eq!(
        std::fs::canonicalize(got).unwrap(),
        std::fs::canonicalize(dir).unwrap()
    );
}

#[test]
fn oversized_input_is_a_typed_error_and_loses_nothing() {
    parpool::task!(
        fn length(v: Vec<u8>) -> usize {
            v.len()
        }
    );
    let pool = ProcessPool::builder()
        .workers(1)
        .max_payload(1024)
        .build()
        .unwrap();
    let err = pool.submit(length, vec![0; 4096]).join().unwrap_err();
    assert!(err.is_too_large(), "{err}");
    parpool::task!(
        fn big(n: usize) -> Vec<u8> {
            vec![7; n]
        }
    );
    let err = pool.submit(big, 4096).join().unwrap_err();
    assert!(err.is_too_large(), "{err}");
    assert_eq!(pool.submit(length, vec![0; 100]).join(), Ok(100));
}

#[test]
fn a_worker_killed_while_idle_does_not_fail_the_next_job() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    for _ in 0..20 {
        assert_eq!(pool.submit(echo, 1).join(), Ok(1));
        let pid = pool.worker_pids()[0];
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        // Let it die before the next job arrives.
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        }) {
            std::thread::yield_now();
        }
        assert_eq!(
            pool.submit(echo, 2).join(),
            Ok(2),
            "an idle worker's death was blamed on a job"
        );
    }
}

/// A type whose serde code panics on demand, to prove neither side dies.
#[derive(Debug, PartialEq)]
struct Hostile(u8);

impl serde::Serialize for Hostile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 == 1 {
            panic!("serialize refused");
        }
        s.serialize_u8(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Hostile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = <u8 as serde::Deserialize>::deserialize(d)?;
        if v == 2 {
            panic!("deserialize refused");
        }
        Ok(Hostile(v))
    }
}

parpool::task!(
    fn hostile(x: Hostile) -> Hostile {
        // 3 in, 2 out: the parent's decoding of the output panics.
        if x.0 == 3 { Hostile(2) } else { x }
    }
);

#[test]
fn panicking_serde_code_is_a_codec_error_on_either_side() {
    use parpool::CodecStage;
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let stage = |r: Result<Hostile, JobError>| match r {
        Err(JobError::Codec { stage, message }) => {
            assert!(message.contains("refused"), "{message}");
            stage
        }
        other => panic!("expected a codec error, got {other:?}"),
    };
    assert_eq!(
        stage(pool.submit(hostile, Hostile(1)).join()),
        CodecStage::EncodeInput
    );
    assert_eq!(
        stage(pool.submit(hostile, Hostile(2)).join()),
        CodecStage::DecodeInput
    );
    assert_eq!(
        stage(pool.submit(hostile, Hostile(3)).join()),
        CodecStage::DecodeOutput
    );
    assert_eq!(pool.submit(hostile, Hostile(7)).join(), Ok(Hostile(7)));
    assert_eq!(pool.respawns(), 0, "no worker died for it either");
}

/// Replies travel in batches: a worker that finishes jobs and then dies in
/// a later one of the same batch takes the finished jobs' unsent replies
/// with it. Only the job it died in may be blamed; the finished ones run
/// again and succeed.
#[test]
fn finished_jobs_whose_replies_died_with_the_worker_are_not_blamed() {
    let pool = ProcessPool::builder()
        .workers(1)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap();
    for _ in 0..20 {
        // Tiny jobs first, so that the pipeline deepens and what follows
        // travels in one batch.
        let warm: Vec<_> = (0..500).map(|i| pool.submit(echo, i)).collect();
        for (i, h) in warm.into_iter().enumerate() {
            assert_eq!(h.join(), Ok(i as u64));
        }
        let before = pool.submit(slow_echo, (1, 1));
        let finished = pool.submit(echo, 2);
        let dies = pool.submit(abort_now, ());
        assert_eq!(before.join(), Ok(1));
        assert_eq!(finished.join(), Ok(2));
        assert!(matches!(dies.join(), Err(JobError::Crashed { .. })));
    }
}
