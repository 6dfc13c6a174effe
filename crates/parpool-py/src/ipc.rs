//! `parpool.ipc` for Python, natively: [`PyEvent`] and [`PyQueue`] (of
//! bytes; `parpool/ipc.py` pickles what goes through it), shared by
//! processes through parpool-ipc's shared memory. They reach a worker
//! beside a pickled call, as [`IpcObject`]s in the job's input (their
//! descriptors travel through the pool's side channel), and come back the
//! same way in its result; pickled anywhere else they refuse, saying so.

use std::time::{Duration, Instant};

use std::os::raw::c_int;

use parpool::ipc::{
    Barrier, Descriptor, Event, Lock, Queue, RLock, RecvError, Semaphore, SendError, SharedMem,
};
use pyo3::exceptions::PyBufferError;
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::sync::{PyBarrier, PyLock, PyRLock, PySemaphore};
use crate::{SIGNAL_CHECK, seconds};

/// An ipc object travelling beside a pickled call or its result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum IpcObject {
    Event(Event),
    Queue(Queue<ByteBuf>),
    Memory(SharedMem),
    Lock(Lock),
    RLock(RLock),
    Semaphore(Semaphore),
    Barrier(Barrier),
    Descriptor(Descriptor),
}

impl IpcObject {
    /// The native object a pickler set aside.
    pub(crate) fn from_py(object: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(event) = object.cast::<PyEvent>() {
            return Ok(IpcObject::Event(event.get().inner.clone()));
        }
        if let Ok(queue) = object.cast::<PyQueue>() {
            return Ok(IpcObject::Queue(queue.get().inner.clone()));
        }
        if let Ok(memory) = object.cast::<PySharedMemory>() {
            return Ok(IpcObject::Memory(memory.get().inner.clone()));
        }
        if let Ok(lock) = object.cast::<PyLock>() {
            return Ok(IpcObject::Lock(lock.get().inner.clone()));
        }
        if let Ok(lock) = object.cast::<PyRLock>() {
            return Ok(IpcObject::RLock(lock.get().inner.clone()));
        }
        if let Ok(sem) = object.cast::<PySemaphore>() {
            return Ok(IpcObject::Semaphore(sem.get().inner.clone()));
        }
        if let Ok(barrier) = object.cast::<PyBarrier>() {
            return Ok(IpcObject::Barrier(barrier.get().inner.clone()));
        }
        if let Ok(fd) = object.cast::<PyDescriptor>() {
            return Ok(IpcObject::Descriptor(fd.get().inner.clone()));
        }
        Err(PyTypeError::new_err(format!(
            "not a parpool.ipc object: {}",
            object.get_type().name()?
        )))
    }

    fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self {
            IpcObject::Event(inner) => Py::new(py, PyEvent { inner })?.into_any(),
            IpcObject::Queue(inner) => Py::new(py, PyQueue { inner })?.into_any(),
            IpcObject::Memory(inner) => Py::new(py, PySharedMemory { inner })?.into_any(),
            IpcObject::Lock(inner) => Py::new(py, PyLock { inner })?.into_any(),
            IpcObject::RLock(inner) => Py::new(py, PyRLock { inner })?.into_any(),
            IpcObject::Semaphore(inner) => Py::new(py, PySemaphore { inner })?.into_any(),
            IpcObject::Barrier(inner) => Py::new(py, PyBarrier { inner })?.into_any(),
            IpcObject::Descriptor(inner) => Py::new(py, PyDescriptor { inner })?.into_any(),
        })
    }
}

/// The objects of a job's input or output, as a Python list for the
/// unpickler.
pub(crate) fn to_list(py: Python<'_>, objects: Vec<IpcObject>) -> PyResult<Py<PyList>> {
    let items = objects
        .into_iter()
        .map(|o| o.into_py(py))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(PyList::new(py, items)?.unbind())
}

/// The objects a pickler set aside, for a job's input or output.
pub(crate) fn from_list(objects: &Bound<'_, PyAny>) -> PyResult<Vec<IpcObject>> {
    objects
        .try_iter()?
        .map(|o| IpcObject::from_py(&o?))
        .collect()
}

