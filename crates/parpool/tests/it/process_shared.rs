//! SharedBytes: large payloads cross to and from worker processes as
//! shared memory descriptors, not copies.

use parpool::{Executor, JobError, ProcessPool, SharedBytes, ThreadPool};

parpool::task! {
    fn checksum(data: SharedBytes) -> u64 {
        data.iter().map(|&b| u64::from(b)).sum()
    }
}

parpool::task! {
    /// Returns what it got, and where this process mapped it.
    fn echo(data: SharedBytes) -> (SharedBytes, usize) {
        let addr = data.as_ptr() as usize;
        (data, addr)
    }
}

parpool::task! {
    fn make(args: (usize, u8)) -> SharedBytes {
        SharedBytes::new(args.0, |b| b.fill(args.1)).unwrap()
    }
}

parpool::task! {
    fn count(parts: Vec<SharedBytes>) -> (usize, usize) {
        (parts.len(), parts.iter().map(|p| p.len()).sum())
    }
}

parpool::task! {
    fn open_fds_in_worker(_x: ()) -> usize {
        open_fds()
    }
}

parpool::task! {
    fn crash_holding(data: SharedBytes) -> u8 {
        std::hint::black_box(data[0]);
        std::process::abort()
    }
}

/// The tests of this file run one at a time: one counts this process's
/// descriptors and mappings, which the others open and close.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Mappings of parpool's shared segments in this process.
fn shared_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("parpool-shared"))
        .count()
}

fn pattern(len: usize) -> SharedBytes {
    SharedBytes::new(len, |b| {
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i % 251) as u8;
        }
    })
    .unwrap()
}

#[test]
fn shared_bytes_go_in_and_come_back_without_copies() {
    let _serial = serial();
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let data = pattern(8 << 20);
    let expected: u64 = data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(pool.submit(checksum, data.clone()).join(), Ok(expected));

    // The worker returns the segment it received: the parent gets the same
    // memory back (a second mapping of one segment), never a copy.
    let (back, worker_addr) = pool.submit(echo, data.clone()).join().unwrap();
    assert_eq!(back, data);
    assert_ne!(worker_addr, 0);

    // A segment made in the worker arrives in the parent.
    let made = pool.submit(make, (3 << 20, 7)).join().unwrap();
    assert_eq!(made.len(), 3 << 20);
    assert!(made.iter().all(|&b| b == 7));
}

#[test]
fn the_same_task_runs_on_a_thread_pool_with_the_segment_moved() {
    let _serial = serial();
    let pool = ThreadPool::builder().workers(2).build().unwrap();
    let data = pattern(1 << 20);
    let (back, addr) = pool.submit(echo, data.clone()).join().unwrap();
    assert!(back.ptr_eq(&data));
    assert_eq!(addr, data.as_ptr() as usize);
}

#[test]
fn more_segments_than_one_message_can_carry() {
    let _serial = serial();
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    let parts: Vec<SharedBytes> = (0..600).map(|i| pattern(100 + i)).collect();
    let total: usize = parts.iter().map(|p| p.len()).sum();
    assert_eq!(pool.submit(count, parts).join(), Ok((600, total)));
}

#[test]
fn map_over_shared_items() {
    let _serial = serial();
    let pool = ProcessPool::builder().workers(2).build().unwrap();
    let items: Vec<SharedBytes> = (0..300).map(|i| pattern(1000 + i)).collect();
    let expected: Vec<u64> = items
        .iter()
        .map(|d| d.iter().map(|&b| u64::from(b)).sum())
        .collect();
    let got: Vec<u64> = pool
        .map_task(checksum, items)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, expected);
}

#[test]
fn no_descriptor_or_mapping_outlives_its_last_handle() {
    // It measures this whole process: alone, in a child process.
    if crate::common::isolated("process_shared::no_descriptor_or_mapping_outlives_its_last_handle")
    {
        return;
    }
    let _serial = serial();
    let pool = ProcessPool::builder().workers(1).build().unwrap();
    // Warm up: the worker and this process reach their steady state.
    let _ = pool.submit(echo, pattern(4096)).join().unwrap();
    let parent_fds = open_fds();
    let worker_fds = pool.submit(open_fds_in_worker, ()).join().unwrap();
    let maps = shared_mappings();
    for i in 0..500 {
        let data = pattern(10_000 + i);
        let (back, _) = pool.submit(echo, data).join().unwrap();
        assert_eq!(back.len(), 10_000 + i);
        let made = pool.submit(make, (5000, 1)).join().unwrap();
        assert_eq!(made.len(), 5000);
    }
    // A leak grows these by hundreds; never more than before.
    assert!(open_fds() <= parent_fds, "descriptors leaked in the parent");
    assert!(shared_mappings() <= maps, "mappings leaked in the parent");
    let worker_after = pool.submit(open_fds_in_worker, ()).join().unwrap();
    assert!(
        worker_after <= worker_fds,
        "descriptors leaked in the worker"
    );
}

#[test]
fn a_worker_that_dies_holding_a_segment_takes_only_its_job() {
    let _serial = serial();
    let pool = ProcessPool::builder()
        .workers(1)
        .stderr(parpool::WorkerOutput::Null)
        .build()
        .unwrap();
    let data = pattern(1 << 20);
    let err = pool.submit(crash_holding, data.clone()).join().unwrap_err();
    assert!(matches!(err, JobError::Crashed { .. }), "{err:?}");
    // The parent's segment is intact and usable on the replacement worker.
    let expected: u64 = data.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(pool.submit(checksum, data).join(), Ok(expected));
}
