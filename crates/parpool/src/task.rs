//! Registered tasks and the [`Executor`] trait every pool implements.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::JobError;
use crate::handle::JobHandle;
use crate::job::JobOptions;
use crate::map::{ChunkIn, ChunkOut, Map, MapUnordered};

/// A function registered under a stable name, so that any pool — threads
/// or worker processes, through the same trait — can run it. The input is a
/// serde type; so is the output, or a `Result` whose error is any error type
/// (see [`task!`](crate::task!)): they may cross a process boundary.
///
/// Define tasks with [`task!`](crate::task!), or write a closure that
/// captures nothing where it is used with [`call!`](crate::call!), rather
/// than by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a parpool task, so it cannot be sent to a pool's workers",
    label = "not a task",
    note = "a job that may run in another process must be found there by name: define it with \
            `parpool::task! {{ fn double(x: u64) -> u64 {{ x * 2 }} }}`, or wrap a closure that \
            captures nothing in `parpool::call!(|x: u64| x * 2)`",
    note = "a closure that captures its environment runs on a `ThreadPool` (`spawn`); for a \
            process, pass what it captures as the task's input"
)]
pub trait Task: Copy + Send + Sync + 'static {
    /// The stable name a worker looks the task up by.
    const NAME: &'static str;
    /// What the task takes.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// What the task returns.
    type Output: Send + 'static;
    /// How the output crosses a process boundary: the output itself, or
    /// for a `Result` whose error is not a serde type, the error's report.
    #[doc(hidden)]
    type Wire: Serialize + DeserializeOwned + Send + 'static;
    /// Runs the task.
    fn run(&self, input: Self::Input) -> Self::Output;
    /// The output as it crosses.
    #[doc(hidden)]
    fn to_wire(output: Self::Output) -> Self::Wire;
    /// The output back from its crossing form; an error that could not
    /// cross as its type arrives as [`JobError::Returned`].
    #[doc(hidden)]
    fn from_wire(wire: Self::Wire) -> Result<Self::Output, JobError>;
}

