"""parpool.ProcessPoolExecutor: concurrent.futures' behaviour, and what it
adds (crashes fail alone, timeouts, cancel of running tasks). Every wait
is bounded: a hang fails the test instead of stalling the suite."""

import asyncio
import concurrent.futures as cf
import logging
import os
import pickle
import random
import subprocess
import sys
import textwrap
import time

import pytest

import parpool
import tasks

# The longest any single result may take before the test calls it a hang.
PATIENCE = 60


@pytest.fixture
def ex():
    with parpool.ProcessPoolExecutor(max_workers=2, quiet=True) as executor:
        yield executor


def until(condition, seconds=PATIENCE):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


def test_it_is_an_executor_and_runs_calls_in_other_processes(ex):
    assert isinstance(ex, cf.Executor)
    assert ex.submit(tasks.square, 7).result(PATIENCE) == 49
    assert ex.submit(tasks.add, 2, b=3).result(PATIENCE) == 5
    pids = {ex.submit(tasks.pid).result(PATIENCE) for _ in range(20)}
    assert os.getpid() not in pids
    assert pids <= set(ex.worker_pids())


def test_an_exception_comes_back_with_the_remote_traceback(ex):
    future = ex.submit(tasks.fail, "no")
    with pytest.raises(ValueError, match="no") as info:
        future.result(PATIENCE)
    cause = info.value.__cause__
    assert cause is not None and "tasks.py" in str(cause), cause
    assert "in fail" in str(cause)


@pytest.mark.parametrize(
    "crash", [tasks.exit_hard, tasks.segfault, tasks.abort, tasks.kill_self]
)
def test_a_crash_fails_its_task_alone_and_the_pool_goes_on(ex, crash):
    before = set(ex.worker_pids())
    slow = [ex.submit(tasks.sleep, 0.2) for _ in range(3)]
    crashed = ex.submit(crash, 3)
    with pytest.raises(parpool.WorkerCrashed) as info:
        crashed.result(PATIENCE)
    # Code written for CPython's executor still catches it.
    assert isinstance(info.value, cf.process.BrokenProcessPool)
    assert [f.result(PATIENCE) for f in slow] == [0.2] * 3
    assert ex.submit(tasks.square, 3).result(PATIENCE) == 9
    assert set(ex.worker_pids()) != before, "the dead worker was replaced"


def test_a_memory_limit_fails_the_greedy_task_alone():
    with parpool.ProcessPoolExecutor(
        max_workers=1, memory_limit=1 << 30, quiet=True
    ) as ex:
        greedy = ex.submit(tasks.allocate, 4096)
        with pytest.raises((parpool.WorkerCrashed, MemoryError)):
            greedy.result(PATIENCE)
        assert ex.submit(tasks.allocate, 16).result(PATIENCE) == 16 << 20


def test_a_task_past_its_timeout_is_killed_and_fails_alone(ex):
    start = time.monotonic()
    late = ex.submit_with_timeout(0.3, tasks.sleep, 30)
    with pytest.raises(parpool.TaskTimeout):
        late.result(PATIENCE)
    assert time.monotonic() - start < 20
    assert ex.submit(tasks.square, 4).result(PATIENCE) == 16


def test_the_executor_wide_timeout_applies_to_every_task():
    with parpool.ProcessPoolExecutor(max_workers=1, task_timeout=0.3, quiet=True) as ex:
        with pytest.raises(parpool.TaskTimeout):
            ex.submit(tasks.sleep, 30).result(PATIENCE)
        assert ex.submit(tasks.sleep, 0.01).result(PATIENCE) == 0.01


def test_cancel_stops_a_running_task(ex):
    running = ex.submit(tasks.sleep, 30)
    until(running.running)
    start = time.monotonic()
    assert running.cancel()
    assert running.cancelled()
    with pytest.raises(cf.CancelledError):
        running.result(PATIENCE)
    assert time.monotonic() - start < 20
    assert ex.submit(tasks.square, 5).result(PATIENCE) == 25


def test_cancel_reaches_a_task_another_thread_waits_on(ex):
    import threading

    running = ex.submit(tasks.sleep, 30)
    until(running.running)
    seen = []

    def wait():
        try:
            seen.append(running.result(PATIENCE))
        except cf.CancelledError:
            seen.append("cancelled")

    waiter = threading.Thread(target=wait)
    waiter.start()
    # Gives the waiter time to be inside result(); the assertions hold
    # whichever comes first.
    time.sleep(0.1)
    assert running.cancel()
    waiter.join(PATIENCE)
    assert not waiter.is_alive()
    assert seen == ["cancelled"]


