//! Operating-system calls for `ipc` (Linux), one concern a file:
//! `mem.rs` read-write shared mappings and the raw accesses to mapped
//! memory, `mutex.rs` process-shared robust mutexes (glibc's
//! `pthread_mutex_t`), `futex.rs` futexes, `process.rs` process identity
//! and liveness. The other files' `unsafe` blocks call these, or borrow
//! mapped values under a lock or a documented contract.

mod futex;
mod mem;
mod mutex;
mod process;

pub(crate) use futex::{WAKE_ALL, futex_wait, futex_wake, futex_waitv_works};
pub(crate) use mem::{atomic_at, copy_in, copy_out, copy_out_append, map_shared, populate};
#[cfg(test)]
pub(crate) use mutex::HeldLock;
pub(crate) use mutex::{Locked, MUTEX_SIZE, mutex_init, mutex_lock, mutex_trylock, mutex_unlock,
    mutex_unlock_if_held,
};
pub(crate) use process::{ProcessId, monotonic_ms, process_gone, this_process};
