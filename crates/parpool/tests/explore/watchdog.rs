//! The bound on every scenario: past its deadline the explorer says which
//! scenario hung, where, and how to replay it, and exits instead of hanging.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use parpool::Stats;

struct Watch {
    deadline: Instant,
    /// The replay line and the scenario, printed on a hang.
    what: String,
    phase: String,
    stats: Option<Stats>,
}

static WATCH: Mutex<Option<Watch>> = Mutex::new(None);

/// Starts the watchdog thread (once).
pub(crate) fn start() {
    std::thread::Builder::new()
        .name("explore-watchdog".into())
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let guard = WATCH.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(w) = guard.as_ref()
                    && Instant::now() > w.deadline
                {
                    // Straight to the descriptor: the test harness may be
                    // capturing the print macros, and we exit right after.
                    let _ = writeln!(
                        std::io::stderr(),
                        "\nexplorer: HANG: the scenario ran past its bound while {}; last stats: \
                         {:?}\n{}",
                        w.phase,
                        w.stats,
                        w.what
                    );
                    std::process::exit(3);
                }
            }
        })
        .expect("the watchdog thread");
}

/// Arms the watchdog for a scenario.
pub(crate) fn arm(bound: Duration, what: String) {
    *WATCH.lock().unwrap_or_else(|e| e.into_inner()) = Some(Watch {
        deadline: Instant::now() + bound,
        what,
        phase: "starting".into(),
        stats: None,
    });
}

/// Disarms it.
pub(crate) fn disarm() {
    *WATCH.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Records where the scenario is.
pub(crate) fn phase(p: &str) {
    if let Some(w) = WATCH.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        p.clone_into(&mut w.phase);
    }
}

/// Records the pool's latest stats.
pub(crate) fn note_stats(s: &Stats) {
    if let Some(w) = WATCH.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        w.stats = Some(*s);
    }
}
