//! The native half of parpool's Python package (`parpool._parpool`): a
//! [`ProcessPool`] whose workers are Python interpreters, and the one task
//! they run, a pickled call.
//!
//! The Python half (`python/parpool/`) builds on it: the executor pickles
//! `(fn, args, kwargs)`, [`Pool::submit`] sends the bytes to a worker, where
//! [`py_call`] hands them to `parpool._worker._run`, which unpickles, calls
//! and pickles the outcome (a value or the exception) back. A worker that
//! dies or overruns its timeout fails that job alone; the pool replaces the
//! worker, as it does for Rust tasks.
//!
//! Threads: the pool's own threads never touch Python. A job's end is
//! posted, as its key, on a channel that one Python thread of the executor
//! reads ([`Pool::next_done`]), without the GIL while it waits. Every call
//! that can block (building, shutting down, waiting) releases the GIL.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use parpool::{BuildError, Executor, JobError, JobHandle, JobOptions, ProcessPool, WorkerOutput};
use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

mod flatten;
mod ipc;
mod sync;

use ipc::IpcObject;

/// A pickled call, or its pickled outcome, with the `parpool.ipc` objects
/// its pickle refers to (set aside by the pickler: their shared memory
/// travels beside it).
#[derive(Debug, Serialize, Deserialize)]
struct Call {
    pickled: ByteBuf,
    objects: Vec<IpcObject>,
}

parpool::task!(
    /// Runs one pickled call in a worker: `parpool._worker._run` unpickles
    /// `(fn, args, kwargs)`, calls it and returns the pickled outcome, and
    /// lets nothing escape; a failure here (the package cannot be imported
    /// in the worker) is a bug in the installation, reported as a panic.
    fn py_call(call: Call) -> Call {
        Python::attach(|py| run_call(py, call))
            .unwrap_or_else(|e| panic!("parpool's worker module failed: {e}"))
    }
);

/// Calls `parpool._worker._run(pickled, objects)`, which returns the
/// pickled outcome and the objects it refers to.
fn run_call(py: Python<'_>, call: Call) -> PyResult<Call> {
    let objects = ipc::to_list(py, call.objects)?;
    let returned = worker_module(py)?
        .bind(py)
        .getattr("_run")?
        .call1((PyBytes::new(py, &call.pickled), objects))?;
    let (pickled, objects): (Bound<'_, PyBytes>, Bound<'_, PyAny>) = returned.extract()?;
    Ok(Call {
        pickled: ByteBuf::from(pickled.as_bytes().to_vec()),
        objects: ipc::from_list(&objects)?,
    })
}

/// The worker module, looked up once per process.
fn worker_module(py: Python<'_>) -> PyResult<&Py<PyModule>> {
    static WORKER: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    WORKER.get_or_try_init(py, || py.import("parpool._worker").map(Bound::unbind))
}

parpool::task!(
    /// Prepares each new worker (the parent's `sys.path`, working
    /// directory and main module) and runs the executor's initializer, if
    /// any: `parpool._worker._initialize`. An exception fails the worker's
    /// start, and so the pool's build, with the exception as the reason.
    fn py_init(init: Call) {
        let prepared = Python::attach(|py| {
            let objects = ipc::to_list(py, init.objects)?;
            worker_module(py)?
                .bind(py)
                .getattr("_initialize")?
                .call1((PyBytes::new(py, &init.pickled), objects))
                .map(drop)
        });
        if let Err(e) = prepared {
            panic!("{e}");
        }
    }
);

create_exception!(
    _parpool,
    InitializerError,
    PyRuntimeError,
    "A worker could not start: its preparation or the executor's initializer raised."
);

/// A pool of Python worker processes, as the executor drives it. Jobs are
/// known by a key (their job id); each one's end is posted to
/// [`next_done`](Pool::next_done).
#[pyclass(module = "parpool._parpool", frozen)]
struct Pool {
    pool: ProcessPool,
    /// The jobs whose end nobody took yet.
    jobs: Mutex<HashMap<u64, Job>>,
    /// Where a job's end is posted (its key).
    ended: Sender<u64>,
    ends: Mutex<Receiver<u64>>,
    /// The jobs that ended, for callers waiting on one job in their own
    /// thread.
    endings: Arc<Endings>,
}

/// A job as the pool keeps it until its end is taken.
#[derive(Debug)]
struct Job {
    handle: JobHandle<Call>,
    /// Callers of [`take`](Pool::take) waiting on it: while there are, its
    /// end is not posted to the results thread (one thread wakes, not
    /// two), and the results thread leaves it to them. Shared with the
    /// job's `on_done` callback, which cannot take the jobs' lock.
    waiters: Arc<AtomicU32>,
}

