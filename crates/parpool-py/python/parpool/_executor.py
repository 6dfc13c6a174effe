"""``parpool.ProcessPoolExecutor``: ``concurrent.futures`` on parpool's
process pool.

The executor pickles each call, the native pool (``_parpool.Pool``) runs
it in a worker process, and one thread of the executor (``parpool-results``)
turns each job's end into its future's result or exception. A worker that
dies fails only the task it ran; the pool starts another, and the executor
goes on: it never breaks.
"""

import functools
import itertools
import logging
import multiprocessing
import multiprocessing.spawn
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import _base
from concurrent.futures.process import BrokenProcessPool
# The chunk helpers of CPython's own executor: one chunk's calls, and the
# chunks' results yielded in order, each dropped once yielded.
from concurrent.futures.process import _process_chunk

from . import _parpool, _pickling

__all__ = [
    "ProcessPoolExecutor",
    "WorkerCrashed",
    "TaskTimeout",
    "TaskError",
    "InitializerFailed",
]

# How often the results thread looks up from waiting, to notice shutdown.
_POLL_SECONDS = 0.1
# A timeout longer than this (a year) is waited as no timeout.
_FOREVER = 365 * 24 * 3600.0


class WorkerCrashed(BrokenProcessPool):
    """The worker process running the task died: a segfault, ``os._exit``,
    an abort, the kernel's out-of-memory killer, or a memory limit. Only
    this task failed; the pool replaced the worker and goes on.

    A subclass of ``BrokenProcessPool``, so code written for CPython's
    executor still catches it; unlike there, the executor is not broken.
    """


class TaskTimeout(TimeoutError):
    """The task ran past its timeout: its worker was killed (and replaced)."""


class TaskError(RuntimeError):
    """The pool could not run the task: its call or its result was larger
    than the pool carries (1 GiB), or the pool shut down before it ran."""


class InitializerFailed(BrokenProcessPool):
    """A worker could not start: the executor's initializer raised, or the
    worker could not prepare (import the main module, say). Raised by the
    constructor, which starts every worker."""


def _interactive_main():
    """Whether this process's main module has no file (a REPL, ``python
    -c``, a notebook): its functions pickle by name but cannot be found
    by that name in a worker, so they must travel by value."""
    main = sys.modules.get("__main__")
    return main is not None and getattr(main, "__file__", None) is None


@functools.lru_cache(maxsize=None)
def _have_cloudpickle():
    """Whether cloudpickle can be imported (asked once: a failed import is
    not remembered by Python and would search the path on every call)."""
    try:
        import cloudpickle  # noqa: F401
    except ImportError:
        return False
    return True


def _dumps(obj, inheriting=False):
    """Pickles ``obj`` (returns the bytes and the ``parpool.ipc`` objects
    set aside), with cloudpickle where the standard pickle cannot
    (lambdas, closures) or would send a name the worker cannot find (a
    function of an interactive session or notebook)."""
    if _interactive_main() and _have_cloudpickle():
        return _pickling.dumps(obj, by_value=True, inheriting=inheriting)
    try:
        return _pickling.dumps(obj, inheriting=inheriting)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        if not _have_cloudpickle():
            raise pickle.PicklingError(
                f"{e}; install cloudpickle (pip install cloudpickle) to send "
                "lambdas, closures and functions defined interactively"
            ) from e
        return _pickling.dumps(obj, by_value=True, inheriting=inheriting)


def _worker_command():
    """The program and arguments that start a worker: this interpreter,
    with its flags, on parpool's worker module."""
    if not sys.executable:
        raise RuntimeError(
            "parpool cannot start worker processes: sys.executable is not set "
            "(an embedded interpreter); run from a python executable"
        )
    args = subprocess._args_from_interpreter_flags() + ["-m", "parpool._worker"]
    return sys.executable, args


def _after_fork_in_child():
    # The pool's threads did not come along: an executor made before the
    # fork cannot run anything in the child.
    for executor in list(_live):
        executor._shared.forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _forwards(forward_output):
    """Whether workers' output is captured per task and written to this
    process's ``sys.stdout``/``sys.stderr``: as asked, or by default when
    those are not the process's own descriptors (a notebook, an IDE's
    console, a test capturing output), where inherited output would miss
    them."""
    if forward_output is not None:
        return bool(forward_output)
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        try:
            if stream is None or stream.fileno() != fd:
                return True
        except (AttributeError, OSError, ValueError):
            return True
    return False


