//! Async waits on shared futex words, without a thread per wait: one
//! thread per process waits on every registered word at once
//! (`futex_waitv`, Linux ≥ 5.16) and wakes the tasks whose word changed.

use std::collections::HashMap;
use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;
use std::time::Duration;

use rustix::thread::futex;

use super::region::{HEADER, Region};
use super::sys;

/// `futex_waitv` takes at most 128 words; one is the registration kick.
const MAX_WORDS: usize = 127;

/// Bumped (and woken) on every registration, so the thread rebuilds its
/// list. Process-private.
static KICK: AtomicU32 = AtomicU32::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct Entry {
    region: Arc<Region>,
    /// Byte offset of the word in the payload.
    at: usize,
    expected: u32,
    waker: Waker,
}

impl Entry {
    fn word(&self) -> &AtomicU32 {
        sys::atomic_at(self.region.map(), HEADER + self.at).expect("registered words are in bounds")
    }
}

fn entries() -> &'static Mutex<HashMap<u64, Entry>> {
    static ENTRIES: OnceLock<Mutex<HashMap<u64, Entry>>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        if let Err(e) = std::thread::Builder::new()
            .name("parpool-ipc-waiter".into())
            .spawn(run)
        {
            tracing::error!(error = %e, "could not start the ipc waiter thread");
        }
        Mutex::new(HashMap::new())
    })
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<u64, Entry>> {
    crate::lock(entries())
}

/// A registration: removed when dropped.
#[derive(Debug, Default)]
pub(crate) struct Registration {
    id: Option<u64>,
}

impl Registration {
    /// Wakes `waker` once the word at payload offset `at` of `region` no
    /// longer holds `expected` (or spuriously). Replaces an earlier
    /// registration of `self`.
    pub(crate) fn wait(&mut self, region: &Arc<Region>, at: usize, expected: u32, waker: &Waker) {
        let id = *self.id.get_or_insert_with(|| NEXT_ID.fetch_add(1, SeqCst));
        lock().insert(
            id,
            Entry {
                region: region.clone(),
                at,
                expected,
                waker: waker.clone(),
            },
        );
        KICK.fetch_add(1, SeqCst);
        let _ = futex::wake(&KICK, futex::Flags::PRIVATE, 1);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock().remove(&id);
        }
    }
}

fn run() {
    loop {
        let kick = KICK.load(SeqCst);
        // Snapshot the words to wait on; the regions stay mapped (and the
        // pointers valid) while `keep` holds them.
        let (waits, keep, overflow) = {
            let map = lock();
            let mut waits = Vec::with_capacity(map.len().min(MAX_WORDS) + 1);
            let mut keep = Vec::with_capacity(waits.capacity());
            for e in map.values().take(MAX_WORDS) {
                let mut w = futex::Wait::new();
                w.val = u64::from(e.expected);
                w.uaddr = futex::WaitPtr::new(e.word().as_ptr().cast());
                // Shared: the word may be changed by another process.
                w.flags = futex::WaitFlags::SIZE_U32;
                waits.push(w);
                keep.push(e.region.clone());
            }
            let mut w = futex::Wait::new();
            w.val = u64::from(kick);
            w.uaddr = futex::WaitPtr::new(KICK.as_ptr().cast());
            w.flags = futex::WaitFlags::SIZE_U32 | futex::WaitFlags::PRIVATE;
            waits.push(w);
            (waits, keep, map.len() > MAX_WORDS)
        };
        // More words than one call takes: the rest are checked every
        // millisecond instead.
        let timeout = overflow.then(|| {
            let d = Duration::from_millis(1);
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let nanos = now.tv_nsec + d.as_nanos() as i64;
            rustix::time::Timespec {
                tv_sec: now.tv_sec + nanos / 1_000_000_000,
                tv_nsec: nanos % 1_000_000_000,
            }
        });
        let _ = futex::waitv(
            &waits,
            futex::WaitvFlags::empty(),
            timeout.as_ref(),
            rustix::time::ClockId::Monotonic,
        );
        drop(keep);
        let mut map = lock();
        let changed: Vec<u64> = map
            .iter()
            .filter(|(_, e)| e.word().load(Acquire) != e.expected)
            .map(|(&id, _)| id)
            .collect();
        for id in changed {
            if let Some(e) = map.remove(&id) {
                e.waker.wake();
            }
        }
    }
}
