"""parpool.ipc for Python: objects shared by the parent and the tasks of
parpool's executor, passed as arguments and returned as results."""

import pickle
import queue as stdqueue
import threading
import time

import pytest

import parpool
import tasks
from parpool.ipc import (
    Barrier,
    BoundedSemaphore,
    Event,
    Lock,
    OwnerDied,
    Queue,
    RLock,
    Semaphore,
    SharedMemory,
)

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


def test_ipc_objects_as_initargs_reach_every_worker_replacements_included():
    q, lock = Queue(), Lock()
    with parpool.ProcessPoolExecutor(
        max_workers=2, initializer=tasks.keep_state, initargs=(q, lock), quiet=True
    ) as ex:
        # Each worker said hello through the queue as it started; a crash
        # starts a replacement, which says it too.
        pids = {q.get(timeout=PATIENCE) for _ in range(2)}
        with pytest.raises(parpool.WorkerCrashed):
            ex.submit(tasks.segfault).result(PATIENCE)
        pids.add(q.get(timeout=PATIENCE))
        assert len(pids) == 3
        # The state the initializer kept works in tasks.
        assert ex.submit(tasks.use_state, "sent").result(PATIENCE) is True
        assert q.get(timeout=PATIENCE) == "sent"


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_objects_go_as_initargs_as_they_go_to_a_process(method):
    """CPython's executor passes initargs to the processes it starts: its
    Queue, Lock, Value and Array are allowed there, and are here."""
    import multiprocessing

    ctx = multiprocessing.get_context(method)
    q, lock, value = ctx.Queue(), ctx.Lock(), ctx.Value("i", 0)
    with parpool.ProcessPoolExecutor(
        max_workers=2, initializer=tasks.keep_state, initargs=(q, lock, value), quiet=True
    ) as ex:
        pids = {q.get(timeout=PATIENCE) for _ in range(2)}
        assert len(pids) == 2
        assert all(ex.map(tasks.bump_value, range(50), timeout=PATIENCE))
    assert value.value == 50


def test_fork_context_objects_in_initargs_are_refused_with_the_reason():
    import multiprocessing

    q = multiprocessing.get_context("fork").Queue()
    with pytest.raises(RuntimeError, match="fork context"):
        parpool.ProcessPoolExecutor(
            max_workers=1, initializer=tasks.keep_state, initargs=(q,), quiet=True
        )


def test_pickled_anywhere_else_they_refuse_with_a_reason():
    for obj in (Event(), Queue(), SharedMemory(8)):
        with pytest.raises(TypeError, match="ProcessPoolExecutor"):
            pickle.dumps(obj)


# Locks, semaphores and barriers: robust across processes.


def test_a_lock_lets_one_task_at_a_time_through(ex):
    lock, shm = Lock(), SharedMemory(8)
    rounds, jobs = 2000, 8
    futures = [ex.submit(tasks.count_under_lock, lock, shm, rounds) for _ in range(jobs)]
    # The parent takes its turns too.
    tasks.count_under_lock(lock, shm, rounds)
    assert sum(f.result(PATIENCE) for f in futures) == rounds * jobs
    assert int.from_bytes(shm.buf[:8], "little") == rounds * (jobs + 1)


@pytest.mark.parametrize("kind", [Lock, RLock])
def test_a_holder_killed_with_sigkill_gives_owner_died_not_a_hang(ex, kind):
    lock, ready = kind(), Event()
    dying = ex.submit(tasks.take_and_die, lock, ready)
    assert ready.wait(PATIENCE)
    with pytest.raises(parpool.WorkerCrashed):
        dying.result(PATIENCE)
    start = time.monotonic()
    with pytest.raises(OwnerDied, match="repair"):
        lock.acquire(timeout=PATIENCE)
    assert time.monotonic() - start < PATIENCE
    assert lock.poisoned
    # Poisoned for everyone, tasks included, until repaired.
    with pytest.raises(OwnerDied):
        ex.submit(tasks.count_under_lock, lock, SharedMemory(8), 1).result(PATIENCE)
    assert lock.acquire(timeout=PATIENCE, repair=True)
    lock.clear_poison()
    lock.release()
    assert not lock.poisoned
    assert ex.submit(tasks.count_under_lock, lock, SharedMemory(8), 3).result(PATIENCE) == 3