class _Shared:
    """What the executor and its results thread share (not the executor
    itself, so that it can be collected and shut down when dropped). The
    thread is not a daemon: it ends once the executor is shut down (by
    ``shutdown``, at exit, or when the executor is collected) and every
    future is settled, so the interpreter never stops it midway."""

    def __init__(self, pool):
        self.pool = pool
        self.lock = threading.Lock()
        self.futures = {}
        self.shutdown = False
        # Set in a child forked after the executor was made.
        self.forked = False


class _Future(_base.Future):
    """A future whose ``cancel()`` also stops a running task (its worker is
    killed and replaced) and whose ``running()`` asks the pool."""

    # A map chunk's future: its result is the outcome still pickled
    # (``_Pickled``), unpickled when the map's consumer reaches it.
    _raw = False

    def __init__(self, shared, key):
        super().__init__()
        self._shared = shared
        self._key = key

    def cancel(self):
        with self._condition:
            if self._state == _base.FINISHED:
                return False
            if self._state in (_base.CANCELLED, _base.CANCELLED_AND_NOTIFIED):
                return True
        if self._shared.pool.cancel(self._key):
            _mark_cancelled(self)
            return True
        return self.cancelled()

    def running(self):
        with self._condition:
            if self._state != _base.PENDING:
                return self._state == _base.RUNNING
        return self._shared.pool.running(self._key)

    def result(self, timeout=None):
        return super().result(self._wait_here(timeout))

    def exception(self, timeout=None):
        return super().exception(self._wait_here(timeout))

    def _wait_here(self, timeout):
        """Waits for the job in this thread, where its end is settled at
        once (no hop through the results thread); returns what is left of
        ``timeout`` for the base class's wait, which then finds the future
        settled, or waits for whoever took the job's end first."""
        if self._state != _base.PENDING:
            return timeout
        if self._shared.forked:
            raise RuntimeError(
                "this future belongs to an executor of the parent process, which "
                "forked: its result reaches the parent only"
            )
        if timeout is not None:
            # A deadline already past (map's, say) waits not at all.
            timeout = max(0.0, timeout)
            if timeout > _FOREVER:
                timeout = None
        deadline = None if timeout is None else time.monotonic() + timeout
        taken = self._shared.pool.take(self._key, timeout)
        if taken is not None:
            with self._shared.lock:
                self._shared.futures.pop(self._key, None)
            _settle(self, *taken)
        return None if deadline is None else max(0.0, deadline - time.monotonic())


def _mark_cancelled(future):
    """Moves a pending future to cancelled and tells its waiters (once,
    whichever of the cancelling caller and the results thread comes
    first); its done-callbacks run after the future's lock is released,
    so a callback may wait on anything, the results thread included."""
    with future._condition:
        if future._state != _base.PENDING:
            return
        future._state = _base.CANCELLED_AND_NOTIFIED
        for waiter in future._waiters:
            waiter.add_cancelled(future)
        future._condition.notify_all()
    future._invoke_callbacks()


def _log(records):
    """Hands the records a task logged in its worker to this process's
    loggers, where the parent's levels, filters and handlers apply."""
    for fields in records:
        record = logging.makeLogRecord(fields)
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _forward(data, stream):
    """Writes what a task printed (captured in its worker) to this
    process's own stream, as text."""
    if data and stream is not None:
        try:
            stream.write(data.decode(errors="replace"))
            stream.flush()
        except Exception:  # noqa: BLE001 - a stream's failure is not the task's
            sys.excepthook(*sys.exc_info())


def _settle(future, kind, payload, stdout, stderr, objects):
    """Gives a future the outcome of its job, after what the job printed
    (when the executor forwards output) reached this process's streams."""
    _forward(stdout, sys.stdout)
    _forward(stderr, sys.stderr)
    if kind == "cancelled":
        _mark_cancelled(future)
        return
    with future._condition:
        if future._state != _base.PENDING:
            return
    if kind == "ok":
        if future._raw:
            future.set_result(_Pickled(payload, objects))
            return
        try:
            ok, value, records = _pickling.loads(payload, objects)
        except BaseException as e:  # noqa: BLE001 - the result's own failure
            future.set_exception(
                TaskError(f"the task's result could not be unpickled: {e!r}")
            )
            return
        try:
            _log(records)
        except Exception:  # noqa: BLE001 - a handler's failure is not the task's
            sys.excepthook(*sys.exc_info())
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    elif kind == "crashed":
        future.set_exception(WorkerCrashed(payload))
    elif kind == "timeout":
        future.set_exception(TaskTimeout(payload))
    else:
        future.set_exception(TaskError(payload))


