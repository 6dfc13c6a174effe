//! [`ThreadPool::par`]: eager, indexed maps over data already in memory,
//! borrowed, with results written straight into place.
//!
//! How it runs: the calling thread and up to `workers − 1` of the pool's
//! threads claim ranges of indices from one shared cursor, largest first
//! (each claim takes a share of what is left, so the ranges shrink towards
//! the end and uneven items balance), and run the body over each range.
//! There is no per-item channel or handle: a map writes each result into
//! its slot of the output vector.
//!
//! Borrowing is sound because the call does not return (nor unwind) until
//! no helper can touch the borrowed data: a helper *enters* (counts itself
//! in `active`) before it reads the body and backs out if the call already
//! *closed*; the caller closes, then waits for `active` to reach zero. A
//! helper still queued when the call returns holds only the shared state
//! (an `Arc`), and leaves without touching anything when it finally runs.

use std::fmt;
use std::mem::needs_drop;
use std::ops::{Range, RangeInclusive};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

use crossbeam_utils::CachePadded;

use super::ThreadPool;
use crate::error::{JobError, PanicInfo};
use crate::panic;

/// Data with a known length and access by index: what
/// [`ThreadPool::par`] splits. Implemented for slices, vectors and arrays
/// (borrowed: the items are `&T`) and for ranges of integers.
pub trait Indexed: Sync {
    /// What the map's function receives.
    type Item;

    /// How many items there are.
    fn len(&self) -> usize;

    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on the items at `range`, in order, until `f` returns
    /// `false` (the map stopping early); `range` lies within `0..len()`.
    fn each(&self, range: Range<usize>, f: impl FnMut(Self::Item) -> bool);

    /// Folds the items at `range` into `init` with `f`, in order. The
    /// default goes through [`each`](Self::each); override it where a
    /// plain loop is faster (it is what `map_reduce` runs).
    fn fold_range<A>(
        &self,
        range: Range<usize>,
        init: A,
        mut f: impl FnMut(A, Self::Item) -> A,
    ) -> A {
        let mut acc = Some(init);
        self.each(range, |item| {
            acc = acc.take().map(|a| f(a, item));
            true
        });
        acc.expect("`each` calls back on this thread, and `f` returned")
    }
}

