"""Objects shared by processes, for tasks of ``parpool.ProcessPoolExecutor``:
:class:`Queue`, :class:`Event` and :class:`SharedMemory`, in shared memory
(parpool's Rust ``ipc``), passed to tasks as arguments and returned from
them as ``multiprocessing``'s are passed to its processes.

A process that dies while it sends never blocks the others: a receiver
skips a message its sender could not finish.

>>> from parpool.ipc import Event, Queue
>>> q = Queue()
>>> q.put({"n": 1})
>>> q.get(timeout=5)
{'n': 1}
"""

import pickle

from . import _pickling
from ._parpool import Event, SharedMemory
from ._parpool import Queue as _NativeQueue

__all__ = ["Event", "Queue", "SharedMemory"]


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
