"""Type stubs for the parpool package (the executor is in _executor.py)."""

import multiprocessing.context
from concurrent.futures import (
    ALL_COMPLETED as ALL_COMPLETED,
    FIRST_COMPLETED as FIRST_COMPLETED,
    FIRST_EXCEPTION as FIRST_EXCEPTION,
    CancelledError as CancelledError,
    Executor,
    Future as Future,
    as_completed as as_completed,
    wait as wait,
)
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

from typing_extensions import ParamSpec

_T = TypeVar("_T")
_P = ParamSpec("_P")

class WorkerCrashed(BrokenProcessPool): ...
class TaskTimeout(TimeoutError): ...
class TaskError(RuntimeError): ...
class InitializerFailed(BrokenProcessPool): ...

class ProcessPoolExecutor(Executor):
    def __init__(
        self,
        max_workers: Optional[int] = None,
        mp_context: Optional[multiprocessing.context.BaseContext] = None,
        initializer: Optional[Callable[..., object]] = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: Optional[int] = None,
        task_timeout: Optional[float] = None,
        memory_limit: Optional[int] = None,
        forward_output: Optional[bool] = None,
        quiet: bool = False,
        spin: Optional[float] = None,
    ) -> None: ...
    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_T]: ...
    def submit_with_timeout(
        self, timeout: float, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_T]: ...
    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
    ) -> Iterator[_T]: ...
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...
    def worker_pids(self) -> list[int]: ...
