//! Operating-system calls for worker processes (Linux). Every `unsafe`
//! block and every call with process-wide effect lives here.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::process::{Pid, Resource, Rlimit, Signal};

/// Environment variable that marks a process as a parpool worker.
pub(crate) const WORKER_ENV: &str = "PARPOOL_WORKER";
/// The parent's pid, so a worker can notice it was orphaned before it
/// asked to die with its parent.
pub(crate) const PARENT_ENV: &str = "PARPOOL_PARENT_PID";
/// Address-space limit in bytes for the worker, if any.
pub(crate) const MEMORY_ENV: &str = "PARPOOL_MEMORY_LIMIT";
/// Largest frame the worker accepts.
pub(crate) const MAX_FRAME_ENV: &str = "PARPOOL_MAX_FRAME";
/// How long an idle worker polls for its next request, in nanoseconds
/// (`ProcessPoolBuilder::spin`).
pub(crate) const SPIN_ENV: &str = "PARPOOL_SPIN_NS";
/// Largest output the worker sends.
pub(crate) const MAX_OUTPUT_ENV: &str = "PARPOOL_MAX_OUTPUT";
/// Set when the worker writes outputs by value ([`Sharing::ByValue`]).
///
/// [`Sharing::ByValue`]: crate::process::registry::Sharing::ByValue
pub(crate) const BY_VALUE_ENV: &str = "PARPOOL_BY_VALUE";

/// Whether this process was started by a pool as one of its default
/// workers (this executable again, marked by [`WORKER_ENV`]): the marker is
/// set, and the parent is the pool it names or stdin is a socket (the
/// pool's, if the pool died already: the worker then ends at once). A
/// program that a worker's task starts inherits the marker but neither, and
/// runs as itself.
pub(crate) fn started_as_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some() && started_by_pool()
}

/// Whether a pool started this process as a worker, by default or through
/// a worker command: the parent is the pool named in the environment, or
/// stdin is a socket.
pub(crate) fn started_by_pool() -> bool {
    std::env::var_os(PARENT_ENV).is_some() && (parent_is_pool() || stdin_is_socket())
}

/// Whether this process's parent is the pool named in the environment.
pub(crate) fn parent_is_pool() -> bool {
    let Some(named) = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return false;
    };
    parent_pid() == Some(named)
}

/// This process's parent, if it has one.
fn parent_pid() -> Option<u32> {
    rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32)
}

fn stdin_is_socket() -> bool {
    rustix::fs::fstat(io::stdin().as_fd())
        .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket)
}

/// Takes the socket the parent passed as stdin, and puts `/dev/null` in its
/// place so a task reading stdin cannot corrupt the protocol.
pub(crate) fn take_stdin_socket() -> io::Result<OwnedFd> {
    let socket = io::stdin().as_fd().try_clone_to_owned()?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(socket)
}

/// Asks the kernel to SIGKILL this process when its parent dies, then
/// checks the parent did not die already (the race the man page warns of).
pub(crate) fn die_with_parent(parent: Option<u32>) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    if parent.is_some_and(|expected| parent_pid() != Some(expected)) {
        std::process::exit(70);
    }
    Ok(())
}

/// Caps this process's address space at `bytes` (RLIMIT_AS).
pub(crate) fn limit_memory(bytes: u64) -> io::Result<()> {
    let limit = Rlimit {
        current: Some(bytes),
        maximum: Some(bytes),
    };
    rustix::process::setrlimit(Resource::As, limit)?;
    Ok(())
}

/// SIGKILLs process `pid` (a worker; the parent holds its `Child`, so the
/// pid cannot have been reused before it is reaped).
pub(crate) fn kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
    }
}

/// The current process id.
pub(crate) fn pid() -> u32 {
    std::process::id()
}

/// Where the `SIGABRT` handler records an allocation failure.
static ALLOCATION_FLAG: std::sync::atomic::AtomicPtr<std::sync::atomic::AtomicU64> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_abort(_signal: libc::c_int) {
    // Only async-signal-safe work: read errno, a few raw syscalls, a store
    // to an atomic. Returning lets `abort` restore the default action and
    // raise the signal again, so the process still dies of it.
    let errno = io::Error::last_os_error().raw_os_error();
    let flag = ALLOCATION_FLAG.load(std::sync::atomic::Ordering::SeqCst);
    if !flag.is_null() && (errno == Some(libc::ENOMEM) || near_memory_limit()) {
        // SAFETY: the pointer was made from a `&'static AtomicU64` in
        // `watch_allocation_failures`, so it is valid for the whole run.
        unsafe { &*flag }.store(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether this process's address space is within a tenth of its limit
/// (`RLIMIT_AS`). Allocation-free and async-signal-safe: raw `open`,
/// `read` and `getrlimit` calls and a stack buffer.
fn near_memory_limit() -> bool {
    let Some(limit) = rustix::process::getrlimit(Resource::As).current else {
        return false;
    };
    let Ok(fd) = rustix::fs::open(
        c"/proc/self/statm",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return false;
    };
    let mut buf = [0u8; 64];
    let n = rustix::io::read(&fd, &mut buf).unwrap_or(0);
    // The first field is the size of the address space, in pages.
    let pages = buf[..n]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |acc, b| {
            acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
        });
    let size = pages.saturating_mul(rustix::param::page_size() as u64);
    size.saturating_mul(10) >= limit.saturating_mul(9)
}

/// Makes an abort that follows a failed allocation set `flag` (once per
/// worker; the flag lives as long as the process).
pub(crate) fn watch_allocation_failures(flag: &'static std::sync::atomic::AtomicU64) {
    let previous = ALLOCATION_FLAG.swap(
        flag as *const _ as *mut _,
        std::sync::atomic::Ordering::SeqCst,
    );
    if !previous.is_null() {
        return;
    }
    // SAFETY: `sigaction` with a zeroed, then filled, `struct sigaction`
    // whose handler is an `extern "C"` function that does only
    // async-signal-safe work. `SA_RESETHAND` restores the default action
    // once it ran, so a second abort kills the process as usual.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_abort as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut());
    }
}

/// Whether child process `pid` has exited, without reaping it (it stays
/// waitable, and its pid stays its own until it is reaped).
pub(crate) fn exited(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return true;
    };
    let options = rustix::process::WaitIdOptions::EXITED
        | rustix::process::WaitIdOptions::NOHANG
        | rustix::process::WaitIdOptions::NOWAIT;
    match rustix::process::waitid(rustix::process::WaitId::Pid(pid), options) {
        Ok(status) => status.is_some(),
        // Not our child (any more): it is gone as far as we are concerned.
        Err(_) => true,
    }
}