impl<'a, T: Sync> Indexed for &'a [T] {
    type Item = &'a T;

    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    #[inline]
    fn each(&self, range: Range<usize>, f: impl FnMut(&'a T) -> bool) {
        let items: &'a [T] = self;
        items[range].iter().all(f);
    }

    #[inline]
    fn fold_range<A>(&self, range: Range<usize>, init: A, f: impl FnMut(A, &'a T) -> A) -> A {
        let items: &'a [T] = self;
        items[range].iter().fold(init, f)
    }
}

/// `Indexed` for a borrowed container of a slice: the slice's.
macro_rules! indexed_as_slice {
    ($([$($generics:tt)*] $container:ty),*) => {$(
        impl<'a, T: Sync, $($generics)*> Indexed for &'a $container {
            type Item = &'a T;

            fn len(&self) -> usize {
                self.as_slice().len()
            }

            #[inline]
            fn each(&self, range: Range<usize>, f: impl FnMut(&'a T) -> bool) {
                self.as_slice().each(range, f);
            }

            #[inline]
            fn fold_range<A>(&self, range: Range<usize>, init: A, f: impl FnMut(A, &'a T) -> A) -> A {
                self.as_slice().fold_range(range, init, f)
            }
        }
    )*};
}

indexed_as_slice!([] Vec<T>, [const N: usize] [T; N]);

macro_rules! indexed_ranges {
    ($($t:ty),*) => {$(
        impl Indexed for Range<$t> {
            type Item = $t;

            fn len(&self) -> usize {
                if self.end <= self.start {
                    return 0;
                }
                usize::try_from(self.end.abs_diff(self.start)).unwrap_or(usize::MAX)
            }

            #[inline]
            fn each(&self, range: Range<usize>, f: impl FnMut($t) -> bool) {
                each_in(self.start, range, f);
            }

            #[inline]
            fn fold_range<A>(&self, range: Range<usize>, init: A, f: impl FnMut(A, $t) -> A) -> A {
                fold_in(self.start, range, init, f)
            }
        }

        impl Indexed for RangeInclusive<$t> {
            type Item = $t;

            fn len(&self) -> usize {
                if self.is_empty() {
                    return 0;
                }
                usize::try_from(self.end().abs_diff(*self.start()))
                    .ok()
                    .and_then(|n| n.checked_add(1))
                    .unwrap_or(usize::MAX)
            }

            #[inline]
            fn each(&self, range: Range<usize>, f: impl FnMut($t) -> bool) {
                each_in(*self.start(), range, f);
            }

            #[inline]
            fn fold_range<A>(&self, range: Range<usize>, init: A, f: impl FnMut(A, $t) -> A) -> A {
                fold_in(*self.start(), range, init, f)
            }
        }
    )*};
}

/// Calls `f` on `start + i` for each `i` in `range`, which lies within the
/// integer range that begins at `start`. The offsets are added modulo the
/// type's width: the sums are in range, but an offset alone may not fit
/// the type (a signed one).
#[inline]
fn each_in<T>(start: T, range: Range<usize>, f: impl FnMut(T) -> bool)
where
    T: WrappingOffset,
    std::ops::RangeInclusive<T>: Iterator<Item = T>,
{
    if range.is_empty() {
        return;
    }
    let first = start.offset(range.start);
    let last = start.offset(range.end - 1);
    (first..=last).all(f);
}

/// Folds `start + i` for each `i` in `range`, as [`each_in`] visits them.
#[inline]
fn fold_in<T, A>(start: T, range: Range<usize>, init: A, f: impl FnMut(A, T) -> A) -> A
where
    T: WrappingOffset,
    std::ops::RangeInclusive<T>: Iterator<Item = T>,
{
    if range.is_empty() {
        return init;
    }
    (start.offset(range.start)..=start.offset(range.end - 1)).fold(init, f)
}

/// `self + n`, wrapping: integers an [`Indexed`] range can hold.
trait WrappingOffset: Copy {
    fn offset(self, n: usize) -> Self;
}

macro_rules! wrapping_offset {
    ($($t:ty),*) => {$(
        impl WrappingOffset for $t {
            #[inline]
            fn offset(self, n: usize) -> Self {
                // Truncation is the point: the sum is taken modulo 2^bits.
                self.wrapping_add(n as $t)
            }
        }
    )*};
}

wrapping_offset!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

indexed_ranges!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

/// An eager, indexed, borrowing parallel operation over `I`, from
/// [`ThreadPool::par`]: finish it with [`map`](Self::map),
/// [`for_each`](Self::for_each) or [`map_reduce`](Self::map_reduce).
///
/// Unlike [`ThreadPool::map`] (lazy: it streams any iterator, endless ones
/// included, and yields results as they come), `par` needs the whole input
/// in memory with a known length, and returns when every item is done.
/// In exchange the input and the function may borrow, and nothing is
/// spent per item beyond the call itself.
///
/// **When an item panics**, no new ranges are started, the ranges already
/// running stop at their next block of items (a few dozen for `map`, the
/// next item for `for_each`, a thousand for `map_reduce`, whose blocks are
/// plain folds the compiler can vectorize), and the call returns [`JobError::Panicked`] for the
/// first panic seen, with the item's index in
/// [`PanicInfo::item`](crate::PanicInfo::item). The results computed so
/// far are dropped, not returned: a map is all or nothing. (Use
/// [`ThreadPool::map`], whose results come one by one, to keep the others.)
#[must_use = "a `Par` does nothing until `map`, `for_each` or `map_reduce` runs it"]
pub struct Par<'p, I> {
    pool: &'p ThreadPool,
    input: I,
    min_chunk: usize,
    progress: Option<Box<Report<'p>>>,
}

impl<I> fmt::Debug for Par<'_, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Par")
            .field("pool", &self.pool.name())
            .field("min_chunk", &self.min_chunk)
            .field("progress", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}

impl<'p, I: Indexed> Par<'p, I> {
    pub(super) fn new(pool: &'p ThreadPool, input: I) -> Self {
        Par {
            pool,
            input,
            min_chunk: 1,
            progress: None,
        }
    }

    /// Never splits below `n` items a range (default 1). Ranges start
    /// large and shrink towards the end of the input, so this matters only
    /// for the last few: raise it when items are so cheap that even the
    /// tail's ranges should be long.
    pub fn min_chunk(mut self, n: usize) -> Self {
        self.min_chunk = n.max(1);
        self
    }

    /// Calls `report(done, Some(total))` as ranges finish: `done` never
    /// goes down between calls, and the last call of a map that succeeds
    /// has `done == total`, exactly once. Calls never overlap; a call that
    /// would have to wait for another is skipped instead (a later one
    /// reports the count). A panic in `report` fails the map like a panic
    /// in an item, with no item index.
    pub fn on_progress(mut self, report: impl Fn(u64, Option<u64>) + Send + Sync + 'p) -> Self {
        self.progress = Some(Box::new(report));
        self
    }

    progress_bar_methods!("as ranges finish");

    /// Calls `f` on every item and returns the results in input order.
    ///
    /// ```
    /// use parpool::ThreadPool;
    ///
    /// let pool = ThreadPool::builder().workers(4).build()?;
    /// let words = vec!["a".to_string(), "bb".into(), "ccc".into()];
    /// let offset = 10; // borrowed by the closure
    /// let lengths = pool.par(&words).map(|w| w.len() + offset)?;
    /// assert_eq!(lengths, [11, 12, 13]);
    /// assert_eq!(pool.par(0..5u64).map(|x| x * x)?, [0, 1, 4, 9, 16]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`JobError::Panicked`] (with the item's index) when `f` panicked;
    /// [`JobError::Shutdown`] when the pool was shut down;
    /// [`JobError::TooLarge`] when the output vector could not be
    /// allocated (`0..u64::MAX` has too many items to collect).
    pub fn map<R, F>(self, f: F) -> Result<Vec<R>, JobError>
    where
        R: Send,
        F: Fn(I::Item) -> R + Sync,
    {
        let len = self.input.len();
        let mut out: Vec<R> = Vec::new();
        if out.try_reserve_exact(len).is_err() {
            let size = (len as u64).saturating_mul(std::mem::size_of::<R>() as u64);
            return Err(JobError::TooLarge {
                what: crate::error::Payload::Output,
                size,
                limit: isize::MAX as u64,
            });
        }
        let slots = SendPtr(out.as_mut_ptr());
        // What each range left written, to drop if the map fails.
        let written: Mutex<Vec<Range<usize>>> = Mutex::new(Vec::new());
        let input = &self.input;
        let body = |range: Range<usize>, stop: &AtomicBool| {
            let mut next = range.start;
            let outcome = panic::catch_captured(|| {
                // Blocks with a look at `stop` between them, as `map_reduce`.
                let mut from = range.start;
                while from < range.end && !stop.load(Relaxed) {
                    let to = range.end.min(from + MAP_BLOCK);
                    input.each(from..to, |item| {
                        // `each` is safe code that may call back more often
                        // than asked: never past the block.
                        if next >= to {
                            return false;
                        }
                        let value = f(item);
                        // SAFETY: `next` is in `from..to`, part of `range`, a
                        // range of `0..len` claimed by this thread alone, and
                        // `out` has capacity `len`: the slot is in bounds,
                        // and no other thread writes it.
                        unsafe { slots.get().add(next).write(value) };
                        next += 1;
                        true
                    });
                    // Nor less often: every slot must be written.
                    if next != to {
                        return Err(PanicInfo {
                            message: format!(
                                "Indexed::each visited {} of the {} items it was asked for",
                                next - from,
                                to - from
                            ),
                            location: None,
                            item: None,
                        });
                    }
                    from = to;
                }
                Ok(())
            });
            if needs_drop::<R>() && next > range.start {
                crate::sync::lock(&written).push(range.start..next);
            }
            match outcome {
                Ok(Ok(())) => Ok(()),
                Ok(Err(lie)) => Err((None, lie)),
                Err(info) => Err((Some(next), info)),
            }
        };
        match self.run(len, &body) {
            Ok(()) => {
                // SAFETY: the run succeeded, so every range of `0..len` was
                // claimed and written in full (each block is checked), and
                // every thread that wrote has left (`run` waits for them).
                unsafe { out.set_len(len) };
                Ok(out)
            }
            Err(e) => {
                for range in written.into_inner().unwrap_or_else(|p| p.into_inner()) {
                    for i in range {
                        // SAFETY: slot `i` was written (recorded above) and
                        // is dropped once: ranges do not overlap, and `out`
                        // has length 0, so it drops none itself.
                        unsafe { slots.get().add(i).drop_in_place() };
                    }
                }
                Err(e)
            }
        }
    }

    /// Calls `f` on every item.
    ///
    /// ```
    /// use parpool::ThreadPool;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// let pool = ThreadPool::builder().workers(4).build()?;
    /// let total = AtomicU64::new(0);
    /// pool.par(1..=100u64).for_each(|x| {
    ///     total.fetch_add(x, Ordering::Relaxed);
    /// })?;
    /// assert_eq!(total.into_inner(), 5050);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`map`](Self::map).
    pub fn for_each<F>(self, f: F) -> Result<(), JobError>
    where
        F: Fn(I::Item) + Sync,
    {
        let len = self.input.len();
        let input = &self.input;
        let body = |range: Range<usize>, stop: &AtomicBool| {
            let mut next = range.start;
            panic::catch_captured(|| {
                input.each(range, |item| {
                    f(item);
                    next += 1;
                    !stop.load(Relaxed)
                });
            })
            .map_err(|info| (Some(next), info))
        };
        self.run(len, &body)
    }

    /// Maps every item with `map` and combines the results with `reduce`,
    /// starting each range from `identity()`: a parallel fold. `reduce`
    /// must be associative, and `identity()` neutral for it; the results
    /// are combined in input order, so `reduce` need not be commutative.
    ///
    /// ```
    /// use parpool::ThreadPool;
    ///
    /// let pool = ThreadPool::builder().workers(4).build()?;
    /// let sum = pool.par(0..1_000_000u64).map_reduce(|x| x, || 0, |a, b| a + b)?;
    /// assert_eq!(sum, 499_999_500_000);
    /// // Order is kept: concatenation is associative, not commutative.
    /// let letters = ["a", "b", "c", "d"];
    /// let joined = pool.par(&letters).map_reduce(|s| s.to_string(), String::new, |a, b| a + &b)?;
    /// assert_eq!(joined, "abcd");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`map`](Self::map); a panic in `identity` or `reduce` is reported
    /// like one in `map`.
    pub fn map_reduce<R, M, Z, C>(self, map: M, identity: Z, reduce: C) -> Result<R, JobError>
    where
        R: Send,
        M: Fn(I::Item) -> R + Sync,
        Z: Fn() -> R + Sync,
        C: Fn(R, R) -> R + Sync,
    {
        let len = self.input.len();
        let input = &self.input;
        let partials: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::new());
        let body = |range: Range<usize>, stop: &AtomicBool| {
            let start = range.start;
            let mut next = start;
            let folded = panic::catch_captured(|| {
                // Blocks of plain folding (which the compiler can
                // vectorize), with a look at `stop` between them.
                let mut acc = identity();
                let mut from = start;
                while from < range.end && !stop.load(Relaxed) {
                    let to = range.end.min(from + FOLD_BLOCK);
                    acc = input.fold_range(from..to, acc, |a, item| {
                        let folded = reduce(a, map(item));
                        next += 1;
                        folded
                    });
                    from = to;
                }
                acc
            })
            .map_err(|info| (Some(next), info))?;
            crate::sync::lock(&partials).push((start, folded));
            Ok(())
        };
        self.run(len, &body)?;
        let mut partials = partials.into_inner().unwrap_or_else(|p| p.into_inner());
        partials.sort_unstable_by_key(|&(start, _)| start);
        panic::catch(|| {
            partials
                .into_iter()
                .fold(identity(), |acc, (_, part)| reduce(acc, part))
        })
        .map_err(JobError::panicked)
    }

    /// Runs `body` over `0..len`, split across the caller and the pool.
    fn run(&self, len: usize, body: &Body<'_>) -> Result<(), JobError> {
        let pool = self.pool;
        if pool.is_shutdown() {
            return Err(JobError::Shutdown);
        }
        crate::panic::install_hook();
        let helpers = if len < 2 {
            0
        } else {
            (pool.workers() - 1).min(len - 1)
        };
        let progress: Option<&Report<'_>> = self.progress.as_deref().map(|r| r as &Report<'_>);
        // SAFETY: only lifetimes are erased. `body` and `progress` are read by
        // this thread and by helpers that have entered (`Run::help`); this
        // function returns or unwinds only after closing the run and seeing
        // no helper inside (`CloseAndWait`, created before any helper).
        let body_ptr = unsafe { erase_body(body) };
        // SAFETY: as for `body`.
        let progress_ptr = progress.map(|p| unsafe { erase_report(p) });
        let run = Arc::new(Run {
            cursor: CachePadded::new(AtomicUsize::new(0)),
            len,
            parts: helpers + 1,
            min_chunk: self.min_chunk,
            active: CachePadded::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
            done: AtomicUsize::new(0),
            reported: Mutex::new(0),
            caller: std::thread::current(),
            body: body_ptr,
            progress: progress_ptr,
        });
        // Closes the run and waits until no helper is inside, whichever
        // way this function leaves: the borrows end only after that.
        let wait = CloseAndWait(&run);
        for _ in 0..helpers {
            let run = run.clone();
            // A full queue or a pool shutting down leaves more to the caller.
            if pool.try_spawn(move || run.help()).is_err() {
                break;
            }
        }
        // SAFETY: this thread holds the borrows `body` and `progress` came
        // from for the whole call.
        unsafe { run.work() };
        drop(wait);
        if let Some((index, info)) = crate::sync::lock(&run.error).take() {
            let mut info = info;
            info.item = index.map(|i| i as u64);
            return Err(JobError::panicked(info));
        }
        // Threads never report the total: this is its one report.
        if let Some(report) = progress {
            let total = len as u64;
            panic::catch(|| report(total, Some(total))).map_err(JobError::panicked)?;
        }
        Ok(())
    }
}

/// Items `map_reduce` folds between looks at whether to stop.
const FOLD_BLOCK: usize = 1024;
/// Items `map` maps between looks at whether to stop.
const MAP_BLOCK: usize = 64;

/// A range's work: `Err((index of the item that panicked, if any, panic))`.
/// It stops early once the flag it is given is set (another range failed).
type Body<'a> =
    dyn Fn(Range<usize>, &AtomicBool) -> Result<(), (Option<usize>, PanicInfo)> + Sync + 'a;
/// A progress report.
type Report<'a> = dyn Fn(u64, Option<u64>) + Send + Sync + 'a;

/// # Safety
/// The result must not be dereferenced after `'a` ends.
unsafe fn erase_body<'a>(body: &'a Body<'a>) -> *const Body<'static> {
    // SAFETY: only the trait object's lifetime bound changes; the caller
    // keeps the pointer's uses inside `'a`.
    unsafe { std::mem::transmute::<*const Body<'a>, *const Body<'static>>(body) }
}

/// # Safety
/// As [`erase_body`].
unsafe fn erase_report<'a>(report: &'a Report<'a>) -> *const Report<'static> {
    // SAFETY: as in `erase_body`.
    unsafe { std::mem::transmute::<*const Report<'a>, *const Report<'static>>(report) }
}

/// A raw pointer to output slots, shared by the threads of one run.
struct SendPtr<R>(*mut R);

impl<R> Clone for SendPtr<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for SendPtr<R> {}

// SAFETY: each thread writes only the slots of the ranges it claimed, and
// the owner reads them only after every writer has left.
unsafe impl<R: Send> Send for SendPtr<R> {}
// SAFETY: as above.
unsafe impl<R: Send> Sync for SendPtr<R> {}

impl<R> SendPtr<R> {
    /// The pointer (a method, so closures capture the `Sync` wrapper).
    fn get(self) -> *mut R {
        self.0
    }
}

/// Closes a run and waits for its helpers to leave, when dropped.
struct CloseAndWait<'a>(&'a Run);

