"""The worker side of parpool's executor: ``python -m parpool._worker``.

A pool starts each worker as this module, which serves the pool
(``_parpool.serve_worker``) until the pool lets it go. Each job is one
pickled call, handed to :func:`_run` by the native half; nothing a call
raises escapes it, so a worker ends only when its process does.
"""

import logging
import os
import pickle
import signal
import sys
from concurrent.futures.process import _ExceptionWithTraceback

from parpool import _pickling


# The records logged since the last task's outcome left: they go back with
# it, and the parent hands them to its own loggers before it settles the
# task's future.
_records = []

# What a record's attribute may hold to travel as itself; anything else
# travels as its repr.
_PLAIN = (str, int, float, bool, type(None))


def _portable(record):
    """A log record as a dict of plain values (its message formatted, its
    exception as text), which the parent rebuilds."""
    fields = {}
    for key, value in record.__dict__.items():
        fields[key] = value if isinstance(value, _PLAIN) else repr(value)
    fields["msg"] = record.getMessage()
    fields["args"] = None
    if record.exc_info and not record.exc_text:
        fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
    fields["exc_info"] = None
    fields["processName"] = f"parpool worker {os.getpid()}"
    fields.pop("message", None)
    return fields


class _Collect(logging.Handler):
    """Keeps each record logged in the worker for the parent."""

    def emit(self, record):
        try:
            _records.append(_portable(record))
        except Exception:  # noqa: BLE001 - logging's own policy
            self.handleError(record)


def _take_records():
    taken = _records[:]
    _records.clear()
    return taken


def _dumps_outcome(ok, value):
    return _dumps_with_records(ok, value, _take_records())



def _dumps_with_records(ok, value, records):
    """Pickles ``(ok, value)``. If that fails, the failure itself (say a
    ``PicklingError``) becomes the task's exception, as with CPython's
    executor, with a note saying what was being pickled; if even that
    cannot be pickled, a ``RuntimeError`` that says so."""
    try:
        return _pickling.dumps((ok, value, records))
    except BaseException as e:  # noqa: BLE001 - reported to the caller
        what = "result" if ok else "exception"
        if hasattr(e, "add_note"):
            e.add_note(f"(raised while pickling the task's {what} to send it back)")
        try:
            return _pickling.dumps((False, _ExceptionWithTraceback(e, e.__traceback__), records))
        except BaseException:  # noqa: BLE001 - the last resort below
            err = RuntimeError(
                f"the task's {what} could not be pickled to send it back: {e!r}"
            )
            return _pickling.dumps(
                (False, _ExceptionWithTraceback(err, err.__traceback__), records)
            )


def _run(pickled, objects):
    """Unpickles ``(fn, args, kwargs)``, calls it and returns the pickled
    outcome: ``(True, result, records)`` or ``(False, exception, records)``,
    the exception carrying its traceback as text (as CPython's executor
    sends it), the records those the task logged; with the ``parpool.ipc``
    objects the call and the outcome refer to, which travel beside them."""
    try:
        fn, args, kwargs = _pickling.loads(pickled, objects)
        outcome = (True, fn(*args, **kwargs))
    except BaseException as e:  # noqa: BLE001 - the task's own failure
        outcome = (False, _ExceptionWithTraceback(e, e.__traceback__))
    finally:
        # What the task printed leaves before its result.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream is not ours
                pass
    return _dumps_outcome(*outcome)


def _initialize(pickled, objects):
    """Prepares a new worker as ``multiprocessing``'s spawn start method
    does (the parent's ``sys.path``, working directory and main module, so
    that functions defined there unpickle here), then runs the executor's
    initializer if it has one. An exception fails the worker's start, its
    text the reason."""
    import multiprocessing.process
    import multiprocessing.spawn

    preparation, user, log_level = pickle.loads(pickled)
    # What the worker logs reaches the parent's loggers, at the parent's
    # root level (a logger's own level set in the parent is applied there).
    root = logging.getLogger()
    root.addHandler(_Collect())
    root.setLevel(log_level)
    # While the main module is imported, an executor it would start (a
    # script without an `if __name__ == "__main__":` guard) is refused
    # with multiprocessing's own explanation, not started again and again.
    process = multiprocessing.process.current_process()
    process._inheriting = True
    try:
        multiprocessing.spawn.prepare(preparation)
    finally:
        process._inheriting = False
    if user is not None:
        initializer, initargs = _pickling.loads(user, objects)
        initializer(*initargs)


def main():
    # Ctrl-C goes to the whole process group: the parent decides what a
    # worker does about it (its pool kills the workers it no longer needs).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from parpool import _parpool

    try:
        _parpool.serve_worker()
    except OSError as e:
        print(f"parpool worker {os.getpid()}: {e}", file=sys.stderr)
        sys.exit(71)


if __name__ == "__main__":
    main()
