//! Scoped jobs: closures that borrow from the caller's stack.
//!
//! The queue holds `'static` jobs, so a scoped closure's lifetime is erased
//! when it is queued. That is sound because [`run`] does not return — not
//! even by unwinding — before every closure spawned in the scope has been
//! consumed or dropped: each closure owns a [`Live`] token, and the scope
//! waits for the count of live tokens to reach zero.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Condvar, Mutex};

use super::ThreadPool;
use super::worker::ClosureJob;
use crate::handle::JobHandle;

/// A scope in which jobs may borrow data that outlives the scope.
/// Created by [`ThreadPool::scope`].
pub struct Scope<'scope, 'env: 'scope> {
    pool: &'scope ThreadPool,
    live: Arc<LiveCount>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("pool", &self.pool.name())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct LiveCount {
    count: Mutex<usize>,
    zero: Condvar,
}

/// Held by each scoped closure; the scope cannot end while one exists.
struct Live(Arc<LiveCount>);

impl Live {
    fn new(count: &Arc<LiveCount>) -> Self {
        *crate::sync::lock(&count.count) += 1;
        Live(count.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut n = crate::sync::lock(&self.0.count);
        *n -= 1;
        if *n == 0 {
            self.0.zero.notify_all();
        }
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Runs `f` on the pool; `f` may borrow anything that outlives the
    /// scope. Its panic, if any, surfaces in the returned handle.
    pub fn spawn<F, R>(&'scope self, f: F) -> JobHandle<R>
    where
        F: FnOnce() -> R + Send + 'scope,
        R: Send + 'static,
    {
        let shared = self.pool.shared();
        let Ok(admitted) = shared.admit(true) else {
            return JobHandle::ready(shared.next_id(), Err(crate::JobError::Shutdown));
        };
        let live = Live::new(&self.live);
        let f: Box<dyn FnOnce() -> R + Send + 'scope> = Box::new(move || {
            let _live = live;
            f()
        });
        // SAFETY: only the lifetime changes (same vtable and layout). The
        // closure borrows data living at least as long as `'scope`; `run`
        // below waits for its `Live` token, which the closure holds until it
        // has been run to the end or dropped unrun, before `'scope` can end —
        // also when the body panics, because `run` catches the panic and
        // waits first. Every queued job is dequeued by a worker (or by
        // `shutdown_now`) before the pool's threads exit, and dequeuing takes
        // the closure out of the job, so a handle kept alive past the scope
        // holds no closure.
        let f: Box<dyn FnOnce() -> R + Send + 'static> = unsafe {
            std::mem::transmute::<
                Box<dyn FnOnce() -> R + Send + 'scope>,
                Box<dyn FnOnce() -> R + Send + 'static>,
            >(f)
        };
        let job = Arc::new(ClosureJob::new(shared.new_job(), f, None));
        admitted.push(job.clone());
        JobHandle::from_cell(job)
    }
}

pub(super) fn run<'env, F, T>(pool: &ThreadPool, body: F) -> T
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
{
    let scope = Scope {
        pool,
        live: Arc::default(),
        _scope: PhantomData,
        _env: PhantomData,
    };
    let result = catch_unwind(AssertUnwindSafe(|| body(&scope)));
    wait_all(&scope);
    match result {
        Ok(v) => v,
        Err(payload) => resume_unwind(payload),
    }
}

fn wait_all(scope: &Scope<'_, '_>) {
    let live = &scope.live;
    let is_zero = || *crate::sync::lock(&live.count) == 0;
    super::help_until(scope.pool.shared().id, &is_zero);
    let mut n = crate::sync::lock(&live.count);
    while *n > 0 {
        n = crate::sync::wait(&live.zero, n);
    }
}
