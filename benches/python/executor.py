"""parpool's Python executor against its peers, side by side in one run.

Usage (after ./crates/parpool-py/test has built the package into the venv):

    target/py-venv/bin/pip install loky   # optional peer
    target/py-venv/bin/python benches/python/executor.py [--reps N] [--quick]

Writes benches/results/python.md: each row's median over the repetitions,
with min and max, and the ratio peer time / parpool time (above 1: parpool
is faster). Contenders take turns within each repetition, so a slow moment
of the machine falls on all of them. Executors are made (and their workers
started) before the clock starts.
"""

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time

import parpool

WORKERS = 2


def tiny(x):
    return x


def crash_at(x, bad):
    """`x`, except that `bad` segfaults its worker."""
    if x == bad:
        import ctypes

        ctypes.string_at(0)
    return x


def produce(q, ready, go, n):
    """Puts `n` small objects on `q` once `go` is set (after `ready`)."""
    ready.set()
    go.wait(60)
    for i in range(n):
        q.put((i, "item"))
    return n


def executors():
    """The contenders: name and a maker of a started executor."""
    made = [
        ("parpool ProcessPoolExecutor", lambda: parpool.ProcessPoolExecutor(WORKERS)),
        ("CPython ProcessPoolExecutor", lambda: cf.ProcessPoolExecutor(WORKERS)),
    ]
    try:
        import loky

        made.append(("loky", lambda: loky.ProcessPoolExecutor(WORKERS)))
    except ImportError:
        print("loky not installed: its rows are skipped", file=sys.stderr)
    return made


def warm(ex):
    # Starts every worker (CPython's and loky's start on demand).
    list(ex.map(tiny, range(WORKERS * 4)))
    return ex


def submit_collect(ex, n):
    start = time.perf_counter()
    futures = [ex.submit(tiny, i) for i in range(n)]
    for f in futures:
        f.result()
    return time.perf_counter() - start


def trips(n, once):
    """p50 and p99 of `n` calls of `once` (a round trip each)."""
    samples = []
    for i in range(n):
        start = time.perf_counter()
        once(i)
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def round_trips(ex, n):
    return trips(n, lambda i: ex.submit(tiny, i).result())


def native_round_trips(ex, n):
    """The floor under parpool's executor: its native pool alone, one
    pickled call submitted and its end taken, no future around it."""
    import pickle

    pool = ex._shared.pool
    blob = pickle.dumps((tiny, (0,), {}))
    return trips(n, lambda _: pool.take(pool.submit(blob, [], None)))


def pipe_round_trips(n):
    """The operating system's floor: one byte to `cat` and back."""
    import subprocess

    cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    try:

        def once(_):
            cat.stdin.write(b"x")
            cat.stdout.read(1)

        return trips(n, once)
    finally:
        cat.stdin.close()
        cat.wait()


def queue_one_to_one(make_queue, make_event, start_producer, n):
    """Seconds from the go signal until `n` small objects a producer
    process puts on a queue have all been taken here."""
    q, ready, go = make_queue(), make_event(), make_event()
    finish = start_producer(q, ready, go, n)
    assert ready.wait(60)
    start = time.perf_counter()
    go.set()
    for i in range(n):
        assert q.get(timeout=60)[0] == i
    took = time.perf_counter() - start
    finish()
    return took


def parpool_queue(ex, n):
    from parpool import ipc

    def start(q, ready, go, n):
        f = ex.submit(produce, q, ready, go, n)
        return lambda: f.result(60)

    return queue_one_to_one(lambda: ipc.Queue(capacity=1 << 22), ipc.Event, start, n)


def mp_queue(n):
    ctx = mp.get_context("fork")

    def start(q, ready, go, n):
        p = ctx.Process(target=produce, args=(q, ready, go, n))
        p.start()
        return p.join

    return queue_one_to_one(ctx.Queue, ctx.Event, start, n)


def pickle_floor(n):
    """What any queue of pickled objects pays: a dumps and a loads each."""
    import pickle

    start = time.perf_counter()
    for i in range(n):
        pickle.loads(pickle.dumps((i, "item"), pickle.HIGHEST_PROTOCOL))
    return time.perf_counter() - start


def lock_pairs(lock, n):
    """Seconds per uncontended acquire-release pair."""
    acquire, release = lock.acquire, lock.release
    start = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter() - start) / n


class NoOps:
    """`acquire` and `release` that do nothing, as cheaply as the
    interpreter can call anything: the floor of any lock pair in Python."""

    def __init__(self):
        self.acquire = self.release = [].clear


