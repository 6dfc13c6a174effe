//! Shared state and synchronization across processes (and threads): what
//! Python's `multiprocessing` offers for jobs that are not self-contained.
//!
//! * [`SharedMem`] and its typed view [`SharedSlice`]: memory every
//!   process sees, with shared atomics (like `Value`);
//! * [`Mutex`] (and [`Lock`]): a robust lock — a holder that dies is
//!   reported to the next locker as [`LockError::OwnerDied`], never a
//!   deadlock — and [`Condvar`] to wait on it;
//! * [`Semaphore`] (bounded), [`Event`], and [`Barrier`] — which a party
//!   that dies breaks for the others instead of hanging them;
//! * [`Queue`]: typed messages, many senders and receivers, bounded by
//!   bytes and messages, closable.
//!
//! Each object lives in an anonymous memory file. Put one in a job's input
//! and the job gets a working handle to the **same** object, whether it
//! runs in a worker process ([`ProcessPool`](crate::ProcessPool), which
//! passes the descriptor) or on a thread ([`ThreadPool`](crate::ThreadPool),
//! which moves the handle); return one from a job and the parent gets it.
//! Memory is freed when the last handle in any process goes, crashes
//! included: nothing is left in `/dev/shm`. A process maps each object
//! once, and a worker keeps the objects its jobs received mapped until the
//! parent drops its own last handle, so handing a large array to job after
//! job maps and faults it in once. A region received from
//! elsewhere is checked (seals, size, header magic, version, kind and
//! payload size) before use, so a corrupted one is an error, not undefined
//! behaviour. Waiting uses futexes, shared across processes.
//!
//! [`Event::wait_async`], [`Queue::recv_async`] and [`Queue::send_async`]
//! work from any async runtime: one thread per process waits for all of
//! them at once (`futex_waitv`, Linux 5.16 or later), none per call.

mod barrier;
mod condvar;
mod event;
mod futex_wait;
mod mem;
mod mutex;
mod queue;
mod region;
mod semaphore;
mod sys;
mod waiter;

pub use barrier::{Barrier, BarrierError, Party};
pub use condvar::Condvar;
pub use event::{Event, EventWait};
pub use mem::{AccessError, SharedMem, SharedSlice};
pub use mutex::{Lock, LockError, Mutex, MutexGuard};
pub use queue::{Queue, RecvError, SendError, TaskDoneError};
pub use semaphore::{Permit, Semaphore};