impl Drop for CloseAndWait<'_> {
    fn drop(&mut self) {
        let run = self.0;
        run.closed.store(true, SeqCst);
        while run.active.load(SeqCst) != 0 {
            std::thread::park();
        }
    }
}

/// Fails the run if the thread working on it unwinds: a range it held is
/// then unfinished, and the run must not report success.
struct FailOnUnwind<'a>(&'a Run);

impl Drop for FailOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail(
                None,
                PanicInfo {
                    message: "a thread of the map unwound outside any item".to_owned(),
                    location: None,
                    item: None,
                },
            );
        }
    }
}

/// One `par` call's shared state.
struct Run {
    /// The next index nobody has claimed.
    cursor: CachePadded<AtomicUsize>,
    len: usize,
    /// Threads that may take part (the caller and its helpers).
    parts: usize,
    min_chunk: usize,
    /// Helpers between entering and leaving.
    active: CachePadded<AtomicUsize>,
    /// Set by the caller once it has done its part: helpers that arrive
    /// later leave without reading `body`.
    closed: AtomicBool,
    /// Set on the first failure: running ranges stop at their next item.
    stop: AtomicBool,
    /// The first failure: the item's index, and the panic.
    error: Mutex<Option<(Option<usize>, PanicInfo)>>,
    /// Items finished.
    done: AtomicUsize,
    /// The last count reported to `progress`.
    reported: Mutex<usize>,
    caller: Thread,
    body: *const Body<'static>,
    progress: Option<*const Report<'static>>,
}