/// `__reduce__` of the native objects: `parpool._pickling` sets the
/// object aside while a call or outcome is pickled, and refuses otherwise.
pub(crate) fn set_aside<'py>(object: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    object
        .py()
        .import("parpool._pickling")?
        .getattr("_set_aside")?
        .call1((object,))
}

/// Waits in slices (checking for Ctrl-C between them) until `attempt`
/// gives a value or `timeout` seconds pass (`None`: no limit).
pub(crate) fn wait_for<T>(
    py: Python<'_>,
    timeout: Option<f64>,
    mut attempt: impl FnMut(Duration) -> Option<T> + Send,
) -> PyResult<Option<T>>
where
    T: Send,
{
    let deadline = match timeout {
        Some(t) => Instant::now().checked_add(seconds("timeout", t)?),
        None => None,
    };
    loop {
        let slice = deadline.map_or(SIGNAL_CHECK, |at| {
            at.saturating_duration_since(Instant::now())
                .min(SIGNAL_CHECK)
        });
        if let Some(value) = py.detach(|| attempt(slice)) {
            return Ok(Some(value));
        }
        py.check_signals()?;
        if deadline.is_some_and(|at| Instant::now() >= at) {
            return Ok(None);
        }
    }
}

/// An event shared by processes, like `multiprocessing.Event`: `set`,
/// `clear`, `is_set`, `wait(timeout=None)`.
#[pyclass(module = "parpool.ipc", name = "Event", frozen)]
#[derive(Debug)]
pub(crate) struct PyEvent {
    inner: Event,
}

#[pymethods]
impl PyEvent {
    #[new]
    fn new() -> PyResult<Self> {
        let inner = Event::new().map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(PyEvent { inner })
    }

    /// Sets the flag and wakes every waiter, in every process.
    fn set(&self) {
        self.inner.set();
    }

    /// Clears the flag.
    fn clear(&self) {
        self.inner.clear();
    }

    /// Whether the flag is set.
    fn is_set(&self) -> bool {
        self.inner.is_set()
    }

    /// Waits until the flag is set, at most `timeout` seconds; returns
    /// whether it is set.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let inner = &self.inner;
        let set = wait_for(py, timeout, |slice| inner.wait_timeout(slice).then_some(()))?;
        Ok(set.is_some())
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        set_aside(slf.as_any())
    }
}

/// The native half of `parpool.ipc.Queue`: messages of bytes in a ring of
/// shared memory (`capacity` bytes), `maxsize` messages at most (0: as
/// many as fit).
#[pyclass(module = "parpool._parpool", name = "Queue", frozen)]
#[derive(Debug)]
pub(crate) struct PyQueue {
    inner: Queue<ByteBuf>,
}

fn queue_error(py: Python<'_>, name: &str) -> PyResult<PyErr> {
    let class = py.import("queue")?.getattr(name)?;
    Ok(PyErr::from_value(class.call0()?))
}

#[pymethods]
impl PyQueue {
    #[new]
    #[pyo3(signature = (capacity=1 << 20, maxsize=0))]
    fn new(capacity: usize, maxsize: u64) -> PyResult<Self> {
        let inner = Queue::with_capacity(capacity, (maxsize > 0).then_some(maxsize))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyQueue { inner })
    }

    /// Sends `data`; waits for room unless `block` is false, at most
    /// `timeout` seconds. Raises `queue.Full` if none came.
    #[pyo3(signature = (data, block=true, timeout=None))]
    fn put_bytes(
        &self,
        py: Python<'_>,
        data: &[u8],
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let mut message = Some(ByteBuf::from(data.to_vec()));
        let inner = &self.inner;
        let mut failure = None;
        let sent = wait_for(py, if block { timeout } else { Some(0.0) }, |slice| {
            let value = message.take()?;
            match inner.send_timeout(value, slice) {
                Ok(()) => Some(()),
                Err(SendError::Full(value)) => {
                    message = Some(value);
                    None
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    Some(())
                }
            }
        })?;
        if let Some(reason) = failure {
            return Err(PyValueError::new_err(reason));
        }
        match sent {
            Some(()) => Ok(()),
            None => Err(queue_error(py, "Full")?),
        }
    }

    /// Receives a message; waits for one unless `block` is false, at most
    /// `timeout` seconds. Raises `queue.Empty` if none came.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get_bytes(
        &self,
        py: Python<'_>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyBytes>> {
        let inner = &self.inner;
        let got = wait_for(
            py,
            if block { timeout } else { Some(0.0) },
            |slice| match inner.recv_timeout(slice) {
                Ok(bytes) => Some(Ok(bytes)),
                Err(RecvError::Empty) => None,
                Err(e) => Some(Err(e.to_string())),
            },
        )?;
        match got {
            Some(Ok(bytes)) => Ok(PyBytes::new(py, &bytes).unbind()),
            Some(Err(reason)) => Err(PyOSError::new_err(reason)),
            None => Err(queue_error(py, "Empty")?),
        }
    }

    /// How many messages wait.
    fn qsize(&self) -> usize {
        self.inner.len()
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        set_aside(slf.as_any())
    }
}

