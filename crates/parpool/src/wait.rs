//! [`wait`] and [`as_completed`]: waiting on many handles, from any pools.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::JobError;
use crate::handle::JobHandle;
use crate::notify::Completions;

/// When [`wait`] returns, like `concurrent.futures.wait`'s `return_when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitFor {
    /// As soon as any job is finished.
    FirstCompleted,
    /// As soon as any job finishes with an error, or when all are finished.
    FirstError,
    /// When every job is finished.
    AllCompleted,
}

/// What [`wait`] returns: the finished handles and the rest, each list in
/// the order the handles were given.
#[derive(Debug)]
#[non_exhaustive]
pub struct WaitResult<T> {
    /// Finished handles; `join` on them returns at once.
    pub done: Vec<JobHandle<T>>,
    /// Handles still running (or queued).
    pub pending: Vec<JobHandle<T>>,
}

/// Waits until `condition` holds for `handles`, or until `timeout` passes
/// (`None`: no limit), and splits them into done and pending.
///
/// Handles may come from different pools.
///
/// ```
/// use parpool::{wait, ThreadPool, WaitFor};
/// use std::time::Duration;
///
/// let pool = ThreadPool::builder().workers(2).build()?;
/// let quick = pool.spawn(|| 1);
/// let slow = pool.spawn(|| { std::thread::sleep(Duration::from_millis(300)); 2 });
/// let r = wait([quick, slow], WaitFor::FirstCompleted, None);
/// assert_eq!(r.done.len(), 1);
/// assert_eq!(r.pending.len(), 1);
/// # Ok::<(), parpool::BuildError>(())
/// ```
pub fn wait<T, I>(handles: I, condition: WaitFor, timeout: Option<Duration>) -> WaitResult<T>
where
    T: Send + 'static,
    I: IntoIterator<Item = JobHandle<T>>,
{
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut set = Completions::new();
    let mut total = 0;
    for (i, h) in handles.into_iter().enumerate() {
        set.insert(h, i);
        total += 1;
    }
    let mut done: Vec<(usize, JobHandle<T>)> = Vec::new();
    let satisfied = |done: &[(usize, JobHandle<T>)]| match condition {
        WaitFor::FirstCompleted => !done.is_empty(),
        WaitFor::FirstError => {
            done.len() == total || done.iter().any(|(_, h)| h.state().outcome() == Some(true))
        }
        WaitFor::AllCompleted => done.len() == total,
    };
    while !(satisfied(&done) || (total == 0)) {
        match set.next_blocking(deadline) {
            Some((h, i)) => done.push((i, h)),
            None => break,
        }
    }
    // Handles that finished meanwhile count as done too.
    while let Some((h, i)) = set.try_next() {
        done.push((i, h));
    }
    let mut pending: Vec<(usize, JobHandle<T>)> = set.drain().map(|(h, i)| (i, h)).collect();
    done.sort_by_key(|(i, _)| *i);
    pending.sort_by_key(|(i, _)| *i);
    WaitResult {
        done: done.into_iter().map(|(_, h)| h).collect(),
        pending: pending.into_iter().map(|(_, h)| h).collect(),
    }
}

/// Yields each job's result as it finishes, with the job's position in the
/// input: an [`Iterator`] that blocks, or, through
/// [`into_stream`](AsCompleted::into_stream), a `Stream` for async code.
///
/// ```
/// use parpool::{as_completed, ThreadPool};
/// use std::time::Duration;
///
/// let pool = ThreadPool::builder().workers(2).build()?;
/// let handles = [30u64, 1].map(|ms| pool.spawn(move || { std::thread::sleep(Duration::from_millis(ms)); ms }));
/// let order: Vec<usize> = as_completed(handles).map(|(index, _result)| index).collect();
/// assert_eq!(order, [1, 0]);
/// # Ok::<(), parpool::BuildError>(())
/// ```
pub fn as_completed<T, I>(handles: I) -> AsCompleted<T>
where
    T: Send + 'static,
    I: IntoIterator<Item = JobHandle<T>>,
{
    let mut set = Completions::new();
    for (i, h) in handles.into_iter().enumerate() {
        set.insert(h, i);
    }
    AsCompleted { set }
}

/// The iterator and stream returned by [`as_completed`]; items are
/// `(index, result)`, in completion order.
pub struct AsCompleted<T: Send + 'static> {
    set: Completions<T, usize>,
}

impl<T: Send + 'static> AsCompleted<T> {
    /// How many jobs have not been yielded yet.
    pub fn remaining(&self) -> usize {
        self.set.len()
    }

    /// The next finished job, waiting at most `timeout`; `None` on time-out
    /// or when every job has been yielded (see [`remaining`](Self::remaining)).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<(usize, Result<T, JobError>)> {
        let deadline = Instant::now().checked_add(timeout);
        self.set
            .next_blocking(deadline)
            .map(|(h, i)| (i, finished(h)))
    }
}

fn finished<T: Send + 'static>(h: JobHandle<T>) -> Result<T, JobError> {
    match h.try_result() {
        Ok(r) => r,
        // Yielded by the set only once published, so this waits for nothing.
        Err(h) => h.join(),
    }
}

impl<T: Send + 'static> Iterator for AsCompleted<T> {
    type Item = (usize, Result<T, JobError>);

    fn next(&mut self) -> Option<Self::Item> {
        self.set.next_blocking(None).map(|(h, i)| (i, finished(h)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.set.len(), Some(self.set.len()))
    }
}

impl<T: Send + 'static> ExactSizeIterator for AsCompleted<T> {}

/// The [`Stream`](futures_core::Stream) form of [`as_completed`], from
/// [`AsCompleted::into_stream`]: items are `(index, result)`, in completion
/// order, and waiting parks the task, not the thread.
///
/// ```
/// use futures::StreamExt;
/// use parpool::{as_completed, ThreadPool};
///
/// let pool = ThreadPool::builder().workers(2).build()?;
/// let handles: Vec<_> = (0..3).map(|i| pool.spawn(move || i * 2)).collect();
/// let mut stream = as_completed(handles).into_stream();
/// let total = futures::executor::block_on(async {
///     let mut total = 0;
///     while let Some((_, r)) = stream.next().await {
///         total += r.unwrap();
///     }
///     total
/// });
/// assert_eq!(total, 6);
/// # Ok::<(), parpool::BuildError>(())
/// ```
pub struct CompletedStream<T: Send + 'static> {
    set: Completions<T, usize>,
}

impl<T: Send + 'static> AsCompleted<T> {
    /// Turns this into a [`Stream`](futures_core::Stream) of the same items.
    pub fn into_stream(self) -> CompletedStream<T> {
        CompletedStream { set: self.set }
    }
}

impl<T: Send + 'static> futures_core::Stream for CompletedStream<T> {
    type Item = (usize, Result<T, JobError>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .set
            .poll_next(cx)
            .map(|o| o.map(|(h, i)| (i, finished(h))))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.set.len(), Some(self.set.len()))
    }
}

impl<T: Send + 'static> fmt::Debug for CompletedStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletedStream")
            .field("remaining", &self.set.len())
            .finish()
    }
}

impl<T: Send + 'static> fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("remaining", &self.set.len())
            .finish()
    }
}
