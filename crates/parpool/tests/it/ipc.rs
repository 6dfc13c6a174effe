//! parpool::ipc across real worker processes and across threads.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parpool::ipc::{Condvar, Event, LockError, Mutex, Semaphore, SharedMem};
use parpool::{Executor, JobError, ThreadPool};

parpool::task! {
    /// Writes this process's id at word `index` and sums the first bytes.
    fn stamp(args: (SharedMem, usize)) -> u64 {
        let (mem, index) = args;
        mem.atomic_u64(index).unwrap().store(u64::from(std::process::id()), Ordering::SeqCst);
        let mut head = [0u8; 16];
        mem.read(1024, &mut head).unwrap();
        head.iter().map(|&b| u64::from(b)).sum()
    }
}

parpool::task! {
    fn make_mem(len: usize) -> SharedMem {
        let mem = SharedMem::new(len).unwrap();
        mem.write(0, b"made in a worker").unwrap();
        mem
    }
}

parpool::task! {
    fn increment(args: (Mutex<u64>, u32)) -> () {
        for _ in 0..args.1 {
            *args.0.lock().unwrap() += 1;
        }
    }
}

parpool::task! {
    /// Locks, writes a marker, tells the parent, and waits to be killed.
    fn hold_and_hang(args: (Mutex<[u64; 2]>, Event)) -> () {
        let mut guard = args.0.lock().unwrap();
        guard[0] = 111;
        args.1.set();
        std::thread::sleep(Duration::from_secs(60));
        guard[1] = 222;
    }
}

