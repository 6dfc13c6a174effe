//! Registered tasks and the [`Executor`] trait every pool implements.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::handle::JobHandle;
use crate::job::JobOptions;
use crate::map::{ChunkIn, ChunkOut, Map, MapUnordered};

/// A function registered under a stable name, so that any pool — threads
/// or worker processes, through the same trait — can run it. Input and output are serde types: they may cross a process
/// boundary.
///
/// Define tasks with [`task!`](crate::task!) rather than by hand.
pub trait Task: Copy + Send + Sync + 'static {
    /// The stable name a worker looks the task up by.
    const NAME: &'static str;
    /// What the task takes.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// What the task returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Runs the task.
    fn run(input: Self::Input) -> Self::Output;
}

/// Defines a [`Task`]: a unit struct named like the function, whose
/// [`Task::NAME`] is its module path.
///
/// The function takes one parameter (a name, `mut` name, `_`, or a tuple
/// pattern: `(a, b): (u64, u64)`), several names (`a: u64, b: String`:
/// they travel as a tuple, so the job is submitted with `(a, b)`), or none
/// (submitted with `()`); without a return type it returns `()`. Parameters and the return type must be
/// serde types, to cross to a worker process.
///
/// ```
/// use parpool::{Executor, Task, ThreadPool};
///
/// parpool::task! {
///     /// Adds two numbers.
///     pub fn add((a, b): (u64, u64)) -> u64 { a + b }
/// }
/// parpool::task! {
///     /// Repeats a word.
///     fn repeat(word: String, times: usize) -> String { word.repeat(times) }
/// }
/// parpool::task! {
///     fn log(line: String) { eprintln!("{line}") }
/// }
/// parpool::task! {
///     fn answer() -> u64 { 42 }
/// }
/// parpool::task! {
///     fn trailing(x: u64,) -> u64 { x }
/// }
///
/// assert!(add::NAME.ends_with("::add"));
/// let pool = ThreadPool::builder().workers(2).build()?;
/// assert_eq!(pool.submit(add, (2, 3)).join(), Ok(5));
/// assert_eq!(pool.submit(repeat, ("ab".into(), 2)).join(), Ok("abab".into()));
/// assert_eq!(pool.submit(log, "hello".into()).join(), Ok(()));
/// assert_eq!(pool.submit(answer, ()).join(), Ok(42));
/// assert_eq!(pool.submit(trailing, 7).join(), Ok(7));
/// # Ok::<(), parpool::BuildError>(())
/// ```
///
/// What is not a task's shape is a compile error that says what to write:
///
/// ```compile_fail
/// parpool::task! {
///     fn borrowed<'a>(s: &'a str) -> usize { s.len() }
/// }
/// ```
#[macro_export]
macro_rules! task {
    ($(#[$meta:meta])* $vis:vis fn $name:ident (mut $arg:ident : $in:ty $(,)?) -> $out:ty $body:block) => {
        $crate::task!(@define [$(#[$meta])*] $vis $name [mut $arg] $in, $out, $body);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident ($arg:tt : $in:ty $(,)?) -> $out:ty $body:block) => {
        $crate::task!(@define [$(#[$meta])*] $vis $name [$arg] $in, $out, $body);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident (mut $arg:ident : $in:ty $(,)?) $body:block) => {
        $crate::task!(@define [$(#[$meta])*] $vis $name [mut $arg] $in, (), $body);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident ($arg:tt : $in:ty $(,)?) $body:block) => {
        $crate::task!(@define [$(#[$meta])*] $vis $name [$arg] $in, (), $body);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident () -> $out:ty $body:block) => {
        $crate::task!(@define [$(#[$meta])*] $vis $name [_] (), $out, $body);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident () $body:block) => {
        $crate::task!(@define [$(#[$meta])*] $vis $name [_] (), (), $body);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident ($a0:ident : $t0:ty, $($arg:ident : $in:ty),+ $(,)?) -> $out:ty $body:block) => {
        $crate::task!(@define [$(#[$meta])*] $vis $name [($a0, $($arg,)+)] ($t0, $($in,)+), $out, $body);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident ($a0:ident : $t0:ty, $($arg:ident : $in:ty),+ $(,)?) $body:block) => {
        $crate::task!(@define [$(#[$meta])*] $vis $name [($a0, $($arg,)+)] ($t0, $($in,)+), (), $body);
    };
    (@define [$($meta:tt)*] $vis:vis $name:ident [$($arg:tt)*] $in:ty, $out:ty, $body:block) => {
        $($meta)*
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        $vis struct $name;

        impl $crate::Task for $name {
            const NAME: &'static str = concat!(module_path!(), "::", stringify!($name));
            type Input = $in;
            type Output = $out;
            fn run($($arg)*: $in) -> $out $body
        }

        $crate::__register_task!($name);

        impl $name {
            /// Runs the task here, on the calling thread.
            #[allow(dead_code)]
            $vis fn run_now(input: $in) -> $out {
                <$name as $crate::Task>::run(input)
            }
        }
    };
    ($($rest:tt)*) => {
        ::core::compile_error!(concat!(
            "parpool::task! defines `fn name(a: A, b: B, ...) -> Output { body }`: ",
            "no generics, lifetimes or `self`; parameters and output of owned serde types ",
            "(String, not &str); several parameters arrive as one tuple, submitted as `(a, b)`; ",
            "`mut` on a single parameter only (write `let mut x = x;` in the body). Got: ",
            stringify!($($rest)*)
        ));
    };
}

/// Registers a task for worker processes to find (the `process` feature,
/// on Linux): a constructor, run before `main`.
#[cfg(all(feature = "process", target_os = "linux"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __register_task {
    ($name:ident) => {
        $crate::__private::ctor::declarative::ctor! {
            #[ctor(unsafe, anonymous, crate_path = $crate::__private::ctor)]
            fn register() {
                // A task of plain data also gets a kernel over shared
                // memory; the probe picks it only where the types allow.
                #[allow(unused_imports)]
                use $crate::__private::{NoPodKernel as _, PodKernel as _};
                let pod = (&&&$crate::__private::Probe::<$name>::new()).pod_kernel();
                // SAFETY (constructor): only appends to parpool's registry,
                // a std `Mutex` that needs no runtime initialization.
                $crate::__private::register($crate::__private::TaskEntry::of::<$name>().with_pod(pod));
            }
        }
    };
}

/// Without worker processes there is nothing to register: threads run a
/// task by its type.
#[cfg(not(all(feature = "process", target_os = "linux")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __register_task {
    ($name:ident) => {};
}

pub(crate) mod sealed {
    use super::*;

    /// Seals [`Executor`]: only parpool's pools implement it, which lets the
    /// trait grow without breaking anyone.
    pub trait Sealed {
        /// Runs `task` over a chunk of inputs as one job (the unit `map`
        /// sends); each item's panic is caught separately.
        fn submit_chunk<T: Task>(
            &self,
            task: T,
            chunk: ChunkIn<T::Input, T::Output>,
        ) -> JobHandle<ChunkOut<T::Input, T::Output>>
        where
            Self: Sized;

        /// The work an automatic `map` chunk aims at on this pool.
        fn chunk_time(&self) -> std::time::Duration {
            crate::map::TARGET_CHUNK_TIME
        }
    }
}

/// What every pool offers for registered [`Task`]s, like Python's
/// `concurrent.futures.Executor`: write code once against `Executor` and run
/// it on threads or processes.
///
/// ```
/// use parpool::{Executor, ThreadPool};
///
/// parpool::task!(fn square(x: u64) -> u64 { x * x });
///
/// fn sum_of_squares(pool: &impl Executor, n: u64) -> u64 {
///     pool.map_task(square, 0..n).map(Result::unwrap).sum()
/// }
///
/// let pool = ThreadPool::builder().workers(2).build()?;
/// assert_eq!(sum_of_squares(&pool, 4), 0 + 1 + 4 + 9);
/// # Ok::<(), parpool::BuildError>(())
/// ```
pub trait Executor: sealed::Sealed {
    /// Runs `task` on `input` with per-job options.
    fn submit_with<T: Task>(
        &self,
        opts: JobOptions,
        task: T,
        input: T::Input,
    ) -> JobHandle<T::Output>
    where
        Self: Sized;

    /// Runs `task` on `input`.
    fn submit<T: Task>(&self, task: T, input: T::Input) -> JobHandle<T::Output>
    where
        Self: Sized,
    {
        self.submit_with(JobOptions::default(), task, input)
    }

    /// Runs `task` over `inputs`, yielding results lazily in input order
    /// (see [`Map`]).
    fn map_task<T, I>(&self, task: T, inputs: I) -> Map<'_, I::IntoIter, T::Output>
    where
        Self: Sized,
        T: Task,
        I: IntoIterator<Item = T::Input>,
    {
        let chunk_time = self.chunk_time();
        Map::new(
            Box::new(move |chunk| self.submit_chunk(task, chunk)),
            inputs.into_iter(),
            self.workers(),
        )
        .chunk_time(chunk_time)
    }

    /// Runs `task` over `inputs`, yielding `(index, result)` as jobs finish.
    fn map_task_unordered<T, I>(
        &self,
        task: T,
        inputs: I,
    ) -> MapUnordered<'_, I::IntoIter, T::Output>
    where
        Self: Sized,
        T: Task,
        I: IntoIterator<Item = T::Input>,
    {
        let chunk_time = self.chunk_time();
        MapUnordered::new(
            Box::new(move |chunk| self.submit_chunk(task, chunk)),
            inputs.into_iter(),
            self.workers(),
        )
        .chunk_time(chunk_time)
    }

    /// Number of workers.
    fn workers(&self) -> usize;

    /// Stops accepting jobs, finishes the queued ones, and waits.
    fn shutdown(&self);

    /// Stops accepting jobs, cancels the queued ones, and waits for the
    /// running ones.
    fn shutdown_now(&self);
}
