//! What the explorer's jobs do, and the ledger where each job records that
//! its body started and that it ran to the end.
//!
//! The ledger is one `SharedMem` per scenario, so a body writes to it the
//! same way in a thread of this process and in a worker process: a worker
//! gets it from the pool's initializer (`explore_init`), this process sets
//! it before each scenario. Jobs are named by a *key*; each key has
//! [`WORDS`] words: how many times its body started, how many times it
//! finished, and the pid of the process that last started it.

use std::sync::RwLock;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use parpool::SharedBytes;
use parpool::ipc::{Barrier, Event, Mutex, Queue, SharedMem};
use serde::{Deserialize, Serialize};

/// Words per key in the ledger.
pub(crate) const WORDS: usize = 3;
const STARTED: usize = 0;
const FINISHED: usize = 1;
const PID: usize = 2;

/// How long a body waits on an `ipc` object at most: a waiter whose
/// releaser was cancelled gives up instead of holding a worker for good.
pub(crate) const WAIT_BOUND: Duration = Duration::from_secs(8);

static LEDGER: RwLock<Option<SharedMem>> = RwLock::new(None);

/// Makes `ledger` the one bodies in this process write to.
pub(crate) fn set_ledger(ledger: Option<SharedMem>) {
    *LEDGER.write().unwrap() = ledger;
}

fn ledger() -> SharedMem {
    LEDGER
        .read()
        .unwrap()
        .clone()
        .expect("the explorer sets the ledger before any job runs")
}

parpool::task!(
    /// A process pool's initializer: the worker's ledger.
    pub(crate) fn explore_init(ledger: SharedMem) -> () {
        set_ledger(Some(ledger));
    }
);

/// What a job's body does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Body {
    /// Returns at once.
    Tiny,
    /// Sleeps this many milliseconds (without looking at its cancel token).
    Sleep(u32),
    /// Spins this many microseconds.
    Spin(u32),
    /// Panics.
    Panic,
    /// Aborts its process (process pools only).
    Abort,
    /// Raises `SIGSEGV` (process pools only).
    Segv,
    /// Exits its process with this code (process pools only).
    Exit(i32),
    /// Allocates and touches far more than the pool's memory limit
    /// (process pools with a memory limit only).
    Oom,
    /// Aborts the first time it starts, returns the next (process pools
    /// with retries only).
    CrashOnce,
    /// Writes to its stdout and stderr (process pools only).
    Print,
    /// Waits for the job's `Event` (at most [`WAIT_BOUND`]).
    WaitEvent,
    /// Sets the job's `Event`.
    SetEvent,
    /// Takes a value from the job's `Queue` (at most [`WAIT_BOUND`]).
    QueueGet,
    /// Puts a value in the job's `Queue`.
    QueuePut,
    /// Waits at the job's `Barrier` (at most [`WAIT_BOUND`]).
    BarrierWait,
    /// Touches what the job carries (reads the bytes, adds to the memory,
    /// locks the mutex) and returns.
    Touch,
}

impl Body {
    /// Whether the body takes its process down (it must run in a worker
    /// process).
    pub(crate) fn crashes(self) -> bool {
        matches!(self, Body::Abort | Body::Segv | Body::Exit(_) | Body::Oom)
    }

    /// Whether the body may wait for another job.
    pub(crate) fn blocks(self) -> bool {
        matches!(self, Body::WaitEvent | Body::QueueGet | Body::BarrierWait)
    }
}

/// What a job's input carries besides its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Carry {
    Nothing,
    Bytes(SharedBytes),
    Mem(SharedMem),
    Event(Event),
    Mutex(Mutex<u64>),
    Queue(Queue<u64>),
    Barrier(Barrier),
}

impl Carry {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Carry::Nothing => "nothing",
            Carry::Bytes(_) => "SharedBytes",
            Carry::Mem(_) => "SharedMem",
            Carry::Event(_) => "Event",
            Carry::Mutex(_) => "Mutex",
            Carry::Queue(_) => "Queue",
            Carry::Barrier(_) => "Barrier",
        }
    }
}

/// A job's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Input {
    pub(crate) key: u32,
    pub(crate) body: Body,
    pub(crate) carry: Carry,
}

