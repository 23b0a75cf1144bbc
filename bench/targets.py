"""The issue's targets, checked against compare.py's measurements
(PASS/MISS, with the margin), and the short table of them for the README."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.common import MB
from bench.results import LoadStats, OneShotStats, SingleStats
from bench.stats import Samples, ratio

START_LIMIT = 1.25  # start to /health against llama-server's
ONESHOT_LIMIT = 1.2  # `--cli -n 16` wall time against llama-completion's

if TYPE_CHECKING:
    from bench.config import Config  # it imports TABLE_HEADER from here


@dataclass
class Target:
    what: str
    value: float | None  # llamabin's ratio or difference
    limit: float
    higher_is_better: bool
    unit: str  # "x" for ratios, " MB" for differences
    extra_ok: bool = True  # another condition (zero cut streams)
    note: str = ""

    def verdict(self) -> str:
        if self.value is None:
            return "n/a: not measured"
        ok = (self.value >= self.limit if self.higher_is_better else self.value <= self.limit) and self.extra_ok
        margin = self.value - self.limit if self.higher_is_better else self.limit - self.value
        digits = 2 if self.unit == "x" else 1
        how = f"{abs(margin):.{digits}f}{self.unit} {'to spare' if margin >= 0 else 'short'}"
        return f"{'PASS' if ok else 'MISS'} ({how}{'; ' + self.note if self.note else ''})"

    def row(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        digits = 2 if self.unit == "x" else 1
        value = "n/a" if self.value is None else f"{self.value:.{digits}f}{self.unit}"
        return f"| {self.what} | {value} | {sign} {self.limit:g}{self.unit} | {self.verdict()} |"


def targets(cfg: Config, single: SingleStats, load: LoadStats, oneshot: OneShotStats) -> list[Target]:
    def med(d: dict[str, Samples], k: str) -> float | None:
        return d[k].median if k in d else None

    found = [
        Target(
            "single stream decode, engine (`/completion` timings)",
            ratio(med(single.decode, "llamabin"), med(single.decode, "llama-server")),
            0.97,
            True,
            "x",
        ),
        Target(
            "single stream through the server (t/s after first token)",
            ratio(med(single.stream_tps, "llamabin"), med(single.stream_tps, "llama-server")),
            0.97,
            True,
            "x",
        ),
    ]
    for slots, client_counts in cfg.loads:
        for clients in client_counts:
            if clients < 4:
                continue
            ours, ref = load.rows.get(("llamabin", slots, clients)), load.rows.get(("llama-server", slots, clients))
            cut = ours.cut if ours else 0
            found.append(
                Target(
                    f"{clients} clients, {slots} slots: aggregate t/s, zero cut streams",
                    ratio(ours.agg.median if ours else None, ref.agg.median if ref else None),
                    0.95,
                    True,
                    "x",
                    extra_ok=ours is not None and cut == 0,
                    note=f"{cut} cut" if ours else "",
                )
            )
    found.append(
        Target(
            "start to /health",
            ratio(med(single.start, "llamabin"), med(single.start, "llama-server")),
            START_LIMIT,
            False,
            "x",
        )
    )
    found.append(
        Target(
            "`--cli -n 16` wall time vs llama-completion",
            ratio(med(oneshot.wall, "llamabin"), med(oneshot.wall, "llama-completion")),
            ONESHOT_LIMIT,
            False,
            "x",
        )
    )
    ours_rss, ref_rss = med(oneshot.rss_mib, "llamabin"), med(oneshot.rss_mib, "llama-completion")
    found.append(
        Target(
            "`--cli -n 16` peak RSS minus llama-completion's",
            None if ours_rss is None or ref_rss is None else (ours_rss - ref_rss) * 2**20 / MB,
            60,
            False,
            " MB",
        )
    )
    found.append(
        Target("file size minus GGUF size", (cfg.exe.stat().st_size - cfg.gguf.stat().st_size) / MB, 40, False, " MB")
    )
    return found


TABLE_HEADER = "| measure | llamabin vs llama.cpp | target | result |"


def readme_table(cfg: Config, single: SingleStats, load: LoadStats, oneshot: OneShotStats) -> str:
    """A short table for the README: the targets, one line each."""
    rows = [TABLE_HEADER, "|---|---|---|---|"]
    for t in targets(cfg, single, load, oneshot):
        sign = ">=" if t.higher_is_better else "<="
        value = "n/a" if t.value is None else f"{t.value:.{2 if t.unit == 'x' else 1}f}{t.unit}"
        rows.append(f"| {t.what} | {value} | {sign} {t.limit:g}{t.unit} | {t.verdict().split(' ')[0]} |")
    return "\n".join(rows) + "\n"
