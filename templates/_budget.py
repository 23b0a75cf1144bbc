"""How much work one render may do, so a loop inside a loop fails fast
instead of hanging start-up or a chat.

The size limits stop work that would make something big; these stop work
that makes nothing and simply never ends, such as
`{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from jinja2.runtime import Context

from ._limits import LimitError

# Loop steps and calls one render may take.  A chat template takes a few per
# message, so even a conversation far longer than any context window stays
# well below this; two nested loops over a range reach it at once.
MAX_STEPS = 1_000_000

# Each step may still be slow (a string operation close to the size limit),
# so time is watched too.  Real templates render in milliseconds.
MAX_SECONDS = 5.0


class WorkLimitError(LimitError):
    """A render went past its step budget or its deadline."""

    kind = "time limit"


class Budget:
    """The steps and time left to one render."""

    __slots__ = ("deadline", "left")

    def __init__(self) -> None:
        self.left = MAX_STEPS
        self.deadline = time.monotonic() + MAX_SECONDS

    def step(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise WorkLimitError(f"more than {MAX_STEPS:,} loop steps and calls")
        if time.monotonic() > self.deadline:
            raise WorkLimitError(f"still running after {MAX_SECONDS:g} seconds")


class BudgetedContext(Context):
    """Jinja's context with the budget of its render.  Jinja makes one for
    each render, whoever asks for it, so a render made only to check a
    template at load is bounded as much as one made for a chat."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = Budget()


def stepped(budget: Budget, items: Iterable[Any]) -> Iterator[Any]:
    """`items`, taking one step of `budget` for each.  Counted as they are
    drawn rather than in the loop's body, so the items a loop's `if` skips
    count as well."""
    step = budget.step
    for item in items:
        step()
        yield item