def test_many_threads_waiting_on_one_future_all_wake(ex):
    import threading

    future = ex.submit(tasks.sleep, 0.3)
    seen = []
    lock = threading.Lock()

    def wait():
        value = future.result(PATIENCE)
        with lock:
            seen.append(value)

    start = time.monotonic()
    waiters = [threading.Thread(target=wait) for _ in range(8)]
    for w in waiters:
        w.start()
    for w in waiters:
        w.join(PATIENCE)
    assert seen == [0.3] * 8
    # Each wakes when the task ends, not when its own timeout runs out.
    assert time.monotonic() - start < PATIENCE / 3


def test_a_done_callback_of_a_cancelled_future_may_wait_on_the_executor():
    ex = parpool.ProcessPoolExecutor(max_workers=1, quiet=True)
    blocker = ex.submit(tasks.sleep, 0.3)
    queued = ex.submit(tasks.square, 2)
    finished = []
    # Shutting down waits for the results thread, which settles this same
    # job's cancellation: the callback must not run under the future's lock.
    queued.add_done_callback(lambda f: (ex.shutdown(wait=True), finished.append(True)))
    assert queued.cancel()
    assert finished == [True]
    assert blocker.result(0) == 0.3


def test_timeouts_past_or_beyond_any_clock_are_not_errors(ex):
    future = ex.submit(tasks.sleep, 0.2)
    with pytest.raises(cf.TimeoutError):
        future.result(-1)
    assert future.result(1e19) == 0.2
    # map's deadline passes while the consumer is slow: TimeoutError.
    results = ex.map(tasks.sleep, [0.5, 0.5], timeout=0.1)
    time.sleep(0.2)
    with pytest.raises(cf.TimeoutError):
        list(results)


def test_cancel_of_a_queued_task_keeps_it_from_running(ex):
    blockers = [ex.submit(tasks.sleep, 0.5) for _ in range(2)]
    queued = ex.submit(tasks.square, 6)
    assert queued.cancel()
    assert queued.cancelled()
    done, _ = cf.wait([queued], timeout=PATIENCE)
    assert queued in done
    assert [b.result(PATIENCE) for b in blockers] == [0.5, 0.5]
    finished = ex.submit(tasks.square, 2)
    assert finished.result(PATIENCE) == 4
    assert not finished.cancel()


def test_map_keeps_order_with_chunks_and_bounds_its_wait(ex):
    xs = list(range(1000))
    assert list(ex.map(tasks.square, xs, chunksize=37, timeout=PATIENCE)) == [x * x for x in xs]
    assert list(ex.map(tasks.add, [1, 2], [10, 20], timeout=PATIENCE)) == [11, 22]
    with pytest.raises(ValueError):
        ex.map(tasks.square, xs, chunksize=0)
    results = ex.map(tasks.sleep, [5, 5], timeout=0.2)
    with pytest.raises(cf.TimeoutError):
        list(results)


def test_map_keeps_no_reference_to_a_result_it_yielded(ex):
    import gc
    import weakref

    for obj in ex.map(tasks.Box, range(10), chunksize=4, timeout=PATIENCE):
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        assert ref() is None


def test_a_crash_in_a_map_fails_its_chunk_alone(ex):
    """A map item that crashes its worker ends the map there with
    WorkerCrashed, after the results before its chunk; the executor and
    the map's other chunks go on."""
    items = list(range(40))
    results = ex.map(tasks.crash_on, items, [17] * 40, chunksize=5, timeout=PATIENCE)
    got = []
    with pytest.raises(parpool.WorkerCrashed):
        for value in results:
            got.append(value)
    assert got == list(range(15))  # the chunks before the one holding 17
    assert list(ex.map(tasks.square, range(10), timeout=PATIENCE)) == [i * i for i in range(10)]


def test_as_completed_and_wait_see_every_future(ex):
    futures = [ex.submit(tasks.sleep, 0.01 * (i % 5)) for i in range(40)]
    seen = list(cf.as_completed(futures, timeout=PATIENCE))
    assert set(seen) == set(futures)
    crash = ex.submit(tasks.exit_hard, 1)
    ok = ex.submit(tasks.square, 2)
    done, not_done = cf.wait([crash, ok], timeout=PATIENCE, return_when=cf.ALL_COMPLETED)
    assert not not_done and done == {crash, ok}


