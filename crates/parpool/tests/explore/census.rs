//! What this process holds that a pool could leak: child processes,
//! descriptors, `/dev/shm` entries, resident memory.

use std::time::{Duration, Instant};

/// A count of what the process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Census {
    pub(crate) children: Vec<u32>,
    pub(crate) fds: usize,
    pub(crate) shm: usize,
}

impl Census {
    pub(crate) fn take() -> Census {
        Census {
            children: children(),
            fds: count("/proc/self/fd").saturating_sub(1), // the listing's own
            shm: shm_entries(),
        }
    }

    /// What `self` holds beyond `baseline`, or `None` once nothing is left
    /// over (waiting up to `patience` for things that end asynchronously).
    pub(crate) fn leftover(baseline: &Census, patience: Duration) -> Option<String> {
        let deadline = Instant::now() + patience;
        loop {
            let now = Census::take();
            let extra_children: Vec<u32> = now
                .children
                .iter()
                .filter(|c| !baseline.children.contains(c))
                .copied()
                .collect();
            let clean =
                extra_children.is_empty() && now.fds <= baseline.fds && now.shm <= baseline.shm;
            if clean {
                return None;
            }
            if Instant::now() >= deadline {
                return Some(format!(
                    "left behind after the pool was dropped: child processes {extra_children:?}, \
                     descriptors {} (was {}), /dev/shm entries {} (was {}); open now: {}",
                    now.fds,
                    baseline.fds,
                    now.shm,
                    baseline.shm,
                    fd_targets().join(", ")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// The `/dev/shm` entries that can be this process's: named for parpool, or
/// open or mapped here. (The directory is the whole machine's: an MPI
/// program or a browser beside the tests adds entries of its own, which
/// once failed a scenario.)
fn shm_entries() -> usize {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return 0;
    };
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let open = fd_targets().join("\n");
    dir.flatten()
        .filter(|e| {
            let path = e.path();
            let path = path.to_string_lossy();
            e.file_name().to_string_lossy().contains("parpool")
                || maps.contains(&*path)
                || open.contains(&*path)
        })
        .count()
}

/// The pids of this process's children (every thread's).
fn children() -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    pids.sort_unstable();
    pids
}

/// What each open descriptor points at (for a leak report).
fn fd_targets() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            Some(format!(
                "{}→{}",
                e.file_name().to_string_lossy(),
                target.display()
            ))
        })
        .collect()
}

/// Resident memory of this process, in KiB.
pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Whether process `pid` exists (and is not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // The state follows the command name in parentheses.
        s.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Lowers the soft descriptor limit to `limit` for as long as the guard
/// lives.
pub(crate) struct Squeeze {
    old: rustix::process::Rlimit,
}

impl Squeeze {
    pub(crate) fn to(limit: u64) -> Squeeze {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let old = getrlimit(Resource::Nofile);
        let new = Rlimit {
            current: Some(limit),
            maximum: old.maximum,
        };
        setrlimit(Resource::Nofile, new).expect("lowering the descriptor limit");
        Squeeze { old }
    }
}

impl Drop for Squeeze {
    fn drop(&mut self) {
        let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, self.old);
    }
}
