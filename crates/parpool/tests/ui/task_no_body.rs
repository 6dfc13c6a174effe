// A task needs a body.
parpool::task! {
    fn double(x: u64) -> u64;
}

fn main() {}
