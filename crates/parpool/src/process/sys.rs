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
/// Largest output the worker sends.
pub(crate) const MAX_OUTPUT_ENV: &str = "PARPOOL_MAX_OUTPUT";

/// Diverts a worker process into the worker loop before `main` runs.
///
/// Because this is a constructor of the parpool library itself, every
/// binary that starts a `ProcessPool` — applications, integration tests,
/// doc tests, examples — serves as a worker with no line of its own.
/// `parpool::init()` does the same from `main` for setups where
/// constructors do not run.
///
/// It runs at `late` priority: after the constructors that register tasks
/// (`inventory`), so a worker knows every task of its binary.
#[ctor::ctor(unsafe, priority = late)]
fn divert_worker_process() {
    // SAFETY (constructor): runs before `main` on the main thread, with the
    // environment already set up by the loader and after the ordinary
    // constructors; it reads one variable and, only in a process started as
    // a parpool worker, runs the worker loop and exits without returning to
    // the runtime. It touches no state that std initializes in `main`.
    if std::env::var_os(WORKER_ENV).is_some() {
        super::worker::run();
    }
}

/// Referenced by the pool builder so the object file holding the
/// constructor is always linked into binaries that use process pools.
#[inline(never)]
pub(crate) fn constructor_linked() -> bool {
    std::hint::black_box(true)
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
    if let Some(expected) = parent {
        let current = rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32);
        if current != Some(expected) {
            std::process::exit(70);
        }
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
