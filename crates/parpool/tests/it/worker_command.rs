//! Workers started as another program (`ProcessPoolBuilder::worker_command`)
//! that serves the pool with `serve_worker()`: here this test binary again,
//! started on the `serve` test, which serves when the pool's environment says
//! so. And the converse: a program a worker's task starts is not taken for a
//! worker.

use std::process::Command;
use std::time::Duration;

use parpool::{BuildError, Executor, JobError, JobOptions, ProcessPool, WorkerOutput};

/// Set by the pools below in their workers' environment: the `serve` test
/// then serves instead of testing.
const SERVE_ENV: &str = "PARPOOL_TEST_SERVE";

parpool::task!(
    fn pid_of_worker(_: ()) -> u32 {
        std::process::id()
    }
);

parpool::task!(
    fn abort_worker(_: ()) -> u32 {
        std::process::abort()
    }
);

parpool::task!(
    fn sleep_ms(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
);

parpool::task!(
    fn run_this_binary(args: Vec<String>) -> (i32, String) {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
);

/// In a worker started by the pools below, serves the pool and ends the
/// process; anywhere else, checks that `serve_worker` refuses to serve a
/// pool that does not exist.
#[test]
fn serve() {
    if std::env::var_os(SERVE_ENV).is_some() {
        let code = match parpool::serve_worker() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("serve_worker: {e}");
                3
            }
        };
        std::process::exit(code);
    }
    let err = parpool::serve_worker().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("worker_command"), "{err}");
}

/// The job's result, waited for at most [`PATIENCE`](crate::common::PATIENCE).
fn joined<T: Send + 'static>(handle: parpool::JobHandle<T>) -> Result<T, JobError> {
    handle
        .join_timeout(crate::common::PATIENCE)
        .unwrap_or_else(|_| panic!("a job did not end within the test's patience"))
}

fn command_pool(workers: usize) -> parpool::ProcessPoolBuilder {
    ProcessPool::builder()
        .workers(workers)
        .worker_command(
            std::env::current_exe().unwrap(),
            ["--exact", "worker_command::serve", "--test-threads=1", "-q"],
        )
        .env(SERVE_ENV, "1")
        .stdout(WorkerOutput::Null)
        .stderr(WorkerOutput::Null)
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn jobs_run_in_workers_started_by_the_command() {
    let pool = command_pool(2).build().unwrap();
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    for &pid in &pids {
        assert!(
            cmdline(pid).contains("worker_command::serve"),
            "worker {pid} runs {:?}",
            cmdline(pid)
        );
    }
    let ran: Vec<u32> = (0..20)
        .map(|_| pool.submit(pid_of_worker, ()))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| joined(h).unwrap())
        .collect();
    assert!(
        ran.iter().all(|p| pids.contains(p)),
        "{ran:?} not in {pids:?}"
    );
    assert!(!ran.contains(&std::process::id()));
    assert_eq!(
        pool.map_task(sleep_ms, vec![1u64; 50])
            .timeout(crate::common::PATIENCE)
            .collect::<Result<Vec<_>, _>>(),
        Ok(vec![1u64; 50])
    );
    pool.shutdown();
    let stats = pool.stats();
    assert_eq!(
        (stats.failed, stats.running, stats.queued),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn a_crash_fails_its_job_alone_and_the_command_starts_a_replacement() {
    let pool = command_pool(1).build().unwrap();
    let first = pool.worker_pids()[0];
    let crashed = joined(pool.submit(abort_worker, ()));
    assert!(
        matches!(crashed, Err(JobError::Crashed { .. })),
        "{crashed:?}"
    );
    let next = joined(pool.submit(pid_of_worker, ())).unwrap();
    assert_ne!(next, first, "the crashed worker was replaced");
    assert!(
        cmdline(next).contains("worker_command::serve"),
        "{}",
        cmdline(next)
    );
    let late = joined(pool.submit_with(
        JobOptions::new().timeout(Duration::from_millis(200)),
        sleep_ms,
        30_000,
    ));
    assert!(matches!(late, Err(JobError::TimedOut { .. })), "{late:?}");
    assert_eq!(joined(pool.submit(sleep_ms, 1)), Ok(1));
    assert!(pool.respawns() >= 2, "respawns: {}", pool.respawns());
}

fn spawn_error(builder: parpool::ProcessPoolBuilder) -> String {
    match builder.build() {
        Err(BuildError::Spawn { source, .. }) => source.to_string(),
        Err(other) => panic!("expected a spawn error, got {other}"),
        Ok(_) => panic!("a pool started with a worker command that cannot serve"),
    }
}

#[test]
fn a_command_that_cannot_serve_fails_build_with_the_reason() {
    let ends = spawn_error(
        ProcessPool::builder()
            .workers(1)
            .worker_command("/bin/true", [] as [&str; 0]),
    );
    assert!(ends.contains("ended without saying hello"), "{ends}");
    assert!(ends.contains("serve_worker"), "{ends}");

    let missing = spawn_error(
        ProcessPool::builder()
            .workers(1)
            .worker_command("/nonexistent/parpool-worker", ["x"]),
    );
    assert!(missing.contains("No such file"), "{missing}");

    let silent = spawn_error(
        ProcessPool::builder()
            .workers(1)
            .start_timeout(Duration::from_millis(300))
            .worker_command("/bin/sleep", ["30"]),
    );
    assert!(silent.contains("did not say hello within"), "{silent}");
}

/// A worker command that forks the serving program instead of exec'ing it
/// (a shell script without `exec`) puts a process between it and the
/// pool: `serve_worker` refuses (the worker would not die with the pool),
/// and `build` fails instead of starting a worker that cannot be watched.
#[test]
fn a_worker_behind_a_forking_wrapper_is_refused() {
    let exe = std::env::current_exe().unwrap();
    let said = std::env::temp_dir().join(format!("parpool-wrapper-{}", std::process::id()));
    let script = format!(
        "{} --exact worker_command::serve --test-threads=1 -q --nocapture 2>{}; true",
        exe.display(),
        said.display()
    );
    let err = spawn_error(
        ProcessPool::builder()
            .workers(1)
            .worker_command("/bin/sh", ["-c", script.as_str()])
            .env(SERVE_ENV, "1")
            .stdout(WorkerOutput::Null)
            .stderr(WorkerOutput::Null),
    );
    assert!(err.contains("without saying hello"), "{err}");
    let words = std::fs::read_to_string(&said).unwrap_or_default();
    let _ = std::fs::remove_file(&said);
    assert!(words.contains("must exec"), "the worker said: {words}");
}

/// A program a worker's task starts inherits the worker's environment; it
/// must run as itself, not as a worker (it used to divert into the worker
/// loop and exit with status 70).
#[test]
fn a_program_a_task_starts_is_not_taken_for_a_worker() {
    let pool = crate::common::quiet_pool(1);
    let (code, out) = joined(pool.submit(run_this_binary, vec!["--list".into()])).unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("worker_command::serve: test"), "{out}");
}
