//! `--semaphore` (`sem`, `parpool sem`): GNU parallel's counting
//! semaphore across invocations. `sem -j N --id NAME cmd` waits for one of
//! NAME's N slots, then runs `cmd` in the background (`--fg`: in the
//! foreground, its exit status ours) holding the slot until it ends;
//! `sem --wait --id NAME` waits until NAME's commands are done.
//!
//! A slot is a file under `$PARALLEL_HOME/semaphores/id-NAME/` (as GNU
//! parallel keeps them) locked with `flock`, the lock held by the command
//! (and by `sem` with `--fg`): the kernel lets go of it when the last
//! holder ends, however it ends, so a command killed with SIGKILL frees
//! its slot at once, where GNU parallel's would stay taken; what the
//! command leaves running in the background keeps the slot.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rustix::fs::{FlockOperation, flock};

use super::options::RunArgs;

/// The directory of semaphore `id`'s slots.
fn slots_dir(id: &str) -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("PARALLEL_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".parallel")))
        .context("neither $PARALLEL_HOME nor $HOME is set: no place for semaphores")?;
    let name: String = id.chars().map(|c| if c == '/' { '_' } else { c }).collect();
    let dir = home.join("semaphores").join(format!("id-{name}"));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot make the semaphore directory {}", dir.display()))?;
    Ok(dir)
}

/// The semaphore's name when `--id` is not given: the controlling
/// terminal's, as GNU parallel's (`/dev/pts/3` → `_dev_pts_3`), else
/// `default`.
fn default_id() -> String {
    std::fs::read_link("/proc/self/fd/0")
        .ok()
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with("/dev/pts/") || p.starts_with("/dev/tty"))
        .unwrap_or_else(|| "default".into())
}

/// Slot `k`'s file, opened (made if missing).
fn slot_file(dir: &Path, k: usize) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(format!("slot-{k}")))
}

/// A free slot of the `n` in `dir`, locked; `None` if all are taken.
fn try_take(dir: &Path, n: usize) -> anyhow::Result<Option<File>> {
    for k in 1..=n {
        let file = slot_file(dir, k)?;
        match flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Some(file)),
            Err(rustix::io::Errno::WOULDBLOCK) => {}
            Err(e) => return Err(e).context("cannot lock a semaphore slot"),
        }
    }
    Ok(None)
}

/// What happened while waiting for a slot.
enum Taken {
    Slot(File),
    /// `--st` above 0 ran out: run without one.
    Stolen,
    /// `--st` below 0 ran out: give up.
    GaveUp,
}

/// Waits for a slot, polling (a slot freed by a process that died is free
/// at once), up to `--st`'s limit.
fn take(dir: &Path, n: usize, timeout: Option<f64>) -> anyhow::Result<Taken> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(500);
    loop {
        if let Some(file) = try_take(dir, n)? {
            return Ok(Taken::Slot(file));
        }
        if let Some(t) = timeout.filter(|t| *t != 0.0)
            && start.elapsed().as_secs_f64() >= t.abs()
        {
            return Ok(if t > 0.0 {
                Taken::Stolen
            } else {
                Taken::GaveUp
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// `--wait`: until every slot of the semaphore is free.
fn wait_all(dir: &Path) -> anyhow::Result<()> {
    let mut slots: Vec<usize> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("slot-")?.parse().ok())
        .collect();
    slots.sort_unstable();
    for k in slots {
        let file = slot_file(dir, k)?;
        flock(file.as_fd(), FlockOperation::LockShared).context("cannot wait for a slot")?;
    }
    Ok(())
}

/// Runs `parpool run --semaphore` (or `sem`); returns the exit status.
pub(crate) fn main(args: &RunArgs) -> anyhow::Result<i32> {
    let id = args.sem_id.clone().unwrap_or_else(default_id);
    let dir = slots_dir(&id)?;
    if args.sem_wait {
        wait_all(&dir)?;
        return Ok(0);
    }
    if args.rest.is_empty() {
        anyhow::bail!("--semaphore needs a command (or --wait)");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = match args.jobs.as_deref() {
        None => 1,
        Some(spec) => super::options::values::job_slots(spec, cores)?.max(1),
    };
    let slot = match take(&dir, n, args.sem_timeout)? {
        Taken::Slot(file) => Some(file),
        Taken::Stolen => {
            eprintln!("parpool: Warning: Semaphore timed out. Stealing the semaphore.");
            None
        }
        Taken::GaveUp => {
            eprintln!("parpool: Warning: Semaphore timed out. Exiting.");
            return Ok(1);
        }
    };
    let line = args
        .rest
        .iter()
        .map(|w| w.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new(super::exec::shell());
    cmd.arg("-c").arg(&line);
    cmd.stdin(if args.pipe {
        Stdio::inherit()
    } else {
        Stdio::null()
    });
    // The command holds the slot too (its locked file is its own to keep
    // until it ends): killing this process does not free a slot whose
    // command still runs, and killing the command frees it.
    if let Some(file) = &slot {
        rustix::io::fcntl_setfd(file.as_fd(), rustix::io::FdFlags::empty())
            .context("cannot hand the slot to the command")?;
    }
    if args.sem_fg {
        let status = cmd
            .status()
            .with_context(|| format!("cannot run `{line}`"))?;
        drop(slot);
        return Ok(status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
        }));
    }
    // In the background: this process returns at once.
    cmd.spawn()
        .with_context(|| format!("cannot run `{line}`"))?;
    Ok(0)
}
