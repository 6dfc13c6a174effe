"""Tasks the tests send to workers: module-level, so workers import them."""

import ctypes
import logging
import os
import signal
import sys
import time

STATE = {}


class Box:
    """A value that can be weakly referenced."""

    def __init__(self, value):
        self.value = value


def square(x):
    return x * x


def add(a, b):
    return a + b


def pid(_=None):
    return os.getpid()


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def fail(message):
    raise ValueError(message)


def exit_hard(code):
    os._exit(code)


def segfault(_=None):
    ctypes.string_at(0)


def abort(_=None):
    os.abort()


def kill_self(_=None):
    os.kill(os.getpid(), signal.SIGKILL)


def allocate(mib):
    return len(bytearray(mib << 20))


def remember(key, value):
    STATE[key] = value


def recall(key):
    return STATE.get(key)


def refuse_to_start():
    raise RuntimeError("this initializer refuses")


def unpicklable_result(_=None):
    return lambda: None


def log_warning(text):
    logging.getLogger("parpool.test").warning("%s %d", text, 7)
    return "logged"


def log_info(text):
    logging.getLogger("parpool.test").info(text)
    return "logged"


def log_exception(_=None):
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("parpool.test").exception("it failed")
    return "logged"


def say(text, error):
    print(text)
    print(error, file=sys.stderr)
    return "said"


def say_then_exit(text):
    print(text, flush=True)
    os._exit(3)


def set_event(event):
    event.set()
    return event.is_set()


def wait_event(event, seconds):
    return event.wait(seconds)


def produce(queue, n):
    for i in range(n):
        queue.put({"i": i, "pid": os.getpid()})
    return n


def consume(queue, n, seconds):
    return [queue.get(timeout=seconds)["i"] for _ in range(n)]


def produce_then_die(queue, n):
    for i in range(n):
        queue.put(i)
    os._exit(9)


def make_queue(items):
    from parpool.ipc import Queue

    queue = Queue()
    for item in items:
        queue.put(item)
    return queue


def fill(shm, value):
    shm.buf[:] = bytes([value]) * shm.size
    return shm.size


def fill_array(shm, value):
    import numpy

    numpy.ndarray((shm.size // 8,), dtype=numpy.float64, buffer=shm.buf)[:] = value
    return shm.size


def crash_on(x, bad):
    if x == bad:
        os._exit(5)
    return x
