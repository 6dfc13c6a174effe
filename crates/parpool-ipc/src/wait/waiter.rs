//! Async waits on shared futex words, without a thread per wait: one
//! thread per process waits on every registered word at once
//! (`futex_waitv`, Linux ≥ 5.16) and wakes the tasks whose word changed.
//!
//! Where `futex_waitv` is missing (Linux before 5.16) or refused (a
//! seccomp filter), each waited word gets a thread of its own instead
//! ("threads" mode). The call is probed once, at the first wait
//! ([`sys::futex_waitv_works`]), unless `PARPOOL_IPC_WAITER=threads` asks
//! for threads mode; a call that starts failing later moves every
//! registration over to threads mode. A word's thread sleeps on that word
//! with a plain `futex_wait`, so a change and its `futex_wake` wake it at
//! once, and it wakes every registration on the word whose value changed,
//! as the shared thread does. It also wakes every [`WORD_POLL`] to let go
//! of registrations that were dropped, and ends once its word has had
//! none for [`WORD_LINGER`] (a task that waits on the same word again
//! meanwhile reuses it). No loop runs without sleeping in the kernel.

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::thread::futex;

use crate::region::{HEADER, Region};
use crate::sys;

/// `futex_waitv` takes at most 128 words; one is the registration kick.
const MAX_WORDS: usize = 127;

/// The environment variable that chooses how async waits are served,
/// read once, at the first wait: `threads` forces threads mode; anything
/// else (or nothing) uses `futex_waitv` where the kernel takes it.
const MODE_ENV: &str = "PARPOOL_IPC_WAITER";

/// Threads mode: the longest a word's thread sleeps between checks (how
/// soon it lets go of a dropped registration and its region).
const WORD_POLL: Duration = Duration::from_millis(50);
/// Threads mode: how long a word's thread without registrations stays,
/// for the next wait on its word, before it ends.
const WORD_LINGER: Duration = Duration::from_millis(20);
/// Threads mode: a word's thread only checks words and calls wakers.
const WORD_STACK: usize = 256 * 1024;

/// Bumped (and woken) on every registration, so the thread rebuilds its
/// list. Process-private.
static KICK: AtomicU32 = AtomicU32::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Set (under the state's lock) when `futex_waitv` failed in use: every
/// registration is served in threads mode from then on.
static WAITV_FAILED: AtomicBool = AtomicBool::new(false);

/// How this process serves async waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One thread for all words (`futex_waitv`).
    Waitv,
    /// A thread per waited word (`futex_wait`).
    Threads,
}

/// The mode chosen at the first wait: threads if the environment asks for
/// them or the kernel refuses `futex_waitv`.
fn detected() -> Mode {
    static DETECTED: OnceLock<Mode> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        if std::env::var_os(MODE_ENV).is_some_and(|v| v == "threads") {
            tracing::debug!("{MODE_ENV}=threads: async ipc waits take a thread per waited word");
            Mode::Threads
        } else if sys::futex_waitv_works() {
            Mode::Waitv
        } else {
            tracing::debug!("no futex_waitv: async ipc waits take a thread per waited word");
            Mode::Threads
        }
    })
}

/// The mode in use now: the detected one, or threads once `futex_waitv`
/// failed. Exact under the state's lock.
fn mode() -> Mode {
    if detected() == Mode::Waitv && !WAITV_FAILED.load(SeqCst) {
        Mode::Waitv
    } else {
        Mode::Threads
    }
}

/// How this process serves `Event::wait_async`, `Queue::recv_async` and
/// `Queue::send_async`: `"futex_waitv"` (one thread for every wait) or
/// `"threads"` (a thread per waited word). The first call makes the choice
/// if no wait has yet. For tests.
#[doc(hidden)]
pub fn waiter_mode() -> &'static str {
    match mode() {
        Mode::Waitv => "futex_waitv",
        Mode::Threads => "threads",
    }
}

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

    /// The word's address: which thread watches it in threads mode.
    fn addr(&self) -> usize {
        self.word().as_ptr() as usize
    }
}

