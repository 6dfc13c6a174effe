"""Python peers for parpool's process benchmarks.

Usage: python3 peers.py MODE N WORKERS
Prints one JSON object: {"seconds": total} or {"samples": [seconds, ...]}.
Timings exclude interpreter start-up except in the start-up modes.
"""
import json
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def ident(x):
    return x


def burn(ms):
    # Busy arithmetic, calibrated by the caller's ms.
    x = ms
    for i in range(ms * 20_000):
        x = (x * 6364136223846793005 + i) & 0xFFFFFFFFFFFFFFFF
    return x


def echo_bytes(b):
    return b


def sum_u64(b):
    return sum(memoryview(b).cast("Q"))


def q_produce(q, n, size):
    item = bytes(size) if size else None
    for i in range(n):
        q.put(item if size else i)


def q_consume(q, counts):
    got = 0
    while q.get() is not None:
        got += 1
    counts.put(got)


_queue = None


def _share_queue(q):
    global _queue
    _queue = q


def dep_consume(_):
    return _queue.get(timeout=10)


def dep_produce(v):
    _queue.put(v)
    return True


def square(x):
    return x * x


def send_plus_one(conn, i):
    conn.send(i + 1)


def echo_pipe(conn):
    while True:
        x = conn.recv()
        if x is None:
            return
        conn.send(x)


def dict_pairs(d, seed, pairs, keys):
    x = seed | 1
    mask = (1 << 64) - 1
    for _ in range(pairs):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        k = x % keys
        d[k] = d.get(k, 0) + 1


