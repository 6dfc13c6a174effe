//! Shared state and synchronization across processes (and threads): what
//! Python's `multiprocessing` offers for jobs that are not self-contained.
//! The shared-memory layer of [parpool](https://docs.rs/parpool), usable on
//! its own (Linux); parpool re-exports it as `parpool::ipc`. The examples
//! are written as a parpool user writes them (`use parpool::ipc::Queue;`,
//! `use parpool::SharedBytes;`); with this crate alone the same items are
//! at `parpool_ipc::…`.
//!
//! * [`SharedMem`] and its typed view [`SharedSlice`]: memory every
//!   process sees, with shared atomics (like `Value`);
//! * [`Mutex`] (and [`Lock`]): a robust lock — a holder that dies
//!   poisons it ([`LockError::OwnerDied`] for every locker until repaired), never a
//!   deadlock — [`RLock`], its reentrant kind, and [`Condvar`] to wait on
//!   a mutex;
//! * [`Semaphore`] (bounded), [`Event`], and [`Barrier`] — which a party
//!   that dies breaks for the others instead of hanging them;
//! * [`Queue`]: typed messages, many senders and receivers, bounded by
//!   bytes and messages, closable; [`Pipe`]: a typed two-way channel
//!   between two ends;
//! * [`SharedMap`] and [`SharedList`]: serde keys and values in shared
//!   memory (Python's `Manager().dict()` and `ShareableList`), each call
//!   atomic, whole after a holder's death.
//!
//! Each object lives in an anonymous memory file. Put one in a job's input
//! and the job gets a working handle to the **same** object, whether it
//! runs in a worker process (parpool's `ProcessPool` passes the descriptor)
//! or on a thread (the handle moves); return one from a job and the parent
//! gets it. [`SharedBytes`] is the same for immutable bulk bytes.
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
//! Where `futex_waitv` is missing (Linux before 5.16) or refused (a
//! seccomp filter) — probed at the first async wait, and given up if it
//! starts failing later — each waited word (an event, or one end of a
//! queue) gets a thread of its own instead: it sleeps on the word
//! (`futex_wait`), wakes as promptly, and ends within about 70 ms once no
//! wait on its word remains. Set `PARPOOL_IPC_WAITER=threads` in the
//! environment before the first async wait to use these threads anyway.
//!
//! How an object crosses a process boundary is the [`transfer`] module:
//! encoding a message gathers the objects it holds as descriptors
//! ([`transfer::collecting`]), which travel beside the bytes (`SCM_RIGHTS`),
//! and decoding installs the descriptors that came
//! ([`transfer::receiving`]). Outside those windows an object refuses to be
//! serialized (a lock has no meaning as bytes) and `SharedBytes` is plain
//! bytes.
//!
//! ```
//! use parpool::ipc::{Mutex, Semaphore};
//!
//! let counter = Mutex::new(0u64)?;
//! *counter.lock()? += 1;
//! let slots = Semaphore::new(2)?;
//! let _permit = slots.acquire();
//! assert_eq!(slots.available(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(not(target_os = "linux"))]
compile_error!(
    "parpool-ipc works on Linux only (memfd, futexes, SCM_RIGHTS). On other systems \
     use parpool itself: its thread pool works everywhere, and its `ipc` and \
     `process` features do nothing outside Linux."
);

/// Items that exist on Linux only; elsewhere the crate is the error above
/// and nothing else.
macro_rules! cfg_linux {
    ($($item:item)*) => {
        $(
            #[cfg(target_os = "linux")]
            $item
        )*
    };
}

cfg_linux! {
    #[macro_use]
    mod layout;
    mod barrier;
    mod condvar;
    mod descriptor;
    mod event;
    mod map;
    mod mem;
    mod mutex;
    mod pipe;
    mod queue;
    mod region;
    mod rlock;
    mod semaphore;
    mod sys;
    pub mod transfer;
    mod wait;

    pub use barrier::{Barrier, BarrierError, Party};
    pub use condvar::Condvar;
    pub use descriptor::Descriptor;
    pub use event::{Event, EventWait};
    pub use map::{MapError, SharedList, SharedMap};
    pub use mem::{AccessError, SharedMem, SharedSlice};
    pub use mutex::{Lock, LockError, Mutex, MutexGuard};
    pub use pipe::Pipe;
    pub use queue::{Queue, RecvError, SendError, TaskDoneError};
    pub use rlock::{RLock, RLockGuard};
    pub use semaphore::{Permit, Semaphore};
    pub use transfer::SharedBytes;
    pub use wait::waiter_mode;

    /// Locks `m`, ignoring poisoning: every critical section in this crate
    /// leaves its data consistent before any code that can panic runs.
    fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
