"""OpenMP's default thread count, lowered for the model's load only."""

from __future__ import annotations

import sys
import threading

import pytest

from chat.engine import backends, openmp

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernels use GNU OpenMP on Linux")


def test_the_default_is_lowered_on_this_thread_for_the_block_only() -> None:
    backends.load()  # the CPU kernels, which link the OpenMP runtime
    lib = openmp._runtime()
    assert lib is not None, "the CPU kernels did not bring GNU OpenMP in"
    before = lib.omp_get_max_threads()
    other: list[int] = []
    if before < 2:
        pytest.skip("one core: nothing to lower")
    with openmp.threads_while(1):
        assert lib.omp_get_max_threads() == 1
        # The front end's threads keep theirs: only the loading thread's loops are smaller.
        seen = threading.Thread(target=lambda: other.append(lib.omp_get_max_threads()))
        seen.start()
        seen.join()
    assert lib.omp_get_max_threads() == before
    assert other == [before]


def test_no_count_given_changes_nothing() -> None:
    backends.load()
    lib = openmp._runtime()
    assert lib is not None
    before = lib.omp_get_max_threads()
    with openmp.threads_while(None):
        assert lib.omp_get_max_threads() == before


def test_the_default_is_never_raised_past_what_it_was() -> None:
    """OMP_NUM_THREADS, or whatever set the default lower, still rules."""
    backends.load()
    lib = openmp._runtime()
    assert lib is not None
    before = lib.omp_get_max_threads()
    with openmp.threads_while(before + 3):
        assert lib.omp_get_max_threads() == before
