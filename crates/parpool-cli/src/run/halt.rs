//! `--halt`: when a run stops early and with what exit status, from the
//! jobs done and failed so far.

use std::sync::atomic::Ordering;

use super::exec::{Outcome, Runner};

/// `--halt`: when to stop, and on what.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Halt {
    now: bool,
    on: On,
    threshold: Threshold,
}

/// Which jobs `--halt` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum On {
    Fail,
    Success,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Threshold {
    Count(u64),
    Percent(f64),
}

pub(crate) fn parse_halt(s: &str) -> Result<Halt, String> {
    let bad = || {
        format!(
            "`{s}`: expected now|soon,fail|success|done=N or =P%, or 0, 1, 2 \
             (e.g. now,fail=1)"
        )
    };
    // The old numeric forms.
    match s {
        "0" => {
            return Ok(Halt {
                now: false,
                on: On::Fail,
                threshold: Threshold::Count(u64::MAX),
            });
        }
        "1" | "2" => {
            return Ok(Halt {
                now: s == "2",
                on: On::Fail,
                threshold: Threshold::Count(1),
            });
        }
        _ => {}
    }
    let (when, cond) = s.split_once(',').ok_or_else(bad)?;
    let now = match when {
        "now" => true,
        "soon" => false,
        _ => return Err(bad()),
    };
    let (kind, value) = cond.split_once('=').ok_or_else(bad)?;
    let on = match kind {
        "fail" => On::Fail,
        "success" => On::Success,
        "done" => On::Done,
        _ => return Err(bad()),
    };
    let threshold = match value.strip_suffix('%') {
        Some(p) => Threshold::Percent(
            p.parse()
                .ok()
                .filter(|p: &f64| *p > 0.0 && *p <= 100.0)
                .ok_or_else(bad)?,
        ),
        None => Threshold::Count(value.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?),
    };
    Ok(Halt { now, on, threshold })
}

/// Jobs done and failed, and what `--halt` made of them.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) done: u64,
    pub(crate) failed: u64,
    /// How many jobs there are, when known (for `--halt ...=P%`).
    pub(crate) total: Option<u64>,
    /// The exit status `--halt` decided, once it triggered.
    pub(crate) halted: Option<i32>,
}

impl Tally {
    /// Counts a finished job and applies `--halt`.
    pub(crate) fn count(&mut self, o: &Outcome, halt: Option<Halt>, runner: &Runner) {
        if o.skipped || (self.halted.is_some() && runner.kill.load(Ordering::Acquire)) {
            // Never ran, or killed by the halt: not counted.
            return;
        }
        self.done += 1;
        if o.failed() {
            self.failed += 1;
        }
        let Some(halt) = halt else { return };
        if self.halted.is_some() || !self.reached(halt) {
            return;
        }
        self.halted = Some(match (halt.on, halt.threshold) {
            (On::Success, _) => 0,
            (On::Fail, Threshold::Percent(_)) => self.percent_failed(),
            // The deciding job's exit status, as GNU parallel's.
            (On::Fail, Threshold::Count(1)) | (On::Done, _) => {
                if o.exit < 0 {
                    // Killed by parpool (-1: a timeout, a halt) or skipped
                    // (-2), as GNU parallel's Perl exits with them: 255, 254.
                    o.exit & 0xff
                } else if o.signal != 0 {
                    128 + o.signal
                } else {
                    o.exit.min(255)
                }
            }
            (On::Fail, Threshold::Count(_)) => self.failed.min(101) as i32,
        });
        // GNU parallel's words, which scripts look for.
        let what = match halt.on {
            On::Done => "finished",
            _ if o.failed() => "failed",
            _ => "succeeded",
        };
        eprintln!(
            "parpool: This job {what}:\n{}",
            String::from_utf8_lossy(&o.command)
        );
        runner.stop.store(true, Ordering::SeqCst);
        if halt.now {
            runner.kill_all();
        }
    }

    fn reached(&self, halt: Halt) -> bool {
        let hits = match halt.on {
            On::Fail => self.failed,
            On::Success => self.done - self.failed,
            On::Done => self.done,
        };
        match halt.threshold {
            Threshold::Count(n) => hits >= n,
            // Of all the jobs when their number is known, as GNU parallel
            // judges it; else of those done so far, once 3 are.
            Threshold::Percent(p) => match self.total {
                Some(total) => hits as f64 * 100.0 >= p * total.max(1) as f64,
                None => self.done >= 3 && hits as f64 * 100.0 >= p * self.done as f64,
            },
        }
    }

    /// Failed jobs as a percentage (rounded up) of all of them.
    fn percent_failed(&self) -> i32 {
        let of = self.total.unwrap_or(self.done).max(1);
        (self.failed * 100).div_ceil(of).min(100) as i32
    }

    /// The run's exit status.
    pub(crate) fn status(&self, halt: Option<Halt>) -> i32 {
        if let Some(status) = self.halted {
            return status;
        }
        match halt {
            // With a percentage, GNU parallel exits with the percentage.
            Some(Halt {
                on: On::Fail,
                threshold: Threshold::Percent(_),
                ..
            }) => self.percent_failed(),
            _ => self.failed.min(101) as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_parses() {
        assert_eq!(
            parse_halt("now,fail=1").unwrap(),
            Halt {
                now: true,
                on: On::Fail,
                threshold: Threshold::Count(1)
            }
        );
        assert_eq!(parse_halt("2").unwrap(), parse_halt("now,fail=1").unwrap());
        assert_eq!(parse_halt("1").unwrap(), parse_halt("soon,fail=1").unwrap());
        assert_eq!(parse_halt("soon,done=3").unwrap().on, On::Done);
        assert!(parse_halt("soon,success=50%").is_ok());
        assert!(parse_halt("soon,fail=0%").is_err());
        assert!(parse_halt("later,fail=1").is_err());
        assert!(parse_halt("now,fail=0").is_err());
    }
}
