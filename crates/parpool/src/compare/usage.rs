//! CPU time and resident memory of this process and the processes below
//! it, from `/proc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// CPU seconds used by this process and its reaped children.
pub(super) fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime is
    // the 14th field overall, then stime, cutime, cstime.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: f64 = after
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse::<f64>().ok())
        .sum();
    ticks / rustix::param::clock_ticks_per_second() as f64
}

fn rss_pages(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of this process and all below it, in MiB.
fn rss_mib() -> f64 {
    let me = std::process::id().to_string();
    let mut parents: Vec<(String, String)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(1).map(str::to_owned)
                });
            if let Some(parent) = parent {
                parents.push((pid.to_owned(), parent));
            }
        }
    }
    let mut tree = vec![me];
    let mut at = 0;
    while at < tree.len() {
        let pid = tree[at].clone();
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == pid)
                .map(|(c, _)| c.clone()),
        );
        at += 1;
    }
    let pages: u64 = rss_pages("self") + tree[1..].iter().map(|p| rss_pages(p)).sum::<u64>();
    (pages * rustix::param::page_size() as u64) as f64 / (1024.0 * 1024.0)
}

/// Samples memory every 20 ms until stopped; keeps the highest.
pub(super) struct PeakSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<f64>,
}

impl PeakSampler {
    /// Starts sampling on a thread of its own.
    pub(super) fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = rss_mib();
            while !flag.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(20));
                peak = peak.max(rss_mib());
            }
            peak
        });
        PeakSampler { stop, thread }
    }

    /// Stops sampling: the highest resident memory seen, in MiB.
    pub(super) fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap_or(0.0)
    }
}
