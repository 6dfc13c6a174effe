//! Operating-system calls for `ipc` (Linux): read-write shared mappings,
//! process-shared robust mutexes (glibc's `pthread_mutex_t`), futexes,
//! process liveness, and the raw accesses to mapped memory. The other
//! files' `unsafe` blocks call these, or borrow mapped values under a lock
//! or a documented contract.

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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

/// A process as holder tables record it: its id and its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessId {
    /// The process id (in the caller's PID namespace).
    pub(crate) pid: u32,
    /// When it started, in clock ticks after boot (`/proc/<pid>/stat`
    /// field 22), so that a reused pid is told apart; 0 when `/proc` could
    /// not be read.
    pub(crate) start: u64,
}

/// This process's [`ProcessId`], cached: `ID_PID` is 0 until it is known,
/// and again in the child of a `fork` (see [`this_process`]).
static ID_PID: AtomicU32 = AtomicU32::new(0);
static ID_START: AtomicU64 = AtomicU64::new(0);
static FORGET_ON_FORK: Once = Once::new();
/// Whether the `fork` handler that resets `ID_PID` is registered.
static FORK_SAFE: AtomicBool = AtomicBool::new(false);

/// Runs in the child of a `fork`: the cached identity is the parent's.
extern "C" fn forget_identity() {
    // An atomic store: async-signal-safe, as a fork child handler must be.
    ID_PID.store(0, Ordering::Relaxed);
}

/// The calling process's id and start time. Cached after the first call,
/// so it costs two loads; a `fork` child computes its own.
pub(crate) fn this_process() -> ProcessId {
    let cached = ID_PID.load(Ordering::Acquire);
    // `ID_PID` is set only after the registration below has finished.
    if cached != 0 && FORK_SAFE.load(Ordering::Relaxed) {
        return ProcessId {
            pid: cached,
            start: ID_START.load(Ordering::Relaxed),
        };
    }
    FORGET_ON_FORK.call_once(|| {
        // SAFETY: registers a child handler that only stores to an atomic
        // (async-signal-safe, as required after `fork`); the handler is a
        // plain function that lives as long as the program.
        let registered = unsafe { libc::pthread_atfork(None, None, Some(forget_identity)) };
        FORK_SAFE.store(registered == 0, Ordering::Relaxed);
    });
    let pid = rustix::process::getpid()
        .as_raw_nonzero()
        .get()
        .unsigned_abs();
    // Without the handler (it could not be registered), the pid is asked
    // for every time, and the start time is reused only for the same pid.
    if pid == ID_PID.load(Ordering::Acquire) {
        return ProcessId {
            pid,
            start: ID_START.load(Ordering::Relaxed),
        };
    }
    let start = read_stat(pid).map_or(0, |s| s.start);
    ID_START.store(start, Ordering::Relaxed);
    ID_PID.store(pid, Ordering::Release);
    ProcessId { pid, start }
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy)]
struct Stat {
    /// Exited and not yet reaped (`Z`), or being torn down (`X`).
    exited: bool,
    /// Field 20: threads still running. A zombie thread-group leader whose
    /// other threads still run counts them.
    threads: u64,
    /// Field 22: start time in clock ticks after boot.
    start: u64,
}

fn read_stat(pid: u32) -> io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable stat"))
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so the fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (the state).
    let state = *fields.first()?;
    Some(Stat {
        exited: state == "Z" || state == "X" || state == "x",
        threads: fields.get(20 - 3)?.parse().ok()?,
        start: fields.get(22 - 3)?.parse().ok()?,
    })
}

/// Whether `who` is gone for good: it exited (a zombie waiting to be
/// reaped counts as exited), or its pid now names a process that started
/// at another time. `false` whenever that cannot be told for sure (a
/// `/proc` that hides other users' processes, say): callers then treat
/// the process as alive.
pub(crate) fn process_gone(who: ProcessId) -> bool {
    let Some(pid) = i32::try_from(who.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        // Not a pid any process can have.
        return true;
    };
    match read_stat(who.pid) {
        Ok(stat) => {
            (who.start != 0 && stat.start != who.start) || (stat.exited && stat.threads <= 1)
        }
        // No such entry, or `/proc` is unusable: ask the kernel whether
        // the pid exists at all (signal 0 only checks).
        Err(_) => rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH),
    }
}

/// Milliseconds on the monotonic clock (the same clock in every process
/// of a time namespace).
pub(crate) fn monotonic_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec.max(0) as u64)
        .saturating_mul(1000)
        .saturating_add(t.tv_nsec.max(0) as u64 / 1_000_000)
}

/// The atomic at byte `offset` of `map`, if it lies inside and is aligned.
pub(crate) fn atomic_at<A: AtomicCell>(map: &MmapRaw, offset: usize) -> Option<&A> {
    let size = std::mem::size_of::<A>();
    if offset.checked_add(size)? > map.len() || !offset.is_multiple_of(std::mem::align_of::<A>()) {
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
impl AtomicCell for AtomicU64 {}

/// Faults in `len` bytes of `map` at `offset` (writable or readable) in
/// one call; errors (an older kernel, a range past the end) are ignored,
/// as the pages then simply fault in on first touch.
pub(crate) fn populate(map: &MmapRaw, offset: usize, len: usize, write: bool) {
    let advice = if write {
        memmap2::Advice::PopulateWrite
    } else {
        memmap2::Advice::PopulateRead
    };
    if offset.checked_add(len).is_some_and(|end| end <= map.len()) {
        let _ = map.advise_range(advice, offset, len);
    }
}

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

    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 0 0";
        let stat = parse_stat(line).unwrap();
        assert!(!stat.exited);
        assert_eq!((stat.threads, stat.start), (3, 98765));
        let zombie = "7 (x) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0";
        assert!(parse_stat(zombie).unwrap().exited);
        assert!(parse_stat("7 (x) Z 1").is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = this_process();
        assert_eq!(me.pid, std::process::id());
        assert_ne!(me.start, 0, "/proc/self/stat was readable");
        assert_eq!(this_process(), me);
        assert!(!process_gone(me));
        // Same pid, another start time: the pid was reused.
        assert!(process_gone(ProcessId {
            start: me.start + 1,
            ..me
        }));
        assert!(process_gone(ProcessId { pid: 0, start: 0 }));
    }

    #[test]
    fn an_exited_child_is_gone_even_before_it_is_reaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = read_stat(pid).map_or(0, |s| s.start);
        let who = ProcessId { pid, start };
        // Not waited for yet: a zombie, which counts as gone.
        let t = std::time::Instant::now();
        while !process_gone(who) {
            assert!(t.elapsed() < Duration::from_secs(5), "never seen exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(read_stat(pid).is_ok_and(|s| s.exited), "still a zombie");
        child.wait().unwrap();
        assert!(process_gone(who));
    }
}
