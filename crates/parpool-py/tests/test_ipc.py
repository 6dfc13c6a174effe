"""parpool.ipc for Python: objects shared by the parent and the tasks of
parpool's executor, passed as arguments and returned as results."""

import pickle
import queue as stdqueue
import time

import pytest

import parpool
import tasks
from parpool.ipc import Event, Queue, SharedMemory

PATIENCE = 60


@pytest.fixture
def ex():
    with parpool.ProcessPoolExecutor(max_workers=2, quiet=True) as executor:
        yield executor


def test_an_event_set_in_a_task_is_set_here(ex):
    event = Event()
    assert not event.is_set()
    assert ex.submit(tasks.set_event, event).result(PATIENCE) is True
    assert event.is_set()
    event.clear()
    assert not event.wait(0.01)


def test_a_task_waits_for_an_event_set_here(ex):
    event = Event()
    waiting = ex.submit(tasks.wait_event, event, PATIENCE)
    time.sleep(0.1)  # the task is likely waiting by now; either order holds
    event.set()
    assert waiting.result(PATIENCE) is True


def test_a_queue_carries_objects_between_tasks_and_here(ex):
    q = Queue()
    produced = ex.submit(tasks.produce, q, 1000)
    consumed = ex.submit(tasks.consume, q, 500, PATIENCE)
    assert produced.result(PATIENCE) == 1000
    got = consumed.result(PATIENCE)
    rest = [q.get(timeout=PATIENCE)["i"] for _ in range(500)]
    # One producer: whoever receives, each gets them in order, all once.
    assert got == sorted(got) and rest == sorted(rest)
    assert sorted(got + rest) == list(range(1000))
    assert q.empty()


def test_a_queue_made_in_a_task_comes_back_with_its_items(ex):
    q = ex.submit(tasks.make_queue, ["a", "b"]).result(PATIENCE)
    assert isinstance(q, Queue)
    assert [q.get(timeout=5), q.get(timeout=5)] == ["a", "b"]


def test_empty_and_full_are_the_standard_exceptions():
    q = Queue(maxsize=1)
    with pytest.raises(stdqueue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(stdqueue.Empty):
        q.get_nowait()
    q.put(1)
    with pytest.raises(stdqueue.Full):
        q.put_nowait(2)
    with pytest.raises(stdqueue.Full):
        q.put(2, timeout=0.05)
    assert q.get_nowait() == 1


def test_a_sender_that_dies_loses_only_its_unsent_items(ex):
    q = Queue()
    died = ex.submit(tasks.produce_then_die, q, 100)
    assert isinstance(died.exception(PATIENCE), parpool.WorkerCrashed)
    assert [q.get(timeout=5) for _ in range(100)] == list(range(100))
    with pytest.raises(stdqueue.Empty):
        q.get(timeout=0.1)
    # The queue goes on for everyone else.
    assert ex.submit(tasks.produce, q, 3).result(PATIENCE) == 3
    assert [q.get(timeout=5)["i"] for _ in range(3)] == [0, 1, 2]


def test_shared_memory_written_in_a_task_is_seen_here(ex):
    shm = SharedMemory(1 << 20)
    view = shm.buf
    assert len(view) == shm.size == 1 << 20
    assert ex.submit(tasks.fill, shm, 7).result(PATIENCE) == 1 << 20
    assert view[0] == 7 and view[-1] == 7 and bytes(view[:4]) == b"\x07" * 4
    with pytest.raises(ValueError):
        SharedMemory(0)


def test_a_gib_numpy_array_is_shared_without_a_copy(ex):
    numpy = pytest.importorskip("numpy")
    shm = SharedMemory(1 << 30)
    array = numpy.ndarray((shm.size // 8,), dtype=numpy.float64, buffer=shm.buf)
    assert not array.any()
    # The task writes through its own view of the same pages: the parent's
    # array sees every value, which no copy could show.
    assert ex.submit(tasks.fill_array, shm, 2.0).result(PATIENCE) == 1 << 30
    assert array[0] == 2.0 and array[-1] == 2.0
    assert float(array.sum()) == 2.0 * (shm.size // 8)


def test_ipc_objects_as_initargs_are_refused_with_a_reason():
    with pytest.raises(TypeError, match="initargs"):
        parpool.ProcessPoolExecutor(
            max_workers=1, initializer=tasks.remember, initargs=("k", Event()), quiet=True
        )


def test_pickled_anywhere_else_they_refuse_with_a_reason():
    for obj in (Event(), Queue(), SharedMemory(8)):
        with pytest.raises(TypeError, match="ProcessPoolExecutor"):
            pickle.dumps(obj)
