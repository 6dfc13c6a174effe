//! Scoped jobs: closures that borrow from the caller's stack.
//!
//! The queue holds `'static` jobs, so a scoped closure's lifetime is erased
//! when it is queued. That is sound because [`run`] does not return — not
//! even by unwinding — before every closure spawned in the scope has been
//! consumed or dropped: each closure owns a [`Live`] token, and the scope
//! waits for the count of live tokens to reach zero.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use super::ThreadPool;
use super::worker::ClosureJob;
use crate::error::JobError;
use crate::handle::JobHandle;
use crate::job::JobId;

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
    /// scope, and so may its result, as with `std::thread::scope`. Its
    /// panic, if any, surfaces in the returned handle.
    pub fn spawn<F, R>(&'scope self, f: F) -> ScopedHandle<'scope, R>
    where
        F: FnOnce() -> R + Send + 'scope,
        R: Send + 'scope,
    {
        let slot: Arc<Slot> = Arc::default();
        let to_fill = slot.clone();
        let job = self.spawn_unit(move || {
            let value = f();
            *crate::sync::lock(&*to_fill) = Some(Erased::new(value));
        });
        ScopedHandle {
            job,
            slot,
            _result: PhantomData,
        }
    }

    /// Runs `f` over `inputs` on the pool, a chunk of items per job, and
    /// yields the results in input order, each item's panic as its own
    /// [`JobError`]. The function and the items may borrow from outside
    /// the scope. Unlike [`ThreadPool::map`], every chunk is sent at once
    /// (the inputs are collected first); for data already in a slice,
    /// [`ThreadPool::par`] is faster still.
    ///
    /// ```
    /// use parpool::ThreadPool;
    ///
    /// let pool = ThreadPool::builder().workers(2).build()?;
    /// let names = vec!["ada".to_string(), "grace".into(), "".into()];
    /// let prefix = String::from("dr. ");
    /// let titled: Vec<_> = pool.scope(|s| {
    ///     s.map(|n: &String| {
    ///         assert!(!n.is_empty(), "no name");
    ///         format!("{prefix}{n}")
    ///     }, &names).collect()
    /// });
    /// assert_eq!(titled[1].as_deref(), Ok("dr. grace"));
    /// assert_eq!(titled[2].as_ref().unwrap_err().panic_message(), Some("no name"));
    /// # Ok::<(), parpool::BuildError>(())
    /// ```
    pub fn map<F, I, R>(&'scope self, f: F, inputs: I) -> ScopedMap<'scope, R>
    where
        F: Fn(I::Item) -> R + Send + Sync + 'scope,
        I: IntoIterator,
        I::Item: Send + 'scope,
        R: Send + 'scope,
    {
        let items: Vec<I::Item> = inputs.into_iter().collect();
        let len = items.len();
        let chunks = self.pool.workers().saturating_mul(4).clamp(1, len.max(1));
        let size = len.div_ceil(chunks).max(1);
        let f = Arc::new(f);
        let mut pending = VecDeque::with_capacity(chunks);
        let mut items = items.into_iter();
        loop {
            let chunk: Vec<I::Item> = items.by_ref().take(size).collect();
            if chunk.is_empty() {
                break;
            }
            let f = f.clone();
            let n = chunk.len();
            pending.push_back((
                n,
                self.spawn(move || {
                    let out = crate::map::run_chunk(
                        crate::map::ChunkIn {
                            inputs: chunk,
                            out: Vec::new(),
                        },
                        |x| f(x),
                    );
                    let mut errors = out.errors.into_iter().peekable();
                    let mut values = out.values.into_iter();
                    let total = values.len() + errors.len();
                    (0..total)
                        .map(|i| match errors.next_if(|(at, _)| *at == i) {
                            Some((_, e)) => Err(e),
                            None => values.next().ok_or(JobError::Cancelled),
                        })
                        .collect::<Vec<_>>()
                }),
            ));
        }
        ScopedMap {
            pending,
            current: VecDeque::new(),
            left: len,
        }
    }

    /// Queues `f`, whose result is `()`: the one kind of job a scope runs.
    fn spawn_unit<F>(&'scope self, f: F) -> JobHandle<()>
    where
        F: FnOnce() + Send + 'scope,
    {
        let shared = self.pool.shared();
        let Ok(admitted) = shared.admit(true) else {
            return shared.refused(JobError::Shutdown);
        };
        // One capture, whose fields drop in order: the closure (and all it
        // borrows) before the `Live` token, whether it runs or not.
        let guarded = WithLive {
            f: Some(f),
            _live: Live::new(&self.live),
        };
        let f: Box<dyn FnOnce() + Send + 'scope> = Box::new(move || {
            let mut guarded = guarded;
            if let Some(f) = guarded.f.take() {
                f();
            }
        });
        // SAFETY: only the lifetime changes (same vtable and layout). The
        // closure borrows data living at least as long as `'scope`; `run`
        // below waits for its `Live` token, which the closure holds until it
        // has been run to the end or dropped unrun, before `'scope` can end —
        // also when the body panics, because `run` catches the panic and
        // waits first. Every queued job is dequeued by a worker (or by
        // `shutdown_now`) before the pool's threads exit, and dequeuing takes
        // the closure out of the job, so a handle kept alive past the scope
        // holds no closure. The closure's result is `()`; what it computes
        // goes to a `Slot` (see `ScopedHandle`).
        let f: Box<dyn FnOnce() + Send + 'static> = unsafe {
            std::mem::transmute::<
                Box<dyn FnOnce() + Send + 'scope>,
                Box<dyn FnOnce() + Send + 'static>,
            >(f)
        };
        let job = Arc::new(ClosureJob::new(shared.new_job(), f, None));
        admitted.push(job.clone());
        JobHandle::from_cell(job)
    }
}

