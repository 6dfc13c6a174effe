//! parpool's integration tests, one binary for all of them (linking one
//! binary instead of one per file is most of a test build's time). Each
//! module is one subject; `common` holds the helpers they share.
//!
//! Tests share this process. The few that measure the whole process (its
//! descriptors, threads, memory) run alone in a child process of this
//! binary ([`common::isolated`]).
//!
//! Without the `process` feature (or outside Linux) only the modules that
//! need threads alone are built: what a portable build offers.

mod common;

mod architecture;
mod async_interop;
#[cfg(all(feature = "compare", target_os = "linux"))]
mod compare;
#[cfg(all(feature = "process", target_os = "linux"))]
mod executor_suite;
mod handle;
#[cfg(all(feature = "process", target_os = "linux"))]
mod ipc;
#[cfg(all(feature = "process", target_os = "linux"))]
mod ipc_async;
#[cfg(all(feature = "process", target_os = "linux"))]
mod ipc_barrier;
#[cfg(all(feature = "process", target_os = "linux"))]
mod ipc_kept;
#[cfg(all(feature = "process", target_os = "linux"))]
mod ipc_queue;
#[cfg(all(feature = "process", target_os = "linux"))]
mod ipc_shared_map;
mod logging;
mod map;
mod par;
mod pool;
mod pool_choice;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_basic;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_capture;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_chaos;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_init;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_isolation;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_lifecycle;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_logging;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_one_shot;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_par;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_scheduling;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_shared;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_spin;
#[cfg(all(feature = "process", target_os = "linux"))]
mod process_truth;
mod progress;
mod soak;
mod wait;
#[cfg(all(feature = "process", target_os = "linux"))]
mod worker_command;
