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
