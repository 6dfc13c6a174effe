//! Futexes shared between processes: wait, wake, and whether the kernel
//! takes `futex_waitv`.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Waits while `word` holds `expected`, until woken or `timeout` passes.
/// Spurious returns are possible: callers re-check their condition.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    use rustix::thread::futex;
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: d.subsec_nanos() as i64,
    });
    // Shared futexes (no PRIVATE flag): waiters may be in other processes.
    let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
}

/// Wake every waiter ([`futex_wake`]'s count is an `int` in the kernel:
/// `u32::MAX` would read as -1 and wake one).
pub(crate) const WAKE_ALL: u32 = i32::MAX as u32;

/// Wakes up to `n` waiters on `word`, in any process.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
    use rustix::thread::futex;
    let _ = futex::wake(word, futex::Flags::empty(), n);
}

/// Whether the kernel takes `futex_waitv` (Linux 5.16 or later, and no
/// seccomp filter refusing it). The probe cannot sleep: its one word does
/// not hold the expected value, and its deadline is already past. A kernel
/// with the call answers `EAGAIN`; `ENOSYS`, `EPERM` or anything else
/// means the call is unusable.
pub(crate) fn futex_waitv_works() -> bool {
    use rustix::io::Errno;
    use rustix::thread::futex;
    use rustix::time::{ClockId, clock_gettime};
    let word = AtomicU32::new(0);
    let mut w = futex::Wait::new();
    w.val = 1;
    w.uaddr = futex::WaitPtr::new(word.as_ptr().cast());
    // Shared, as the waiter's words are.
    w.flags = futex::WaitFlags::SIZE_U32;
    let now = clock_gettime(ClockId::Monotonic);
    let answer = futex::waitv(
        &[w],
        futex::WaitvFlags::empty(),
        Some(&now),
        ClockId::Monotonic,
    );
    match answer {
        // `ETIMEDOUT` would also prove the call exists.
        Err(Errno::AGAIN | Errno::TIMEDOUT) => true,
        other => {
            tracing::debug!(answer = ?other, "futex_waitv is unavailable");
            false
        }
    }
}
