//! How far a run is, on standard error: `--bar` (a bar on a terminal),
//! and GNU parallel's `--progress` and `--eta` status lines.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A progress bar on stderr, drawn only on a terminal: jobs done, of how
/// many when known, with the rate and the time left.
pub(crate) fn bar(total: Option<usize>) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let (bar, template) = match total {
        Some(n) => (
            ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr()),
            "{elapsed_precise} [{wide_bar}] {pos}/{len} jobs, {per_sec}, ETA {eta}",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{elapsed_precise} {spinner} {pos} jobs, {per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// `--progress` / `--eta`: jobs started and finished, shown as GNU
/// parallel shows them (one status line, rewritten in place).
#[derive(Debug)]
pub(crate) struct Status {
    started: AtomicU64,
    done: AtomicU64,
    total: Option<u64>,
    eta: bool,
    since: Instant,
    stop: Mutex<bool>,
    wake: Condvar,
    changed: AtomicBool,
}

impl Status {
    /// Prints the header (the machines, their cores and job slots) and
    /// starts the thread that keeps the status line current.
    pub(crate) fn start(
        machines: &[(String, usize, usize)],
        total: Option<u64>,
        eta: bool,
    ) -> (Arc<Status>, std::thread::JoinHandle<()>) {
        let mut head = String::from("\nComputers / CPU cores / Max jobs to run\n");
        for (i, (name, cores, slots)) in machines.iter().enumerate() {
            head.push_str(&format!("{}:{name} / {cores} / {slots}\n", i + 1));
        }
        head.push_str(
            "\nComputer:jobs running/jobs completed/%of started jobs/Average seconds to complete\n",
        );
        let _ = std::io::stderr().write_all(head.as_bytes());
        let status = Arc::new(Status {
            started: AtomicU64::new(0),
            done: AtomicU64::new(0),
            total,
            eta,
            since: Instant::now(),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            changed: AtomicBool::new(true),
        });
        let shown = status.clone();
        let thread = std::thread::spawn(move || shown.show_until_stopped());
        (status, thread)
    }

    pub(crate) fn job_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.changed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn job_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.changed.store(true, Ordering::Relaxed);
    }

    /// The status line: `local:running/done/100%/avg`, after the time
    /// left with `--eta`.
    fn line(&self) -> String {
        let done = self.done.load(Ordering::Relaxed);
        let running = self.started.load(Ordering::Relaxed).saturating_sub(done);
        let elapsed = self.since.elapsed().as_secs_f64();
        let avg = if done == 0 {
            0.0
        } else {
            elapsed / done as f64
        };
        let mut line = String::from("\r");
        if self.eta {
            let left = self.total.map_or(0, |t| t.saturating_sub(done));
            line.push_str(&format!(
                "ETA: {:.0}s Left: {left} AVG: {avg:.2}s  ",
                avg * left as f64
            ));
        }
        line.push_str(&format!("local:{running}/{done}/100%/{avg:.1}s "));
        line
    }

    fn show_until_stopped(&self) {
        let mut stopped = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.changed.swap(false, Ordering::Relaxed) {
                let _ = std::io::stderr().write_all(self.line().as_bytes());
            }
            if *stopped {
                break;
            }
            stopped = self
                .wake
                .wait_timeout(stopped, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Shows the last status and ends the line.
    pub(crate) fn finish(&self, thread: std::thread::JoinHandle<()>) {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.changed.store(true, Ordering::Relaxed);
        self.wake.notify_all();
        let _ = thread.join();
        let _ = std::io::stderr().write_all(b"\n");
    }
}