/// The jobs that ended and whose end nobody took yet, for callers waiting
/// on one job in their own thread ([`take`](Pool::take)). A job is marked
/// from its `on_done` callback, which runs before its result is stored:
/// whoever sees the mark takes the job and joins it, which waits out that
/// moment.
#[derive(Debug, Default)]
struct Endings {
    keys: Mutex<HashSet<u64>>,
    changed: Condvar,
}

impl Endings {
    fn mark(&self, key: u64) {
        lock(&self.keys).insert(key);
        self.changed.notify_all();
    }

    fn has(&self, key: u64) -> bool {
        lock(&self.keys).contains(&key)
    }

    fn forget(&self, key: u64) {
        lock(&self.keys).remove(&key);
    }

    /// Waits up to `wait` for job `key` to be marked.
    fn wait_for(&self, key: u64, wait: Duration) {
        let keys = lock(&self.keys);
        let _ = self
            .changed
            .wait_timeout_while(keys, wait, |keys| !keys.contains(&key));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A duration in seconds from Python, refused if negative or not a number.
pub(crate) fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        PyValueError::new_err(format!("{what} must be a number of seconds >= 0, not {s}"))
    })
}

/// How often a wait in the caller's thread looks for Ctrl-C.
pub(crate) const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// A job's end as the Python side takes it: `"ok"` and the pickled
/// outcome, or the error's kind and message; then what the job wrote to
/// stdout and stderr, if the pool captures it (else empty); then the
/// `parpool.ipc` objects the outcome's pickle refers to.
type Outcome = (
    &'static str,
    Py<PyAny>,
    Py<PyBytes>,
    Py<PyBytes>,
    Py<PyList>,
);

/// Joins an ended job (without the GIL: its result may be a moment from
/// stored) and converts its end.
fn outcome(py: Python<'_>, handle: JobHandle<Call>) -> Outcome {
    let (result, output) = py.detach(|| handle.join_captured());
    let (kind, payload, objects) = match result {
        Ok(call) => (
            "ok",
            PyBytes::new(py, &call.pickled).into_any().unbind(),
            call.objects,
        ),
        Err(e) => (
            error_kind(&e),
            PyString::new(py, &e.to_string()).into_any().unbind(),
            Vec::new(),
        ),
    };
    let stdout = PyBytes::new(py, &output.stdout).unbind();
    let stderr = PyBytes::new(py, &output.stderr).unbind();
    // An object that cannot be wrapped leaves the list short; the
    // unpickler then says which reference it misses.
    let objects = ipc::to_list(py, objects).unwrap_or_else(|_| PyList::empty(py).unbind());
    (kind, payload, stdout, stderr, objects)
}

/// The word the Python side keys its exception on, for a job's error.
fn error_kind(e: &JobError) -> &'static str {
    match e {
        JobError::Crashed { .. } => "crashed",
        JobError::TimedOut { .. } => "timeout",
        JobError::Cancelled => "cancelled",
        JobError::TooLarge { .. } => "too_large",
        JobError::Shutdown => "shutdown",
        _ => "error",
    }
}

impl Pool {
    /// Job `key`, taken if it ended: `Some(None)` while it runs, `None`
    /// once another caller took it. (Marked before its result is stored:
    /// joining it waits out that moment.)
    fn take_if_ended(&self, key: u64) -> Option<Option<JobHandle<Call>>> {
        let mut jobs = lock(&self.jobs);
        jobs.get(&key)?;
        if !self.endings.has(key) {
            return Some(None);
        }
        let job = jobs.remove(&key)?;
        drop(jobs);
        self.endings.forget(key);
        Some(Some(job.handle))
    }

    /// A caller of `take` leaves without the job's end: if it was the last
    /// waiter and the job ended meanwhile (the results thread passed it
    /// over), its end is posted again for the results thread.
    fn stop_waiting(&self, key: u64) {
        let mut jobs = lock(&self.jobs);
        if let Some(job) = jobs.get_mut(&key) {
            // After the decrement, so that either this sees the job's mark
            // or its callback sees no waiter and posts it (or both: the
            // results thread then finds it gone the second time).
            if job.waiters.fetch_sub(1, SeqCst) == 1 && self.endings.has(key) {
                let _ = self.ended.send(key);
            }
        }
    }
}

