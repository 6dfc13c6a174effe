//! `ipc` rows: process-shared locks and shared arrays against Python's.

use std::sync::Arc;

use parpool::ipc::{Lock, Pipe, Queue, SharedMap, SharedMem, SharedSlice};
use parpool::{Executor, Process, ProcessPool, ThreadPool};
use serde_bytes::ByteBuf;

use crate::process::{TimedContender, python};

parpool::task! {
    /// Sums elements `from..to` of a shared array, in place.
    fn sum_half(args: (SharedSlice<u64>, usize, usize)) -> u64 {
        let (slice, from, to) = args;
        // SAFETY: nobody writes the array while the jobs run (the bench
        // fills it once, before submitting them).
        let all = unsafe { slice.as_slice() };
        all[from..to].iter().sum()
    }
}

parpool::task! {
    /// A worker's initializer: keeps the array mapped for the worker's life.
    fn keep_array(slice: SharedSlice<u64>) -> SharedSlice<u64> {
        slice
    }
}

parpool::task! {
    /// Sums elements `from..to` of the array the worker keeps.
    fn sum_kept(range: (usize, usize)) -> u64 {
        parpool::with_worker_state(|slice: &mut SharedSlice<u64>| {
            // SAFETY: as in `sum_half`: nobody writes the array meanwhile.
            let all = unsafe { slice.as_slice() };
            all[range.0..range.1].iter().sum()
        })
        .unwrap_or(0)
    }
}

parpool::task! {
    fn produce_u64(args: (Queue<u64>, u64)) -> () {
        for i in 0..args.1 {
            args.0.send(i).expect("send");
        }
    }
}

parpool::task! {
    /// Connects to the parent's one-shot ipc-channel server (by name) and
    /// sends it `n` u64s.
    fn produce_ipc_channel(args: (String, u64)) -> () {
        let tx = ipc_channel::ipc::IpcSender::<u64>::connect(args.0).expect("connect");
        for i in 0..args.1 {
            tx.send(i).expect("send");
        }
    }
}

parpool::task! {
    fn produce_bytes(args: (Queue<ByteBuf>, u64, usize)) -> () {
        let item = ByteBuf::from(vec![1u8; args.2]);
        for _ in 0..args.1 {
            args.0.send(item.clone()).expect("send");
        }
    }
}

parpool::task! {
    fn consume_bytes(q: Queue<ByteBuf>) -> u64 {
        q.iter().count() as u64
    }
}

parpool::task! {
    /// Answers each number on `end` with itself, until the other end closes.
    fn echo_pipe(end: Pipe<u64>) {
        while let Ok(x) = end.recv() {
            end.send(x).expect("send");
        }
    }
}

parpool::task! {
    /// `pairs` get-then-set pairs on `keys` keys of a shared map.
    fn map_pairs(args: (SharedMap<u64, u64>, u64, u64, u64)) -> u64 {
        let (map, seed, pairs, keys) = args;
        let mut x = seed | 1;
        for _ in 0..pairs {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = x % keys;
            let v = map.get(&k).expect("get").unwrap_or(0);
            map.insert(k, v + 1).expect("set");
        }
        pairs
    }
}

/// `n` one-shot processes, one after another: start, run a trivial task,
/// its result back, ended.
pub(crate) fn process_start(n: u64) -> Vec<TimedContender> {
    vec![
        (
            "parpool Process (fork+exec)",
            Box::new(move || {
                for i in 0..n {
                    let p = Process::start(parpool::call!(|x: u64| x + 1), i).expect("start");
                    assert_eq!(p.join().expect("result"), i + 1);
                }
                None
            }),
        ),
        (
            "Python multiprocessing.Process (spawn), result through a Pipe",
            Box::new(move || python("mp_process_spawn", n, 1)["seconds"].as_f64()),
        ),
        (
            "Python multiprocessing.Process (fork), result through a Pipe",
            Box::new(move || python("mp_process_fork", n, 1)["seconds"].as_f64()),
        ),
    ]
}

/// `n` round trips of a u64 through a two-way pipe to a worker process.
pub(crate) fn pipe_round_trip(n: u64) -> Vec<TimedContender> {
    let pool = ProcessPool::builder().workers(1).build().expect("pool");
    vec![
        (
            "parpool ipc::Pipe",
            Box::new(move || {
                let (here, there) = Pipe::<u64>::new().expect("pipe");
                let echo = pool.submit(echo_pipe, there);
                // The worker is up and answering before the clock starts.
                here.send(0).expect("send");
                assert_eq!(here.recv().expect("recv"), 0);
                let t = std::time::Instant::now();
                for i in 0..n {
                    here.send(i).expect("send");
                    assert_eq!(here.recv().expect("recv"), i);
                }
                let took = t.elapsed().as_secs_f64();
                here.close();
                echo.join().expect("echo");
                Some(took)
            }),
        ),
        (
            "Python multiprocessing.Pipe",
            Box::new(move || python("mp_pipe_rt", n, 1)["seconds"].as_f64()),
        ),
    ]
}

