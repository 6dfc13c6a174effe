//! Job deadlines: one lazily started thread per process, parked on a condvar
//! until the earliest deadline, so an idle timer costs no CPU.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Something that can be resolved as timed out.
pub(crate) trait Expire: Send + Sync {
    fn expire(&self, after: Duration);
}

struct Entry {
    deadline: Instant,
    seq: u64,
    after: Duration,
    target: Weak<dyn Expire>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

struct Timer {
    heap: Mutex<(BinaryHeap<Reverse<Entry>>, u64)>,
    wake: Condvar,
}

/// The timer, started on first use. `None` if its thread cannot be
/// started (the OS is out of threads); the next call tries again.
fn timer() -> Option<&'static Timer> {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    static STARTING: Mutex<()> = Mutex::new(());
    if let Some(t) = TIMER.get() {
        return Some(t);
    }
    let _g = crate::sync::lock(&STARTING);
    if let Some(t) = TIMER.get() {
        return Some(t);
    }
    let t: &'static Timer = Box::leak(Box::new(Timer {
        heap: Mutex::new((BinaryHeap::new(), 0)),
        wake: Condvar::new(),
    }));
    match std::thread::Builder::new()
        .name("parpool-timer".into())
        .spawn(move || run(t))
    {
        Ok(_) => {
            let _ = TIMER.set(t);
            Some(t)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start parpool's timer thread; job timeouts are not enforced");
            None
        }
    }
}

/// Calls `target.expire(after)` at `now + after`, unless `target` is gone.
pub(crate) fn schedule(after: Duration, target: Weak<dyn Expire>) {
    let Some(deadline) = Instant::now().checked_add(after) else {
        return; // further away than the clock can express: never fires
    };
    let Some(t) = timer() else { return };
    let mut g = crate::sync::lock(&t.heap);
    let seq = g.1;
    g.1 += 1;
    let earliest = g.0.peek().is_none_or(|Reverse(e)| deadline < e.deadline);
    g.0.push(Reverse(Entry {
        deadline,
        seq,
        after,
        target,
    }));
    drop(g);
    if earliest {
        t.wake.notify_one();
    }
}

fn run(t: &Timer) {
    let mut g = crate::sync::lock(&t.heap);
    loop {
        let now = Instant::now();
        match g.0.peek() {
            None => g = crate::sync::wait(&t.wake, g),
            Some(Reverse(e)) if e.deadline <= now => {
                let Some(Reverse(e)) = g.0.pop() else {
                    continue;
                };
                drop(g);
                if let Some(target) = e.target.upgrade() {
                    target.expire(e.after);
                }
                g = crate::sync::lock(&t.heap);
            }
            Some(Reverse(e)) => {
                let wait = e.deadline - now;
                g = crate::sync::wait_timeout(&t.wake, g, wait);
            }
        }
    }
}
