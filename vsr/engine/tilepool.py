"""The tiles of one CPU frame in parallel: one worker thread per torch thread, each running oneDNN single-threaded.

Contract: `tile_pool(threads)` returns a pool whose `map(fn, jobs)` calls `fn(job)` for every job, in worker
threads under `torch.inference_mode`, waits for all and re-raises the first exception; or None when there is
nothing to gain (`threads` < 2) or the OpenMP runtime torch uses cannot be reached (then the caller runs its tiles
one after another, each spread over the threads by oneDNN, as before). Pools live as long as the process, one
per thread count. The engine uses a pool only with at least 2 tiles per thread (vsr.engine.base.Upscaler._call).

Why: with torch's threads spread over each tile, oneDNN splits every convolution of every tile among the
threads and meets at a barrier after each; a thread the decoder or encoder delays holds the others up. One tile
per thread needs no barriers. Measured on a 2-core Zen 4 (1080p frame, 256 tiles, bench/cpu_layers.py and
an earlier A/B, round-robin medians): 9-5-5 0.772 -> 0.744, 0.797 -> 0.760, 0.855 -> 0.757 s; 9-1-5 0.359 -> 0.314,
0.317 -> 0.300, but 0.283 -> 0.308 s once (docs/performance.md). The result is the
same byte for byte: oneDNN's output does not depend on its thread count (tests/test_engine.py).

How: a worker sets its own OpenMP thread count to 1 with the runtime's `omp_set_num_threads`, which sets the
calling thread's nthreads ICV only, after torch's lazy per-thread set-up (`at::internal::lazy_init_num_threads`
in aten/src/ATen/ParallelOpenMP.cpp sets every new thread to the global count on its first parallel op, which
would undo ours). `torch.set_num_threads(1)` would not do: it also changes the count every later thread starts
with. The worker checks `torch.get_num_threads() == 1` before the pool is used.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def _omp_set_num_threads() -> Callable[[int], None] | None:
    """`omp_set_num_threads` of the OpenMP runtime loaded in this process (torch's libgomp, or Intel's/LLVM's)."""
    try:
        with open("/proc/self/maps") as f:
            paths = [line.split()[-1] for line in f if "/" in line]
    except OSError:
        return None
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    candidates = [p for p in dict.fromkeys(paths) if os.path.basename(p).startswith(("libgomp", "libiomp5", "libomp"))]
    for path in sorted(candidates, key=lambda p: not p.startswith(torch_lib)):  # torch's own runtime first
        try:
            fn = ctypes.CDLL(path).omp_set_num_threads
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], None
        return fn
    return None


class TilePool:
    def __init__(self, threads: int, set_threads: Callable[[int], None]):
        self._set_threads = set_threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="vsr-tiles", initializer=self._single_threaded)
        # every worker must be single-threaded before the pool is trusted: start them all and ask each
        barrier = threading.Barrier(threads, timeout=30)
        try:
            counts = list(self._executor.map(lambda _: (barrier.wait(), torch.get_num_threads())[1], range(threads)))
        except (threading.BrokenBarrierError, RuntimeError):  # a thread that could not start: no pool
            counts = []
        self.ok = len(counts) == threads and all(n == 1 for n in counts)
        if not self.ok:
            barrier.abort()
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _single_threaded(self) -> None:
        torch.get_num_threads()  # torch's lazy per-thread OpenMP set-up first (see the module contract)
        self._set_threads(1)

    def map(self, fn: Callable, jobs: Iterable) -> None:
        def run(job):
            with torch.inference_mode():
                return fn(job)

        for _ in self._executor.map(run, jobs):
            pass


_POOLS: dict[int, TilePool | None] = {}
_LOCK = threading.Lock()


def tile_pool(threads: int) -> TilePool | None:
    """The pool of `threads` single-threaded workers, or None (see the module contract)."""
    if threads < 2:
        return None
    with _LOCK:
        if threads not in _POOLS:
            setter = _omp_set_num_threads()
            pool = TilePool(threads, setter) if setter is not None else None
            _POOLS[threads] = pool if pool is not None and pool.ok else None
        return _POOLS[threads]
