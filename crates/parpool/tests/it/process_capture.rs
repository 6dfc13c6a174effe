//! WorkerOutput::Capture: each process job's stdout and stderr, kept apart.

use std::process::Command;

use parpool::{CapturedOutput, Executor, JobError, ProcessPool, WorkerOutput};

parpool::task! {
    fn chatter(n: u32) -> u32 {
        for line in 0..3 {
            println!("job {n} line {line}");
            eprintln!("job {n} err {line}");
        }
        n
    }
}

parpool::task! {
    fn print_from_a_child(_x: ()) -> bool {
        println!("before");
        std::process::Command::new("sh")
            .args(["-c", "echo from the child; echo child error >&2"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

parpool::task! {
    fn last_words(_x: ()) -> () {
        eprintln!("about to abort");
        std::process::abort();
    }
}

parpool::task! {
    fn shout(_x: ()) -> () {
        eprintln!("about to panic");
        panic!("the job's own panic");
    }
}

parpool::task! {
    fn flood(bytes: usize) -> usize {
        let line = "x".repeat(1023);
        for _ in 0..bytes / 1024 {
            println!("{line}");
        }
        bytes
    }
}

fn capturing(workers: usize) -> ProcessPool {
    ProcessPool::builder()
        .workers(workers)
        .stdout(WorkerOutput::Capture)
        .stderr(WorkerOutput::Capture)
        .build()
        .unwrap()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[test]
fn each_job_gets_exactly_its_own_output() {
    let pool = capturing(2);
    let handles: Vec<_> = (0..200).map(|n| pool.submit(chatter, n)).collect();
    for (n, h) in handles.into_iter().enumerate() {
        let (result, out) = h.join_captured();
        assert_eq!(result, Ok(n as u32));
        let want_out: String = (0..3).map(|l| format!("job {n} line {l}\n")).collect();
        let want_err: String = (0..3).map(|l| format!("job {n} err {l}\n")).collect();
        assert_eq!(text(&out.stdout), want_out);
        assert_eq!(text(&out.stderr), want_err);
    }
}

#[test]
fn captured_output_is_there_once_the_job_finished() {
    let pool = capturing(1);
    let h = pool.submit(chatter, 7);
    crate::common::wait_until("the job to finish", || h.is_finished());
    let out = h.captured_output().unwrap();
    assert!(text(&out.stdout).starts_with("job 7 line 0\n"));
    assert_eq!(h.join(), Ok(7));
}

#[test]
fn output_of_child_processes_is_captured_with_the_job() {
    let pool = capturing(1);
    let (ok, out) = pool.submit(print_from_a_child, ()).join_captured();
    assert_eq!(ok, Ok(true));
    assert_eq!(text(&out.stdout), "before\nfrom the child\n");
    assert_eq!(text(&out.stderr), "child error\n");
}

#[test]
fn a_crashed_job_keeps_what_it_wrote_before_the_crash() {
    let pool = capturing(1);
    let (result, out) = pool.submit(last_words, ()).join_captured();
    assert!(
        matches!(result, Err(JobError::Crashed { .. })),
        "{result:?}"
    );
    assert!(text(&out.stderr).contains("about to abort"), "{out:?}");
    // The replacement worker starts with empty capture files.
    let (_, out) = pool.submit(chatter, 1).join_captured();
    assert!(!text(&out.stderr).contains("abort"));
}

#[test]
fn a_panicking_job_keeps_its_output_and_its_panic_goes_to_the_handle() {
    let pool = capturing(1);
    let (result, out) = pool.submit(shout, ()).join_captured();
    assert_eq!(
        result.unwrap_err().panic_message(),
        Some("the job's own panic")
    );
    // The panic is delivered as a value, not printed a second time.
    assert_eq!(text(&out.stderr), "about to panic\n");
}

#[test]
fn a_flood_of_output_does_not_block_the_worker() {
    let pool = capturing(1);
    let (n, out) = pool.submit(flood, 4 << 20).join_captured();
    assert_eq!(n, Ok(4 << 20));
    assert_eq!(out.stdout.len(), 4 << 20);
}

#[test]
fn jobs_on_uncaptured_pools_have_no_captured_output() {
    let pool = ProcessPool::builder()
        .workers(1)
        .stdout(WorkerOutput::Null)
        .build()
        .unwrap();
    let h = pool.submit(chatter, 1);
    let (_, out) = h.join_captured();
    assert_eq!(out, CapturedOutput::default());
}

/// Runs `map` on a capturing pool in a child process (this test binary),
/// whose stdout the test reads: chunk output is passed on in one piece
/// per chunk, and nothing is lost.
#[test]
fn map_output_is_passed_on_per_chunk() {
    if std::env::var_os("CAPTURE_MAP_CHILD").is_some() {
        let pool = capturing(2);
        let sum: u32 = pool.map_task(chatter, 0..100).map(Result::unwrap).sum();
        assert_eq!(sum, (0..100).sum());
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "process_capture::map_output_is_passed_on_per_chunk",
            "--nocapture",
        ])
        .env("CAPTURE_MAP_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    for n in 0..100 {
        // Each job's lines arrive together, in order.
        let block: String = (0..3).map(|l| format!("job {n} line {l}\n")).collect();
        assert!(stdout.contains(&block), "job {n}'s lines were split up");
    }
}
