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


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"item {x} fails")
    return x


def crash_on(x, bad):
    if x == bad:
        os._exit(5)
    return x


def count_under_lock(lock, shm, rounds):
    """Adds 1 to a shared counter ``rounds`` times, each read-then-write
    under ``lock`` (lost updates if the lock let two in)."""
    view = shm.buf
    for _ in range(rounds):
        with lock:
            n = int.from_bytes(view[:8], "little")
            view[:8] = (n + 1).to_bytes(8, "little")
    return rounds


def take_and_die(lock, ready):
    """Takes ``lock`` (a Lock, RLock or Semaphore), says so, and is killed
    holding it."""
    lock.acquire()
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def take_twice(lock):
    """Takes an RLock twice, releases twice; True if it was free after."""
    with lock:
        with lock:
            pass
    return lock.acquire(block=False) and (lock.release() is None)


def at_most(sem, shm, slot, hold):
    """Holds a permit of ``sem`` for ``hold`` seconds, counting holders in
    ``shm`` (word 0: now, word 1: most seen) under the semaphore itself
    plus an atomic-enough update guarded by ``slot`` (a Lock)."""
    view = shm.buf
    with sem:
        with slot:
            now = int.from_bytes(view[:8], "little") + 1
            view[:8] = now.to_bytes(8, "little")
            most = max(now, int.from_bytes(view[8:16], "little"))
            view[8:16] = most.to_bytes(8, "little")
        time.sleep(hold)
        with slot:
            now = int.from_bytes(view[:8], "little") - 1
            view[:8] = now.to_bytes(8, "little")
    return True


def barrier_wait(barrier, seconds):
    return barrier.wait(seconds)


def barrier_wait_then_die(barrier, ready):
    """Arrives at ``barrier`` from a helper thread, then dies while it
    waits."""
    import threading

    threading.Thread(target=barrier.wait, daemon=True).start()
    deadline = time.monotonic() + 30
    while barrier.n_waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)



def keep_state(q, lock=None, value=None):
    """An initializer: keeps its arguments for tasks and puts this worker's
    pid on the queue."""
    STATE["init"] = (q, lock, value)
    q.put(os.getpid())


def use_state(item):
    """Puts ``item`` on the initializer's queue under its lock."""
    q, lock, _ = STATE["init"]
    with lock:
        q.put(item)
    return True


def bump_value(_):
    """Adds 1 to the initializer's shared ``multiprocessing.Value``."""
    _, lock, value = STATE["init"]
    with lock:
        value.value += 1
    return True
