"""compare.py's measurements, gathered per program: what the tables are made of."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.clients import Burst
from bench.processes import OneShot
from bench.stats import Samples


@dataclass
class OneShotStats:
    wall: dict[str, Samples] = field(default_factory=dict)
    rss_mib: dict[str, Samples] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    sample_output: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, shot: OneShot) -> None:
        self.wall.setdefault(name, Samples()).add(shot.wall)
        self.rss_mib.setdefault(name, Samples()).add(shot.rss_kib / 1024)
        self.sample_output.setdefault(name, shot.stdout.strip()[:80])


@dataclass
class SingleStats:
    start: dict[str, Samples] = field(default_factory=dict)
    prefill: dict[str, Samples] = field(default_factory=dict)
    decode: dict[str, Samples] = field(default_factory=dict)
    prompt_n: dict[str, int] = field(default_factory=dict)
    predicted_n: dict[str, int] = field(default_factory=dict)
    ttft: dict[str, Samples] = field(default_factory=dict)
    stream_tps: dict[str, Samples] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    bench: dict[str, float] = field(default_factory=dict)  # llama-bench: pp/tg tokens/s
    bench_spec: str = ""


@dataclass
class LoadRow:
    agg: Samples = field(default_factory=Samples)
    ttfts: list[float] = field(default_factory=list)
    streams: int = 0
    cut: int = 0
    early: int = 0  # ended by the model (finish_reason stop) before max_tokens
    cut_reasons: list[str] = field(default_factory=list)
    rss_mib: Samples = field(default_factory=Samples)


@dataclass
class LoadStats:
    rows: dict[tuple[str, int, int], LoadRow] = field(default_factory=dict)  # (server, slots, clients)
    errors: dict[str, str] = field(default_factory=dict)


def add_burst(stats: LoadStats, key: tuple[str, int, int], b: Burst, asked: int) -> None:
    row = stats.rows.setdefault(key, LoadRow())
    row.agg.add(b.aggregate_tps())
    for s in b.streams:
        row.streams += 1
        why = s.cut_reason(asked)
        if why:
            row.cut += 1
            row.cut_reasons.append(why)
        elif s.finish == "stop" and s.tokens < asked:
            row.early += 1
        if s.ttft is not None:
            row.ttfts.append(s.ttft)
