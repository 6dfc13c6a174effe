//! Where a pool is in its life: open, draining (finishing what it has) or
//! cancelling (dropping what it has not started). Both pools use it; a
//! pool only moves forward through it.

/// A pool's shutdown state, in the order it goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Lifecycle {
    /// Taking jobs.
    Open = 0,
    /// Refusing new jobs, running the queued ones.
    Draining = 1,
    /// Refusing new jobs, dropping the queued ones.
    Cancelling = 2,
}

impl Lifecycle {
    /// The state stored as `byte` (see `as u8`); anything past the last is
    /// the last.
    pub(crate) fn from_u8(byte: u8) -> Lifecycle {
        match byte {
            0 => Lifecycle::Open,
            1 => Lifecycle::Draining,
            _ => Lifecycle::Cancelling,
        }
    }
}

/// Runs `join` (a pool's joining of its workers) on a thread of its own,
/// and resolves once it has returned: an awaitable shutdown that blocks no
/// runtime thread. (If no thread can be started, `join` runs when the
/// future is first polled, blocking that one poll rather than lying.)
pub(crate) fn joined_async(
    join: impl FnOnce() + Send + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    use std::sync::{Arc, Mutex};

    let cell = Arc::new(crate::handle::JobState::<()>::new(crate::job::JobId(0), 0));
    let handle = crate::handle::JobHandle::from_cell(cell.clone());
    let join = Arc::new(Mutex::new(Some(join)));
    let run = {
        let join = join.clone();
        move || {
            if let Some(join) = crate::sync::lock(&*join).take() {
                join();
            }
            cell.resolve(Ok(()));
        }
    };
    let fallback = std::thread::Builder::new()
        .name("parpool-shutdown".into())
        .spawn(run.clone())
        .is_err()
        .then_some(run);
    async move {
        if let Some(run) = fallback {
            run();
        }
        let _ = handle.await;
    }
}
