//! Process-shared robust mutexes (glibc's `pthread_mutex_t`).

use std::io;
use std::mem::MaybeUninit;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Where glibc keeps a mutex's kind (its type, robustness and sharing) in
/// a `pthread_mutex_t` on 64-bit targets: `struct __pthread_mutex_s` holds
/// `__lock`, `__count`, `__owner`, `__nusers`, then `__kind`.
#[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
const KIND_AT: usize = 16;

/// Checks that the mutex at `m` still has the kind [`mutex_init`] gives
/// (read off a probe mutex once), before glibc acts on it: glibc trusts
/// that word, and a garbage one sends it down paths that fault (its lock
/// elision). The memory is shared with other processes, so a corrupted
/// region must be an error here, not a crash. (A process that writes to
/// the word while this one locks can still break the lock: processes that
/// share an object are trusted not to.)
///
/// # Safety
/// `m` must point to `MUTEX_SIZE` readable bytes, aligned for
/// `pthread_mutex_t`, that stay mapped for the call.
#[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
#[inline]
unsafe fn check_kind(m: *const u8) -> io::Result<()> {
    use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
    /// The kind, once probed; `UNKNOWN` before (and if the probe failed,
    /// which leaves the check off). One relaxed load on every lock: a
    /// `OnceLock` here cost a fifth of an uncontended lock/unlock pair.
    const UNKNOWN: i64 = i64::MIN;
    static EXPECTED: AtomicI64 = AtomicI64::new(UNKNOWN);
    let mut expected = EXPECTED.load(Relaxed);
    if expected == UNKNOWN {
        expected = probe_kind().map_or(UNKNOWN + 1, i64::from);
        EXPECTED.store(expected, Relaxed);
    }
    // SAFETY: `KIND_AT + 4` is within `MUTEX_SIZE`, and `m` is readable
    // and aligned for the mutex, so for this `i32` (caller).
    let kind = unsafe { std::ptr::read_volatile(m.add(KIND_AT).cast::<i32>()) };
    if expected != i64::from(kind) && expected != UNKNOWN + 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the lock's shared memory is corrupted (its kind changed)",
        ));
    }
    Ok(())
}

/// The kind word of a fresh mutex from [`mutex_init`], read off a probe.
#[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
#[cold]
fn probe_kind() -> Option<i32> {
    let mut probe = Box::new(MaybeUninit::<libc::pthread_mutex_t>::uninit());
    let at = probe.as_mut_ptr().cast::<u8>();
    // SAFETY: `probe` is ours alone, of the right size and alignment; it
    // is initialized before its kind is read, and destroyed after.
    unsafe {
        mutex_init(at).ok()?;
        let kind = std::ptr::read_volatile(at.add(KIND_AT).cast::<i32>());
        libc::pthread_mutex_destroy(probe.as_mut_ptr());
        Some(kind)
    }
}

/// # Safety
/// None needed; `unsafe` to match the checked version.
#[cfg(not(all(target_env = "gnu", target_pointer_width = "64")))]
unsafe fn check_kind(_m: *const u8) -> io::Result<()> {
    Ok(())
}

/// Locks the mutex at `m`, waiting until `deadline` (forever if `None`).
///
/// # Safety
/// `m` must point to a mutex initialized by [`mutex_init`] (in this or
/// another process) that stays mapped for the call.
pub(crate) unsafe fn mutex_lock(m: *mut u8, deadline: Option<SystemTime>) -> io::Result<Locked> {
    // SAFETY: `m` points to a mapped mutex (caller).
    unsafe { check_kind(m)? };
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
    // SAFETY: `m` points to a mapped mutex (caller).
    unsafe { check_kind(m)? };
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
/// `m` must point to a mutex initialized by [`mutex_init`] that stays
/// mapped for the call, and the calling thread should hold it: a robust
/// mutex refuses (EPERM) to be unlocked by a thread that does not, so a
/// call by one changes nothing, but callers that mean to ask use
/// [`mutex_unlock_if_held`].
pub(crate) unsafe fn mutex_unlock(m: *mut u8) {
    // SAFETY: `m` is an initialized robust mutex (caller), which checks
    // its owner on unlock.
    unsafe {
        libc::pthread_mutex_unlock(m.cast::<libc::pthread_mutex_t>());
    }
}

/// Unlocks the mutex at `m` if the calling thread holds it: `Ok(false)`
/// when it does not (a robust mutex checks its owner on unlock, so asking
/// is well defined whoever holds it).
///
/// # Safety
/// `m` must point to a mutex initialized by [`mutex_init`] that stays
/// mapped for the call.
pub(crate) unsafe fn mutex_unlock_if_held(m: *mut u8) -> io::Result<bool> {
    // SAFETY: `m` points to a mapped mutex (caller).
    unsafe { check_kind(m)? };
    // SAFETY: `m` is an initialized robust process-shared mutex (caller);
    // unlocking one this thread does not hold fails with EPERM and
    // changes nothing.
    match unsafe { libc::pthread_mutex_unlock(m.cast::<libc::pthread_mutex_t>()) } {
        0 => Ok(true),
        libc::EPERM => Ok(false),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

fn check(code: libc::c_int) -> io::Result<()> {
    match code {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// A lock held by another thread of this process until dropped: for tests
/// of what waits on a lock whose holder does not let go.
#[cfg(test)]
pub(crate) struct HeldLock {
    release: std::sync::mpsc::Sender<()>,
    holder: Option<std::thread::JoinHandle<()>>,
}

#[cfg(test)]
impl HeldLock {
    /// Locks the mutex at `lock` from a new thread and returns once it
    /// holds it.
    ///
    /// # Safety
    /// `lock` is an initialized mutex that stays mapped until this is
    /// dropped.
    pub(crate) unsafe fn hold(lock: *mut u8) -> HeldLock {
        let lock = lock as usize;
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            // SAFETY: initialized and mapped while this thread runs (the
            // caller's promise; `drop` joins it).
            let _ = unsafe { mutex_lock(lock as *mut u8, None) };
            held_tx.send(()).unwrap();
            let _ = release_rx.recv();
            // SAFETY: this thread holds it.
            unsafe { mutex_unlock(lock as *mut u8) };
        });
        held_rx.recv().expect("the holder took the lock");
        HeldLock {
            release,
            holder: Some(holder),
        }
    }
}

#[cfg(test)]
impl Drop for HeldLock {
    fn drop(&mut self) {
        let _ = self.release.send(());
        if let Some(holder) = self.holder.take() {
            let _ = holder.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mutex whose kind word was overwritten (a corrupted region; the
    /// region fuzz target found it) once sent glibc down its lock-elision
    /// path, which faulted: now it is refused as corrupted.
    #[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
    #[test]
    fn a_mutex_with_a_corrupted_kind_is_refused_not_locked() {
        let mut m = Box::new(MaybeUninit::<libc::pthread_mutex_t>::uninit());
        let at = m.as_mut_ptr().cast::<u8>();
        // SAFETY: `m` is ours alone, of the right size and alignment.
        unsafe {
            mutex_init(at).unwrap();
            assert_eq!(mutex_trylock(at).unwrap(), Some(Locked::Yes));
            mutex_unlock(at);
            for garbage in [0x7fff_ffff_i32, 0x100, -1] {
                std::ptr::write_volatile(at.add(KIND_AT).cast::<i32>(), garbage);
                let e = mutex_trylock(at).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                let e = mutex_lock(at, None).unwrap_err();
                assert!(e.to_string().contains("corrupted"), "{e}");
            }
        }
    }
}