#[pymethods]
impl Pool {
    /// Starts `workers` worker processes as `program args…` and waits until
    /// each serves.
    #[new]
    #[pyo3(signature = (
        workers, program, args, *, max_jobs_per_worker=None, job_timeout=None,
        memory_limit=None, start_timeout=60.0, initializer=None, quiet=false,
        capture=false, spin=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        workers: usize,
        program: std::path::PathBuf,
        args: Vec<String>,
        max_jobs_per_worker: Option<u64>,
        job_timeout: Option<f64>,
        memory_limit: Option<u64>,
        start_timeout: f64,
        initializer: Option<(Vec<u8>, Bound<'_, PyAny>)>,
        quiet: bool,
        capture: bool,
        spin: Option<f64>,
    ) -> PyResult<Self> {
        let mut builder = ProcessPool::builder()
            .name("parpool-py")
            .workers(workers)
            .worker_command(program, args)
            .start_timeout(seconds("start_timeout", start_timeout)?)
            .max_payload(1 << 30);
        if let Some(n) = max_jobs_per_worker {
            builder = builder.max_jobs_per_worker(n);
        }
        if let Some(t) = job_timeout {
            builder = builder.job_timeout(seconds("timeout", t)?);
        }
        if let Some(bytes) = memory_limit {
            builder = builder.memory_limit(bytes);
        }
        if let Some(window) = spin {
            builder = builder.spin(seconds("spin", window)?);
        }
        if let Some((pickled, objects)) = initializer {
            let init = Call {
                pickled: ByteBuf::from(pickled),
                objects: ipc::from_list(&objects)?,
            };
            builder = builder.initializer(py_init, init);
        }
        if quiet {
            builder = builder
                .stdout(WorkerOutput::Null)
                .stderr(WorkerOutput::Null);
        } else if capture {
            builder = builder
                .stdout(WorkerOutput::Capture)
                .stderr(WorkerOutput::Capture);
        }
        let pool = py.detach(|| builder.build()).map_err(|e| match e {
            // The Python exception's own words, without the panic's frame.
            BuildError::Initializer {
                index,
                error: JobError::Panicked(info),
            } => InitializerError::new_err(format!(
                "worker {index} could not start: {}",
                info.message
            )),
            BuildError::Initializer { .. } => InitializerError::new_err(e.to_string()),
            e => PyRuntimeError::new_err(e.to_string()),
        })?;
        let (ended, ends) = mpsc::channel();
        Ok(Pool {
            pool,
            jobs: Mutex::new(HashMap::new()),
            ended,
            ends: Mutex::new(ends),
            endings: Arc::default(),
        })
    }

    /// Sends a pickled call, with the `parpool.ipc` objects its pickle
    /// refers to, to a worker; returns the job's key. `timeout` (seconds)
    /// kills its worker if it runs longer.
    #[pyo3(signature = (pickled, objects, timeout=None))]
    fn submit(
        &self,
        pickled: &[u8],
        objects: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let call = Call {
            pickled: ByteBuf::from(pickled.to_vec()),
            objects: ipc::from_list(objects)?,
        };
        let mut options = JobOptions::new();
        if let Some(t) = timeout {
            options = options.timeout(seconds("timeout", t)?);
        }
        let handle = self.pool.submit_with(options, py_call, call);
        let key = handle.id().get();
        let ended = self.ended.clone();
        let endings = self.endings.clone();
        let waiters = Arc::new(AtomicU32::new(0));
        let waited = waiters.clone();
        let mut jobs = lock(&self.jobs);
        // Registered before its end can be posted, so `next_done` finds it.
        let job = jobs.entry(key).or_insert(Job { handle, waiters });
        job.handle.on_done(move |_| {
            // Marked first: a waiter that leaves after this sees the mark.
            endings.mark(key);
            if waited.load(SeqCst) == 0 {
                let _ = ended.send(key);
            }
        });
        Ok(key)
    }

    /// Waits up to `timeout` seconds for a job to end. Returns `None` if
    /// none did, else `(key, (kind, payload, stdout, stderr))`: kind `"ok"`
    /// with the pickled outcome as bytes, or the error's kind
    /// (`"crashed"`, `"timeout"`, `"cancelled"`, `"too_large"`,
    /// `"shutdown"`, `"error"`) with its message; then what the job wrote,
    /// if the pool captures its output.
    fn next_done(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<(u64, Outcome)>> {
        let wait = seconds("timeout", timeout)?;
        let deadline = Instant::now()
            .checked_add(wait)
            .unwrap_or_else(Instant::now);
        let ended = py.detach(|| {
            let ends = lock(&self.ends);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                // Disconnected cannot happen: the pool holds a sender.
                let key = ends.recv_timeout(left).ok()?;
                let mut jobs = lock(&self.jobs);
                // Gone: a caller took it; waited on: its waiters take it.
                if jobs
                    .get(&key)
                    .is_some_and(|job| job.waiters.load(SeqCst) == 0)
                {
                    let job = jobs.remove(&key).expect("just found");
                    drop(jobs);
                    self.endings.forget(key);
                    return Some((key, job.handle));
                }
            }
        });
        Ok(ended.map(|(key, handle)| (key, outcome(py, handle))))
    }