def test_asyncio_awaits_through_run_in_executor(ex):
    async def main():
        loop = asyncio.get_running_loop()
        calls = [loop.run_in_executor(ex, tasks.square, i) for i in range(50)]
        return await asyncio.wait_for(asyncio.gather(*calls), PATIENCE)

    assert asyncio.run(main()) == [i * i for i in range(50)]


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def kept():
    logger = logging.getLogger("parpool.test")
    handler = _Keep()
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def test_what_a_task_logs_reaches_the_parents_loggers_before_its_result(ex, kept):
    assert ex.submit(tasks.log_warning, "careful").result(PATIENCE) == "logged"
    # Handed over before the future settled.
    assert [r.getMessage() for r in kept] == ["careful 7"]
    record = kept[0]
    assert record.levelno == logging.WARNING and record.name == "parpool.test"
    assert record.process != os.getpid() and record.process in ex.worker_pids()
    assert ex.submit(tasks.log_exception).result(PATIENCE) == "logged"
    assert "ZeroDivisionError" in kept[1].exc_text
    # Below the parent's root level (WARNING here): not sent.
    assert ex.submit(tasks.log_info, "quiet").result(PATIENCE) == "logged"
    assert len(kept) == 2


def test_a_maps_chunks_settle_as_the_consumer_reaches_them(ex, kept):
    """A map's chunks come back pickled and are unpickled in order as the
    consumer reaches them: the results before a failing item, then its
    exception; what an item logged before its result; a result that
    cannot be unpickled fails as it does for submit."""
    got = []
    with pytest.raises(ValueError, match="item 13 fails"):
        for value in ex.map(tasks.fail_on, range(40), [13] * 40, chunksize=5, timeout=PATIENCE):
            got.append(value)
    assert got == list(range(10))  # the chunks before the one holding 13
    results = ex.map(tasks.log_warning, ["a", "b", "c"], chunksize=2, timeout=PATIENCE)
    assert next(results) == "logged"
    assert [r.getMessage() for r in kept] == ["a 7", "b 7"]
    assert list(results) == ["logged", "logged"]
    assert [r.getMessage() for r in kept] == ["a 7", "b 7", "c 7"]
    alone = ex.submit(tasks.unpicklable_result).exception(PATIENCE)
    with pytest.raises(type(alone)):
        list(ex.map(tasks.unpicklable_result, [1, 2], timeout=PATIENCE))
    assert list(ex.map(tasks.square, range(5), timeout=PATIENCE)) == [0, 1, 4, 9, 16]


def test_workers_log_at_the_parents_root_level(kept):
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    try:
        with parpool.ProcessPoolExecutor(max_workers=1, quiet=True) as ex:
            assert ex.submit(tasks.log_info, "heard").result(PATIENCE) == "logged"
    finally:
        root.setLevel(before)
    assert [r.getMessage() for r in kept] == ["heard"]


def test_forwarded_output_reaches_sys_stdout_before_the_result(monkeypatch):
    import io

    out, err = io.StringIO(), io.StringIO()
    with parpool.ProcessPoolExecutor(max_workers=1, forward_output=True) as ex:
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        assert ex.submit(tasks.say, "hello", "oops").result(PATIENCE) == "said"
        assert out.getvalue() == "hello\n" and err.getvalue() == "oops\n"
        # What a crashed task printed first comes too.
        crashed = ex.submit(tasks.say_then_exit, "last words")
        assert isinstance(crashed.exception(PATIENCE), parpool.WorkerCrashed)
        assert "last words" in out.getvalue()


def test_lambdas_travel_with_cloudpickle_or_say_what_to_install(ex):
    future = ex.submit(lambda x: x + 1, 1)
    try:
        import cloudpickle  # noqa: F401
    except ImportError:
        with pytest.raises(pickle.PicklingError, match="cloudpickle"):
            future.result(PATIENCE)
    else:
        assert future.result(PATIENCE) == 2


def test_an_unpicklable_result_fails_its_task_with_the_pickling_error(ex):
    with pytest.raises((pickle.PicklingError, AttributeError)) as info:
        ex.submit(tasks.unpicklable_result).result(PATIENCE)
    if hasattr(info.value, "__notes__"):
        assert "pickling the task's result" in " ".join(info.value.__notes__)
    assert ex.submit(tasks.square, 3).result(PATIENCE) == 9


def test_the_initializer_runs_in_every_worker():
    with parpool.ProcessPoolExecutor(
        max_workers=2, initializer=tasks.remember, initargs=("greeting", "hi"), quiet=True
    ) as ex:
        assert {ex.submit(tasks.recall, "greeting").result(PATIENCE) for _ in range(10)} == {"hi"}
        # A replacement runs it too.
        ex.submit(tasks.exit_hard, 1).exception(PATIENCE)
        assert {ex.submit(tasks.recall, "greeting").result(PATIENCE) for _ in range(10)} == {"hi"}