/// Every registration, and in threads mode the threads that serve them.
#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
    /// Threads mode: the words that have a thread, by address.
    words: HashMap<usize, Word>,
}

/// Threads mode: a word's thread, and the registrations it serves.
struct Word {
    ids: HashSet<u64>,
    /// What the thread sleeps on (process-private) while `ids` is empty:
    /// bumped and woken when a registration comes.
    kick: Arc<AtomicU32>,
    /// Whether the thread sleeps on `kick`.
    idle: bool,
}

impl State {
    /// Removes registration `id` (from its word's thread too). The caller
    /// drops what it returns after unlocking: dropping a waker may drop a
    /// task, and with it a registration.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        if let Some(w) = self.words.get_mut(&e.addr()) {
            w.ids.remove(&id);
        }
        Some(e)
    }

    /// Threads mode: hands registration `id` (in `entries`) to its word's
    /// thread, starting one if the word has none.
    fn watch(&mut self, id: u64) {
        let Some(addr) = self.entries.get(&id).map(Entry::addr) else {
            return;
        };
        match self.words.entry(addr) {
            Slot::Occupied(mut slot) => {
                let w = slot.get_mut();
                w.ids.insert(id);
                if w.idle {
                    w.idle = false;
                    w.kick.fetch_add(1, SeqCst);
                    let _ = futex::wake(&w.kick, futex::Flags::PRIVATE, 1);
                }
            }
            Slot::Vacant(slot) => {
                let kick = Arc::new(AtomicU32::new(0));
                let theirs = kick.clone();
                let started = std::thread::Builder::new()
                    .name("parpool-ipc-word".into())
                    .stack_size(WORD_STACK)
                    .spawn(move || watch_word(addr, &theirs));
                match started {
                    Ok(_) => {
                        slot.insert(Word {
                            ids: HashSet::from([id]),
                            kick,
                            idle: false,
                        });
                    }
                    // The registration stays, unserved; the next one on
                    // this word tries again.
                    Err(e) => tracing::error!(error = %e, "could not start an ipc waiter thread"),
                }
            }
        }
    }
}

fn state() -> std::sync::MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    crate::lock(STATE.get_or_init(Mutex::default))
}

/// Starts the `futex_waitv` thread, once.
fn start_waitv_thread() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        if let Err(e) = std::thread::Builder::new()
            .name("parpool-ipc-waiter".into())
            .spawn(run)
        {
            tracing::error!(error = %e, "could not start the ipc waiter thread");
        }
    });
}

/// Makes the `futex_waitv` thread rebuild its list.
fn kick_waitv() {
    KICK.fetch_add(1, SeqCst);
    let _ = futex::wake(&KICK, futex::Flags::PRIVATE, 1);
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
        // The first wait probes the kernel: not under the lock.
        let detected = detected();
        let entry = Entry {
            region: region.clone(),
            at,
            expected,
            waker: waker.clone(),
        };
        let mut state = state();
        let earlier = state.remove(id);
        // Changed already: a word's thread may be asleep on the new value,
        // so wake the task now.
        if entry.word().load(Acquire) != expected {
            drop(state);
            drop(earlier);
            waker.wake_by_ref();
            return;
        }
        state.entries.insert(id, entry);
        let threads = detected == Mode::Threads || WAITV_FAILED.load(SeqCst);
        if threads {
            state.watch(id);
        }
        drop(state);
        drop(earlier);
        if !threads {
            start_waitv_thread();
            kick_waitv();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(id) = self.id else {
            return;
        };
        let removed = state().remove(id);
        // Still registered (the wait was given up): the `futex_waitv`
        // thread lets go of the region at once. In threads mode the
        // word's thread notices within `WORD_POLL`.
        if removed.is_some() && mode() == Mode::Waitv {
            kick_waitv();
        }
        drop(removed);
    }
}

