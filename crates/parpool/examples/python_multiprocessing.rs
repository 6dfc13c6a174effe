//! Python's `multiprocessing`, written with parpool: processes, pools,
//! queues, pipes, locks, shared values and dictionaries, as the tutorials
//! show them, each with its Python beside it.
//!
//! ```sh
//! cargo run --release --example python_multiprocessing
//! ```

use parpool::ipc::{Barrier, Lock, Mutex, Pipe, Queue, RLock, SharedMap};
use parpool::prelude::*;

parpool::task! {
    /// def worker(num): print(f"worker {num} in {os.getpid()}")
    fn worker(num: u32) -> u32 {
        println!("worker {num} in process {}", std::process::id());
        std::process::id()
    }
}

parpool::task! {
    /// def produce(q, n): for i in range(n): q.put(i * i)
    fn produce(q: Queue<u64>, n: u64) {
        for i in 0..n {
            q.send(i * i).unwrap();
        }
    }
}

parpool::task! {
    /// def add(counter, lock): with lock: counter.value += 1
    fn add(counter: Mutex<u64>, times: u32) {
        for _ in 0..times {
            // A holder that died would have left the count unknown: say so.
            *counter.lock_or_repair(|c| eprintln!("a holder died at {c}")).unwrap() += 1;
        }
    }
}

parpool::task! {
    /// def pong(conn): while (x := conn.recv()) is not None: conn.send(x + 1)
    fn pong(end: Pipe<u64>) {
        while let Ok(x) = end.recv() {
            end.send(x + 1).unwrap();
        }
    }
}

parpool::task! {
    /// def tally(d, word): d[word] = d.get(word, 0) + 1 (atomic here)
    fn tally(counts: SharedMap<String, u32>, text: String) {
        for word in text.split_whitespace() {
            counts.update(word, |n| Some(n.unwrap_or(0) + 1)).unwrap();
        }
    }
}

parpool::task! {
    /// Two parties meet at a barrier; one of them is told it is the leader.
    fn meet(barrier: Barrier) -> bool {
        barrier.party().unwrap().wait().unwrap()
    }
}

parpool::task! {
    /// An RLock taken twice by the same code path, as with nested `with`.
    fn nested(lock: RLock) -> usize {
        let _outer = lock.lock().unwrap();
        let _inner = lock.lock().unwrap();
        lock.depth()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // procs = [Process(target=worker, args=(i,)) for i in range(5)]
    // for p in procs: p.start()
    // for p in procs: p.join()
    let procs: Vec<Process<u32>> = (0..5)
        .map(|i| Process::start(worker, i))
        .collect::<Result<_, _>>()?;
    let mut pids = Vec::new();
    for p in procs {
        pids.push(p.join()?);
    }
    pids.sort_unstable();
    pids.dedup();
    println!("five processes, {} pids", pids.len());

    // with Pool(4) as pool: print(pool.map(f, range(10)))
    let pool = ProcessPool::builder().workers(4).build()?;
    let cubes: Vec<u64> = pool
        .map_task(call!(|x: u64| x * x * x), 0..10)
        .collect::<Result<_, _>>()?;
    println!("Pool.map: {cubes:?}");

    // q = Queue(); Process(target=produce, args=(q, 5)).start(); q.get() ...
    let q: Queue<u64> = Queue::new()?;
    let producer = Process::start(produce, (q.clone(), 5))?;
    let got: Vec<u64> = (0..5).map(|_| q.recv()).collect::<Result<_, _>>()?;
    producer.join()?;
    println!("from a Queue: {got:?}");

    // parent, child = Pipe()
    let (parent, child) = Pipe::<u64>::new()?;
    let ponger = Process::start(pong, child)?;
    parent.send(41)?;
    println!("through a Pipe: {}", parent.recv()?);
    parent.close();
    ponger.join()?;

    // counter = Value('i', 0); lock = Lock()  (one robust Mutex here)
    let counter = Mutex::new(0u64)?;
    let jobs: Vec<_> = (0..4)
        .map(|_| pool.submit(add, (counter.clone(), 1_000)))
        .collect();
    for job in jobs {
        job.join()?;
    }
    println!("a shared counter: {}", *counter.lock()?);
    let plain = Lock::new(())?;
    drop(plain.lock_or_repair(|()| {})?);

    // with Manager() as m: d = m.dict(); pool.starmap(tally, ...)
    let counts: SharedMap<String, u32> = SharedMap::new()?;
    let texts = ["the cat", "the dog", "the end"];
    let jobs: Vec<_> = texts
        .iter()
        .map(|t| pool.submit(tally, (counts.clone(), t.to_string())))
        .collect();
    for job in jobs {
        job.join()?;
    }
    let mut entries = counts.entries()?;
    entries.sort();
    println!("a shared dict: {entries:?}");

    // b = Barrier(2)
    let barrier = Barrier::new(2)?;
    let a = pool.submit(meet, barrier.clone());
    let b = pool.submit(meet, barrier.clone());
    let leaders = [a.join()?, b.join()?].iter().filter(|&&l| l).count();
    println!("a barrier across processes: both passed, {leaders} leader");

    // RLock
    println!(
        "an RLock held twice: depth {}",
        pool.submit(nested, RLock::new()?).join()?
    );
    Ok(())
}
