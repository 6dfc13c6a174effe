//! Process identity and liveness, from `/proc`, and the monotonic clock.

use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
