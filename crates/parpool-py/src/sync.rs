//! `parpool.ipc`'s locks for Python, natively: [`PyLock`], [`PyRLock`],
//! [`PySemaphore`] and [`PyBarrier`], parpool-ipc's robust primitives
//! behind `multiprocessing`'s method names. A process (or thread) that dies
//! holding one never hangs the others: a lock raises [`OwnerDied`], a
//! semaphore takes the permits back, a barrier breaks.
//!
//! Python takes and releases in separate calls, so each `acquire` forgets
//! the Rust guard it took and `release` gives the hold back through the
//! primitive's own guardless release, which refuses a thread (or, for a
//! semaphore, a process) that holds nothing.

use std::time::{Duration, Instant};

use parpool::ipc::{Barrier, BarrierError, Lock, LockError, RLock, Semaphore};
use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::ipc::{set_aside, wait_for};
use crate::seconds;

create_exception!(
    parpool.ipc,
    OwnerDied,
    PyRuntimeError,
    "A process or thread died holding this lock, so what it guards may be \
     half-updated. The lock is free. Every acquire raises this until someone \
     takes it with `acquire(repair=True)`, repairs what it guards and calls \
     `clear_poison()`."
);

/// The Python exception for a lock that could not be taken or given back.
fn lock_error(e: LockError) -> PyErr {
    match e {
        LockError::OwnerDied => OwnerDied::new_err(
            "a process or thread died holding this lock, so what it guards may be \
             half-updated; take it with acquire(repair=True), repair, then call \
             clear_poison()",
        ),
        LockError::NotHeld => PyRuntimeError::new_err(
            "cannot release a lock this thread does not hold (parpool.ipc locks \
             are released by the thread that acquired them)",
        ),
        other => PyOSError::new_err(other.to_string()),
    }
}

/// The timeout of a blocking acquire: `None` or a negative number (as
/// `threading`'s -1) waits as long as it takes.
fn patience(timeout: Option<f64>) -> Option<f64> {
    timeout.filter(|t| !t.is_sign_negative())
}

/// Takes a lock for Python: first without waiting or giving up the GIL,
/// then (if `block`) in slices that let Ctrl-C through. `attempt(None)`
/// tries once, `attempt(Some(d))` waits at most `d`; each forgets the
/// guard it took and says whether it took one.
fn acquire_lock(
    py: Python<'_>,
    block: bool,
    timeout: Option<f64>,
    attempt: impl Fn(Option<Duration>) -> Result<bool, LockError> + Sync,
) -> PyResult<bool> {
    if attempt(None).map_err(lock_error)? {
        return Ok(true);
    }
    if !block {
        return Ok(false);
    }
    let got = wait_for(py, patience(timeout), |slice| match attempt(Some(slice)) {
        Ok(true) => Some(Ok(())),
        Ok(false) => None,
        Err(e) => Some(Err(e)),
    })?;
    match got {
        Some(Ok(())) => Ok(true),
        Some(Err(e)) => Err(lock_error(e)),
        None => Ok(false),
    }
}

