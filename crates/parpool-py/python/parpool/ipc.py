"""Objects shared by processes, for tasks of ``parpool.ProcessPoolExecutor``:
:class:`Queue`, :class:`Event`, :class:`SharedMemory`, and robust
:class:`Lock`, :class:`RLock`, :class:`Semaphore` and :class:`Barrier`, in
shared memory (parpool's Rust ``ipc``), passed to tasks as arguments and
returned from them as ``multiprocessing``'s are passed to its processes.

A process that dies never leaves the others hanging: a receiver skips a
message its sender could not finish; a lock whose holder died raises
:class:`OwnerDied` instead of staying taken; a dead holder's semaphore
permits come back; a barrier a party died at breaks
(``threading.BrokenBarrierError``).

>>> from parpool.ipc import Event, Lock, Queue
>>> q = Queue()
>>> q.put({"n": 1})
>>> q.get(timeout=5)
{'n': 1}
>>> lock = Lock()
>>> with lock:
...     pass
"""

import pickle

from . import _pickling
from ._parpool import Barrier as _NativeBarrier
from ._parpool import Event, Lock, OwnerDied, RLock, Semaphore, SharedMemory
from ._parpool import Queue as _NativeQueue

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "Event",
    "Lock",
    "OwnerDied",
    "Queue",
    "RLock",
    "Semaphore",
    "SharedMemory",
]

#: ``multiprocessing``'s name for a semaphore that cannot be released past
#: its value: every :class:`Semaphore` is one.
BoundedSemaphore = Semaphore


class Queue:
    """A queue of picklable objects shared by processes, like
    ``multiprocessing.Queue``: ``put``/``get`` (with ``block`` and
    ``timeout``; ``queue.Full``/``queue.Empty`` when they run out),
    ``put_nowait``/``get_nowait``, ``qsize``, ``empty``. Messages live in a
    ring of ``capacity`` bytes of shared memory, ``maxsize`` of them at
    most (0: as many as fit)."""

    def __init__(self, maxsize=0, *, capacity=1 << 20):
        self._native = _NativeQueue(capacity, maxsize)

    @classmethod
    def _from_native(cls, native):
        queue = cls.__new__(cls)
        queue._native = native
        return queue

    def __reduce__(self):
        return (Queue._from_native, (self._native,))

    def put(self, obj, block=True, timeout=None):
        self._native.put_bytes(pickle.dumps(obj, _pickling.PROTOCOL), block, timeout)

    def get(self, block=True, timeout=None):
        return pickle.loads(self._native.get_bytes(block, timeout))

    def put_nowait(self, obj):
        self.put(obj, block=False)

    def get_nowait(self):
        return self.get(block=False)

    def qsize(self):
        return self._native.qsize()

    def empty(self):
        return self.qsize() == 0

    def __repr__(self):
        return f"<parpool.ipc.Queue, {self.qsize()} waiting>"


class Barrier:
    """A barrier for ``parties`` parties in any processes and threads, like
    ``multiprocessing.Barrier``: ``wait(timeout=None)`` returns the party's
    arrival index (0 to ``parties - 1``) once all have arrived, the last
    calling ``action`` first; ``abort()``, ``reset()``, ``parties``,
    ``n_waiting``, ``broken``. A party that dies while it waits, a wait that
    times out, an ``action`` that raises or ``abort()`` break it: waiters
    raise ``threading.BrokenBarrierError`` until ``reset()``.

    ``action`` travels with the barrier to the processes it is passed to, so
    it must be picklable there (a module-level function)."""

    def __init__(self, parties, action=None, timeout=None):
        self._native = _NativeBarrier(parties)
        self._action = action
        self._timeout = timeout

    @classmethod
    def _restore(cls, native, action, timeout):
        barrier = cls.__new__(cls)
        barrier._native = native
        barrier._action = action
        barrier._timeout = timeout
        return barrier

    def __reduce__(self):
        return (Barrier._restore, (self._native, self._action, self._timeout))

    def wait(self, timeout=None):
        if timeout is None:
            timeout = self._timeout
        return self._native.wait(timeout, self._action)

    def abort(self):
        self._native.abort()

    def reset(self):
        self._native.reset()

    @property
    def parties(self):
        return self._native.parties

    @property
    def n_waiting(self):
        return self._native.n_waiting

    @property
    def broken(self):
        return self._native.broken

    def __repr__(self):
        state = "broken" if self.broken else f"{self.n_waiting}/{self.parties} waiting"
        return f"<parpool.ipc.Barrier, {state}>"