def test_a_lock_is_released_only_by_the_thread_that_holds_it():
    lock = Lock()
    assert lock.acquire(block=False)
    assert not lock.acquire(block=False)
    assert not lock.acquire(timeout=0.05)
    errors = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(RuntimeError, lock.release)))
    t.start()
    t.join(PATIENCE)
    assert len(errors) == 1 and "does not hold" in str(errors[0].value)
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
    with lock:
        assert not lock.acquire(block=False)


def test_an_rlock_is_taken_again_by_its_holder(ex):
    lock = RLock()
    assert ex.submit(tasks.take_twice, lock).result(PATIENCE) is True
    with lock:
        with lock:
            assert "2 times" in repr(lock)
    # Free again: a task can take it.
    assert ex.submit(tasks.take_twice, lock).result(PATIENCE) is True


def test_a_semaphore_bounds_how_many_hold_it(ex):
    sem, slot, shm = Semaphore(2), Lock(), SharedMemory(16)
    with parpool.ProcessPoolExecutor(max_workers=4, quiet=True) as wide:
        futures = [wide.submit(tasks.at_most, sem, shm, slot, 0.05) for _ in range(12)]
        assert all(f.result(PATIENCE) for f in futures)
    assert int.from_bytes(shm.buf[8:16], "little") == 2
    assert sem.get_value() == 2


def test_a_semaphore_holder_killed_with_sigkill_gives_its_permit_back(ex):
    sem, ready = Semaphore(1), Event()
    dying = ex.submit(tasks.take_and_die, sem, ready)
    assert ready.wait(PATIENCE)
    with pytest.raises(parpool.WorkerCrashed):
        dying.result(PATIENCE)
    assert sem.acquire(timeout=PATIENCE), "the dead holder's permit came back"
    sem.release()
    assert sem.get_value() == 1


def test_a_semaphore_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="Event or Queue"):
        Semaphore(0)
    sem = Semaphore(1)
    with pytest.raises(ValueError, match="holds no permit"):
        sem.release()
    assert sem.get_value() == 1
    assert BoundedSemaphore is Semaphore


def test_a_barrier_releases_a_round_across_processes(ex):
    barrier = Barrier(3)
    futures = [ex.submit(tasks.barrier_wait, barrier, PATIENCE) for _ in range(2)]
    here = barrier.wait(PATIENCE)
    indices = sorted([here] + [f.result(PATIENCE) for f in futures])
    assert indices == [0, 1, 2]
    assert barrier.n_waiting == 0 and not barrier.broken


def test_a_barrier_action_runs_once_a_round_before_anyone_leaves():
    ran = []
    barrier = Barrier(4, action=lambda: ran.append(1), timeout=PATIENCE)
    seen = {}

    def party(me):
        seen[me] = []
        for _ in range(5):
            barrier.wait()
            # A round cannot end without this party, so what it reads here
            # is exactly the rounds so far: each ran its action first.
            seen[me].append(len(ran))

    threads = [threading.Thread(target=party, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    assert len(ran) == 5
    assert all(rounds == [1, 2, 3, 4, 5] for rounds in seen.values()), seen


def test_an_action_that_raises_breaks_the_barrier_and_reaches_its_caller():
    barrier = Barrier(1, action=lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        barrier.wait(PATIENCE)
    assert barrier.broken
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(PATIENCE)
    barrier.reset()
    assert not barrier.broken


def test_a_party_killed_while_it_waits_breaks_the_barrier(ex):
    barrier, ready = Barrier(2), Event()
    dying = ex.submit(tasks.barrier_wait_then_die, barrier, ready)
    assert ready.wait(PATIENCE)
    with pytest.raises(parpool.WorkerCrashed):
        dying.result(PATIENCE)
    start = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(PATIENCE)
    assert time.monotonic() - start < PATIENCE
    assert barrier.broken


def test_a_barrier_wait_that_times_out_breaks_it():
    barrier = Barrier(2)
    start = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(0.1)
    assert 0.05 < time.monotonic() - start < PATIENCE
    assert barrier.broken


def test_many_tasks_sharing_one_of_each_object_all_finish(ex):
    """Thousands of tasks pass the same lock, semaphore, event and queue:
    none deadlocks the pool, every one finishes."""
    lock, sem, shm = Lock(), Semaphore(1), SharedMemory(16)
    futures = [ex.submit(tasks.at_most, sem, shm, lock, 0) for _ in range(2000)]
    assert all(f.result(PATIENCE) for f in futures)
    assert int.from_bytes(shm.buf[8:16], "little") == 1
    assert int.from_bytes(shm.buf[:8], "little") == 0