/// The `futex_waitv` thread.
fn run() {
    loop {
        let kick = KICK.load(SeqCst);
        // Snapshot the words to wait on; the regions stay mapped (and the
        // pointers valid) while `keep` holds them.
        let (waits, keep, overflow) = {
            let state = state();
            let map = &state.entries;
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
        let answer = futex::waitv(
            &waits,
            futex::WaitvFlags::empty(),
            timeout.as_ref(),
            rustix::time::ClockId::Monotonic,
        );
        drop(keep);
        match answer {
            Ok(_) | Err(Errno::AGAIN | Errno::TIMEDOUT | Errno::INTR) => {}
            // `ENOSYS` or `EPERM` (a seccomp filter added since the probe)
            // or anything else: retrying would spin.
            Err(error) => return fall_back(error),
        }
        let woken: Vec<Entry> = {
            let mut state = state();
            let changed: Vec<u64> = state
                .entries
                .iter()
                .filter(|(_, e)| e.word().load(Acquire) != e.expected)
                .map(|(&id, _)| id)
                .collect();
            changed
                .into_iter()
                .filter_map(|id| state.remove(id))
                .collect()
        };
        for e in woken {
            e.waker.wake();
        }
    }
}

/// `futex_waitv` failed: moves every registration to threads mode, for
/// good, and ends the `futex_waitv` thread.
fn fall_back(error: Errno) {
    tracing::warn!(
        %error,
        "futex_waitv failed: async ipc waits now take a thread per waited word"
    );
    let mut state = state();
    WAITV_FAILED.store(true, SeqCst);
    let ids: Vec<u64> = state.entries.keys().copied().collect();
    for id in ids {
        state.watch(id);
    }
}

/// What a word's thread sleeps on next.
enum Sleep {
    /// The word, while it holds `value`; `region` keeps it mapped.
    Word {
        region: Arc<Region>,
        at: usize,
        value: u32,
    },
    /// No registrations: the kick word, for at most `left`.
    Idle { seen: u32, left: Duration },
    /// None for `WORD_LINGER`: the thread ends.
    Done,
}

/// Threads mode: the thread of the word at address `addr`.
fn watch_word(addr: usize, kick: &AtomicU32) {
    let mut idle_since: Option<Instant> = None;
    loop {
        let mut woken = Vec::new();
        let sleep = {
            let mut state = state();
            let State { entries, words } = &mut *state;
            let Some(word) = words.get_mut(&addr) else {
                return;
            };
            // One reading for all: those that expect another value are due,
            // and the rest expect this one.
            let mut value = None;
            let mut hold = None;
            word.ids.retain(|id| {
                let Some(e) = entries.get(id) else {
                    return false;
                };
                let now = *value.get_or_insert_with(|| e.word().load(Acquire));
                if e.expected == now {
                    hold.get_or_insert_with(|| (e.region.clone(), e.at));
                    return true;
                }
                woken.extend(entries.remove(id));
                false
            });
            match (hold, value) {
                (Some((region, at)), Some(value)) => {
                    idle_since = None;
                    word.idle = false;
                    Sleep::Word { region, at, value }
                }
                _ => {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    let left = WORD_LINGER.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        words.remove(&addr);
                        Sleep::Done
                    } else {
                        word.idle = true;
                        Sleep::Idle {
                            seen: kick.load(SeqCst),
                            left,
                        }
                    }
                }
            }
        };
        for e in woken {
            e.waker.wake();
        }
        match sleep {
            Sleep::Word { region, at, value } => {
                let word = sys::atomic_at(region.map(), HEADER + at)
                    .expect("registered words are in bounds");
                sys::futex_wait(word, value, Some(WORD_POLL));
            }
            Sleep::Idle { seen, left } => {
                let left = rustix::time::Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                };
                let _ = futex::wait(kick, futex::Flags::PRIVATE, seen, Some(&left));
            }
            Sleep::Done => return,
        }
    }
}
