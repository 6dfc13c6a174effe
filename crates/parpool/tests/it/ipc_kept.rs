//! A process-pool worker keeps the shared objects (`ipc` objects and
//! `SharedBytes`) it receives mapped while the parent holds them, so an
//! object handed to job after job is mapped once; it lets go as soon as
//! the parent drops its last handle.

use std::time::{Duration, Instant};

use parpool::ipc::{Mutex, SharedMem};
use parpool::{Executor, ProcessPool, WorkerOutput};

/// The mappings of `ipc` objects listed in `maps` (a `/proc/PID/maps`):
/// (size in bytes, permissions).
fn ipc_mappings(maps: &str) -> Vec<(usize, String)> {
    maps.lines()
        .filter(|l| l.contains("parpool-ipc"))
        .map(|l| {
            let mut fields = l.split_whitespace();
            let range = fields.next().unwrap();
            let perms = fields.next().unwrap().to_owned();
            let (from, to) = range.split_once('-').unwrap();
            let size =
                usize::from_str_radix(to, 16).unwrap() - usize::from_str_radix(from, 16).unwrap();
            (size, perms)
        })
        .collect()
}

/// How much address space a `SharedMem` of `len` bytes takes: its header
/// and payload, in whole pages.
fn mapped_size(len: usize) -> usize {
    (64 + len).div_ceil(4096) * 4096
}

/// Page faults this thread has taken that needed no disk.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The fields after the command name (which may hold spaces).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    fields[7].parse().unwrap()
}

parpool::task! {
    /// Where this process maps the memory, how many mappings of its size
    /// this process has, and how many page faults reading every page took.
    fn where_mapped(mem: SharedMem) -> (usize, usize, u64) {
        let addr = mem.atomic_u64(0).unwrap() as *const _ as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let size = mapped_size(mem.len());
        let count = ipc_mappings(&maps).iter().filter(|m| m.0 == size).count();
        let words = mem.len() / 8;
        let before = minor_faults();
        let sum: u64 = (0..words)
            .step_by(512)
            .map(|i| mem.atomic_u64(i).unwrap().load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        let faults = minor_faults() - before;
        std::hint::black_box(sum);
        (addr, count, faults)
    }
}

parpool::task! {
    /// How many mappings of `size` bytes this process has.
    fn mappings_of_size(size: usize) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        ipc_mappings(&maps).iter().filter(|m| m.0 == size).count()
    }
}

parpool::task! {
    /// The addresses of both handles and the permissions of each mapping.
    fn two_handles(args: (SharedMem, SharedMem, SharedMem)) -> (usize, usize, usize, Vec<String>) {
        let addr = |m: &SharedMem| {
            let bytes = m.slice::<u8>();
            // SAFETY: only the address is taken; nothing is read.
            unsafe { bytes.as_slice() }.as_ptr() as usize
        };
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let size = mapped_size(args.0.len());
        let perms = ipc_mappings(&maps)
            .into_iter()
            .filter(|m| m.0 == size)
            .map(|m| m.1)
            .collect();
        (addr(&args.0), addr(&args.1), addr(&args.2), perms)
    }
}

parpool::task! {
    fn add_one(counter: Mutex<u64>) -> u64 {
        let mut guard = counter.lock().unwrap();
        *guard += 1;
        *guard
    }
}

parpool::task! {
    fn touch(mem: SharedMem) -> u32 {
        mem.atomic_u32(0).unwrap().load(std::sync::atomic::Ordering::SeqCst)
    }
}

parpool::task! {
    fn open_fds(_x: ()) -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }
}

parpool::task! {
    fn pid(_x: ()) -> u32 {
        std::process::id()
    }
}

fn pool() -> ProcessPool {
    ProcessPool::builder()
        .workers(1)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap()
}

#[test]
fn an_object_handed_to_job_after_job_is_mapped_once() {
    let pool = pool();
    let mem = SharedMem::new(3 << 20).unwrap();
    let (first, count, faults) = pool.submit(where_mapped, mem.clone()).join().unwrap();
    assert_eq!(count, 1);
    // 768 pages: a few dozen faults (a few, with huge pages).
    assert!(faults >= 1, "no page faults mapping 3 MiB");
    for _ in 0..20 {
        let (addr, count, faults) = pool.submit(where_mapped, mem.clone()).join().unwrap();
        assert_eq!((addr, count), (first, 1));
        // Mapped anew, it would fault again (one fault is left for the
        // allocator, which reading the fault count may trigger).
        assert!(
            faults <= 1,
            "{faults} page faults: the memory was mapped anew"
        );
    }
    // A lock handed in each job is the same lock, mapped once as well.
    let counter = Mutex::new(0u64).unwrap();
    for i in 1..=20 {
        assert_eq!(pool.submit(add_one, counter.clone()).join(), Ok(i));
    }
    assert_eq!(*counter.lock().unwrap(), 20);
}

#[test]
fn the_worker_lets_go_when_the_parent_drops_its_last_handle() {
    let pool = pool();
    let len = (5 << 20) + 4096;
    let size = mapped_size(len);
    let mem = SharedMem::new(len).unwrap();
    let clone = mem.clone();
    assert_eq!(pool.submit(touch, mem.clone()).join(), Ok(0));
    assert_eq!(pool.submit(mappings_of_size, size).join(), Ok(1));
    // One handle left here: the worker keeps it.
    drop(mem);
    assert_eq!(pool.submit(mappings_of_size, size).join(), Ok(1));
    // The last one goes: the worker is told before its next job.
    drop(clone);
    assert_eq!(pool.submit(mappings_of_size, size).join(), Ok(0));
}

