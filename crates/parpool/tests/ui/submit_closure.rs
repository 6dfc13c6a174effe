// `submit` takes a task; a bare closure is not one.
use parpool::Executor;

fn main() {
    let pool = parpool::ThreadPool::builder().workers(1).build().unwrap();
    let _ = pool.submit(|x: u64| x * 2, 21);
}
