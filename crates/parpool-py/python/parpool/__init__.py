"""parpool for Python: a ``concurrent.futures`` executor whose worker
processes fail alone.

:class:`ProcessPoolExecutor` is a drop-in for
``concurrent.futures.ProcessPoolExecutor``: a crashed worker fails only its
task (:class:`WorkerCrashed`) and is replaced, tasks can time out
(:class:`TaskTimeout`), and ``Future.cancel()`` stops running tasks. The
pool underneath is parpool's, in Rust.
"""

from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    Future,
    as_completed,
    wait,
)

from . import _executor
from ._executor import (
    InitializerFailed,
    ProcessPoolExecutor,
    TaskError,
    TaskTimeout,
    WorkerCrashed,
)

# The executor's names, then concurrent.futures' own, for one import.
__all__ = _executor.__all__ + [
    "Future",
    "CancelledError",
    "as_completed",
    "wait",
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
]
