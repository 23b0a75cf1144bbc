"""Numbers from repeated runs: medians with their min-max spread, nearest-rank
percentiles, and ratios, formatted for the tables ("n/a" when missing)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def fmt(self, digits: int = 1, scale: float = 1.0) -> str:
        """'median (min-max)', or the median alone for one sample."""
        if not self.values:
            return "n/a"
        v = [x * scale for x in self.values]
        med = f"{statistics.median(v):.{digits}f}"
        return med if len(v) == 1 else f"{med} ({min(v):.{digits}f}-{max(v):.{digits}f})"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: with a handful of streams, interpolating
    would invent a time nobody waited."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats
    return ordered[int(rank) - 1]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def fmt_num(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"
