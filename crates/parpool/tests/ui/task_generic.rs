// A task cannot be generic or borrow.
parpool::task! {
    fn first<'a>(s: &'a str) -> usize { s.len() }
}

fn main() {}