/// What [`wait_socket`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ready {
    /// Something to read, or the peer hung up.
    pub(crate) readable: bool,
    /// Room to write (asked for only when `write` was).
    pub(crate) writable: bool,
}

/// Waits until `fd` is readable, or writable if `write`, for at most
/// `timeout` (`None`: as long as it takes).
pub(crate) fn wait_socket(
    fd: std::os::fd::BorrowedFd<'_>,
    write: bool,
    timeout: Option<std::time::Duration>,
) -> Ready {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut flags = PollFlags::IN;
    if write {
        flags |= PollFlags::OUT;
    }
    let mut fds = [PollFd::new(&fd, flags)];
    let timeout = timeout.map(|t| Timespec {
        tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: t.subsec_nanos().into(),
    });
    loop {
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) => {
                let got = fds[0].revents();
                let hangup = got.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL);
                return Ready {
                    readable: got.contains(PollFlags::IN) || hangup,
                    writable: got.contains(PollFlags::OUT) || hangup,
                };
            }
            Err(rustix::io::Errno::INTR) => continue,
            // Unknown: let the caller read and find out.
            Err(_) => {
                return Ready {
                    readable: true,
                    writable: true,
                };
            }
        }
    }
}

/// Waits at most `timeout` for room to write to `fd`.
pub(crate) fn writable(fd: std::os::fd::BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    let ready = wait_socket(fd, true, Some(timeout));
    ready.writable
}

/// Prepares `buf`, freshly allocated and about to be filled by one large
/// copy: every page faulted in by `madvise(MADV_POPULATE_WRITE)` (Linux
/// 5.14) instead of one fault per page, on huge pages (`MADV_HUGEPAGE`)
/// while they come fast. Best effort: refusals are ignored.
///
/// Huge pages usually halve the time, but on a virtual machine whose host
/// takes back free memory (a balloon's free page reporting hands it 2 MiB
/// blocks that stayed free), a huge page can be memory the host must
/// fault in again, 512 small faults for one: measured with 80 MB after
/// another run had freed a GiB, one call in four or five took 130–180 ms
/// instead of 20 (`perf trace`: all of it in this `madvise`; no
/// compaction or reclaim in `/proc/vmstat`), and with small pages every
/// call took about the same. So the buffer is populated 8 MiB at a time,
/// each step timed, and after a slow one the rest takes small pages
/// (`MADV_NOHUGEPAGE`).
pub(crate) fn prefault_for_write<T>(buf: &mut [T]) {
    use rustix::mm::Advice;
    // Populated per call, and timed: four huge pages.
    const STEP: usize = 8 << 20;
    // Longer than four huge pages take when they are at hand (zeroing
    // 8 MiB: a millisecond or two), far shorter than when the host must
    // fault them in (about 15 ms).
    const SLOW: std::time::Duration = std::time::Duration::from_millis(5);
    let page = rustix::param::page_size();
    let start = buf.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(buf);
    let (first, last) = (start.next_multiple_of(page), end / page * page);
    if last <= first {
        return;
    }
    let advise = |from: usize, to: usize, advice: Advice| {
        if from < to {
            // SAFETY: `from..to` lies within `first..last`, within `buf`,
            // which this function borrows mutably; no advice used here
            // changes what the memory holds (huge or small pages are a
            // backing choice; populating faults pages in as a write would,
            // without writing).
            let _ = unsafe { rustix::mm::madvise(from as *mut std::ffi::c_void, to - from, advice) };
        }
    };
    advise(first, last, Advice::LinuxHugepage);
    let mut at = first;
    while at < last {
        let next = (at + 1).next_multiple_of(STEP).min(last);
        let t = std::time::Instant::now();
        advise(at, next, Advice::LinuxPopulateWrite);
        at = next;
        if t.elapsed() > SLOW {
            advise(at, last, Advice::LinuxNoHugepage);
            advise(at, last, Advice::LinuxPopulateWrite);
            return;
        }
    }
}