def _deliver(shared):
    """The results thread: settles each future as its job ends, until the
    executor is shut down and no future is left."""
    pool = shared.pool
    while True:
        done = pool.next_done(_POLL_SECONDS)
        if done is None:
            with shared.lock:
                if shared.shutdown and not shared.futures:
                    return
            continue
        key, outcome = done
        with shared.lock:
            future = shared.futures.pop(key, None)
        if future is not None:
            try:
                _settle(future, *outcome)
            except BaseException:  # noqa: BLE001 - this thread must go on
                # A done-callback that raised past concurrent.futures' own
                # guard (SystemExit, KeyboardInterrupt): the future is
                # settled already; report it and serve the others.
                sys.excepthook(*sys.exc_info())


class _Pickled:
    """A map chunk's outcome as it came back from its worker."""

    __slots__ = ("payload", "objects")

    def __init__(self, payload, objects):
        self.payload = payload
        self.objects = objects


class _MapChunk:
    """A map's chunk task, ``each(fn, chunk)``: its future keeps the outcome
    pickled until the map's consumer reaches it, so chunks that arrive
    ahead wait as compact bytes, and each one's items are made just before
    they are consumed (unpickling every chunk as it arrived kept a whole
    map's results alive at once, and took twice as long)."""

    __slots__ = ("each", "fn")

    def __init__(self, each, fn):
        self.each = each
        self.fn = fn

    def __call__(self, chunk):
        return self.each(self.fn, chunk)


def _unpickled(outcomes):
    """A map's chunks of results, from the outcomes its futures hold: each
    unpickled as the consumer reaches it, its log records passed on, its
    task's exception raised."""
    try:
        for outcome in outcomes:
            try:
                ok, value, records = _pickling.loads(outcome.payload, outcome.objects)
            except BaseException as e:  # noqa: BLE001 - the result's own failure
                raise TaskError(f"the task's result could not be unpickled: {e!r}") from None
            try:
                _log(records)
            except Exception:  # noqa: BLE001 - a handler's failure is not the task's
                sys.excepthook(*sys.exc_info())
            if not ok:
                raise value
            yield value
    finally:
        # Cancels the chunks not reached (Executor.map's own cleanup).
        outcomes.close()


def _process_items(fn, chunk):
    """Runs ``fn`` over one chunk of a one-iterable ``map``'s items (no
    argument tuples to pack, pickle and unpack)."""
    return list(map(fn, chunk))


def _chunks(iterables, chunksize):
    it = iterables[0] if len(iterables) == 1 else zip(*iterables)
    it = iter(it)
    while True:
        chunk = list(itertools.islice(it, chunksize))
        if not chunk:
            return
        yield chunk


