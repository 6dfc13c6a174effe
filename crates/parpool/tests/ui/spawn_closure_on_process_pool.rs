// A process pool runs tasks, found by name, not closures.
fn main() {
    let pool = parpool::ProcessPool::builder().workers(1).build().unwrap();
    let _ = pool.spawn(|| std::process::id());
}
