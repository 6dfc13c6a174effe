//! Jobs run inside a `job` span (fields `pool`, `job`), visible to the
//! subscriber the application installs. (It installs a global subscriber,
//! so it runs alone in a child process.)

use crate::common::Captured;

use parpool::ThreadPool;

#[test]
fn job_events_carry_the_pool_and_job_span() {
    // It installs a global subscriber: alone, in a child process.
    if crate::common::isolated("logging::job_events_carry_the_pool_and_job_span") {
        return;
    }
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();

    let pool = ThreadPool::builder()
        .workers(1)
        .name("logged")
        .build()
        .unwrap();
    let id = pool
        .spawn(|| tracing::info!(answer = 42, "inside the job"))
        .id();
    pool.spawn(|| -> () { panic!("logged panic") })
        .join()
        .unwrap_err();
    pool.shutdown();

    let text = captured.text();
    let line = text
        .lines()
        .find(|l| l.contains("inside the job"))
        .unwrap_or_else(|| panic!("event missing from:\n{text}"));
    assert!(
        line.contains("job{pool=logged job="),
        "span missing: {line}"
    );
    assert!(
        line.contains(&format!("job={}", id.get())),
        "job id missing: {line}"
    );
    assert!(line.contains("answer=42"), "{line}");
    assert!(
        text.lines()
            .any(|l| l.contains("job panicked") && l.contains("logged panic")),
        "the caught panic is logged at debug level:\n{text}"
    );
}
