//! Sleeping on a futex word in shared memory until a condition holds: how
//! an `Event` and a `Queue`'s `join` wait.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

use crate::sys;

/// Waits on `word` until `ready` says so or `deadline` passes; `false` on
/// timeout. Inlined, as it was when it shared a file with `Event`.
#[inline]
pub(crate) fn wait_on(
    word: &AtomicU32,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> Option<u32>,
) -> bool {
    loop {
        // `ready` returns the value to sleep on while not ready.
        let Some(seen) = ready() else {
            return true;
        };
        let timeout = match deadline {
            None => None,
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return false,
            },
        };
        sys::futex_wait(word, seen, timeout);
    }
}