/// What an attempt to take a lock gives Python: taken (its guard
/// forgotten, to be released by `release`), not now, or an error.
fn taken<G>(result: Result<G, LockError>) -> Result<bool, LockError> {
    match result {
        Ok(guard) => {
            std::mem::forget(guard);
            Ok(true)
        }
        Err(LockError::WouldBlock | LockError::TimedOut) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A lock shared by processes, like `multiprocessing.Lock`, that a holder's
/// death cannot leave taken: `acquire(block=True, timeout=None)`,
/// `release()`, `with lock:`.
///
/// If a process or thread dies holding it, the lock is free again but
/// *poisoned*: every `acquire`, in every process, raises
/// `parpool.ipc.OwnerDied` until someone takes it with
/// `acquire(repair=True)`, makes what it guards sound, and calls
/// `clear_poison()`. It is released by the thread that acquired it
/// (another raises `RuntimeError`).
#[pyclass(module = "parpool.ipc", name = "Lock", frozen)]
#[derive(Debug)]
pub(crate) struct PyLock {
    pub(crate) inner: Lock,
}

/// The Python methods `Lock` and `RLock` share (a class takes one
/// `#[pymethods]` block): they differ only in how one is made, what
/// `acquire` and `release` say, and how one shows.
macro_rules! robust_lock_methods {
    (
        $class:ident,
        make: $make:expr,
        acquire: $acquire_doc:literal,
        release: $release_doc:literal,
        repr: |$lock:ident| $repr:expr $(,)?
    ) => {
        #[pymethods]
        impl $class {
            #[new]
            fn new() -> PyResult<Self> {
                let inner = $make.map_err(|e| PyOSError::new_err(e.to_string()))?;
                Ok($class { inner })
            }

            #[doc = $acquire_doc]
            #[pyo3(signature = (block=true, timeout=None, *, repair=false))]
            fn acquire(
                &self,
                py: Python<'_>,
                block: bool,
                timeout: Option<f64>,
                repair: bool,
            ) -> PyResult<bool> {
                let lock = &self.inner;
                acquire_lock(py, block, timeout, |wait| {
                    taken(match (wait, repair) {
                        (None, false) => lock.try_lock(),
                        (Some(d), false) => lock.lock_timeout(d),
                        (wait, true) => lock.lock_for_repair_timeout(wait.unwrap_or_default()),
                    })
                })
            }

            #[doc = $release_doc]
            fn release(&self) -> PyResult<()> {
                self.inner.unlock().map_err(lock_error)
            }

            fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
                self.acquire(py, true, None, false)
            }

            fn __exit__(
                &self,
                _kind: &Bound<'_, PyAny>,
                _value: &Bound<'_, PyAny>,
                _traceback: &Bound<'_, PyAny>,
            ) -> PyResult<bool> {
                self.release()?;
                Ok(false)
            }

            /// Whether a holder died holding it and nobody has cleared the poison.
            #[getter]
            fn poisoned(&self) -> bool {
                self.inner.is_poisoned()
            }

            /// Clears the poison a dead holder left, for every process.
            fn clear_poison(&self) {
                self.inner.clear_poison();
            }

            fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
                set_aside(slf.as_any())
            }

            fn __repr__(&self) -> String {
                let $lock = &self.inner;
                $repr
            }
        }
    };
}

robust_lock_methods!(
    PyLock,
    make: Lock::new(()),
    acquire: "Takes the lock, waiting (if `block`) at most `timeout` seconds
(`None` or negative: as long as it takes); returns whether it was
taken. `repair=True` takes it even if poisoned.",
    release: "Releases the lock this thread holds.",
    repr: |lock| {
        let state = if lock.is_poisoned() { "poisoned" } else { "robust" };
        format!("<parpool.ipc.Lock, {state}>")
    },
);

/// A reentrant lock shared by processes, like `multiprocessing.RLock`: the
/// thread holding it may acquire it again, and it is free once each
/// acquire has been released. Robust as `Lock` is (`OwnerDied`,
/// `acquire(repair=True)`, `clear_poison()`).
#[pyclass(module = "parpool.ipc", name = "RLock", frozen)]
#[derive(Debug)]
pub(crate) struct PyRLock {
    pub(crate) inner: RLock,
}

robust_lock_methods!(
    PyRLock,
    make: RLock::new(),
    acquire: "Takes the lock (at once if this thread holds it), waiting (if
`block`) at most `timeout` seconds; returns whether it was taken.",
    release: "Releases one acquire of this thread's; the last frees the lock.",
    repr: |lock| format!("<parpool.ipc.RLock, held {} times by this thread>", lock.depth()),
);

/// A semaphore shared by processes, like `multiprocessing.BoundedSemaphore`:
/// `value` permits, `acquire(block=True, timeout=None)`, `release()`,
/// `get_value()`, `with sem:`.
///
/// Permits belong to the process that acquired them: when it dies they
/// come back on their own (none is lost to a crash), and `release()` in a
/// process that holds none raises `ValueError` rather than adding one. For
/// signalling between processes use `Event` or `Queue`.
#[pyclass(module = "parpool.ipc", name = "Semaphore", frozen)]
#[derive(Debug)]
pub(crate) struct PySemaphore {
    pub(crate) inner: Semaphore,
}