/// A scoped closure and the token that keeps its scope open. Fields drop
/// in declaration order, so the closure is gone before the token.
struct WithLive<F> {
    f: Option<F>,
    _live: Live,
}

/// Ties a handle to its scope and its result type (covariant, and `Send`
/// and `Sync` whatever `R` is: the value itself lives in the slot).
type Marker<'scope, R> = PhantomData<(&'scope (), fn() -> R)>;

/// A chunk of `Scope::map`: its length, and the job mapping it.
type Chunk<'scope, R> = (usize, ScopedHandle<'scope, Vec<Result<R, JobError>>>);

/// Where a scoped job leaves its result for its handle.
type Slot = Mutex<Option<Erased>>;

/// A value of a type that may borrow from the scope, boxed behind a
/// pointer whose type says nothing of lifetimes. It is dropped where its
/// last owner drops it: the job (inside the scope: the job's `Live` token
/// outlives it) or the [`ScopedHandle`] (which cannot outlive the scope).
/// A handle that is leaked leaks the value, never drops it late.
struct Erased {
    ptr: *mut (),
    drop: unsafe fn(*mut ()),
}

// SAFETY: made only from `R: Send` values (`ScopedHandle`'s bound), and
// read back as that `R` only.
unsafe impl Send for Erased {}

impl Erased {
    fn new<R: Send>(value: R) -> Self {
        /// # Safety
        /// `ptr` must come from `Box::<R>::into_raw`, and be dropped once.
        unsafe fn drop_box<R>(ptr: *mut ()) {
            // SAFETY: the caller's contract.
            drop(unsafe { Box::from_raw(ptr.cast::<R>()) });
        }
        Erased {
            ptr: Box::into_raw(Box::new(value)).cast(),
            drop: drop_box::<R>,
        }
    }

    /// # Safety
    /// `R` must be the type the value was made from.
    unsafe fn take<R>(self) -> R {
        let ptr = self.ptr;
        std::mem::forget(self);
        // SAFETY: `ptr` came from `Box::<R>::into_raw` (the caller's
        // contract), and `forget` keeps `Drop` from freeing it too.
        *unsafe { Box::from_raw(ptr.cast::<R>()) }
    }
}

impl Drop for Erased {
    fn drop(&mut self) {
        // SAFETY: `drop` was made for this pointer's type, and runs once
        // (`take` forgets the value instead).
        unsafe { (self.drop)(self.ptr) }
    }
}

/// A handle to a job spawned in a [`Scope`], whose result may borrow from
/// outside the scope; like `std::thread::ScopedJoinHandle`. Join it, poll
/// it, cancel it or `.await` it, as a [`JobHandle`].
pub struct ScopedHandle<'scope, R> {
    job: JobHandle<()>,
    slot: Arc<Slot>,
    _result: Marker<'scope, R>,
}

impl<R> ScopedHandle<'_, R> {
    /// Blocks until the job is resolved and returns its value or error.
    pub fn join(self) -> Result<R, JobError> {
        let job = self.job;
        job.join()?;
        take(&self.slot)
    }

    /// Blocks for at most `timeout`; on time-out the handle comes back in
    /// `Err`, the job still running.
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<R, JobError>, Self> {
        let ScopedHandle { job, slot, _result } = self;
        match job.join_timeout(timeout) {
            Ok(Ok(())) => Ok(take(&slot)),
            Ok(Err(e)) => Ok(Err(e)),
            Err(job) => Err(ScopedHandle { job, slot, _result }),
        }
    }

    /// Whether the job is resolved.
    pub fn is_finished(&self) -> bool {
        self.job.is_finished()
    }

    /// Cancels the job, as [`JobHandle::cancel`].
    pub fn cancel(&self) -> bool {
        self.job.cancel()
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.job.id()
    }
}