/// Keys the shared-map row spreads its pairs over.
const MAP_KEYS: u64 = 1_000;

/// `n` get/set pairs on a shared map of 1,000 keys, from 4 processes.
pub(crate) fn shared_map(n: u64) -> Vec<TimedContender> {
    let pool = ProcessPool::builder().workers(4).build().expect("pool");
    // The Python peer takes tens of microseconds a pair: it runs a part of
    // the pairs, and its time is scaled to all of them.
    let python_pairs = n.min(40_000);
    let scale = n as f64 / python_pairs as f64;
    vec![
        (
            "parpool ipc::SharedMap",
            Box::new(move || {
                let map: SharedMap<u64, u64> =
                    SharedMap::with_capacity(MAP_KEYS as usize, 1 << 20).expect("map");
                let t = std::time::Instant::now();
                let jobs: Vec<_> = (0..4)
                    .map(|w| pool.submit(map_pairs, (map.clone(), w + 1, n / 4, MAP_KEYS)))
                    .collect();
                let done: u64 = jobs.into_iter().map(|j| j.join().expect("pairs")).sum();
                let took = t.elapsed().as_secs_f64();
                let total: u64 = map.entries().expect("entries").iter().map(|e| e.1).sum();
                assert_eq!(done, n / 4 * 4);
                // Each set follows its own get, but another process may set
                // the key between them: the sum counts the sets that stuck.
                assert!(total <= done);
                Some(took)
            }),
        ),
        (
            "Python Manager().dict() (time of 40k pairs, scaled to all)",
            Box::new(move || {
                python("manager_dict", python_pairs, 4)["seconds"]
                    .as_f64()
                    .map(|s| s * scale)
            }),
        ),
    ]
}

/// `n` u64 messages from one worker process to this one.
pub(crate) fn queue_1to1(n: u64) -> Vec<TimedContender> {
    let pool = ProcessPool::builder().workers(1).build().expect("pool");
    let peer_pool = ProcessPool::builder().workers(1).build().expect("pool");
    vec![
        (
            "parpool ipc::Queue",
            Box::new(move || {
                let q: Queue<u64> = Queue::new().expect("queue");
                let producer = pool.submit(produce_u64, (q.clone(), n));
                for i in 0..n {
                    assert_eq!(q.recv().expect("recv"), i);
                }
                producer.join().expect("producer");
                None
            }),
        ),
        (
            "Python multiprocessing.Queue",
            Box::new(move || python("mpq_1to1", n, 1)["seconds"].as_f64()),
        ),
        (
            "ipc-channel",
            Box::new(move || {
                let (server, name) =
                    ipc_channel::ipc::IpcOneShotServer::<u64>::new().expect("server");
                let producer = peer_pool.submit(produce_ipc_channel, (name, n));
                let (rx, first) = server.accept().expect("accept");
                assert_eq!(first, 0);
                for i in 1..n {
                    assert_eq!(rx.recv().expect("recv"), i);
                }
                producer.join().expect("producer");
                None
            }),
        ),
    ]
}

/// `n` 64-byte messages from 4 producer processes to 4 consumer processes.
pub(crate) fn queue_4x4(n: u64) -> Vec<TimedContender> {
    let pool = ProcessPool::builder().workers(8).build().expect("pool");
    vec![
        (
            "parpool ipc::Queue",
            Box::new(move || {
                let q: Queue<ByteBuf> = Queue::new().expect("queue");
                let consumers: Vec<_> = (0..4)
                    .map(|_| pool.submit(consume_bytes, q.clone()))
                    .collect();
                let producers: Vec<_> = (0..4)
                    .map(|_| pool.submit(produce_bytes, (q.clone(), n / 4, 64)))
                    .collect();
                for p in producers {
                    p.join().expect("producer");
                }
                q.close();
                let total: u64 = consumers
                    .into_iter()
                    .map(|c| c.join().expect("consumer"))
                    .sum();
                assert_eq!(total, n / 4 * 4);
                None
            }),
        ),
        (
            "Python multiprocessing.Queue",
            Box::new(move || python("mpq_4x4", n, 8)["seconds"].as_f64()),
        ),
    ]
}

/// `n` 1 MiB messages from one worker process to this one.
pub(crate) fn queue_1mib(n: u64) -> Vec<TimedContender> {
    let pool = ProcessPool::builder().workers(1).build().expect("pool");
    vec![
        (
            "parpool ipc::Queue",
            Box::new(move || {
                let q: Queue<ByteBuf> = Queue::with_capacity(8 << 20, None).expect("queue");
                let producer = pool.submit(produce_bytes, (q.clone(), n, 1 << 20));
                for _ in 0..n {
                    assert_eq!(q.recv().expect("recv").len(), 1 << 20);
                }
                producer.join().expect("producer");
                None
            }),
        ),
        (
            "Python multiprocessing.Queue",
            Box::new(move || python("mpq_1mib", n, 1)["seconds"].as_f64()),
        ),
    ]
}

