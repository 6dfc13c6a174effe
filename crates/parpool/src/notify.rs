//! A set of in-flight handles that yields them in the order they finish.
//!
//! Each handle gets a listener waker that pushes its slot number onto a
//! shared ready queue and wakes the consumer, who blocks on a condvar or,
//! as a `Stream`, parks its task waker. `wait`, `as_completed` and
//! unordered `map` are built on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use crate::handle::JobHandle;

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
struct Ready {
    slots: VecDeque<usize>,
    waiting: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Signal {
    ready: Mutex<Ready>,
    cond: Condvar,
}

struct SlotWaker {
    slot: usize,
    signal: Arc<Signal>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let mut r = crate::sync::lock(&self.signal.ready);
        r.slots.push_back(self.slot);
        let waiting = r.waiting;
        let waker = r.waker.take();
        drop(r);
        if waiting {
            self.signal.cond.notify_one();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Handles with a payload each, yielded as they finish.
pub(crate) struct Completions<T: Send + 'static, P> {
    slots: Vec<Option<(JobHandle<T>, P)>>,
    free: Vec<usize>,
    live: usize,
    key: u64,
    signal: Arc<Signal>,
}

impl<T: Send + 'static, P> Completions<T, P> {
    pub(crate) fn new() -> Self {
        Completions {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            signal: Arc::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn insert(&mut self, handle: JobHandle<T>, payload: P) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let waker = Waker::from(Arc::new(SlotWaker {
            slot,
            signal: self.signal.clone(),
        }));
        handle.state().add_listener(self.key, waker);
        self.slots[slot] = Some((handle, payload));
        self.live += 1;
    }

    fn take_ready(&mut self, r: &mut Ready) -> Option<(JobHandle<T>, P)> {
        while let Some(slot) = r.slots.pop_front() {
            if let Some(entry) = self.slots.get_mut(slot).and_then(Option::take) {
                self.free.push(slot);
                self.live -= 1;
                return Some(entry);
            }
        }
        None
    }

    /// The next finished handle, blocking until `deadline` (forever if
    /// `None`). `None` when empty or on time-out.
    pub(crate) fn next_blocking(&mut self, deadline: Option<Instant>) -> Option<(JobHandle<T>, P)> {
        if self.live == 0 {
            return None;
        }
        let signal = self.signal.clone();
        let mut r = crate::sync::lock(&signal.ready);
        loop {
            if let Some(e) = self.take_ready(&mut r) {
                return Some(e);
            }
            r.waiting = true;
            r = match deadline {
                None => crate::sync::wait(&signal.cond, r),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        r.waiting = false;
                        return None;
                    }
                    crate::sync::wait_timeout(&signal.cond, r, d - now)
                }
            };
            r.waiting = false;
        }
    }

    /// The next finished handle without blocking.
    pub(crate) fn try_next(&mut self) -> Option<(JobHandle<T>, P)> {
        let signal = self.signal.clone();
        let mut r = crate::sync::lock(&signal.ready);
        self.take_ready(&mut r)
    }

    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(JobHandle<T>, P)>> {
        if self.live == 0 {
            return Poll::Ready(None);
        }
        let signal = self.signal.clone();
        let mut r = crate::sync::lock(&signal.ready);
        match self.take_ready(&mut r) {
            Some(e) => Poll::Ready(Some(e)),
            None => {
                r.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Removes every handle still in the set, unfinished ones included.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (JobHandle<T>, P)> + '_ {
        let key = self.key;
        self.live = 0;
        self.free.clear();
        self.slots.drain(..).flatten().map(move |(h, p)| {
            h.state().remove_listener(key);
            (h, p)
        })
    }
}

impl<T: Send + 'static, P> Drop for Completions<T, P> {
    fn drop(&mut self) {
        for (h, _) in self.slots.iter().flatten() {
            h.state().remove_listener(self.key);
        }
    }
}