/// The value a finished job left; `Cancelled` if it left none (it was
/// resolved from outside while running).
fn take<R>(slot: &Slot) -> Result<R, JobError> {
    match crate::sync::lock(slot).take() {
        // SAFETY: the slot of a `ScopedHandle<R>` is filled only by its
        // job, with an `R` (`Scope::spawn`).
        Some(value) => Ok(unsafe { value.take::<R>() }),
        None => Err(JobError::Cancelled),
    }
}

impl<R> Future for ScopedHandle<'_, R> {
    type Output = Result<R, JobError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match Pin::new(&mut this.job).poll(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(take(&this.slot)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<R> std::fmt::Debug for ScopedHandle<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ScopedHandle").field(&self.job).finish()
    }
}

/// Results of [`Scope::map`], in input order.
pub struct ScopedMap<'scope, R> {
    /// Each chunk's length and job.
    pending: VecDeque<Chunk<'scope, R>>,
    current: VecDeque<Result<R, JobError>>,
    /// Items not yet yielded.
    left: usize,
}

impl<R> Iterator for ScopedMap<'_, R> {
    type Item = Result<R, JobError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.pop_front() {
                self.left -= 1;
                return Some(item);
            }
            let (len, chunk) = self.pending.pop_front()?;
            self.current = match chunk.join() {
                Ok(values) => values.into(),
                // Resolved whole (the pool shut down): every item gets it.
                Err(e) => std::iter::repeat_n(e, len).map(Err).collect(),
            };
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<R> std::fmt::Debug for ScopedMap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedMap")
            .field("chunks_pending", &self.pending.len())
            .field("left", &self.left)
            .finish()
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

/// Unit tests of the unsafe parts (closures and results whose lifetimes
/// are erased while they cross threads), small enough for Miri (CI runs them under it: `.ci/run`).
#[cfg(test)]
mod tests {
    use crate::ThreadPool;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    #[test]
    fn borrowed_closures_and_results_cross_threads_and_come_back() {
        let pool = ThreadPool::builder().workers(2).build().unwrap();
        let data: Vec<String> = (0..8).map(|i| i.to_string()).collect();
        let total = AtomicUsize::new(0);
        let firsts: Vec<&str> = pool.scope(|s| {
            let handles: Vec<_> = data
                .iter()
                .map(|d| {
                    let total = &total;
                    s.spawn(move || {
                        total.fetch_add(d.len(), SeqCst);
                        d.as_str()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(firsts, ["0", "1", "2", "3", "4", "5", "6", "7"]);
        assert_eq!(total.into_inner(), 8);
    }

    #[test]
    fn untaken_and_forgotten_results_are_dropped_inside_or_leaked_never_late() {
        let pool = ThreadPool::builder().workers(2).build().unwrap();
        let drops = AtomicUsize::new(0);
        struct Noisy<'a>(&'a AtomicUsize);
        impl Drop for Noisy<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, SeqCst);
            }
        }
        pool.scope(|s| {
            let drops = &drops;
            let kept = s.spawn(move || Noisy(drops));
            drop(s.spawn(move || Noisy(drops)));
            // Leaked on purpose (Miri would report it as a leak).
            #[cfg(not(miri))]
            std::mem::forget(s.spawn(move || Noisy(drops)));
            drop(kept.join().unwrap());
        });
        // The joined one and the one whose handle was dropped: two. The
        // forgotten handle's value is leaked, never dropped after the scope.
        assert_eq!(drops.into_inner(), 2);
    }

    #[test]
    fn a_panic_in_a_scoped_job_and_a_scoped_map() {
        let pool = ThreadPool::builder().workers(2).build().unwrap();
        let xs = [1u32, 2, 3, 4];
        let (bad, mapped) = pool.scope(|s| {
            let bad = s.spawn(|| -> u32 { panic!("scoped") });
            let mapped: Vec<_> = s
                .map(
                    |x: &u32| {
                        assert_ne!(*x, 2, "two");
                        12 / x
                    },
                    &xs,
                )
                .collect();
            (bad.join(), mapped)
        });
        assert_eq!(bad.unwrap_err().panic_message(), Some("scoped"));
        assert_eq!(mapped[0], Ok(12));
        assert!(mapped[1].as_ref().is_err_and(|e| e.is_panicked()));
        assert_eq!(mapped[2..], [Ok(4), Ok(3)]);
    }
}