def main():
    mode, n, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if mode == "ppe_tiny":
        with ProcessPoolExecutor(workers) as ex:
            ex.submit(ident, 0).result()  # workers up
            t = time.perf_counter()
            fs = [ex.submit(ident, i) for i in range(n)]
            total = sum(f.result() for f in fs)
            out = {"seconds": time.perf_counter() - t}
        assert total == n * (n - 1) // 2
    elif mode == "mp_imap_unordered":
        with mp.get_context("fork").Pool(workers) as pool:
            pool.apply(ident, (0,))
            t = time.perf_counter()
            total = sum(pool.imap_unordered(ident, range(n)))
            out = {"seconds": time.perf_counter() - t}
        assert total == n * (n - 1) // 2
    elif mode == "ppe_roundtrip":
        with ProcessPoolExecutor(workers) as ex:
            ex.submit(ident, 0).result()
            samples = []
            for i in range(n):
                t = time.perf_counter()
                assert ex.submit(ident, i).result() == i
                samples.append(time.perf_counter() - t)
            out = {"samples": samples}
    elif mode == "ppe_dependent_pair":
        # A consumer and a producer through one multiprocessing.Queue,
        # consumer submitted first, on a warm pool.
        q = mp.Queue()
        with ProcessPoolExecutor(workers, initializer=_share_queue, initargs=(q,)) as ex:
            list(ex.map(ident, range(1000)))
            samples = []
            for i in range(n):
                t = time.perf_counter()
                c = ex.submit(dep_consume, None)
                p = ex.submit(dep_produce, i)
                assert c.result() == i and p.result()
                samples.append(time.perf_counter() - t)
            out = {"samples": samples}
    elif mode == "mp_map":
        with mp.get_context("fork").Pool(workers) as pool:
            pool.apply(ident, (0,))
            t = time.perf_counter()
            r = pool.map(ident, range(n))
            out = {"seconds": time.perf_counter() - t}
        assert len(r) == n
    elif mode == "mp_map_square_best":
        # n floats squared with Pool.map, at the best of a few chunksizes
        # (Python's default, and larger ones), on the same data.
        data = [i * 0.5 for i in range(n)]
        best = None
        with mp.get_context("fork").Pool(workers) as pool:
            pool.apply(ident, (0,))
            for chunksize in (None, 10_000, 100_000, max(1, n // (4 * workers))):
                t = time.perf_counter()
                r = pool.map(square, data, chunksize)
                took = time.perf_counter() - t
                assert len(r) == n and r[3] == data[3] * data[3]
                best = took if best is None else min(best, took)
        out = {"seconds": best}
    elif mode in ("start_spawn", "start_fork"):
        ctx = mp.get_context(mode[len("start_"):])
        t = time.perf_counter()
        with ctx.Pool(1) as pool:
            pool.apply(ident, (1,))
            out = {"seconds": time.perf_counter() - t}
    elif mode == "ppe_bytes":
        data = bytes(n)
        with ProcessPoolExecutor(1) as ex:
            ex.submit(ident, 0).result()
            t = time.perf_counter()
            back = ex.submit(echo_bytes, data).result()
            out = {"seconds": time.perf_counter() - t}
        assert len(back) == n
    elif mode == "mp_lock":
        lock = mp.Lock()
        t = time.perf_counter()
        for _ in range(n):
            lock.acquire()
            lock.release()
        out = {"seconds": time.perf_counter() - t}
    elif mode == "ppe_sum_halves":
        # n bytes of u64 ones, pickled to two workers, each summing half.
        data = (1).to_bytes(8, "little") * (n // 8)
        half = len(data) // 2
        with ProcessPoolExecutor(workers) as ex:
            list(ex.map(ident, range(workers)))
            t = time.perf_counter()
            parts = [ex.submit(sum_u64, data[:half]), ex.submit(sum_u64, data[half:])]
            total = sum(f.result() for f in parts)
            out = {"seconds": time.perf_counter() - t}
        assert total == n // 8
    elif mode in ("mpq_1to1", "mpq_1mib"):
        size = 1 << 20 if mode == "mpq_1mib" else 0
        q = mp.Queue()
        p = mp.Process(target=q_produce, args=(q, 1, size))
        p.start()
        q.get()  # the producer process is up
        p.join()
        t = time.perf_counter()
        p = mp.Process(target=q_produce, args=(q, n, size))
        p.start()
        for _ in range(n):
            q.get()
        out = {"seconds": time.perf_counter() - t}
        p.join()
    elif mode in ("mp_process_spawn", "mp_process_fork"):
        # n processes one after another, each sending its result back
        # through a Pipe (a Process returns nothing by itself).
        ctx = mp.get_context(mode[len("mp_process_"):])
        t = time.perf_counter()
        for i in range(n):
            here, there = ctx.Pipe()
            p = ctx.Process(target=send_plus_one, args=(there, i))
            p.start()
            assert here.recv() == i + 1
            p.join()
        out = {"seconds": time.perf_counter() - t}
    elif mode == "mp_pipe_rt":
        here, there = mp.Pipe()
        p = mp.Process(target=echo_pipe, args=(there,))
        p.start()
        here.send(0)
        assert here.recv() == 0
        t = time.perf_counter()
        for i in range(n):
            here.send(i)
            assert here.recv() == i
        out = {"seconds": time.perf_counter() - t}
        here.send(None)
        p.join()
    elif mode == "manager_dict":
        with mp.Manager() as manager:
            d = manager.dict()
            procs = [
                mp.Process(target=dict_pairs, args=(d, w + 1, n // workers, 1000))
                for w in range(workers)
            ]
            t = time.perf_counter()
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            out = {"seconds": time.perf_counter() - t}
    elif mode == "mpq_4x4":
        q, counts = mp.Queue(), mp.Queue()
        t = time.perf_counter()
        cons = [mp.Process(target=q_consume, args=(q, counts)) for _ in range(4)]
        prods = [mp.Process(target=q_produce, args=(q, n // 4, 64)) for _ in range(4)]
        for p in cons + prods:
            p.start()
        for p in prods:
            p.join()
        for _ in cons:
            q.put(None)
        total = sum(counts.get() for _ in cons)
        for p in cons:
            p.join()
        out = {"seconds": time.perf_counter() - t}
        assert total == n // 4 * 4
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
