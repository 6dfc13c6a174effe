"""How calls and outcomes are pickled: the standard pickle, cloudpickle
where it is needed, and ``parpool.ipc`` objects set aside.

A ``parpool.ipc`` object's state is shared memory, which no pickle can
carry: while :func:`dumps` runs, each such object's ``__reduce__`` puts the
object in a list that travels beside the bytes (the pool passes its
descriptors), leaving a reference to its place; :func:`loads` resolves the
references from the list that came with the bytes. Pickled anywhere else,
the objects refuse.
"""

import copyreg
import io
import pickle
import threading

PROTOCOL = pickle.HIGHEST_PROTOCOL

_local = threading.local()


def _set_aside(obj):
    """``__reduce__`` of a native ``parpool.ipc`` object."""
    objects = getattr(_local, "dumping", None)
    if objects is None:
        raise TypeError(
            f"a parpool.ipc.{type(obj).__name__} travels only as an argument or "
            "result of a parpool.ProcessPoolExecutor task, not through pickle "
            "elsewhere (its shared memory goes beside the pickle)"
        )
    objects.append(obj)
    return (_ref, (len(objects) - 1,))


def _ref(index):
    objects = getattr(_local, "loading", None)
    if objects is None or index >= len(objects):
        raise pickle.UnpicklingError(
            "a parpool.ipc object referred to by this pickle did not come with it"
        )
    return objects[index]


class _Inheritance:
    """Stands in for ``multiprocessing``'s spawning ``Popen`` while the
    executor's ``initargs`` are pickled, so that its objects which may only
    be inherited by a starting process (``Queue``, ``Lock``, ``Value``,
    ``Array`` of a spawn or forkserver context) agree to be pickled, as
    they do for ``Process(args=...)``. A descriptor they hand over travels
    beside the pickle (a ``Descriptor`` set aside like a ``parpool.ipc``
    object), and each new worker receives a duplicate of its own."""

    def duplicate_for_child(self, fd):
        from ._parpool import Descriptor

        return Descriptor(fd)

    def DupFd(self, descriptor):
        return _InheritedFd(descriptor)


class _InheritedFd:
    """A descriptor ``multiprocessing`` rebuilds an object from in the
    worker (its ``DupFd`` protocol: ``detach()`` gives the number)."""

    def __init__(self, descriptor):
        self._descriptor = descriptor

    def detach(self):
        return self._descriptor.detach()


def _dumps_inherited(obj, by_value):
    """Pickles with ``multiprocessing``'s own reducers too (its shared
    memory arenas, connections), as it pickles a starting process's
    arguments."""
    from collections import ChainMap
    from multiprocessing.reduction import ForkingPickler

    out = io.BytesIO()
    if by_value:
        import cloudpickle

        pickler = cloudpickle.Pickler(out, protocol=PROTOCOL)
    else:
        pickler = pickle.Pickler(out, protocol=PROTOCOL)
    pickler.dispatch_table = ChainMap(
        ForkingPickler._extra_reducers,
        getattr(pickler, "dispatch_table", None) or copyreg.dispatch_table,
    )
    pickler.dump(obj)
    return out.getvalue()


def dumps(obj, by_value=False, inheriting=False):
    """Pickles ``obj``; returns the bytes and the ``parpool.ipc`` objects
    they refer to. ``by_value``: with cloudpickle. ``inheriting``: as
    arguments of a process being started (``multiprocessing`` objects that
    only a starting process may inherit agree to be pickled)."""
    before = getattr(_local, "dumping", None)
    objects = _local.dumping = []
    spawning = None
    if inheriting:
        from multiprocessing import context

        spawning = context.get_spawning_popen()
        context.set_spawning_popen(_Inheritance())
    try:
        if inheriting:
            data = _dumps_inherited(obj, by_value)
        elif by_value:
            import cloudpickle

            data = cloudpickle.dumps(obj, protocol=PROTOCOL)
        else:
            data = pickle.dumps(obj, protocol=PROTOCOL)
    finally:
        _local.dumping = before
        if inheriting:
            context.set_spawning_popen(spawning)
    return data, objects


def loads(data, objects):
    """Unpickles ``data``, its ``parpool.ipc`` references resolved from
    ``objects``."""
    before = getattr(_local, "loading", None)
    _local.loading = objects
    try:
        return pickle.load(io.BytesIO(data))
    finally:
        _local.loading = before