// SAFETY: `body` and `progress` point to `Sync` closures, read only between
// entering and leaving (see `Par::run`); everything else is `Send + Sync`.
unsafe impl Send for Run {}
// SAFETY: as above.
unsafe impl Sync for Run {}

impl Run {
    /// A helper's job: enter, work, leave.
    fn help(&self) {
        self.active.fetch_add(1, SeqCst);
        /// Leaves even if something below unwinds, so the caller never
        /// waits for a helper that is gone.
        struct Leave<'a>(&'a Run);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                let run = self.0;
                if run.active.fetch_sub(1, SeqCst) == 1 && run.closed.load(SeqCst) {
                    run.caller.unpark();
                }
            }
        }
        let _leave = Leave(self);
        if !self.closed.load(SeqCst) {
            // SAFETY: entered before seeing the run open, so the caller
            // waits for this thread before its borrows end.
            unsafe { self.work() };
        }
    }

    /// Claims ranges and runs the body over them until none is left.
    ///
    /// # Safety
    /// The caller must have entered the run (or be its owner).
    unsafe fn work(&self) {
        let _fail_on_unwind = FailOnUnwind(self);
        // SAFETY: valid while entered (the caller's contract).
        let body = unsafe { &*self.body };
        panic::capturing(|| {
            while let Some(range) = self.claim() {
                let n = range.end - range.start;
                if let Err((index, info)) = body(range, &self.stop) {
                    self.fail(index, info);
                    return;
                }
                let done = self.done.fetch_add(n, Relaxed) + n;
                if let Some(report) = self.progress {
                    // SAFETY: as `body`.
                    let report = unsafe { &*report };
                    if let Err(info) = self.report(report, done) {
                        self.fail(None, info);
                        return;
                    }
                }
            }
        });
    }

    /// The next range: a share of what is left, at least `min_chunk`.
    fn claim(&self) -> Option<Range<usize>> {
        let mut at = self.cursor.load(Relaxed);
        loop {
            let left = self.len.checked_sub(at).filter(|&n| n > 0)?;
            let size = (left / (2 * self.parts)).max(self.min_chunk).min(left);
            match self
                .cursor
                .compare_exchange_weak(at, at + size, Relaxed, Relaxed)
            {
                Ok(_) => return Some(at..at + size),
                Err(now) => at = now,
            }
        }
    }

    /// Records the first failure and stops new claims.
    fn fail(&self, index: Option<usize>, info: PanicInfo) {
        self.stop.store(true, Relaxed);
        self.cursor.store(self.len, SeqCst);
        let mut error = crate::sync::lock(&self.error);
        if error.is_none() {
            *error = Some((index, info));
        }
    }

    /// Reports `done` unless a report is under way (that one, or a later
    /// one, will carry the count).
    fn report(&self, report: &Report<'_>, done: usize) -> Result<(), PanicInfo> {
        let Ok(mut last) = self.reported.try_lock() else {
            return Ok(());
        };
        let now = self.done.load(Relaxed).max(done);
        // The final count is the caller's to report, once every thread
        // has left.
        if now <= *last || now >= self.len {
            return Ok(());
        }
        *last = now;
        panic::catch_captured(|| report(now as u64, Some(self.len as u64)))
    }
}

