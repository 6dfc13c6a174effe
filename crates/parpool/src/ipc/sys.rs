//! Operating-system calls for `ipc` (Linux): read-write shared mappings,
//! process-shared robust mutexes (glibc's `pthread_mutex_t`), futexes, and
//! the raw accesses to mapped memory. The other files' `unsafe` blocks
//! call these, or borrow mapped values under a lock or a documented
//! contract.

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memmap2::{MmapOptions, MmapRaw};

/// Maps all of `file` (`len` bytes, checked by the caller against its
/// size and sealed against shrinking) shared, read-write or read-only.
pub(crate) fn map_shared(file: &File, len: usize, writable: bool) -> io::Result<MmapRaw> {
    if writable {
        MmapOptions::new().len(len).map_raw(file)
    } else {
        MmapOptions::new().len(len).map_raw_read_only(file)
    }
}

/// Size of a process-shared mutex in memory.
pub(crate) const MUTEX_SIZE: usize = std::mem::size_of::<libc::pthread_mutex_t>();

/// How a lock attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locked {
    /// Locked.
    Yes,
    /// Locked, but the previous owner died holding it; the lock has been
    /// made consistent again.
    OwnerDied,
    /// Not locked before the deadline.
    TimedOut,
}

/// Initializes a robust, process-shared mutex at `m`.
///
/// # Safety
/// `m` must point to `MUTEX_SIZE` writable bytes, aligned for
/// `pthread_mutex_t`, that no other thread or process uses yet.
pub(crate) unsafe fn mutex_init(m: *mut u8) -> io::Result<()> {
    let m = m.cast::<libc::pthread_mutex_t>();
    let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is initialized by `pthread_mutexattr_init` before any
    // other use and destroyed at the end; `m` is valid and unused (caller).
    unsafe {
        check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        let result = check(libc::pthread_mutexattr_setpshared(
            attr.as_mut_ptr(),
            libc::PTHREAD_PROCESS_SHARED,
        ))
        .and_then(|()| {
            check(libc::pthread_mutexattr_setrobust(
                attr.as_mut_ptr(),
                libc::PTHREAD_MUTEX_ROBUST,
            ))
        })
        .and_then(|()| check(libc::pthread_mutex_init(m, attr.as_ptr())));
        libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        result
    }
}

/// Locks the mutex at `m`, waiting until `deadline` (forever if `None`).
///
/// # Safety
/// `m` must point to a mutex initialized by [`mutex_init`] (in this or
/// another process) that stays mapped for the call.
pub(crate) unsafe fn mutex_lock(m: *mut u8, deadline: Option<SystemTime>) -> io::Result<Locked> {
    let m = m.cast::<libc::pthread_mutex_t>();
    // SAFETY: `m` is an initialized process-shared mutex (caller).
    let code = unsafe {
        match deadline {
            None => libc::pthread_mutex_lock(m),
            Some(at) => {
                let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
                let ts = libc::timespec {
                    tv_sec: since.as_secs() as libc::time_t,
                    tv_nsec: since.subsec_nanos() as libc::c_long,
                };
                libc::pthread_mutex_timedlock(m, &ts)
            }
        }
    };
    match code {
        0 => Ok(Locked::Yes),
        libc::ETIMEDOUT => Ok(Locked::TimedOut),
        libc::EOWNERDEAD => {
            // SAFETY: this thread now holds `m` (EOWNERDEAD means locked).
            check(unsafe { libc::pthread_mutex_consistent(m) })?;
            Ok(Locked::OwnerDied)
        }
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Tries to lock the mutex at `m` without waiting: `Ok(None)` when it is
/// held by someone else.
///
/// # Safety
/// As [`mutex_lock`].
pub(crate) unsafe fn mutex_trylock(m: *mut u8) -> io::Result<Option<Locked>> {
    // SAFETY: `m` is an initialized process-shared mutex (caller).
    match unsafe { libc::pthread_mutex_trylock(m.cast::<libc::pthread_mutex_t>()) } {
        0 => Ok(Some(Locked::Yes)),
        libc::EBUSY => Ok(None),
        libc::EOWNERDEAD => {
            // SAFETY: EOWNERDEAD means this thread holds `m` now.
            check(unsafe { libc::pthread_mutex_consistent(m.cast()) })?;
            Ok(Some(Locked::OwnerDied))
        }
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Unlocks the mutex at `m`.
///
/// # Safety
/// The calling thread must hold the mutex at `m`, which stays mapped.
pub(crate) unsafe fn mutex_unlock(m: *mut u8) {
    // SAFETY: the caller holds `m`.
    unsafe {
        libc::pthread_mutex_unlock(m.cast::<libc::pthread_mutex_t>());
    }
}

fn check(code: libc::c_int) -> io::Result<()> {
    match code {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

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

/// The atomic at byte `offset` of `map`, if it lies inside and is aligned.
pub(crate) fn atomic_at<A: AtomicCell>(map: &MmapRaw, offset: usize) -> Option<&A> {
    let size = std::mem::size_of::<A>();
    if offset.checked_add(size)? > map.len() || offset % std::mem::align_of::<A>() != 0 {
        return None;
    }
    // The mapping is page-aligned, so `offset`'s alignment is the address's.
    let ptr = map.as_mut_ptr().wrapping_add(offset).cast::<A>();
    // SAFETY: in bounds and aligned (checked above); the mapping lives as
    // long as the borrow of `map`; atomics have no invalid bit patterns
    // and are made for access from many threads — other processes write
    // them through the same instructions.
    Some(unsafe { &*ptr })
}

/// Atomic types that may be viewed in shared memory.
pub(crate) trait AtomicCell {}
impl AtomicCell for AtomicU32 {}
impl AtomicCell for std::sync::atomic::AtomicU64 {}

/// Copies `buf.len()` bytes out of `map` at `offset` (bounds checked by
/// the caller). Concurrent writers elsewhere may leave them torn.
pub(crate) fn copy_out(map: &MmapRaw, offset: usize, buf: &mut [u8]) {
    assert!(offset + buf.len() <= map.len(), "copy_out out of bounds");
    // SAFETY: the source range is inside the mapping (asserted) and the
    // destination is a distinct Rust buffer; bytes have no invalid values.
    unsafe {
        std::ptr::copy_nonoverlapping(
            map.as_ptr().wrapping_add(offset),
            buf.as_mut_ptr(),
            buf.len(),
        );
    }
}

/// Appends `n` bytes of `map` at `offset` to `out` (bounds checked by the
/// caller), without zeroing the room they land in first.
pub(crate) fn copy_out_append(map: &MmapRaw, offset: usize, n: usize, out: &mut Vec<u8>) {
    assert!(
        offset.checked_add(n).is_some_and(|end| end <= map.len()),
        "copy_out out of bounds"
    );
    out.reserve(n);
    // SAFETY: `reserve` made room for `n` bytes past `len`; the source is
    // inside the mapping (asserted) and is not the Vec's own buffer; the
    // copy initializes exactly the `n` bytes that `set_len` then exposes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            map.as_ptr().wrapping_add(offset),
            out.as_mut_ptr().add(out.len()),
            n,
        );
        out.set_len(out.len() + n);
    }
}

/// Copies `data` into `map` at `offset` (bounds checked by the caller).
pub(crate) fn copy_in(map: &MmapRaw, offset: usize, data: &[u8]) {
    assert!(offset + data.len() <= map.len(), "copy_in out of bounds");
    // SAFETY: the destination range is inside the writable mapping
    // (asserted); the source is a distinct Rust buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            map.as_mut_ptr().wrapping_add(offset),
            data.len(),
        );
    }
}
