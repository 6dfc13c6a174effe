//! A process pool's initializer runs once in every worker; its output is
//! the worker's state.

use std::collections::HashMap;

use parpool::{BuildError, Executor, ProcessPool, WorkerOutput};

/// The state: who this worker is and how many jobs it has seen.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Session {
    greeting: String,
    pid: u32,
    jobs: u32,
}

parpool::task! {
    fn open_session(greeting: String) -> Session {
        Session { greeting, pid: std::process::id(), jobs: 0 }
    }
}

parpool::task! {
    fn use_session(_x: ()) -> Option<(String, u32, u32)> {
        parpool::with_worker_state(|s: &mut Session| {
            s.jobs += 1;
            (s.greeting.clone(), s.pid, s.jobs)
        })
    }
}

parpool::task! {
    fn bad_init(_x: ()) -> u8 { panic!("cannot open the database") }
}

#[test]
fn tasks_see_their_workers_state() {
    let pool = ProcessPool::builder()
        .workers(2)
        .initializer(open_session, "hi".into())
        .build()
        .unwrap();
    let mut per_worker: HashMap<u32, u32> = HashMap::new();
    for _ in 0..40 {
        let (greeting, pid, jobs) = pool.submit(use_session, ()).join().unwrap().unwrap();
        assert_eq!(greeting, "hi");
        // The state lives in the process that ran the job, and counts only
        // that worker's jobs: one initializer run per worker.
        let seen = per_worker.entry(pid).or_default();
        *seen += 1;
        assert_eq!(jobs, *seen);
    }
    assert!(
        pool.worker_pids()
            .iter()
            .all(|p| per_worker.contains_key(p) || per_worker.len() < 2)
    );
}

#[test]
fn replacement_workers_are_initialized_too() {
    let pool = ProcessPool::builder()
        .workers(1)
        .max_jobs_per_worker(2)
        .initializer(open_session, "again".into())
        .build()
        .unwrap();
    let counts: Vec<u32> = (0..6)
        .map(|_| pool.submit(use_session, ()).join().unwrap().unwrap().2)
        .collect();
    assert_eq!(
        counts,
        [1, 2, 1, 2, 1, 2],
        "each recycled worker starts from a fresh state"
    );
}

#[test]
fn without_an_initializer_there_is_no_state() {
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    assert_eq!(pool.submit(use_session, ()).join(), Ok(None));
    assert_eq!(
        parpool::with_worker_state(|s: &mut Session| s.jobs),
        None,
        "not in a worker"
    );
}

#[test]
fn a_failing_initializer_fails_the_build() {
    let err = ProcessPool::builder()
        .workers(2)
        .stderr(WorkerOutput::Null)
        .initializer(bad_init, ())
        .build()
        .unwrap_err();
    match err {
        BuildError::Initializer { error, .. } => {
            assert_eq!(error.panic_message(), Some("cannot open the database"));
        }
        other => panic!("unexpected {other}"),
    }
}
