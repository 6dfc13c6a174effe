//! How `ipc` objects wait on a futex word in shared memory: blocking
//! (`blocking.rs`: sleep until a condition holds or a deadline passes,
//! for an `Event`, a `Queue`'s `join`) and async (`waiter.rs`: one thread
//! per process waits on every registered word at once and wakes the tasks
//! whose word changed). The futex calls themselves are `sys/futex.rs`'s;
//! a queue's own policy (spinning before it sleeps, batching wake-ups)
//! builds on these in `queue/wait.rs`.

mod blocking;
mod waiter;

pub(crate) use blocking::wait_on;
pub(crate) use waiter::Registration;
pub use waiter::waiter_mode;