class _WorkerProcess:
    """A worker as ``multiprocessing.Process`` shows one (``pid``,
    ``is_alive``, ``join``, ``terminate``, ``kill``): what
    :attr:`ProcessPoolExecutor._processes` holds, for code written against
    CPython's executor, which keeps its processes there."""

    exitcode = None

    def __init__(self, pid):
        self.pid = pid

    def __repr__(self):
        return f"<parpool worker {self.pid}>"

    def is_alive(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")

    def join(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.005)

    def terminate(self):
        self._signal(signal.SIGTERM)

    def kill(self):
        self._signal(signal.SIGKILL)

    def _signal(self, number):
        try:
            os.kill(self.pid, number)
        except ProcessLookupError:
            pass


class _NoCallQueue:
    """CPython's executor feeds its workers through a queue that code may
    join; parpool's pool has none to wait for."""

    def join_thread(self):
        pass

    def close(self):
        pass


# Shown as parpool's own (their home is an implementation detail).
for _public in (WorkerCrashed, TaskTimeout, TaskError, InitializerFailed):
    _public.__module__ = "parpool"

_live = weakref.WeakSet()
_interpreter_exiting = False


def _at_exit():
    global _interpreter_exiting
    _interpreter_exiting = True
    for executor in list(_live):
        executor.shutdown(wait=True)


try:
    threading._register_atexit(_at_exit)
except AttributeError:  # not CPython
    import atexit

    atexit.register(_at_exit)


def _close(shared):
    with shared.lock:
        shared.shutdown = True
    shared.pool.shutdown(False)


class ProcessPoolExecutor(_base.Executor):
    """A ``concurrent.futures`` executor whose tasks run in worker
    processes, like ``concurrent.futures.ProcessPoolExecutor``, with what
    that one lacks:

    - a worker that crashes (segfault, ``os._exit``, abort, out of memory)
      fails only its task, with :class:`WorkerCrashed`; the pool starts a
      new worker and the executor goes on (no ``BrokenProcessPool`` state);
    - ``task_timeout`` (seconds) kills a worker whose task runs too long,
      failing that task with :class:`TaskTimeout`;
    - ``Future.cancel()`` stops a running task too (its worker is killed and
      replaced);
    - ``memory_limit`` (bytes) caps each worker's address space;
    - what a task logs with ``logging`` reaches this process's loggers
      (at the root level this process had when the executor was made),
      before the task's future settles; the records travel with the
      result, so those of a task whose worker crashed are lost with it;
    - what a task prints goes to this process's stdout and stderr: at the
      descriptor (the fast way), or, with ``forward_output=True`` (the
      default where ``sys.stdout`` is not descriptor 1: notebooks, IDEs),
      captured per task and written to ``sys.stdout``/``sys.stderr``
      before its future settles. ``quiet=True`` discards it.
    - ``spin`` (seconds, off by default) turns on the low-latency mode:
      idle workers, the pool and a thread waiting in ``result()`` poll
      for up to that long before they sleep, so one small task after
      another comes back several times sooner, for CPU spent polling
      (up to a core per worker while tasks keep coming; nothing once the
      executor has been idle for longer than ``spin``). ``spin=100e-6``
      suits a loop that submits a task and waits for it, on a machine
      with cores to spare; leave it off for batches. At most a second
      (a longer window is taken as one second).

    Workers start as fresh interpreters (like the ``spawn`` start method,
    whatever ``mp_context`` says), all of them in the constructor: a
    worker's ``sys.path``, working directory and main module are the
    parent's, so functions defined in the main script unpickle in the
    worker (guard the script's work with ``if __name__ == "__main__":``).
    Calls are pickled, with cloudpickle if it is installed and the standard
    pickle refuses (lambdas, closures).

    >>> from parpool import ProcessPoolExecutor
    >>> with ProcessPoolExecutor(max_workers=2) as ex:
    ...     list(ex.map(abs, [-1, -2, 3]))
    [1, 2, 3]
    """

    def __init__(
        self,
        max_workers=None,
        mp_context=None,
        initializer=None,
        initargs=(),
        *,
        max_tasks_per_child=None,
        task_timeout=None,
        memory_limit=None,
        forward_output=None,
        quiet=False,
        spin=None,
    ):
        # In a worker importing the parent's main module: the script lacks
        # its `if __name__ == "__main__":` guard (multiprocessing says so).
        multiprocessing.spawn._check_not_importing_main()
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        if task_timeout is not None and task_timeout < 0:
            raise ValueError("task_timeout must be a number of seconds >= 0")
        if spin is not None and not spin >= 0:
            raise ValueError("spin must be a number of seconds >= 0")
        self._max_workers = max_workers
        # Workers always start as fresh interpreters: the spawn method.
        self._mp_context = mp_context or multiprocessing.get_context("spawn")
        user, set_aside = None, []
        if initializer is not None:
            # As arguments of a starting process: multiprocessing's Queue,
            # Lock, Value and Array go as they go to Process(args=...).
            try:
                user, set_aside = _dumps((initializer, tuple(initargs)), inheriting=True)
            except RuntimeError as e:
                if "fork context" not in str(e):
                    raise
                raise RuntimeError(
                    f"{e} parpool's workers are always fresh interpreters (spawned): make "
                    "the object with multiprocessing.get_context('spawn'), or use "
                    "parpool.ipc's Queue, Lock, Semaphore or SharedMemory."
                ) from None
        preparation = multiprocessing.spawn.get_preparation_data("parpool-worker")
        # The key multiprocessing's connections authenticate with, as
        # plain bytes: its own type refuses to be pickled outside a spawn.
        if "authkey" in preparation:
            preparation["authkey"] = bytes(preparation["authkey"])
        program, args = _worker_command()
        try:
            pool = _parpool.Pool(
                max_workers,
                program,
                args,
                max_jobs_per_worker=max_tasks_per_child,
                job_timeout=task_timeout,
                memory_limit=memory_limit,
                capture=_forwards(forward_output),
                initializer=(
                    pickle.dumps(
                        (preparation, user, logging.getLogger().getEffectiveLevel()),
                        protocol=_pickling.PROTOCOL,
                    ),
                    set_aside,
                ),
                quiet=quiet,
                spin=spin,
            )
        except _parpool.InitializerError as e:
            raise InitializerFailed(str(e)) from None
        self._shared = _Shared(pool)
        self._thread = threading.Thread(
            target=_deliver, args=(self._shared,), name="parpool-results"
        )
        self._thread.start()
        weakref.finalize(self, _close, self._shared)
        _live.add(self)

    def submit(self, fn, /, *args, **kwargs):
        """Schedules ``fn(*args, **kwargs)`` in a worker and returns its
        future. A call that cannot be pickled gives a future holding that
        error."""
        return self._submit(fn, args, kwargs, None)

    def submit_with_timeout(self, timeout, fn, /, *args, **kwargs):
        """Like :meth:`submit`, with a timeout (seconds) for this task
        alone, in place of the executor's ``task_timeout``: past it, the
        worker is killed and the future fails with :class:`TaskTimeout`."""
        if timeout is None or timeout < 0:
            raise ValueError("timeout must be a number of seconds >= 0")
        return self._submit(fn, args, kwargs, float(timeout))

    def _submit(self, fn, args, kwargs, timeout):
        shared = self._shared
        self._check_open()
        # Pickled outside the lock: a large argument holds up nobody, and
        # an argument whose pickling submits to this executor can.
        try:
            pickled, objects = _dumps((fn, args, kwargs))
        except BaseException as e:  # noqa: BLE001 - the future carries it
            future = _base.Future()
            future.set_exception(e)
            return future
        with shared.lock:
            self._check_open()
            key = shared.pool.submit(pickled, objects, timeout)
            future = _Future(shared, key)
            future._raw = isinstance(fn, _MapChunk)
            shared.futures[key] = future
            return future

    def _check_open(self):
        shared = self._shared
        if shared.forked:
            raise RuntimeError(
                "this executor was made by the parent process before it forked; "
                "its workers belong to the parent: make a new executor here"
            )
        if shared.shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _interpreter_exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Like the builtin ``map``, with the calls run in workers,
        ``chunksize`` of them per task; results come in order. ``timeout``
        bounds the wait for all results, from the call."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        each = _process_items if len(iterables) == 1 else _process_chunk
        outcomes = super().map(
            _MapChunk(each, fn),
            _chunks(iterables, chunksize),
            timeout=timeout,
        )
        return _parpool.Flatten(_unpickled(outcomes))

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Refuses new tasks; with ``wait``, returns once every task ended
        and the workers exited. ``cancel_futures`` cancels the queued tasks
        but the next one of each worker, as CPython's executor cancels what
        it has not yet handed to its workers."""
        shared = self._shared
        if shared.forked:
            return
        with shared.lock:
            shared.shutdown = True
            pending = sorted(shared.futures.items()) if cancel_futures else []
        if cancel_futures:
            queued = [f for _, f in pending if not f.running()]
            for future in queued[self._max_workers :]:
                future.cancel()
        shared.pool.shutdown(wait)
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    def worker_pids(self):
        """The worker processes' ids."""
        return self._shared.pool.worker_pids()

    # CPython's private attributes that code and tests read, kept here
    # with the same meaning where parpool has one.

    @property
    def _processes(self):
        """The worker processes by pid, as CPython's executor keeps them."""
        return {pid: _WorkerProcess(pid) for pid in self._shared.pool.worker_pids()}

    @property
    def _executor_manager_thread(self):
        """The thread that settles futures (it ends after shutdown)."""
        return self._thread

    @property
    def _call_queue(self):
        return _NoCallQueue()

    @property
    def _broken(self):
        """Never: a crashed worker fails its task alone."""
        return False


ProcessPoolExecutor.__module__ = "parpool"
