//! `--memfree`, `--load` and `--noswap`: a job starts only while this
//! machine has the memory, the spare processors and the calm that GNU
//! parallel would ask of it, read from `/proc`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What must hold before a job starts.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    /// `--memfree`: at least this many bytes available.
    pub(crate) memfree: Option<u64>,
    /// `--load`: fewer processes running (or waiting on disk) than this.
    pub(crate) load: Option<f64>,
    /// `--noswap`: no swapping in and out at once.
    pub(crate) noswap: bool,
    /// The last swap sample: when, pages swapped in and out, and whether
    /// both grew since the one before.
    swap: Mutex<Option<(Instant, u64, u64, bool)>>,
}

/// How often a waiting job looks again.
const RECHECK: Duration = Duration::from_millis(100);
/// How far apart swap samples are.
const SWAP_SAMPLE: Duration = Duration::from_secs(1);

impl Limits {
    pub(crate) fn new(memfree: Option<u64>, load: Option<f64>, noswap: bool) -> Limits {
        Limits {
            memfree,
            load,
            noswap,
            swap: Mutex::new(None),
        }
    }

    fn any(&self) -> bool {
        self.memfree.is_some() || self.load.is_some() || self.noswap
    }

    /// Waits until a job may start, or `stop` is set.
    pub(crate) fn wait(&self, stop: &AtomicBool) {
        if !self.any() {
            return;
        }
        while !stop.load(Ordering::Acquire) && !self.allow() {
            std::thread::sleep(RECHECK);
        }
    }

    fn allow(&self) -> bool {
        if let Some(min) = self.memfree
            && mem_available().is_some_and(|free| free < min)
        {
            return false;
        }
        if let Some(max) = self.load
            && running_processes().is_some_and(|n| n >= max)
        {
            return false;
        }
        !(self.noswap && self.swapping())
    }

    /// Whether pages were both swapped in and out over the last second.
    fn swapping(&self) -> bool {
        let mut last = self.swap.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match *last {
            Some((at, _, _, verdict)) if now - at < SWAP_SAMPLE => verdict,
            _ => {
                let Some((pin, pout)) = swap_counters() else {
                    return false;
                };
                let verdict = match *last {
                    Some((_, i, o, _)) => pin > i && pout > o,
                    // The first sample: compare with one a second later.
                    None => {
                        std::thread::sleep(SWAP_SAMPLE);
                        let (i2, o2) = swap_counters().unwrap_or((pin, pout));
                        *last = Some((Instant::now(), i2, o2, i2 > pin && o2 > pout));
                        return i2 > pin && o2 > pout;
                    }
                };
                *last = Some((now, pin, pout, verdict));
                verdict
            }
        }
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Processes running or waiting on disk (`/proc/stat`), parpool's own
/// reading thread not counted.
fn running_processes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .parse()
            .ok()
    };
    Some((field("procs_running ")? + field("procs_blocked ")? - 1.0).max(0.0))
}

/// Pages swapped in and out since boot (`/proc/vmstat`).
fn swap_counters() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/vmstat").ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .parse()
            .ok()
    };
    Some((field("pswpin ")?, field("pswpout ")?))
}

/// A size as GNU parallel reads `--memfree`'s: a number, then `k`, `m`,
/// `g`, `t`, `p` (powers of 1000) or `K`, `M`, `G`, `T`, `P` (of 1024).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a size (e.g. 500M, 2G, 1048576)");
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let power = match unit.to_ascii_lowercase().as_str() {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(bad()),
    };
    let base: f64 = if unit.chars().all(|c| c.is_ascii_uppercase()) && !unit.is_empty() {
        1024.0
    } else {
        1000.0
    };
    let bytes = n * base.powi(power);
    if !(0.0..1.8e19).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// `--load`'s value: as `-j`'s (N, N%, +N, -N of the cores); 0 is 0.01.
pub(crate) fn parse_load(s: &str, cores: usize) -> Result<f64, String> {
    if s.trim() == "0" {
        return Ok(0.01);
    }
    super::options::values::job_slots(s, cores)
        .map(|n| n as f64)
        .map_err(|_| format!("`{s}`: expected N, N%, +N or -N (of the cores), or 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_loads_read_as_gnu_parallel_s() {
        assert_eq!(parse_bytes("1k"), Ok(1000));
        assert_eq!(parse_bytes("1K"), Ok(1024));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("1.5m"), Ok(1_500_000));
        assert_eq!(parse_bytes("1000T"), Ok(1000 << 40));
        assert!(parse_bytes("x").is_err());
        assert!(parse_bytes("1q").is_err());
        assert_eq!(parse_load("0", 4), Ok(0.01));
        assert_eq!(parse_load("100%", 4), Ok(4.0));
        assert_eq!(parse_load("3", 4), Ok(3.0));
        assert!(parse_load("x", 4).is_err());
    }

    #[test]
    fn this_machine_is_read() {
        assert!(mem_available().is_some_and(|b| b > 0));
        assert!(running_processes().is_some());
        // Without swap the counters may be absent; with it, both read.
        let _ = swap_counters();
        let open = Limits::new(Some(1), Some(1e9), false);
        assert!(open.allow());
        let closed = Limits::new(Some(u64::MAX), None, false);
        assert!(!closed.allow());
        // A stop ends the wait at once.
        closed.wait(&AtomicBool::new(true));
    }
}