parpool::task! {
    /// Locks without waiting, in a worker: the first element, or why not.
    fn try_lock_in_worker(m: Mutex<[u64; 2]>) -> Result<u64, String> {
        match m.try_lock() {
            Ok(g) => Ok(g[0]),
            Err(LockError::OwnerDied) => Err("poisoned".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

parpool::task! {
    /// Takes the semaphore `rounds` times; counts holders in shared memory
    /// and records the most seen at once.
    fn crowd(args: (Semaphore, SharedMem, u32)) -> () {
        let (sem, mem, rounds) = args;
        let inside = mem.atomic_u64(0).unwrap();
        let most = mem.atomic_u64(1).unwrap();
        for _ in 0..rounds {
            let _permit = sem.acquire();
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::hint::spin_loop();
            std::thread::yield_now();
            inside.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

parpool::task! {
    /// Waits for the event; returns how long it waited, in milliseconds.
    fn wait_for(event: Event) -> u64 {
        let t = Instant::now();
        event.wait();
        t.elapsed().as_millis() as u64
    }
}

parpool::task! {
    fn open_fds(_x: ()) -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }
}

/// One test at a time: one counts this process's descriptors.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

use crate::common::JoinWithin;
use crate::common::quiet_pool as pool;

#[test]
fn shared_memory_is_the_same_memory_in_every_worker() {
    let _serial = serial();
    let pool = pool(2);
    let mem = SharedMem::new(4096).unwrap();
    mem.write(1024, &[1u8; 16]).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| pool.submit(stamp, (mem.clone(), i)))
        .collect();
    for h in handles {
        assert_eq!(h.join(), Ok(16));
    }
    let pids = pool.worker_pids();
    for i in 0..8 {
        let pid = mem.atomic_u64(i).unwrap().load(Ordering::SeqCst) as u32;
        assert!(
            pids.contains(&pid),
            "word {i} holds {pid}, workers are {pids:?}"
        );
    }
    // Made in a worker, read in the parent.
    let made = pool.submit(make_mem, 100).join().unwrap();
    let mut text = [0u8; 16];
    made.read(0, &mut text).unwrap();
    assert_eq!(&text, b"made in a worker");
    // Out of range is an error that touches nothing.
    assert!(mem.write(4090, &[9; 16]).is_err());
    assert!(mem.atomic_u64(512).is_none());
}

#[test]
fn on_a_thread_pool_the_handle_is_moved_not_copied() {
    let _serial = serial();
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let mem = SharedMem::new(4096).unwrap();
    let h = pool.submit(stamp, (mem.clone(), 0));
    assert_eq!(h.join(), Ok(0));
    let pid = mem.atomic_u64(0).unwrap().load(Ordering::SeqCst) as u32;
    assert_eq!(pid, std::process::id());
}

#[test]
fn a_mutex_serializes_increments_from_many_processes_and_threads() {
    let _serial = serial();
    let pool = pool(4);
    let counter = Mutex::new(0u64).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| pool.submit(increment, (counter.clone(), 500)))
        .collect();
    // Threads of this process join in on the same lock.
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let c = counter.clone();
            std::thread::spawn(move || {
                for _ in 0..500 {
                    *c.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*counter.lock().unwrap(), 10 * 500);
}

#[test]
fn a_lock_holder_killed_mid_critical_section_gives_owner_died_not_a_hang() {
    let _serial = serial();
    let pool = pool(1);
    let data = Mutex::new([0u64; 2]).unwrap();
    let locked = Event::new().unwrap();
    let h = pool.submit(hold_and_hang, (data.clone(), locked.clone()));
    assert!(
        locked.wait_timeout(Duration::from_secs(10)),
        "the worker never locked"
    );
    // The lock is held: a timed attempt times out.
    assert!(matches!(
        data.lock_timeout(Duration::from_millis(50)),
        Err(LockError::TimedOut)
    ));
    // SIGKILL the holder from outside, mid-critical-section.
    let pid = pool.worker_pids()[0];
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(matches!(h.join(), Err(JobError::Crashed { .. })));
    let t = Instant::now();
    assert!(matches!(data.lock(), Err(LockError::OwnerDied)));
    assert!(t.elapsed() < Duration::from_secs(5));
    // Poisoned for everyone until cleared, workers included, and the error
    // owns nothing: `?` takes it into `Box<dyn Error + Send + Sync>`.
    assert!(data.is_poisoned());
    fn via_question_mark(
        m: &Mutex<[u64; 2]>,
    ) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        Ok(m.lock()?[0])
    }
    let err = via_question_mark(&data).unwrap_err();
    assert!(err.to_string().contains("lock_for_repair"), "{err}");
    assert_eq!(
        pool.submit(try_lock_in_worker, data.clone()).join(),
        Ok(Err("poisoned".into()))
    );
    // The lock is free meanwhile (a failed lock leaves it so).
    assert!(matches!(data.try_lock(), Err(LockError::OwnerDied)));
    // What the holder wrote before dying is there, for the repair.
    let mut guard = data.lock_for_repair().unwrap();
    assert_eq!(*guard, [111, 0]);
    *guard = [1, 2];
    // Taken: others cannot lock, whatever the poison.
    let other = std::thread::scope(|s| {
        s.spawn(|| matches!(data.try_lock(), Err(LockError::WouldBlock)))
            .join()
            .unwrap()
    });
    assert!(other);
    drop(guard);
    data.clear_poison();
    assert!(!data.is_poisoned());
    // And the lock works normally again, in the worker too.
    assert_eq!(*data.lock().unwrap(), [1, 2]);
    assert_eq!(
        pool.submit(try_lock_in_worker, data.clone()).join(),
        Ok(Ok(1))
    );
}

#[test]
fn a_semaphore_never_lets_more_in_than_it_has_permits() {
    let _serial = serial();
    let pool = pool(4);
    let sem = Semaphore::new(2).unwrap();
    let mem = SharedMem::new(16).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| pool.submit(crowd, (sem.clone(), mem.clone(), 2000)))
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let most = mem.atomic_u64(1).unwrap().load(Ordering::SeqCst);
    assert!((1..=2).contains(&most), "{most} holders at once");
    assert_eq!(sem.available(), 2, "every permit came back");
    // Timeouts.
    let a = sem.acquire();
    let b = sem.acquire();
    let t = Instant::now();
    assert!(sem.acquire_timeout(Duration::from_millis(50)).is_none());
    assert!(t.elapsed() >= Duration::from_millis(50));
    drop((a, b));
}

#[test]
fn an_event_wakes_a_waiting_worker() {
    let _serial = serial();
    let pool = pool(1);
    let event = Event::new().unwrap();
    let h = pool.submit(wait_for, event.clone());
    std::thread::sleep(Duration::from_millis(150));
    assert!(!h.is_finished(), "the worker must still be waiting");
    event.set();
    let waited = h.join().unwrap();
    assert!(waited >= 100, "waited {waited} ms");
    event.clear();
    assert!(!event.wait_timeout(Duration::from_millis(20)));
}

#[test]
fn ipc_objects_cannot_be_serialized_outside_a_job() {
    let _serial = serial();
    let mem = SharedMem::new(8).unwrap();
    assert!(postcard::to_allocvec(&mem).is_err());
    let lock = Mutex::new(0u32).unwrap();
    assert!(postcard::to_allocvec(&lock).is_err());
}

#[test]
fn no_descriptor_leaks_after_many_jobs() {
    // It measures this whole process: alone, in a child process.
    if crate::common::isolated("ipc::no_descriptor_leaks_after_many_jobs") {
        return;
    }
    let _serial = serial();
    let pool = pool(1);
    // Warm up both kinds of job, so that whatever a process opens once
    // (and keeps, or closes later) is not counted as a leak.
    for _ in 0..3 {
        pool.submit(stamp, (SharedMem::new(4096).unwrap(), 0))
            .join()
            .unwrap();
        pool.submit(increment, (Mutex::new(0u64).unwrap(), 1))
            .join()
            .unwrap();
    }
    let before = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let worker_before = pool.submit(open_fds, ()).join().unwrap();
    for i in 0..300 {
        let mem = SharedMem::new(4096 + i).unwrap();
        let counter = Mutex::new(0u64).unwrap();
        pool.submit(stamp, (mem, 0)).join().unwrap();
        pool.submit(increment, (counter, 1)).join().unwrap();
    }
    // A leak grows the count by hundreds here; never more than before.
    let worker_after = pool.submit(open_fds, ()).join().unwrap();
    assert!(
        worker_after <= worker_before,
        "worker: {worker_before} -> {worker_after}"
    );
    let after = std::fs::read_dir("/proc/self/fd").unwrap().count();
    assert!(after <= before, "parent: {before} -> {after}");
    // Nothing of parpool's is ever in /dev/shm.
    if let Ok(dir) = std::fs::read_dir("/dev/shm") {
        for e in dir.flatten() {
            assert!(!e.file_name().to_string_lossy().contains("parpool"));
        }
    }
}

#[test]
fn setting_an_event_wakes_every_waiter() {
    let _serial = serial();
    let event = Event::new().unwrap();
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let e = event.clone();
            std::thread::spawn(move || e.wait_timeout(Duration::from_secs(5)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    event.set();
    for w in waiters {
        assert!(w.join().unwrap(), "a waiter was not woken");
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "waiters woke one by one: {:?}",
        t.elapsed()
    );
}

parpool::task! {
    /// Waits on the condition variable until the value is non-zero.
    fn wait_for_value(args: (Mutex<u64>, Condvar)) -> u64 {
        let (value, changed) = args;
        let mut guard = value.lock().unwrap();
        while *guard == 0 {
            guard = changed.wait(guard).unwrap();
        }
        *guard
    }
}

#[test]
fn a_condvar_wakes_waiters_in_other_processes() {
    let _serial = serial();
    let pool = pool(2);
    let value = Mutex::new(0u64).unwrap();
    let changed = Condvar::new().unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| pool.submit(wait_for_value, (value.clone(), changed.clone())))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    assert!(waiters.iter().all(|w| !w.is_finished()));
    *value.lock().unwrap() = 42;
    changed.notify_all();
    for w in waiters {
        assert_eq!(w.join(), Ok(42));
    }
    // Nobody notifies: the wait times out, with the lock held again.
    let guard = value.lock().unwrap();
    let (guard, timed_out) = changed
        .wait_timeout(guard, Duration::from_millis(30))
        .unwrap();
    assert!(timed_out);
    assert_eq!(*guard, 42);
}

parpool::task! {
    /// Tries to write through a read-only handle; reports what happened
    /// and how this process mapped the memory.
    fn try_to_write(mem: SharedMem) -> (bool, bool, u8, String) {
        let refused = mem.write(0, b"x").is_err();
        let no_atomics = mem.atomic_u64(0).is_none();
        let mut first = [0u8; 1];
        mem.read(0, &mut first).unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        // The worker maps other shared memory too (its control block),
        // writable: a read-only mapping can only be this one.
        let perms = maps
            .lines()
            .filter(|l| l.contains("parpool-ipc"))
            .filter_map(|l| l.split_whitespace().nth(1))
            .find(|p| p.starts_with("r-"))
            .unwrap_or("none read-only")
            .to_owned();
        (refused, no_atomics, first[0], perms)
    }
}

#[test]
fn a_read_only_handle_is_mapped_read_only_in_the_worker() {
    let _serial = serial();
    let pool = pool(1);
    let mem = SharedMem::new(4096).unwrap();
    mem.write(0, &[9]).unwrap();
    let ro = mem.read_only();
    assert!(!ro.is_writable());
    assert!(ro.write(0, b"y").is_err());
    let (refused, no_atomics, first, perms) = pool.submit(try_to_write, ro).join().unwrap();
    assert!(refused && no_atomics);
    assert_eq!(first, 9);
    assert!(perms.starts_with("r-"), "mapped {perms}");
    // The writable handle still writes.
    mem.write(0, &[1]).unwrap();
}

#[test]
fn a_semaphore_bounds_threads_too() {
    let _serial = serial();
    let sem = Semaphore::new(3).unwrap();
    let counts = SharedMem::new(16).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (sem, counts) = (sem.clone(), counts.clone());
            std::thread::spawn(move || {
                let inside = counts.atomic_u64(0).unwrap();
                let most = counts.atomic_u64(1).unwrap();
                for _ in 0..2000 {
                    let _permit = sem.acquire();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::yield_now();
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let most = counts.atomic_u64(1).unwrap().load(Ordering::SeqCst);
    assert!((1..=3).contains(&most), "{most} holders at once");
    assert_eq!(sem.available(), 3);
}

parpool::task! {
    /// Takes a permit, says so, and holds it until killed.
    fn hold_permit(args: (Semaphore, Event)) -> () {
        let (sem, taken) = args;
        let _permit = sem.acquire();
        taken.set();
        std::thread::sleep(Duration::from_secs(60));
    }
}

parpool::task! {
    /// Takes a permit, forgets it, and ends the process without dropping it.
    fn forget_permit_and_exit(sem: Semaphore) -> () {
        std::mem::forget(sem.acquire());
        std::process::exit(0)
    }
}

parpool::task! {
    /// Takes a permit, records this process's id at word `index`, counts
    /// itself in word 0, and holds the permit until `go` is set.
    fn hold_until(args: (Semaphore, SharedMem, usize, Event)) -> () {
        let (sem, mem, index, go) = args;
        let _permit = sem.acquire();
        mem.atomic_u64(index)
            .unwrap()
            .store(u64::from(std::process::id()), Ordering::SeqCst);
        mem.atomic_u64(0).unwrap().fetch_add(1, Ordering::SeqCst);
        go.wait();
    }
}

fn kill(pid: u32) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
}

/// Waits until word 0 of `mem` reaches `n`.
fn wait_for_count(mem: &SharedMem, n: u64) {
    let t = Instant::now();
    while mem.atomic_u64(0).unwrap().load(Ordering::SeqCst) < n {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "only {} of {n} holders took a permit",
            mem.atomic_u64(0).unwrap().load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_semaphore_holder_killed_with_sigkill_gives_its_permit_back() {
    let _serial = serial();
    let pool = pool(1);
    let sem = Semaphore::new(1).unwrap();
    let taken = Event::new().unwrap();
    let h = pool.submit(hold_permit, (sem.clone(), taken.clone()));
    assert!(
        taken.wait_timeout(Duration::from_secs(10)),
        "the worker never took the permit"
    );
    // A live holder keeps its permit, however long others wait and check.
    assert!(sem.try_acquire().is_none());
    assert!(sem.acquire_timeout(Duration::from_millis(200)).is_none());
    assert_eq!(sem.available(), 0);
    kill(pool.worker_pids()[0]);
    // Dead (perhaps not reaped yet): its permit comes back to the next
    // acquirer.
    let t = Instant::now();
    let permit = sem
        .acquire_timeout(Duration::from_secs(5))
        .expect("the killed holder's permit came back");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(sem.available(), 0);
    assert!(matches!(h.join_within(), Err(JobError::Crashed { .. })));
    drop(permit);
    assert_eq!(sem.available(), 1, "back to the maximum, not beyond");
    // And it works as before.
    let again = sem.try_acquire().expect("free");
    assert!(sem.try_acquire().is_none());
    drop(again);
    assert_eq!(sem.available(), 1);
}

#[test]
fn a_semaphore_holder_that_exits_without_dropping_gives_its_permit_back() {
    let _serial = serial();
    let pool = pool(1);
    let sem = Semaphore::new(1).unwrap();
    assert!(
        pool.submit(forget_permit_and_exit, sem.clone())
            .join_within()
            .is_err()
    );
    let permit = sem
        .acquire_timeout(Duration::from_secs(5))
        .expect("the exited holder's permit came back");
    assert_eq!(sem.available(), 0);
    drop(permit);
    assert_eq!(sem.available(), 1);
}

#[test]
fn a_dead_semaphore_holders_permits_come_back_but_never_more() {
    let _serial = serial();
    let pool = pool(3);
    let sem = Semaphore::new(3).unwrap();
    let mem = SharedMem::new(64).unwrap();
    let go = Event::new().unwrap();
    let handles: Vec<_> = (1..=3)
        .map(|i| pool.submit(hold_until, (sem.clone(), mem.clone(), i, go.clone())))
        .collect();
    wait_for_count(&mem, 3);
    assert_eq!(sem.available(), 0);
    let holders: Vec<u32> = (1..=3)
        .map(|i| mem.atomic_u64(i).unwrap().load(Ordering::SeqCst) as u32)
        .collect();
    kill(holders[0]);
    let back = sem
        .acquire_timeout(Duration::from_secs(5))
        .expect("the killed holder's permit came back");
    // Exactly one came back: the two live holders keep theirs through
    // several liveness checks.
    assert!(sem.try_acquire().is_none());
    assert!(sem.acquire_timeout(Duration::from_millis(300)).is_none());
    assert_eq!(sem.available(), 0);
    go.set();
    let crashed = handles
        .into_iter()
        .map(|h| h.join_within())
        .filter(|r| r.is_err())
        .count();
    assert_eq!(crashed, 1);
    assert_eq!(sem.available(), 2);
    drop(back);
    assert_eq!(sem.available(), 3);
    // All three can be taken again, and no fourth.
    let all: Vec<_> = (0..3).map(|_| sem.try_acquire().expect("free")).collect();
    assert!(sem.try_acquire().is_none());
    drop(all);
    assert_eq!(sem.available(), 3);
}

#[test]
fn a_semaphore_permit_dropped_on_another_thread_of_the_process_comes_back() {
    let _serial = serial();
    let sem = Semaphore::new(1).unwrap();
    let permit = sem.acquire();
    std::thread::scope(|s| {
        s.spawn(move || drop(permit));
    });
    assert_eq!(sem.available(), 1);
    let p = sem.try_acquire().expect("free again");
    drop(p);
}

#[test]
fn a_65th_semaphore_holder_process_waits_for_a_slot_even_with_permits_free() {
    let _serial = serial();
    // 64 workers each hold one of 100 permits: every holder slot is taken.
    let pool = pool(64);
    let sem = Semaphore::new(100).unwrap();
    let mem = SharedMem::new(8 * 65).unwrap();
    let go = Event::new().unwrap();
    let handles: Vec<_> = (1..=64)
        .map(|i| pool.submit(hold_until, (sem.clone(), mem.clone(), i, go.clone())))
        .collect();
    wait_for_count(&mem, 64);
    assert_eq!(sem.available(), 36);
    // This process would be the 65th holder: it waits, as if none were
    // free.
    assert!(sem.try_acquire().is_none());
    let t = Instant::now();
    assert!(sem.acquire_timeout(Duration::from_millis(150)).is_none());
    assert!(t.elapsed() >= Duration::from_millis(150));
    // Its wait ends when holders give their permits back.
    let waiter = std::thread::spawn({
        let sem = sem.clone();
        move || {
            let p = sem.acquire_timeout(Duration::from_secs(20));
            let got = p.is_some();
            drop(p);
            got
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    go.set();
    assert!(waiter.join().unwrap(), "the 65th process got a permit");
    for h in handles {
        h.join_within().unwrap();
    }
    assert_eq!(sem.available(), 100);
}
