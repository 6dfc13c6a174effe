//! When an MPI thread spins, and how long it sleeps between probes.
//!
//! MPI cannot wake a sleeping thread when a message arrives, so the two
//! MPI threads (rank 0's and each serving rank's) probe in a loop. After
//! activity they spin (yielding the core at each turn) for up to [`SPIN`]:
//! round trips and tiny jobs get answers within microseconds. Then they
//! sleep, a little longer each time, up to a ceiling the caller picks
//! ([`busy_ceiling`] while jobs are out), so that jobs of milliseconds
//! leave the cores to the workers.
//!
//! In the low-latency mode (`MpiPoolBuilder::spin`) both threads also spin
//! for the mode's window after activity, rank 0's even with nothing out
//! (for the next job), and rank 0 sends a lone job to the rank that
//! answered last, whose threads are still awake (`master.rs`, `warm`).
//! Within that window they give the core away only every few turns
//! ([`Pacer::idle_spin`]). Giving it away at every turn there, as this did
//! first, made a round trip in the mode 25% slower on 2 cores (45 µs
//! against 33–36 µs): each turn of the loop already makes MPI calls, and a
//! thread that yields that often loses its core to the other spinners
//! before the message it waits for comes.
//!
//! Tried and measured worse: spinning only while activity came within a
//! spin of the one before (once asleep, late probes lengthen the gaps and
//! it never spins again: round trips took 620 µs), and only while the
//! ranks' mean job time is under a spin (maps, whose first chunks are
//! tiny, lost a fifth); neither helped 5 ms jobs measurably.

use std::time::{Duration, Instant};

/// The longest a thread spins after activity.
pub(crate) const SPIN: Duration = Duration::from_micros(500);
/// Turns of a spin per `sched_yield` ([`Pacer::idle_spin`]).
const TURNS_PER_YIELD: u32 = 32;
/// The first sleep after spinning.
const FIRST_SLEEP: Duration = Duration::from_micros(20);
/// Bounds of the longest sleep while jobs are out ([`busy_ceiling`]).
const BUSY_MIN: Duration = Duration::from_micros(100);
const BUSY_MAX: Duration = Duration::from_micros(500);

/// The longest sleep while jobs of about `job` each are out: a quarter of
/// a job, between 100 µs and 500 µs. Pipelines hold work ahead of need, so
/// a result or a job seen that much later costs no worker time, and every
/// probe not made leaves the core to the workers.
pub(crate) fn busy_ceiling(job: Duration) -> Duration {
    (job / 4).clamp(BUSY_MIN, BUSY_MAX)
}

/// One MPI thread's rhythm.
#[derive(Debug)]
pub(crate) struct Pacer {
    last: Instant,
    sleep: Duration,
    /// Turns of spinning so far ([`Pacer::idle_spin`]).
    turns: u32,
}

impl Pacer {
    pub(crate) fn new() -> Pacer {
        Pacer {
            last: Instant::now(),
            sleep: FIRST_SLEEP,
            turns: 0,
        }
    }

    /// Something happened (a message, a result, a command).
    pub(crate) fn active(&mut self) {
        self.last = Instant::now();
        self.sleep = FIRST_SLEEP;
    }

    /// Whether to spin rather than sleep now: within [`SPIN`] of the last
    /// activity.
    pub(crate) fn spin(&self) -> bool {
        self.last.elapsed() < SPIN
    }

    /// Whether the last activity was within `window` (the low-latency
    /// mode's own window, beside [`SPIN`]).
    pub(crate) fn within(&self, window: Duration) -> bool {
        self.last.elapsed() < window
    }

    /// One turn of a spin: a pause, and every few turns the core given
    /// away, so that on a machine with fewer cores than spinners the
    /// thread waited for still runs.
    pub(crate) fn idle_spin(&mut self) {
        self.turns = self.turns.wrapping_add(1);
        if self.turns.is_multiple_of(TURNS_PER_YIELD) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }

    /// How long the thread was quiet.
    pub(crate) fn quiet_for(&self) -> Duration {
        self.last.elapsed()
    }

    /// The next sleep: twice the last, at most `longest`.
    pub(crate) fn sleep(&mut self, longest: Duration) -> Duration {
        let sleep = self.sleep.min(longest);
        self.sleep = (self.sleep * 2).min(longest);
        sleep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_after_activity_then_sleeps_longer_each_time() {
        let mut pace = Pacer::new();
        pace.active();
        assert!(pace.spin());
        std::thread::sleep(SPIN * 2);
        assert!(!pace.spin(), "quiet for longer than a spin");
        let longest = Duration::from_micros(100);
        let sleeps: Vec<Duration> = (0..5).map(|_| pace.sleep(longest)).collect();
        assert_eq!(sleeps[0], FIRST_SLEEP);
        assert!(sleeps.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(sleeps[4], longest);
    }

    #[test]
    fn the_busy_ceiling_follows_the_job_time_within_bounds() {
        assert_eq!(busy_ceiling(Duration::ZERO), BUSY_MIN);
        assert_eq!(
            busy_ceiling(Duration::from_millis(2)),
            Duration::from_micros(500)
        );
        assert_eq!(busy_ceiling(Duration::from_secs(1)), BUSY_MAX);
    }
}