def isolation(n=1000):
    """How many of `n` tiny tasks end with their value when the middle one
    segfaults its worker, per executor (fresh ones: CPython's breaks)."""
    counts = {}
    for name, make in executors():
        ex = warm(make())
        futures = [ex.submit(crash_at, i, n // 2) for i in range(n)]
        ok = 0
        for f in futures:
            try:
                f.result(60)
                ok += 1
            except Exception:
                pass
        counts[name] = ok
        try:
            ex.shutdown()
        except Exception:
            pass
    return counts


def map_floor(n, chunksizes):
    """The parent's own share of any `map` to processes, alone and serial:
    cut the input into chunks and pickle them, unpickle the result chunks
    (pickled beforehand, as workers would) and consume every item. No
    workers, no waiting: what is left when the workers cost nothing."""
    import itertools
    import pickle

    best = None
    for c in chunksizes:
        replies = [pickle.dumps(list(range(i, min(i + c, n))), pickle.HIGHEST_PROTOCOL) for i in range(0, n, c)]
        start = time.perf_counter()
        it, total = iter(range(n)), 0
        for reply in replies:
            pickle.dumps((tiny, list(itertools.islice(it, c))), pickle.HIGHEST_PROTOCOL)
            total += sum(iter(pickle.loads(reply)))
        took = time.perf_counter() - start
        assert total == n * (n - 1) // 2
        best = took if best is None else min(best, took)
    return best


def map_work_floor(n, chunksizes):
    """All the CPU work of a `map` to processes, done serially in this
    process and divided among the cores: the parent's share (chunk, pickle
    the calls, unpickle the results, consume them) and the workers' (unpickle
    a chunk, call the function on each item, pickle the results), without
    any transport, wake-up or wait. No pool on this machine can finish
    sooner, however it moves the chunks."""
    import itertools
    import pickle

    best = None
    for c in chunksizes:
        start = time.perf_counter()
        it, total = iter(range(n)), 0
        for _ in range(0, n, c):
            call = pickle.dumps((tiny, list(itertools.islice(it, c))), pickle.HIGHEST_PROTOCOL)
            fn, items = pickle.loads(call)
            reply = pickle.dumps([fn(x) for x in items], pickle.HIGHEST_PROTOCOL)
            total += sum(iter(pickle.loads(reply)))
        took = (time.perf_counter() - start) / (os.cpu_count() or 1)
        assert total == n * (n - 1) // 2
        best = took if best is None else min(best, took)
    return best


def best_map(run, n, chunksizes):
    best = None
    for c in chunksizes:
        start = time.perf_counter()
        total = sum(run(range(n), c))
        took = time.perf_counter() - start
        assert total == n * (n - 1) // 2
        best = took if best is None else min(best, took)
    return best


def measure(reps, quick):
    n_tiny = 2_000 if quick else 20_000
    n_trips = 200 if quick else 2_000
    n_map = 100_000 if quick else 1_000_000
    chunks = (1_000, 10_000, 100_000)
    rows = {}

    def add(row, name, value):
        rows.setdefault(row, {}).setdefault(name, []).append(value)

    n_queue = 10_000 if quick else 100_000
    n_locks = 100_000 if quick else 1_000_000
    made = [(name, warm(make())) for name, make in executors()]
    spinning = warm(parpool.ProcessPoolExecutor(WORKERS, spin=100e-6))
    pool = mp.Pool(WORKERS)
    try:
        for _ in range(reps):
            for name, ex in made:
                add(f"{n_tiny} tiny tasks: submit all, then collect", name, submit_collect(ex, n_tiny))
                p50, p99 = round_trips(ex, n_trips)
                add(f"round trip of one tiny task x{n_trips}: p50", name, p50)
                add(f"round trip of one tiny task x{n_trips}: p99", name, p99)
            # The low-latency mode (opt-in), beside the same repetition's
            # figures of the default mode and of the peers.
            fast = f"round trip of one tiny task x{n_trips}, low-latency mode (spin=100 µs)"
            p50, p99 = round_trips(spinning, n_trips)
            add(f"{fast}: p50", OURS[0], p50)
            add(f"{fast}: p99", OURS[0], p99)
            p50, p99 = native_round_trips(spinning, n_trips)
            add(f"{fast}: p50", "floor: parpool's native pool alone (no future), spin", p50)
            add(f"{fast}: p99", "floor: parpool's native pool alone (no future), spin", p99)
            for name, _ in made:
                label = f"{name}, default mode" if name == OURS[0] else name
                for q in ("p50", "p99"):
                    add(f"{fast}: {q}", label, rows[f"round trip of one tiny task x{n_trips}: {q}"][name][-1])
            for label, (p50, p99) in (
                ("floor: parpool's native pool alone (no future)", native_round_trips(made[0][1], n_trips)),
                ("floor: 1 byte to cat and back through pipes", pipe_round_trips(n_trips)),
            ):
                add(f"round trip of one tiny task x{n_trips}: p50", label, p50)
                add(f"round trip of one tiny task x{n_trips}: p99", label, p99)
            for name, ex in made[:1]:
                add(
                    f"map over {n_map} tiny items, best chunksize of 1k/10k/100k",
                    name,
                    best_map(lambda xs, c: ex.map(tiny, xs, chunksize=c), n_map, chunks),
                )
            add(
                f"map over {n_map} tiny items, best chunksize of 1k/10k/100k",
                "multiprocessing.Pool.map",
                best_map(lambda xs, c: pool.map(tiny, xs, chunksize=c), n_map, chunks),
            )
            add(
                f"map over {n_map} tiny items, best chunksize of 1k/10k/100k",
                "floor: the parent's share alone (chunk, pickle, unpickle, consume), serial",
                map_floor(n_map, chunks),
            )
            add(
                f"map over {n_map} tiny items, best chunksize of 1k/10k/100k",
                f"floor: all of its CPU work (parent's and workers'), serial, ÷ {os.cpu_count()} cores",
                map_work_floor(n_map, chunks),
            )
            from parpool import ipc

            row = f"ipc.Queue 1→1: {n_queue} small objects from a task to here"
            add(row, "parpool.ipc", parpool_queue(made[0][1], n_queue))
            add(row, "multiprocessing.Queue", mp_queue(n_queue))
            add(row, "floor: pickle dumps + loads of each object alone", pickle_floor(n_queue))
            row = f"lock acquire + release pair, uncontended, x{n_locks}"
            add(row, "parpool.ipc", lock_pairs(ipc.Lock(), n_locks))
            add(row, "multiprocessing.Lock", lock_pairs(mp.Lock(), n_locks))
            add(row, "floor: threading.Lock (one process only)", lock_pairs(threading.Lock(), n_locks))
            add(row, "floor: two no-op C calls (list.clear), what any pair of calls pays", lock_pairs(NoOps(), n_locks))
    finally:
        pool.close()
        pool.join()
        for _, ex in made:
            ex.shutdown()
        spinning.shutdown()
    return rows


TARGETS = {
    ("tiny tasks", "CPython ProcessPoolExecutor"): 3.0,
    ("tiny tasks", "loky"): 1.0,
    ("p50", "CPython ProcessPoolExecutor"): 3.0,
    ("map over", "multiprocessing.Pool.map"): 1.5,
    ("ipc.Queue", "multiprocessing.Queue"): 5.0,
    ("lock acquire", "multiprocessing.Lock"): 2.0,
}

#: The names parpool's own figures go under.
OURS = ("parpool ProcessPoolExecutor", "parpool.ipc")


def target(row, peer):
    for (part, name), value in TARGETS.items():
        if part in row and name == peer:
            return value
    return None


def fmt(seconds):
    if seconds < 1e-6:
        return f"{seconds * 1e9:.1f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def spread(values):
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def table(rows, reps, survivors):
    lines = [
        f"## parpool's Python executor vs peers ({os.cpu_count()} cores, {WORKERS} workers, "
        f"median of {reps} runs, min–max in brackets)",
        "",
        "Ratio: the peer's median ÷ parpool's (above 1: parpool is faster). "
        f"Python {sys.version.split()[0]}. Made by `benches/python/executor.py`.",
        "",
        "| row | peer | parpool | peer time | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, by in rows.items():
        ours = next((name for name in OURS if name in by), None)
        if ours is None:
            continue
        mine = statistics.median(by[ours])
        for peer, values in by.items():
            if peer == ours:
                continue
            ratio = statistics.median(values) / mine
            want = target(row, peer)
            met = "—" if want is None else ("yes" if ratio >= want else "**no**")
            want = "—" if want is None else f"≥ {want:.2f}"
            lines.append(
                f"| {row} | {peer} | {spread(by[ours])} | {spread(values)} | {ratio:.2f} | {want} | {met} |"
            )
    if survivors:
        n = 1000
        lines += [
            "",
            f"### A task that segfaults among {n}",
            "",
            f"Tasks that end with their value when task {n // 2} of {n} segfaults its worker "
            "(each executor fresh; `isolation()` in the same script).",
            "",
            "| executor | tasks with their value | target |",
            "|---|---|---|",
        ]
        for name, ok in survivors.items():
            want = f"{n - 1} (met: {'yes' if ok == n - 1 else '**no**'})" if name == OURS[0] else "—"
            lines.append(f"| {name} | {ok} of {n} | {want} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a smoke run")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    rows = measure(args.reps, args.quick)
    text = table(rows, args.reps, isolation())
    print(text)
    if not args.no_write and not args.quick:
        out = os.path.join(os.path.dirname(__file__), "..", "results", "python.md")
        with open(out, "w") as f:
            f.write(text)
        print(f"written to {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