def test_a_failing_initializer_fails_the_constructor_with_its_reason():
    with pytest.raises(parpool.InitializerFailed, match="refuses"):
        parpool.ProcessPoolExecutor(max_workers=1, initializer=tasks.refuse_to_start, quiet=True)
    with pytest.raises(TypeError):
        parpool.ProcessPoolExecutor(initializer=42)
    with pytest.raises(ValueError):
        parpool.ProcessPoolExecutor(max_workers=0)
    with pytest.raises(ValueError):
        parpool.ProcessPoolExecutor(max_tasks_per_child=0)


def test_max_tasks_per_child_replaces_workers():
    with parpool.ProcessPoolExecutor(max_workers=1, max_tasks_per_child=2, quiet=True) as ex:
        pids = [ex.submit(tasks.pid).result(PATIENCE) for _ in range(6)]
    assert len(set(pids)) == 3, pids


def test_shutdown_refuses_new_work_and_cancel_futures_cancels_the_queue():
    ex = parpool.ProcessPoolExecutor(max_workers=1, quiet=True)
    first = ex.submit(tasks.sleep, 0.5)
    until(first.running)
    queued = [ex.submit(tasks.square, i) for i in range(20)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.result(0) == 0.5
    # The worker's next task is left to run, as CPython leaves what it has
    # handed to its workers; the rest are cancelled.
    assert queued[0].result(0) == 0
    assert all(f.cancelled() for f in queued[1:])
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(tasks.square, 1)


def test_functions_of_the_main_script_unpickle_in_workers(tmp_path):
    script = tmp_path / "main_script.py"
    script.write_text(
        textwrap.dedent(
            """
            import parpool

            def triple(x):
                return 3 * x

            if __name__ == "__main__":
                with parpool.ProcessPoolExecutor(max_workers=2) as ex:
                    print(sum(ex.map(triple, range(10))))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=PATIENCE
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "135"


def test_functions_typed_interactively_travel_by_value():
    pytest.importorskip("cloudpickle")
    program = textwrap.dedent(
        """
        import parpool
        def g(x):
            return x + 1
        with parpool.ProcessPoolExecutor(max_workers=1) as ex:
            print(ex.submit(g, 41).result(), list(ex.map(g, [1, 2])))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=PATIENCE
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42 [2, 3]"


def test_a_script_without_the_main_guard_is_refused_with_the_reason(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import parpool\n"
        "ex = parpool.ProcessPoolExecutor(max_workers=1)\n"
        "print(ex.submit(abs, -1).result())\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=PATIENCE
    )
    assert out.returncode != 0
    assert "InitializerFailed" in out.stderr, out.stderr
    assert "bootstrapping phase" in out.stderr, out.stderr


def test_a_forked_child_is_told_to_make_its_own_executor(ex):
    assert ex.submit(tasks.square, 2).result(PATIENCE) == 4
    child = os.fork()
    if child == 0:
        try:
            ex.submit(tasks.square, 3)
        except RuntimeError as e:
            os._exit(0 if "forked" in str(e) else 2)
        os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ex.submit(tasks.square, 3).result(PATIENCE) == 9


def test_many_tiny_tasks_all_arrive(ex):
    futures = [ex.submit(tasks.square, i) for i in range(100_000)]
    assert [f.result(PATIENCE) for f in futures] == [i * i for i in range(100_000)]
    total = sum(ex.map(tasks.square, range(100_000), chunksize=1000, timeout=PATIENCE))
    assert total == sum(i * i for i in range(100_000))


@pytest.mark.parametrize("spin", [None, 200e-6], ids=["default", "spin"])
def test_random_crashes_timeouts_and_cancels_never_hang_or_lie(spin):
    """The adversary: a seeded mix of values, exceptions, crashes, timeouts
    and cancels. Each future ends as its task says, none hangs, and the
    executor still works after; in the low-latency mode too."""
    seed = int(os.environ.get("PARPOOL_PY_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    with parpool.ProcessPoolExecutor(max_workers=2, quiet=True, spin=spin) as ex:
        plan = []
        # Thousands of tasks; crashes and timeouts rarer than the rest, each
        # costing a fresh interpreter.
        kinds = ["value"] * 12 + ["raise"] * 3 + ["cancel"] * 3 + ["crash", "timeout"]
        for i in range(2000):
            kind = rng.choice(kinds)
            if kind == "value":
                f = ex.submit(tasks.square, i)
            elif kind == "raise":
                f = ex.submit(tasks.fail, str(i))
            elif kind == "crash":
                f = ex.submit(rng.choice([tasks.exit_hard, tasks.segfault, tasks.abort]), 1)
            elif kind == "timeout":
                f = ex.submit_with_timeout(0.05, tasks.sleep, 30)
            else:
                f = ex.submit(tasks.sleep, rng.choice([0, 0.01, 3]))
            plan.append((i, kind, f))
        for i, kind, f in plan:
            if kind == "cancel" and rng.random() < 0.9:
                f.cancel()
        for i, kind, f in plan:
            context = f"seed {seed}, task {i} ({kind})"
            if kind == "value":
                assert f.result(PATIENCE) == i * i, context
            elif kind == "raise":
                with pytest.raises(ValueError):
                    f.result(PATIENCE)
            elif kind == "crash":
                assert isinstance(f.exception(PATIENCE), parpool.WorkerCrashed), context
            elif kind == "timeout":
                assert isinstance(f.exception(PATIENCE), parpool.TaskTimeout), context
            elif f.cancelled():
                with pytest.raises(cf.CancelledError):
                    f.result(PATIENCE)
            else:
                assert f.result(PATIENCE) in (0, 0.01, 3), context
            assert f.done(), context
        assert ex.submit(tasks.square, 9).result(PATIENCE) == 81


def _cpu_ticks(pid):
    """User and system clock ticks process `pid` has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_the_low_latency_mode_answers_and_then_rests():
    """``spin``: tasks one after another come back right; once the executor
    is idle past its window, neither its workers nor this process use CPU."""
    with pytest.raises(ValueError, match="spin"):
        parpool.ProcessPoolExecutor(max_workers=1, spin=-1)
    with parpool.ProcessPoolExecutor(max_workers=2, quiet=True, spin=500e-6) as ex:
        for i in range(2000):
            assert ex.submit(tasks.square, i).result(PATIENCE) == i * i
        assert isinstance(ex.submit(tasks.exit_hard, 3).exception(PATIENCE), parpool.WorkerCrashed)
        assert ex.submit(tasks.square, 5).result(PATIENCE) == 25
        # Both workers busy at once: the crashed one's replacement has
        # started (its interpreter's start-up costs CPU, not spinning).
        assert [f.result(PATIENCE) for f in [ex.submit(tasks.sleep, 0.2) for _ in range(2)]] == [
            0.2,
            0.2,
        ]
        pids = ex._shared.pool.worker_pids()
        assert len(pids) == 2
        time.sleep(0.2)
        before = [_cpu_ticks(pid) for pid in [os.getpid(), *pids]]
        cpu = time.process_time()
        time.sleep(1.0)
        after = [_cpu_ticks(pid) for pid in [os.getpid(), *pids]]
        # A spinning process would use about 100 ticks in that second.
        assert max(b - a for a, b in zip(before, after)) <= 5, (before, after)
        assert time.process_time() - cpu < 0.05


def test_the_type_stubs_check_calls(tmp_path):
    """The package's stubs (``__init__.pyi``, ``_parpool.pyi``, ``py.typed``)
    let a type checker see a call's argument and result types."""
    pytest.importorskip("mypy")
    good = tmp_path / "good.py"
    good.write_text(
        textwrap.dedent(
            """
            import parpool
            from parpool.ipc import Barrier, Lock, Queue, Semaphore, SharedMemory

            def square(x: int) -> int:
                return x * x

            def main() -> None:
                with parpool.ProcessPoolExecutor(max_workers=2, task_timeout=5.0) as ex:
                    n: int = ex.submit(square, 3).result()
                    total: int = sum(ex.map(square, range(10), chunksize=2))
                    print(n, total, ex.submit_with_timeout(1.0, square, 4).result())
                lock, sem, q = Lock(), Semaphore(2), Queue(maxsize=4)
                with lock, sem:
                    q.put(1)
                taken: bool = lock.acquire(timeout=1.0, repair=True)
                index: int = Barrier(1, timeout=1.0).wait()
                print(taken, index, q.get(), SharedMemory(8).buf[0])
            """
        )
    )
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import parpool\n"
        "def square(x: int) -> int:\n"
        "    return x * x\n"
        "with parpool.ProcessPoolExecutor() as ex:\n"
        "    s: str = ex.submit(square, 'x').result()\n"
    )
    check = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]
    ok = subprocess.run(check + [str(good)], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout
    wrong = subprocess.run(check + [str(bad)], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 1, wrong.stdout
    assert "arg-type" in wrong.stdout and "assignment" in wrong.stdout
