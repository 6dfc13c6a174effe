//! parpool's integration tests, one binary for all of them (linking one
//! binary instead of one per file is most of a test build's time). Each
//! module is one subject; `common` holds the helpers they share.
//!
//! Tests share this process. The few that measure the whole process (its
//! descriptors, threads, memory) run alone in a child process of this
//! binary ([`common::isolated`]).

mod common;

mod async_interop;
mod executor_suite;
mod handle;
mod ipc;
mod ipc_async;
mod ipc_barrier;
mod ipc_kept;
mod ipc_queue;
mod logging;
mod map;
mod pool;
mod process_basic;
mod process_capture;
mod process_chaos;
mod process_init;
mod process_isolation;
mod process_lifecycle;
mod process_logging;
mod process_scheduling;
mod process_shared;
mod soak;
mod wait;