#[pymethods]
impl PySemaphore {
    #[new]
    #[pyo3(signature = (value=1))]
    fn new(value: i64) -> PyResult<Self> {
        let permits = u32::try_from(value)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "a parpool.ipc.Semaphore needs 1 or more permits, not {value}: its \
                     permits belong to the processes that acquire them, so one made \
                     empty could never be released (to signal, use Event or Queue)"
                ))
            })?;
        let inner = Semaphore::new(permits).map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(PySemaphore { inner })
    }

    /// Takes a permit, waiting (if `block`) at most `timeout` seconds;
    /// returns whether one was taken.
    #[pyo3(signature = (block=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        let sem = &self.inner;
        acquire_lock(py, block, timeout, |wait| {
            let permit = match wait {
                None => sem.try_acquire(),
                Some(d) => sem.acquire_timeout(d),
            };
            Ok(permit.map(std::mem::forget).is_some())
        })
    }

    /// Gives back `n` permits this process holds.
    #[pyo3(signature = (n=1))]
    fn release(&self, n: u32) -> PyResult<()> {
        for _ in 0..n {
            if !self.inner.release() {
                return Err(PyValueError::new_err(
                    "this process holds no permit of this semaphore to release \
                     (parpool.ipc.Semaphore permits are released by the process \
                     that acquired them)",
                ));
            }
        }
        Ok(())
    }

    /// Permits free now.
    fn get_value(&self) -> u32 {
        self.inner.available()
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire(py, true, None)
    }

    fn __exit__(
        &self,
        _kind: &Bound<'_, PyAny>,
        _value: &Bound<'_, PyAny>,
        _traceback: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        self.release(1)?;
        Ok(false)
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        set_aside(slf.as_any())
    }

    fn __repr__(&self) -> String {
        format!("<parpool.ipc.Semaphore, {} free>", self.inner.available())
    }
}

/// The native half of `parpool.ipc.Barrier` (which adds the default
/// action and timeout, carried with it when pickled).
#[pyclass(module = "parpool._parpool", name = "Barrier", frozen)]
#[derive(Debug)]
pub(crate) struct PyBarrier {
    pub(crate) inner: Barrier,
}

/// How long a wait that found every place taken (parties of the round
/// before still leaving) sleeps before it looks again.
const PLACE_RETRY: Duration = Duration::from_millis(1);

fn broken_barrier(py: Python<'_>) -> PyResult<PyErr> {
    let class = py.import("threading")?.getattr("BrokenBarrierError")?;
    Ok(PyErr::from_value(class.call0()?))
}

#[pymethods]
impl PyBarrier {
    #[new]
    fn new(parties: u32) -> PyResult<Self> {
        let inner = Barrier::new(parties).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyBarrier { inner })
    }

    /// Waits until `parties` parties wait, at most `timeout` seconds
    /// (`None`: as long as it takes); the last to arrive calls `action`
    /// first. Returns this party's arrival index. Raises
    /// `threading.BrokenBarrierError` if the barrier is or becomes broken
    /// (a party died, timed out or aborted), and what `action` raised in
    /// the party that ran it (which breaks the barrier too).
    #[pyo3(signature = (timeout=None, action=None))]
    fn wait(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        action: Option<Py<PyAny>>,
    ) -> PyResult<u32> {
        let timeout = patience(timeout)
            .map(|t| seconds("timeout", t))
            .transpose()?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let barrier = &self.inner;
        let mut raised = None;
        let outcome = py.detach(|| {
            let party = loop {
                match barrier.party() {
                    Err(BarrierError::Full(_)) => {}
                    other => break other,
                }
                if deadline.is_some_and(|at| Instant::now() >= at) {
                    barrier.abort();
                    return Err(BarrierError::TimedOut);
                }
                std::thread::sleep(PLACE_RETRY);
            }?;
            let left = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            party.wait_with(left, || match &action {
                None => true,
                Some(action) => Python::attach(|py| match action.call0(py) {
                    Ok(_) => true,
                    Err(e) => {
                        raised = Some(e);
                        false
                    }
                }),
            })
        });
        if let Some(e) = raised {
            return Err(e);
        }
        match outcome {
            Ok(index) => Ok(index),
            Err(BarrierError::Io(e)) => Err(PyOSError::new_err(e.to_string())),
            Err(_) => Err(broken_barrier(py)?),
        }
    }

    /// Breaks the barrier: parties waiting now, and every wait until
    /// `reset()`, raise `threading.BrokenBarrierError`.
    fn abort(&self) {
        self.inner.abort();
    }

    /// Returns the barrier to its first state; parties waiting now raise
    /// `threading.BrokenBarrierError`.
    fn reset(&self) -> PyResult<()> {
        self.inner
            .reset()
            .map_err(|e| PyOSError::new_err(e.to_string()))
    }

    /// How many parties each round needs.
    #[getter]
    fn parties(&self) -> u32 {
        self.inner.parties()
    }

    /// How many parties wait in the current round.
    #[getter]
    fn n_waiting(&self) -> u32 {
        self.inner.waiting()
    }

    /// Whether the barrier is broken.
    #[getter]
    fn broken(&self) -> bool {
        self.inner.is_broken()
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        set_aside(slf.as_any())
    }
}
