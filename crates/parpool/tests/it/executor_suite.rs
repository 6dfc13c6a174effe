//! The test bodies shared with every pool (`tests/shared/executor.rs`), on
//! the thread pool and the process pool.

use parpool::{ProcessPool, ThreadPool, WorkerOutput};

#[path = "../shared/executor.rs"]
mod shared;

#[test]
fn every_executor_case_holds_on_a_thread_pool() {
    let pool = ThreadPool::builder().workers(3).build().unwrap();
    shared::run(&pool, shared::cases());
}

#[test]
fn every_executor_case_holds_on_a_process_pool() {
    let pool = ProcessPool::builder()
        .workers(3)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap();
    shared::run(&pool, shared::cases());
    shared::run(&pool, shared::isolation_cases());
}
