"""mpi4py.futures peers for parpool's MPI benchmarks.

Usage: mpiexec -n RANKS python3 -m mpi4py.futures mpi_peers.py MODE N
Rank 0 runs this script; the other ranks serve as MPIPoolExecutor's
workers. Prints one JSON object: {"seconds": total} or {"samples": [...]}.
"""
import json
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def ident(x):
    return x


def burn(ms):
    x = ms
    for i in range(ms * 20_000):
        x = (x * 6364136223846793005 + i) & 0xFFFFFFFFFFFFFFFF
    return x


def main():
    mode, n = sys.argv[1], int(sys.argv[2])
    with MPIPoolExecutor() as ex:
        list(ex.map(ident, range(1000)))  # every worker up
        if mode == "submit_tiny":
            t = time.perf_counter()
            fs = [ex.submit(ident, i) for i in range(n)]
            total = sum(f.result() for f in fs)
            out = {"seconds": time.perf_counter() - t}
            assert total == n * (n - 1) // 2
        elif mode == "roundtrip":
            samples = []
            for i in range(n):
                t = time.perf_counter()
                assert ex.submit(ident, i).result() == i
                samples.append(time.perf_counter() - t)
            out = {"samples": samples}
        elif mode == "map_best_chunksize":
            best = None
            for chunksize in (100, 1000, 10_000):
                t = time.perf_counter()
                r = list(ex.map(ident, range(n), chunksize=chunksize))
                s = time.perf_counter() - t
                assert len(r) == n
                if best is None or s < best[0]:
                    best = (s, chunksize)
            out = {"seconds": best[0], "chunksize": best[1]}
        else:
            raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
