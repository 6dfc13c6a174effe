"""How calls and outcomes are pickled: the standard pickle, cloudpickle
where it is needed, and ``parpool.ipc`` objects set aside.

A ``parpool.ipc`` object's state is shared memory, which no pickle can
carry: while :func:`dumps` runs, each such object's ``__reduce__`` puts the
object in a list that travels beside the bytes (the pool passes its
descriptors), leaving a reference to its place; :func:`loads` resolves the
references from the list that came with the bytes. Pickled anywhere else,
the objects refuse.
"""

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


def dumps(obj, by_value=False):
    """Pickles ``obj``; returns the bytes and the ``parpool.ipc`` objects
    they refer to. ``by_value``: with cloudpickle."""
    before = getattr(_local, "dumping", None)
    objects = _local.dumping = []
    try:
        if by_value:
            import cloudpickle

            data = cloudpickle.dumps(obj, protocol=PROTOCOL)
        else:
            data = pickle.dumps(obj, protocol=PROTOCOL)
    finally:
        _local.dumping = before
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