impl ThreadPool {
    /// An eager, indexed parallel operation over data already in memory —
    /// a slice, a `Vec`, an array, a range of integers — which may be
    /// borrowed, as may the function: rayon's `par_iter` shape, with
    /// parpool's typed errors. Finish it with [`Par::map`],
    /// [`Par::for_each`] or [`Par::map_reduce`].
    ///
    /// The calling thread works too, with up to `workers − 1` of the pool's
    /// threads; ranges are claimed largest first and shrink towards the
    /// end, so items of uneven cost balance. Compare [`ThreadPool::map`],
    /// which is lazy and streams any iterator.
    ///
    /// ```
    /// use parpool::ThreadPool;
    ///
    /// let pool = ThreadPool::builder().workers(4).build()?;
    /// let data: Vec<f64> = (0..1000).map(f64::from).collect();
    /// let scale = 0.5;
    /// let halves = pool.par(&data).map(|x| x * scale)?;
    /// assert_eq!(halves[999], 499.5);
    ///
    /// // A panicking item fails the call with its index.
    /// let err = pool.par(&data).map(|&x| if x == 7.0 { panic!("seven") } else { x }).unwrap_err();
    /// assert_eq!(err.panic_message(), Some("seven"));
    /// assert!(matches!(err, parpool::JobError::Panicked(ref p) if p.item == Some(7)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn par<I: Indexed>(&self, input: I) -> Par<'_, I> {
        Par::new(self, input)
    }
}