/// Defines a [`Task`]: a unit struct named like the function, whose
/// [`Task::NAME`] is its module path.
///
/// The function takes one parameter (a name, `mut` name, `_`, or a tuple
/// pattern: `(a, b): (u64, u64)`), several names (`a: u64, b: String`:
/// they travel as a tuple, so the job is submitted with `(a, b)`), or none
/// (submitted with `()`); without a return type it returns `()`. Parameters and the return type must be
/// serde types, to cross to a worker process — except a `Result`'s error,
/// which may be any type:
///
/// * a serde error type (a `String`, a `#[derive(Serialize, Deserialize)]`
///   enum) and `std::io::Error` come back as themselves, in the job's
///   `Ok(Err(e))`;
/// * any other (`anyhow::Error`, `Box<dyn Error + Send + Sync>`, an error
///   enum without serde) comes back from a worker process as its message,
///   type name and chain of causes: [`JobError::Returned`], whose
///   [`ErrorReport`](crate::ErrorReport) keeps them. On a thread pool it
///   never leaves the process and comes back as itself.
///
/// A `Result` is recognized by its name: `Result<T, E>`, `io::Result<T>`,
/// `anyhow::Result<T>`, any path ending in `Result<…>`.
///
/// ```
/// # #[cfg(all(feature = "process", target_os = "linux"))] {
/// use parpool::{Executor, JobError, ProcessPool};
///
/// parpool::task! {
///     fn file_len(path: String) -> std::io::Result<u64> {
///         Ok(std::fs::metadata(path)?.len())
///     }
/// }
/// parpool::task! {
///     fn parse(text: String) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
///         Ok(text.trim().parse()?)
///     }
/// }
///
/// let pool = ProcessPool::builder().workers(1).build()?;
/// let missing = pool.submit(file_len, "/no/such/file".into()).join()?;
/// assert_eq!(missing.unwrap_err().kind(), std::io::ErrorKind::NotFound);
/// match pool.submit(parse, "x".into()).join() {
///     Err(JobError::Returned(report)) => {
///         assert_eq!(report.message(), "invalid digit found in string")
///     }
///     other => panic!("{other:?}"),
/// }
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    // The parameters: one (a name, `mut` name, `_` or a tuple pattern),
    // none, or several names (a tuple). The return type and body follow.
    ($(#[$meta:meta])* $vis:vis fn $name:ident (mut $arg:ident : $in:ty $(,)?) $($rest:tt)*) => {
        $crate::task!(@ret [[$(#[$meta])*] [$vis] $name [mut $arg] [$in]] [] $($rest)*);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident ($arg:tt : $in:ty $(,)?) $($rest:tt)*) => {
        $crate::task!(@ret [[$(#[$meta])*] [$vis] $name [$arg] [$in]] [] $($rest)*);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident () $($rest:tt)*) => {
        $crate::task!(@ret [[$(#[$meta])*] [$vis] $name [_] [()]] [] $($rest)*);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident ($a0:ident : $t0:ty, $($arg:ident : $in:ty),+ $(,)?) $($rest:tt)*) => {
        $crate::task!(@ret [[$(#[$meta])*] [$vis] $name [($a0, $($arg,)+)] [($t0, $($in,)+)]] [] $($rest)*);
    };
    // The return type is every token up to the body, the last one.
    (@ret $sig:tt [$($ret:tt)*] { $($body:tt)* }) => {
        $crate::task!(@kind $sig {$($body)*} [$($ret)*]);
    };
    (@ret $sig:tt [$($ret:tt)*] $next:tt $($rest:tt)+) => {
        $crate::task!(@ret $sig [$($ret)* $next] $($rest)+);
    };
    (@ret $sig:tt [$($ret:tt)*] $($rest:tt)*) => {
        ::core::compile_error!(concat!(
            "parpool::task! expects the function's body, in braces, after its parameters ",
            "and return type: `fn name(x: u64) -> u64 { x * 2 }`"
        ));
    };
    // A `Result` (through any alias whose last segment is `Result`) sends
    // its error back as itself or as a report; anything else crosses as is.
    (@kind $sig:tt $body:tt []) => {
        $crate::task!(@define $sig $body [()] plain);
    };
    (@kind $sig:tt $body:tt [-> $($out:tt)+]) => {
        $crate::task!(@scan $sig $body [$($out)+] $($out)+);
    };
    (@scan $sig:tt $body:tt $out:tt Result < $($x:tt)*) => {
        $crate::task!(@define $sig $body $out result);
    };
    (@scan $sig:tt $body:tt $out:tt $seg:ident :: $($rest:tt)+) => {
        $crate::task!(@scan $sig $body $out $($rest)+);
    };
    (@scan $sig:tt $body:tt $out:tt :: $($rest:tt)+) => {
        $crate::task!(@scan $sig $body $out $($rest)+);
    };
    (@scan $sig:tt $body:tt $out:tt $($x:tt)*) => {
        $crate::task!(@define $sig $body $out plain);
    };
    (@define [[$($meta:tt)*] [$vis:vis] $name:ident [$($arg:tt)*] [$in:ty]] {$($body:tt)*} [$out:ty] $wire:ident) => {
        $($meta)*
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        $vis struct $name;

        impl $crate::Task for $name {
            const NAME: &'static str = concat!(module_path!(), "::", stringify!($name));
            type Input = $in;
            type Output = $out;
            $crate::__task_wire!($wire $out);
            fn run(&self, $($arg)*: $in) -> $out { $($body)* }
        }

        $crate::__register_task!($name);

        impl $name {
            /// Runs the task here, on the calling thread.
            #[allow(dead_code)]
            $vis fn run_now(input: $in) -> $out {
                <$name as $crate::Task>::run(&$name, input)
            }
        }
    };
    ($($rest:tt)*) => {
        ::core::compile_error!(concat!(
            "parpool::task! defines `fn name(a: A, b: B, ...) -> Output { body }`: ",
            "no generics, lifetimes or `self`; parameters and output of owned serde types ",
            "(String, not &str; a Result's error may be any type); several parameters ",
            "arrive as one tuple, submitted as `(a, b)`; `mut` on a single parameter only ",
            "(write `let mut x = x;` in the body). Got: ",
            stringify!($($rest)*)
        ));
    };
}

/// How a task's output crosses a process boundary: as itself, or for a
/// `Result`, with its error sent back as itself or as a report.
#[doc(hidden)]
#[macro_export]
macro_rules! __task_wire {
    (plain $out:ty) => {
        type Wire = $out;
        fn to_wire(output: $out) -> $out {
            output
        }
        fn from_wire(wire: $out) -> ::core::result::Result<$out, $crate::JobError> {
            ::core::result::Result::Ok(wire)
        }
    };
    (result $out:ty) => {
        type Wire = ::core::result::Result<
            <$out as $crate::__private::ResultParts>::Ok,
            $crate::__private::Returned,
        >;
        fn to_wire(output: $out) -> Self::Wire {
            output.map_err(|e| $crate::__error_codec!($out).to_wire(&e))
        }
        fn from_wire(wire: Self::Wire) -> ::core::result::Result<$out, $crate::JobError> {
            match wire {
                ::core::result::Result::Ok(v) => {
                    ::core::result::Result::Ok(::core::result::Result::Ok(v))
                }
                ::core::result::Result::Err(e) => $crate::__error_codec!($out)
                    .from_wire(e)
                    .map(::core::result::Result::Err),
            }
        }
    };
}

/// The codec for the error type of the `Result` type `$out`, picked by
/// auto-ref from what that error type implements.
#[doc(hidden)]
#[macro_export]
macro_rules! __error_codec {
    ($out:ty) => {{
        #[allow(unused_imports)]
        use $crate::__private::carry::{ByReport as _, ByRevive as _, BySerde as _};
        #[allow(unused_imports)]
        use $crate::__private::describe::{
            AsAny as _, AsDebug as _, AsDisplay as _, AsDynError as _, AsError as _,
        };
        type E = <$out as $crate::__private::ResultParts>::Err;
        $crate::__private::error_codec::<E>(
            (&&&&&$crate::__private::ErrorProbe::<E>::new()).describe(),
            (&&&$crate::__private::ErrorProbe::<E>::new()).carry(),
        )
    }};
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
                $crate::__private::register($crate::__private::TaskEntry::new($name, pod));
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

    /// [`submit`](Executor::submit) for async code: where the pool's queue
    /// is bounded and full, waits for room without blocking the runtime's
    /// thread (a pool whose queue never fills submits at once).
    ///
    /// ```
    /// use parpool::{Executor, ThreadPool};
    ///
    /// parpool::task!(fn double(x: u64) -> u64 { x * 2 });
    ///
    /// let pool = ThreadPool::builder().workers(1).queue_capacity(1).build()?;
    /// let total = futures::executor::block_on(async {
    ///     let mut handles = Vec::new();
    ///     for x in 0..5 {
    ///         handles.push(pool.submit_async(double, x).await);
    ///     }
    ///     let mut total = 0;
    ///     for h in handles {
    ///         total += h.await.unwrap();
    ///     }
    ///     total
    /// });
    /// assert_eq!(total, 20);
    /// # Ok::<(), parpool::BuildError>(())
    /// ```
    fn submit_async<T: Task>(
        &self,
        task: T,
        input: T::Input,
    ) -> impl std::future::Future<Output = JobHandle<T::Output>> + Send
    where
        Self: Sized + Sync,
    {
        std::future::ready(self.submit(task, input))
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

/// A closure that captures nothing, callable with `I`: what
/// [`call!`](crate::call!) wraps. Not part of the API.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`call!` takes a closure that captures nothing, with its parameters' types written",
    label = "this closure captures a variable, or its parameters are not written `|x: Type|`",
    note = "the closure runs in a worker process, which does not have the caller's variables: \
            pass what it needs as the job's input (`pool.submit(call!(|(x, k): (u64, u64)| x * k), (x, k))`)"
)]
pub trait CallFn<I>: Copy + Send + Sync + 'static {
    /// What it returns.
    type Out;
    /// Calls it.
    fn call(&self, input: I) -> Self::Out;
}

impl<F, I, O> CallFn<I> for F
where
    F: Fn(I) -> O + Copy + Send + Sync + 'static,
{
    type Out = O;
    fn call(&self, input: I) -> O {
        self(input)
    }
}

/// A [`Task`] written where it is used: a closure that captures nothing,
/// whose one parameter has its type written out (or several, which travel
/// as a tuple, or none). It runs on any pool, a [`ProcessPool`]'s worker
/// processes included: the closure is registered under a name made from
/// where it is written, and only that name crosses to a worker, never a
/// code pointer.
///
/// ```
/// use parpool::{call, Executor, ThreadPool};
///
/// let pool = ThreadPool::builder().workers(2).build()?;
/// assert_eq!(pool.submit(call!(|x: u64| x * 2), 21).join(), Ok(42));
/// assert_eq!(pool.submit(call!(|a: u64, b: String| b.repeat(a as usize)), (2, "ab".into())).join(), Ok("abab".into()));
/// assert_eq!(pool.submit(call!(|| 7), ()).join(), Ok(7));
/// let squares: Vec<u64> = pool.map_task(call!(|x: u64| x * x), 1..=3).map(Result::unwrap).collect();
/// assert_eq!(squares, [1, 4, 9]);
/// # Ok::<(), parpool::BuildError>(())
/// ```
///
/// The input and output are serde types, as for [`task!`](crate::task!);
/// to return a `Result` whose error is not a serde type (`io::Result`,
/// `anyhow::Result`), define the task with [`task!`](crate::task!), which
/// sends such an error back as its message.
///
/// The name is the module, file, line and column of the `call!`: a macro
/// that expands two `call!`s at one place of its caller gives them one
/// name, and a worker refuses that name ([`JobError::UnknownTask`]) rather
/// than run one closure for the other; define such tasks with
/// [`task!`](crate::task!).
///
/// A closure that captures a variable cannot run in another process, which
/// does not have the variable. It is a compile error: pass the value as the
/// input instead.
///
/// ```compile_fail
/// use parpool::{call, Executor, ThreadPool};
///
/// let pool = ThreadPool::builder().workers(2).build().unwrap();
/// let factor = 3u64;
/// pool.submit(call!(|x: u64| x * factor), 14);
/// ```
///
/// [`ProcessPool`]: https://docs.rs/parpool/latest/parpool/struct.ProcessPool.html
#[macro_export]
macro_rules! call {
    (|| $($body:tt)*) => {
        $crate::call!(@site |(): ()| $($body)*)
    };
    (move || $($body:tt)*) => {
        $crate::call!(@site |(): ()| $($body)*)
    };
    (| $a0:ident : $t0:ty, $($a:ident : $t:ty),+ $(,)? | $($body:tt)*) => {
        $crate::call!(@site |($a0, $($a,)+): ($t0, $($t,)+)| $($body)*)
    };
    (move | $a0:ident : $t0:ty, $($a:ident : $t:ty),+ $(,)? | $($body:tt)*) => {
        $crate::call!(@site |($a0, $($a,)+): ($t0, $($t,)+)| $($body)*)
    };
    (@site $f:expr) => {{
        #[allow(non_camel_case_types)]
        struct __parpool_call<F, I>(F, ::core::marker::PhantomData<fn(I)>);
        impl<F: ::core::marker::Copy, I> ::core::clone::Clone for __parpool_call<F, I> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<F: ::core::marker::Copy, I> ::core::marker::Copy for __parpool_call<F, I> {}
        #[diagnostic::do_not_recommend]
        impl<F, I> $crate::Task for __parpool_call<F, I>
        where
            F: $crate::__private::CallFn<I>,
            I: $crate::__private::serde::Serialize
                + $crate::__private::serde::de::DeserializeOwned
                + ::core::marker::Send
                + 'static,
            F::Out: $crate::__private::serde::Serialize
                + $crate::__private::serde::de::DeserializeOwned
                + ::core::marker::Send
                + 'static,
        {
            const NAME: &'static str = ::core::concat!(
                ::core::module_path!(), "::{call@", ::core::file!(), ":",
                ::core::line!(), ":", ::core::column!(), "}"
            );
            type Input = I;
            type Output = F::Out;
            type Wire = F::Out;
            fn run(&self, input: I) -> F::Out {
                self.0.call(input)
            }
            fn to_wire(output: F::Out) -> F::Out {
                output
            }
            fn from_wire(wire: F::Out) -> ::core::result::Result<F::Out, $crate::JobError> {
                ::core::result::Result::Ok(wire)
            }
        }
        fn __parpool_make<F: $crate::__private::CallFn<I>, I>(f: F) -> __parpool_call<F, I> {
            __parpool_call(f, ::core::marker::PhantomData)
        }
        // The worker's copy of the closure, built from the same tokens in a
        // function of its own (a closure that captures a variable fails to
        // compile here: the worker has no such variable).
        #[allow(dead_code)]
        fn __parpool_register() {
            $crate::__register_call!(__parpool_make($f));
        }
        $crate::__register_call!(@ctor __parpool_register);
        __parpool_make($f)
    }};
    ($f:expr) => {
        $crate::call!(@site $f)
    };
}

/// Registers a `call!` closure for worker processes to find: a constructor
/// that builds the same closure from the same tokens.
#[cfg(all(feature = "process", target_os = "linux"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __register_call {
    (@ctor $register:ident) => {
        $crate::__private::ctor::declarative::ctor! {
            #[ctor(unsafe, anonymous, crate_path = $crate::__private::ctor)]
            fn register() {
                // SAFETY (constructor): only appends to parpool's registry,
                // a std `Mutex` that needs no runtime initialization.
                $register();
            }
        }
    };
    ($task:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::{NoPodKernel as _, PodKernel as _};
        let task = $task;
        let pod = (&&&$crate::__private::Probe::of(&task)).pod_kernel();
        $crate::__private::register($crate::__private::TaskEntry::new(task, pod));
    }};
}

/// Without worker processes there is nothing to register.
#[cfg(not(all(feature = "process", target_os = "linux")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __register_call {
    ($($any:tt)*) => {};
}
