"""Progress display for the long steps of a build (hashing, copying)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from tqdm import tqdm


@contextlib.contextmanager
def bar(total: int, desc: str) -> Iterator[Callable[[int], None]]:
    """A byte-count bar on stderr; yields `update(n_bytes)`. Silent when
    stderr is not a terminal, so logs stay clean."""
    with tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
    ) as t:
        yield t.update


@contextlib.contextmanager
def steps(desc: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A bar of counted steps (tensors, say) whose total is learnt as they
    come; yields `update(done, total)`. Silent when stderr is not a terminal."""
    with tqdm(desc=desc, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(), leave=False) as t:

        def update(done: int, total: int) -> None:
            if t.total != total:
                t.total = total
            t.n = done
            t.refresh()

        yield update