/// Shared memory of a fixed size, like
/// `multiprocessing.shared_memory.SharedMemory`: `buf` is a `memoryview` of
/// it (and it is a buffer itself: `numpy.ndarray(..., buffer=shm.buf)`
/// maps it without a copy), `size` its length. Passed to a task, the task
/// maps the same pages.
#[pyclass(module = "parpool.ipc", name = "SharedMemory", frozen)]
#[derive(Debug)]
pub(crate) struct PySharedMemory {
    inner: SharedMem,
}

#[pymethods]
impl PySharedMemory {
    #[new]
    fn new(size: usize) -> PyResult<Self> {
        if size == 0 {
            return Err(PyValueError::new_err("a SharedMemory needs a size above 0"));
        }
        let inner = SharedMem::new(size).map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(PySharedMemory { inner })
    }

    /// Its length in bytes.
    #[getter]
    fn size(&self) -> usize {
        self.inner.len()
    }

    /// A `memoryview` of its bytes (read-only where the memory is).
    #[getter]
    fn buf<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, pyo3::types::PyMemoryView>> {
        pyo3::types::PyMemoryView::from(slf.as_any())
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        set_aside(slf.as_any())
    }

    /// The buffer protocol: one contiguous run of unsigned bytes, the
    /// mapping itself.
    ///
    /// # Safety
    /// Called by Python with a `view` to fill, as the protocol says.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("no view to fill"));
        }
        let memory = &slf.get().inner;
        let len = ffi::Py_ssize_t::try_from(memory.len())
            .map_err(|_| PyBufferError::new_err("the memory is too large for a buffer"))?;
        let readonly = c_int::from(!memory.is_writable());
        // SAFETY: `view` is the non-null buffer Python asked us to fill;
        // the pointer and length are the mapping's, which stays mapped
        // while the view lives: PyBuffer_FillInfo takes a reference to
        // `slf`, which holds the mapping, and gives it back on release. It
        // refuses a writable view of a read-only mapping itself.
        let filled = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                memory.as_ptr().cast(),
                len,
                readonly,
                flags,
            )
        };
        if filled == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }
}

/// A file descriptor on its way to the workers: how `multiprocessing`
/// objects built on pipes and shared files (its `Queue`, `Value`, `Array`)
/// reach them in `initargs`. Made from a descriptor number (which it
/// duplicates); in a worker, `detach()` hands over the duplicate it
/// received.
#[pyclass(module = "parpool._parpool", name = "Descriptor", frozen)]
#[derive(Debug)]
pub(crate) struct PyDescriptor {
    inner: Descriptor,
}

#[pymethods]
impl PyDescriptor {
    #[new]
    fn new(fd: i32) -> PyResult<Self> {
        if fd < 0 {
            return Err(PyValueError::new_err(format!(
                "not a file descriptor: {fd}"
            )));
        }
        // SAFETY: only borrowed for the duplicate below; a number that is
        // not an open descriptor makes that fail (EBADF), nothing worse.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let inner =
            Descriptor::duplicate(borrowed).map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(PyDescriptor { inner })
    }

    /// Hands the descriptor over: the caller owns (and closes) it.
    fn detach(&self) -> PyResult<i32> {
        self.inner
            .take()
            .map(std::os::fd::IntoRawFd::into_raw_fd)
            .ok_or_else(|| PyValueError::new_err("this descriptor was handed over already"))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        set_aside(slf.as_any())
    }
}
