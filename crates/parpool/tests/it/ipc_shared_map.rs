//! `SharedMap` and `SharedList` across processes: every call atomic, and a
//! process killed at any moment — mid-insert, mid-compaction — leaves a
//! whole map that the next caller repairs by itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parpool::ipc::{SharedList, SharedMap};
use parpool::{Executor, JobError, ProcessPool, WorkerOutput};

parpool::task!(
    /// Job `id` walks `steps`: inserts `(id, j)` and removes `(id, j - 2)`,
    /// so at any moment its keys are two or three consecutive steps.
    fn walk(map: SharedMap<(u32, u32), u32>, id: u32, steps: u32) {
        for j in 0..steps {
            map.insert((id, j), j).unwrap();
            if j >= 2 {
                map.remove(&(id, j - 2)).unwrap();
            }
        }
    }
);
parpool::task!(
    fn count_up(map: SharedMap<String, u64>, times: u64) {
        for _ in 0..times {
            map.update("n", |n| Some(n.unwrap_or(0) + 1)).unwrap();
        }
    }
);
parpool::task!(
    fn push_all(list: SharedList<u64>, from: u64, count: u64) {
        for i in from..from + count {
            list.push(i).unwrap();
        }
    }
);

#[test]
fn updates_from_many_processes_are_atomic() {
    let map: SharedMap<String, u64> = SharedMap::new().unwrap();
    let pool = ProcessPool::builder().workers(4).build().unwrap();
    let jobs: Vec<_> = (0..8)
        .map(|_| pool.submit(count_up, (map.clone(), 500)))
        .collect();
    for job in jobs {
        job.join().unwrap();
    }
    assert_eq!(map.get("n").unwrap(), Some(4_000));
    let list: SharedList<u64> = SharedList::with_capacity(2_000, 64 << 10).unwrap();
    let jobs: Vec<_> = (0..4)
        .map(|k| pool.submit(push_all, (list.clone(), k * 250, 250)))
        .collect();
    for job in jobs {
        job.join().unwrap();
    }
    let mut items = list.to_vec().unwrap();
    items.sort_unstable();
    assert_eq!(items, (0..1_000).collect::<Vec<_>>());
}

#[test]
fn workers_killed_at_random_leave_a_whole_map() {
    // A small log: compactions are frequent, so kills land inside them too.
    let map: SharedMap<(u32, u32), u32> = SharedMap::with_capacity(512, 4 << 10).unwrap();
    let pool = ProcessPool::builder()
        .workers(2)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut kills, mut crashed, mut whole) = (0, 0, 0);
    let mut id = 0u32;
    while Instant::now() < deadline {
        let jobs: Vec<_> = (0..4)
            .map(|_| {
                id += 1;
                (id, pool.submit(walk, (map.clone(), id, 2_000)))
            })
            .collect();
        std::thread::sleep(Duration::from_micros(next() % 20_000));
        for pid in pool.worker_pids() {
            if next() % 2 == 0 {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid as i32).unwrap(),
                    rustix::process::Signal::KILL,
                );
                kills += 1;
            }
        }
        for (_, job) in jobs {
            match job.join_timeout(Duration::from_secs(60)) {
                Ok(Ok(())) => whole += 1,
                Ok(Err(JobError::Crashed { .. })) => crashed += 1,
                other => panic!(
                    "a job neither finished nor crashed: {:?}",
                    other.map_err(|_| "hung")
                ),
            }
        }
        // Whatever was killed where, the map reads whole: each walk's keys
        // are consecutive steps, two or three of them, each its own value.
        let mut walks: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for ((job, step), value) in map.entries().expect("the map reads back whole") {
            assert_eq!(step, value);
            walks.entry(job).or_default().push(step);
        }
        for (job, mut steps) in walks {
            steps.sort_unstable();
            let first = steps[0];
            assert!(
                steps.len() <= 3
                    && steps
                        .iter()
                        .enumerate()
                        .all(|(i, &s)| s == first + i as u32),
                "walk {job} left steps {steps:?}"
            );
        }
        assert_eq!(map.len().unwrap(), map.entries().unwrap().len());
        map.clear().unwrap();
    }
    assert!(
        kills > 0 && crashed > 0,
        "the test killed nothing: {kills} kills"
    );
    eprintln!("{kills} kills, {crashed} jobs crashed, {whole} finished");
}