/// `n` uncontended lock/unlock pairs.
pub(crate) fn lock(n: u64) -> Vec<TimedContender> {
    let lock = Lock::new(()).expect("lock");
    let local = std::sync::Mutex::new(());
    vec![
        (
            "parpool ipc::Lock",
            Box::new(move || {
                for _ in 0..n {
                    drop(lock.lock().expect("uncontended"));
                }
                None
            }),
        ),
        (
            "std::sync::Mutex (one process only)",
            Box::new(move || {
                for _ in 0..n {
                    drop(std::hint::black_box(local.lock()));
                }
                None
            }),
        ),
        (
            "Python multiprocessing.Lock",
            Box::new(move || python("mp_lock", n, 1)["seconds"].as_f64()),
        ),
    ]
}

/// Untimed rounds of the process pool's array sums before measuring.
const WARM_UP_ROUNDS: usize = 6;

/// `bytes` of u64 ones, summed by two workers, half each. `kept`: each
/// worker received the array once (its initializer) and keeps it mapped;
/// otherwise every job carries it (and the worker maps it once, then
/// keeps it while the parent holds it).
///
/// The thread pool sums both the same shared memory and a `Vec`: on the
/// virtual machines measured here, the memory a process touches first is
/// often 20–30% slower to read than memory touched later (whichever of
/// the two was allocated first), so only the same memory compares the
/// pools and not the luck of placement.
pub(crate) fn sum_halves(bytes: u64, kept: bool) -> Vec<TimedContender> {
    let n = (bytes / 8) as usize;
    let mem = SharedMem::new(n * 8).expect("shared memory");
    let slice: SharedSlice<u64> = mem.slice();
    let same = slice.clone();
    // SAFETY: just created; no other handle exists yet.
    unsafe { slice.as_mut_slice() }
        .expect("a new handle is writable")
        .fill(1);
    let tp = ThreadPool::builder().workers(2).build().expect("pool");
    let vec: Arc<Vec<u64>> = Arc::new(vec![1; n]);
    let mut ours: TimedContender = if kept {
        let pool = ProcessPool::builder()
            .workers(2)
            .initializer(keep_array, slice)
            .build()
            .expect("pool");
        (
            "parpool ProcessPool, SharedSlice kept by each worker",
            Box::new(move || {
                let a = pool.submit(sum_kept, (0, n / 2));
                let b = pool.submit(sum_kept, (n / 2, n));
                let total = a.join().expect("sum") + b.join().expect("sum");
                assert_eq!(total, n as u64);
                None
            }),
        )
    } else {
        let pool = ProcessPool::builder().workers(2).build().expect("pool");
        (
            "parpool ProcessPool, SharedSlice in each job",
            Box::new(move || {
                let a = pool.submit(sum_half, (slice.clone(), 0, n / 2));
                let b = pool.submit(sum_half, (slice.clone(), n / 2, n));
                let total = a.join().expect("sum") + b.join().expect("sum");
                assert_eq!(total, n as u64);
                None
            }),
        )
    };
    // A worker maps the array once, but fills its page table only for the
    // half it sums, and which half a worker gets changes from job to job.
    // Warm up until every worker most likely summed both halves, as the
    // `Vec` the thread pool sums was filled in this process.
    for _ in 0..WARM_UP_ROUNDS {
        (ours.1)();
    }
    let tp_same = ThreadPool::builder().workers(2).build().expect("pool");
    let mut contenders = vec![
        ours,
        (
            "parpool ThreadPool, the same memory in process",
            Box::new(move || {
                let (s1, s2) = (same.clone(), same.clone());
                // SAFETY: as in `sum_half`: nobody writes the array meanwhile.
                let a =
                    tp_same.spawn(move || unsafe { s1.as_slice() }[..n / 2].iter().sum::<u64>());
                // SAFETY: as above.
                let b =
                    tp_same.spawn(move || unsafe { s2.as_slice() }[n / 2..].iter().sum::<u64>());
                let total = a.join().expect("sum") + b.join().expect("sum");
                assert_eq!(total, n as u64);
                None
            }),
        ),
        (
            "parpool ThreadPool, one Vec in process",
            Box::new(move || {
                let (v1, v2) = (vec.clone(), vec.clone());
                let a = tp.spawn(move || v1[..n / 2].iter().sum::<u64>());
                let b = tp.spawn(move || v2[n / 2..].iter().sum::<u64>());
                let total = a.join().expect("sum") + b.join().expect("sum");
                assert_eq!(total, n as u64);
                None
            }),
        ),
    ];
    if !kept {
        contenders.push((
            "Python ProcessPoolExecutor (pickled halves)",
            Box::new(move || python("ppe_sum_halves", bytes, 2)["seconds"].as_f64()),
        ));
    }
    contenders
}