    /// Waits for job `key` in the calling thread, up to `timeout` seconds
    /// (`None`: as long as it takes), and takes its end as
    /// [`next_done`](Pool::next_done) gives it, without the key: `None` if
    /// it did not end in time, or if another caller took it. While it
    /// waits, the results thread leaves the job's end to it (one thread
    /// wakes, not two) and [`cancel`](Pool::cancel) still finds the job.
    /// Checks for Ctrl-C (Python's signal handlers) as it waits.
    #[pyo3(signature = (key, timeout=None))]
    fn take(&self, py: Python<'_>, key: u64, timeout: Option<f64>) -> PyResult<Option<Outcome>> {
        // A deadline past what a clock can say is no deadline.
        let deadline = match timeout {
            Some(t) => Instant::now().checked_add(seconds("timeout", t)?),
            None => None,
        };
        match lock(&self.jobs).get_mut(&key) {
            Some(job) => {
                job.waiters.fetch_add(1, SeqCst);
            }
            None => return Ok(None),
        }
        // In the low-latency mode, a poll for the end before the first
        // sleep, as the pool's own joiners do.
        let window = self.pool.spin();
        if !window.is_zero() {
            let window = deadline.map_or(window, |at| {
                window.min(at.saturating_duration_since(Instant::now()))
            });
            py.detach(|| parpool::remote::spin_until(window, || self.endings.has(key)));
        }
        loop {
            match self.take_if_ended(key) {
                Some(Some(handle)) => return Ok(Some(outcome(py, handle))),
                Some(None) => {}
                None => return Ok(None),
            }
            let left = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                self.stop_waiting(key);
                return Ok(None);
            }
            let slice = left.map_or(SIGNAL_CHECK, |left| left.min(SIGNAL_CHECK));
            py.detach(|| self.endings.wait_for(key, slice));
            if let Err(interrupted) = py.check_signals() {
                self.stop_waiting(key);
                return Err(interrupted);
            }
        }
    }

    /// Cancels job `key`: a queued job never starts, a running one has its
    /// worker killed (and replaced). True if this call resolved it.
    fn cancel(&self, key: u64) -> bool {
        lock(&self.jobs)
            .get(&key)
            .is_some_and(|job| job.handle.cancel())
    }

    /// Whether job `key` runs in a worker now.
    fn running(&self, key: u64) -> bool {
        lock(&self.jobs)
            .get(&key)
            .is_some_and(|job| job.handle.is_running())
    }

    /// Refuses new jobs; with `wait`, also waits until every job ended and
    /// the workers exited.
    fn shutdown(&self, py: Python<'_>, wait: bool) {
        py.detach(|| {
            if wait {
                self.pool.shutdown();
            } else {
                self.pool.close();
            }
        });
    }

    /// The worker processes' ids, in slot order.
    fn worker_pids(&self) -> Vec<u32> {
        self.pool.worker_pids()
    }

    /// How many workers were started to replace others.
    fn respawns(&self) -> u64 {
        self.pool.respawns()
    }
}

/// Serves the pool that started this process, until it lets the worker
/// go: the body of `python -m parpool._worker`.
#[pyfunction]
fn serve_worker(py: Python<'_>) -> PyResult<()> {
    py.detach(parpool::serve_worker)
        .map_err(|e| PyOSError::new_err(e.to_string()))
}

/// The native half of parpool's Python package.
#[pymodule]
fn _parpool(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Pool>()?;
    m.add_class::<ipc::PyEvent>()?;
    m.add_class::<ipc::PyQueue>()?;
    m.add_class::<ipc::PySharedMemory>()?;
    m.add_class::<sync::PyLock>()?;
    m.add_class::<sync::PyRLock>()?;
    m.add_class::<sync::PySemaphore>()?;
    m.add_class::<sync::PyBarrier>()?;
    m.add_class::<ipc::PyDescriptor>()?;
    m.add_class::<flatten::Flatten>()?;
    m.add("OwnerDied", m.py().get_type::<sync::OwnerDied>())?;
    m.add("InitializerError", m.py().get_type::<InitializerError>())?;
    m.add_function(wrap_pyfunction!(serve_worker, m)?)?;
    Ok(())
}