/// Unit tests of the unsafe parts (results written in place, dropped when
/// the map fails; the borrowed body reached through an erased pointer),
/// small enough for Miri (CI runs them under it: `.ci/run`).
#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> ThreadPool {
        ThreadPool::builder().workers(3).build().unwrap()
    }

    #[test]
    fn results_that_own_memory_are_written_in_place_and_borrow_the_input() {
        let pool = pool();
        let words: Vec<String> = (0..60).map(|i| format!("w{i}")).collect();
        let suffix = String::from("!");
        let out = pool.par(&words).map(|w| format!("{w}{suffix}")).unwrap();
        assert_eq!(out.len(), 60);
        assert!(out.iter().zip(&words).all(|(o, w)| *o == format!("{w}!")));
        let lens = pool.par(words.as_slice()).map(|w| w.as_str()).unwrap();
        assert_eq!(lens[7], "w7");
        assert!(
            pool.par(&Vec::<String>::new())
                .map(|w| w.len())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_panic_drops_every_result_written_and_nothing_else() {
        let pool = pool();
        let live = Arc::new(AtomicUsize::new(0));
        #[derive(Debug)]
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        let err = pool
            .par(0..80u32)
            .map(|i| {
                assert_ne!(i, 50, "item fifty");
                live.fetch_add(1, SeqCst);
                Counted(live.clone())
            })
            .unwrap_err();
        assert!(
            matches!(&err, JobError::Panicked(p) if p.item == Some(50)),
            "{err:?}"
        );
        assert_eq!(
            live.load(SeqCst),
            0,
            "every result written was dropped once"
        );
    }

    #[test]
    fn for_each_and_map_reduce_see_every_item_once() {
        let pool = pool();
        let seen = AtomicUsize::new(0);
        pool.par(0..100u64)
            .for_each(|x| {
                seen.fetch_add(x as usize, SeqCst);
            })
            .unwrap();
        assert_eq!(seen.into_inner(), 4950);
        let sum = pool
            .par(1..=100u64)
            .map_reduce(|x| x, || 0, |a, b| a + b)
            .unwrap();
        assert_eq!(sum, 5050);
    }
}