#[test]
fn an_idle_worker_lets_go_too() {
    let pool = pool();
    let worker = pool.submit(pid, ()).join().unwrap();
    let len = (7 << 20) + 8192;
    let size = mapped_size(len);
    let mem = SharedMem::new(len).unwrap();
    assert_eq!(pool.submit(touch, mem.clone()).join(), Ok(0));
    let in_worker = || {
        let maps = std::fs::read_to_string(format!("/proc/{worker}/maps")).unwrap();
        ipc_mappings(&maps).iter().filter(|m| m.0 == size).count()
    };
    assert_eq!(in_worker(), 1);
    drop(mem);
    // No job follows: the drop itself reaches the worker.
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_worker() != 0 {
        assert!(
            Instant::now() < deadline,
            "the idle worker still maps the memory"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn read_only_and_writable_handles_keep_their_own_mappings() {
    let pool = pool();
    let mem = SharedMem::new(9 << 20).unwrap();
    let (a, b, ro, perms) = pool
        .submit(two_handles, (mem.clone(), mem.clone(), mem.read_only()))
        .join()
        .unwrap();
    // Two handles with the same access share one mapping; the read-only
    // one has its own, which cannot write.
    assert_eq!(a, b);
    assert_ne!(a, ro);
    let mut perms = perms;
    perms.sort();
    assert_eq!(perms, ["r--s", "rw-s"]);
    // Handed again, both are still the same mappings.
    let again = pool
        .submit(two_handles, (mem.clone(), mem.clone(), mem.read_only()))
        .join()
        .unwrap();
    assert_eq!((again.0, again.2), (a, ro));
}

#[test]
fn a_worker_keeps_a_bounded_number_of_objects() {
    let pool = pool();
    // Warm up whatever the worker opens once.
    pool.submit(touch, SharedMem::new(64).unwrap())
        .join()
        .unwrap();
    let before = pool.submit(open_fds, ()).join().unwrap();
    // All of them stay alive here, so none is released.
    let held: Vec<SharedMem> = (0..200)
        .map(|i| SharedMem::new(4096 + i).unwrap())
        .collect();
    for mem in &held {
        pool.submit(touch, mem.clone()).join().unwrap();
    }
    let after = pool.submit(open_fds, ()).join().unwrap();
    // The worker keeps at most 64 objects, each with one descriptor.
    assert!(
        after <= before + 64,
        "worker descriptors: {before} -> {after}"
    );
    drop(held);
    let released = pool.submit(open_fds, ()).join().unwrap();
    assert!(
        released <= before,
        "worker descriptors: {before} -> {released}"
    );
}

/// Voluntary context switches of this process's thread named `name`.
fn switches_of_thread(name: &str) -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))
                .unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("no thread named {name}");
}

#[test]
fn an_idle_pool_whose_worker_keeps_nothing_sleeps() {
    // It measures this whole process: alone, in a child process.
    if crate::common::isolated("ipc_kept::an_idle_pool_whose_worker_keeps_nothing_sleeps") {
        return;
    }
    let pool = ProcessPool::builder()
        .name("kept-idle")
        .workers(1)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap();
    let mem = SharedMem::new(4096).unwrap();
    assert_eq!(pool.submit(touch, mem.clone()).join(), Ok(0));
    drop(mem);
    // Released before this job: the worker keeps nothing now.
    pool.submit(open_fds, ()).join().unwrap();
    let before = switches_of_thread("kept-idle-sup-0");
    std::thread::sleep(Duration::from_millis(500));
    let woke = switches_of_thread("kept-idle-sup-0") - before;
    // Watching for releases it would wake every 50 ms.
    assert!(woke <= 2, "the idle supervisor woke {woke} times in 500 ms");
}

parpool::task! {
    /// Sums a byte of every page; the page faults that took, and where
    /// this process maps the bytes.
    fn sum_pages(data: parpool::SharedBytes) -> (u64, u64, usize) {
        let before = minor_faults();
        let sum: u64 = data.iter().step_by(4096).map(|&b| u64::from(b)).sum();
        (sum, minor_faults() - before, data.as_ptr() as usize)
    }
}

#[test]
fn shared_bytes_handed_to_job_after_job_are_mapped_once_and_let_go() {
    let pool = pool();
    let data = parpool::SharedBytes::new(4 << 20, |b| b.fill(1)).unwrap();
    let len = data.len();
    let (sum, faults, first) = pool.submit(sum_pages, data.clone()).join().unwrap();
    assert_eq!(sum, 1024);
    assert!(faults >= 1, "no page faults mapping 4 MiB");
    for _ in 0..10 {
        let (sum, faults, addr) = pool.submit(sum_pages, data.clone()).join().unwrap();
        assert_eq!((sum, addr), (1024, first));
        assert!(
            faults <= 1,
            "{faults} page faults: the bytes were mapped anew"
        );
    }
    // The parent's last handle goes: so does the worker's mapping.
    drop(data);
    let size = len.div_ceil(4096) * 4096;
    let maps = pool
        .submit(shared_bytes_mappings_of_size, size)
        .join()
        .unwrap();
    assert_eq!(maps, 0);
}

parpool::task! {
    fn shared_bytes_mappings_of_size(size: usize) -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.contains("parpool-shared"))
            .filter(|l| {
                let range = l.split_whitespace().next().unwrap();
                let (from, to) = range.split_once('-').unwrap();
                usize::from_str_radix(to, 16).unwrap() - usize::from_str_radix(from, 16).unwrap()
                    == size
            })
            .count()
    }
}
