// A closure given to `call!` may run in another process, which does not
// have the caller's variables.
use parpool::{Executor, ThreadPool, call};

fn main() {
    let pool = ThreadPool::builder().workers(1).build().unwrap();
    let factor = 3u64;
    let _ = pool.submit(call!(|x: u64| x * factor), 14);
}
