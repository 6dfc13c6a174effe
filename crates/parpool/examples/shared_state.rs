//! Jobs in worker processes sharing a queue and a robust counter.
//!
//! `cargo run --release --example shared_state`

use parpool::ipc::{Mutex, Queue};
use parpool::{Executor, ProcessPool};

parpool::task! {
    fn work(args: (Queue<String>, Mutex<u64>)) -> () {
        let (results, done) = args;
        results.send(format!("hello from worker {}", std::process::id())).unwrap();
        // A holder that died would give the next locker `OwnerDied`.
        *done.lock().unwrap() += 1;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    parpool::init();
    let (results, done) = (Queue::new()?, Mutex::new(0u64)?);
    let pool = ProcessPool::builder().workers(4).build()?;
    let jobs: Vec<_> = (0..8)
        .map(|_| pool.submit(work, (results.clone(), done.clone())))
        .collect();
    for job in jobs {
        job.join()?;
    }
    results.close();
    for line in results.iter() {
        println!("{line}");
    }
    let n = *done.lock().expect("no holder died");
    println!("{n} jobs counted under the shared lock");
    assert_eq!(n, 8);
    Ok(())
}
