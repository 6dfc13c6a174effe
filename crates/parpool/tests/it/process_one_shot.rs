//! `Process`: one task in a new process of its own, with a pid, an exit
//! status, join, join with a timeout, and kill; isolated as a pool's jobs
//! are, and leaving no process behind.

use std::time::Duration;

use parpool::ipc::Event;
use parpool::{ExitStatus, JobError, Process, ProcessPool, WorkerOutput, call};

use crate::common::wait_until;

parpool::task!(
    /// Waits for `go`, then returns this process's pid.
    fn wait_for(go: Event) -> u32 {
        go.wait();
        std::process::id()
    }
);

fn quiet() -> parpool::ProcessPoolBuilder {
    ProcessPool::builder().stderr(WorkerOutput::Null)
}

/// Whether a process with this pid exists (a zombie counts).
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_process_runs_its_task_in_a_new_pid_and_ends_with_code_zero() {
    let go = Event::new().unwrap();
    let p = Process::start(wait_for, go.clone()).unwrap();
    let pid = p.pid().expect("started");
    assert_ne!(pid, std::process::id());
    assert!(p.is_alive());
    assert_eq!(p.exit_status(), None);
    // Still running: join_timeout gives the process back.
    let p = p.join_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(p.is_alive());
    go.set();
    wait_until("the process ends after its task", || !p.is_alive());
    assert_eq!(p.exit_status(), Some(ExitStatus::Code(0)));
    assert_eq!(p.join(), Ok(pid));
    assert!(!exists(pid), "the process was reaped");
}

#[test]
fn every_process_is_a_new_one() {
    let procs: Vec<_> = (0..6u64)
        .map(|i| Process::start(call!(|i: u64| (i, std::process::id())), i).unwrap())
        .collect();
    let pids: Vec<u32> = procs.iter().map(|p| p.pid().unwrap()).collect();
    let results: Vec<(u64, u32)> = procs.into_iter().map(|p| p.join().unwrap()).collect();
    assert_eq!(
        results.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    assert_eq!(results.iter().map(|r| r.1).collect::<Vec<_>>(), pids);
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "{pids:?}");
}

#[test]
fn a_crash_is_the_task_s_error_and_the_process_s_status() {
    let p = Process::start_with(quiet(), call!(|| -> u8 { std::process::abort() }), ()).unwrap();
    wait_until("the process dies", || !p.is_alive());
    assert_eq!(p.exit_status(), Some(ExitStatus::Signal(6)));
    match p.join() {
        Err(JobError::Crashed { status, .. }) => assert_eq!(status, ExitStatus::Signal(6)),
        other => panic!("expected a crash, got {other:?}"),
    }
    let p = Process::start_with(
        quiet(),
        call!(|code: i32| -> u8 { std::process::exit(code) }),
        3,
    )
    .unwrap();
    let result = p.join();
    assert!(
        matches!(
            result,
            Err(JobError::Crashed {
                status: ExitStatus::Code(3),
                ..
            })
        ),
        "{result:?}"
    );
    // A panic is the task's, not the process's: it ends cleanly.
    let p = Process::start_with(quiet(), call!(|| -> u8 { panic!("no") }), ()).unwrap();
    wait_until("the process ends", || !p.is_alive());
    assert_eq!(p.exit_status(), Some(ExitStatus::Code(0)));
    assert_eq!(p.join().unwrap_err().panic_message(), Some("no"));
}

#[test]
fn kill_stops_a_running_task_with_sigkill() {
    let never = Event::new().unwrap();
    let p = Process::start(wait_for, never).unwrap();
    let pid = p.pid().unwrap();
    assert!(p.kill());
    wait_until("the process is killed", || !p.is_alive());
    assert_eq!(p.exit_status(), Some(ExitStatus::Signal(9)));
    assert_eq!(p.join(), Err(JobError::Cancelled));
    assert!(!exists(pid), "the process was reaped");
}

#[test]
fn a_timeout_kills_the_process() {
    let never = Event::new().unwrap();
    let settings = quiet().job_timeout(Duration::from_millis(100));
    let p = Process::start_with(settings, wait_for, never).unwrap();
    let pid = p.pid().unwrap();
    assert!(matches!(p.join(), Err(JobError::TimedOut { .. })));
    assert!(!exists(pid));
}

#[test]
fn dropping_a_process_waits_for_it_and_reaps_it() {
    let go = Event::new().unwrap();
    let p = Process::start(wait_for, go.clone()).unwrap();
    let pid = p.pid().unwrap();
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        go.set();
    });
    drop(p);
    assert!(!exists(pid));
    setter.join().unwrap();
}