/// The value a job whose body returns gives: derived from its key, so a
/// value delivered to the wrong handle shows.
pub(crate) fn expected(key: u32) -> u64 {
    u64::from(key).wrapping_mul(0x9e37_79b9).wrapping_add(7)
}

parpool::task!(
    /// Every explorer job.
    pub(crate) fn explore_job(input: Input) -> u64 {
        run(input)
    }
);

parpool::task!(
    /// A job of plain data, for `ProcessPool::par`.
    pub(crate) fn explore_pod(x: u64) -> u64 {
        x.wrapping_mul(3).wrapping_add(1)
    }
);

fn word(mem: &SharedMem, key: u32, which: usize) -> &std::sync::atomic::AtomicU64 {
    mem.atomic_u64(key as usize * WORDS + which)
        .expect("the ledger has a slot for every key")
}

fn run(input: Input) -> u64 {
    let mem = ledger();
    let key = input.key;
    let started = word(&mem, key, STARTED).fetch_add(1, SeqCst) + 1;
    word(&mem, key, PID).store(u64::from(std::process::id()), SeqCst);
    match (input.body, &input.carry) {
        (Body::Tiny, _) => {}
        (Body::Sleep(ms), _) => std::thread::sleep(Duration::from_millis(u64::from(ms))),
        (Body::Spin(us), _) => {
            let until = Instant::now() + Duration::from_micros(u64::from(us));
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        (Body::Panic, _) => panic!("explorer job {key} panics on purpose"),
        (Body::Abort, _) => std::process::abort(),
        (Body::Segv, _) => {
            let me = rustix::process::getpid();
            let _ = rustix::process::kill_process(me, rustix::process::Signal::SEGV);
            // The signal is delivered before kill returns; never reached.
            std::process::abort();
        }
        (Body::Exit(code), _) => std::process::exit(code),
        (Body::Oom, _) => {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 64 << 20]);
            }
        }
        (Body::CrashOnce, _) => {
            if started == 1 {
                std::process::abort();
            }
        }
        (Body::Print, _) => {
            println!("explorer job {key} says hello on stdout");
            eprintln!("explorer job {key} says hello on stderr");
        }
        (Body::WaitEvent, Carry::Event(e)) => {
            e.wait_timeout(WAIT_BOUND);
        }
        (Body::SetEvent, Carry::Event(e)) => e.set(),
        (Body::QueueGet, Carry::Queue(q)) => {
            let _ = q.recv_timeout(WAIT_BOUND);
        }
        (Body::QueuePut, Carry::Queue(q)) => {
            let _ = q.send_timeout(u64::from(key), WAIT_BOUND);
        }
        (Body::BarrierWait, Carry::Barrier(b)) => {
            if let Ok(party) = b.party() {
                let _ = party.wait_timeout(WAIT_BOUND);
            }
        }
        (Body::Touch, Carry::Bytes(b)) => {
            std::hint::black_box(b.iter().map(|&x| u64::from(x)).sum::<u64>());
        }
        (Body::Touch, Carry::Mem(m)) => {
            if let Some(w) = m.atomic_u64(0) {
                w.fetch_add(1, SeqCst);
            }
        }
        (Body::Touch, Carry::Mutex(m)) => {
            let mut g = match m.lock() {
                Ok(g) => g,
                Err(_) => m.lock_for_repair().expect("repairable"),
            };
            *g += 1;
        }
        (Body::Touch, Carry::Event(e)) => {
            std::hint::black_box(e.is_set());
        }
        (body, carry) => panic!("explorer job {key}: {body:?} cannot use {}", carry.name()),
    }
    word(&mem, key, FINISHED).fetch_add(1, SeqCst);
    expected(key)
}

/// What the ledger says of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) started: u64,
    pub(crate) finished: u64,
    pub(crate) pid: u32,
}

/// Reads key `key` of `ledger`.
pub(crate) fn entry(ledger: &SharedMem, key: u32) -> Entry {
    Entry {
        started: word(ledger, key, STARTED).load(SeqCst),
        finished: word(ledger, key, FINISHED).load(SeqCst),
        pid: word(ledger, key, PID).load(SeqCst) as u32,
    }
}
