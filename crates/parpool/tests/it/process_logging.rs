//! tracing events emitted inside a worker process reach the parent's
//! subscriber, tagged with the worker's pid and the job. (It installs a global
//! subscriber, so it runs alone in a child process.)

use crate::common::Captured;

use parpool::{Executor, ProcessPool, WorkerOutput};

parpool::task!(
    fn chatty(x: u32) -> u32 {
        tracing::warn!(value = x, "hello from the worker");
        x
    }
);

#[test]
fn worker_events_reach_the_parent_with_pid_and_job() {
    // It installs a global subscriber: alone, in a child process.
    if crate::common::isolated("process_logging::worker_events_reach_the_parent_with_pid_and_job") {
        return;
    }
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();
    let pool = ProcessPool::builder()
        .workers(1)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap();
    let pid = pool.worker_pids()[0];
    let h = pool.submit(chatty, 5);
    let id = h.id().get();
    assert_eq!(h.join(), Ok(5));
    pool.shutdown();
    let text = captured.text();
    let line = text
        .lines()
        .find(|l| l.contains("hello from the worker"))
        .unwrap_or_else(|| panic!("worker event missing:\n{text}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&format!("worker_pid={pid}")), "{line}");
    assert!(line.contains(&format!("job={id}")), "{line}");
    assert!(line.contains("value=5"), "{line}");
}
