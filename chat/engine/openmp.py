"""The OpenMP runtime under ggml's CPU kernels, where they run on one.

ggml's graph computes with the thread count it is given, but a few of its
parallel loops take OpenMP's default, one thread per core; the AMX
kernels' conversion of every weight at load is such a loop (a few hundred
of them, one per weight). While a front end imports its modules on
another core, those loops' threads share the cores with it, and each
loop's end waits for a thread that is not running: on a 2-core Xeon the
server's start to /health took 0.50 s with one thread per core and 0.40 s
with one thread (2026-12-06, alternated runs). `threads_while` lowers the
default for the calling thread only, for as long as the block runs.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _runtime() -> Any | None:
    """GNU OpenMP if the process has loaded it (the kernels link it on
    Linux), else None: no other runtime is loaded for this."""
    no_load = getattr(os, "RTLD_NOLOAD", None)
    if no_load is None:
        return None
    try:
        return ctypes.CDLL("libgomp.so.1", mode=no_load | os.RTLD_LAZY)
    except OSError:
        return None


@contextmanager
def threads_while(n: int | None) -> Iterator[None]:
    """OpenMP's default thread count on this thread is at most `n` within
    the block (None, or no OpenMP runtime loaded: unchanged)."""
    lib = _runtime() if n is not None else None
    if lib is None or n is None:
        yield
        return
    before = int(lib.omp_get_max_threads())
    lib.omp_set_num_threads(ctypes.c_int(max(1, min(n, before))))  # lowered only: OMP_NUM_THREADS still rules
    try:
        yield
    finally:
        lib.omp_set_num_threads(ctypes.c_int(before))


def cores() -> int:
    """The cores this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
