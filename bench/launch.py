"""Launch benchmark for a built file: size overhead, first and warm launch.

    python bench/launch.py --exe dist/SmolLM2-135M-Instruct.Q4_1-linux-x86_64 \
        --gguf path/to/SmolLM2-135M-Instruct.Q4_1.gguf [--runs 10] [--out bench/RESULTS.md]

"First launch" is a launch with an empty cache (so it includes the one-time
unpack of the runtime and sha256 check of the weights); "warm" is every
launch after it. Each one runs
`--cli -p hi -n 1`, so model load and one token dominate, and is compared in
the same run, alternating, against the unpackaged runtime (`python -m chat`)
on the same GGUF: the machine's drift hits both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402
from bench.report import publish  # noqa: E402

ARGS = ["--cli", "-p", "hi", "-n", "1", "--temp", "0", "--log-disable"]


def timed(cmd: list[str], home: str) -> float:
    env = dict(os.environ, LLAMABIN_HOME=home, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=ROOT)
    return time.perf_counter() - start


def measure(exe: Path, gguf: Path, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"first": [], "warm": [], "unpackaged": []}
    plain = [sys.executable, "-m", "chat", "-m", str(gguf), *ARGS]
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as home:
            times["first"].append(timed([str(exe), *ARGS], home))
            times["unpackaged"].append(timed(plain, home))
            times["warm"].append(timed([str(exe), *ARGS], home))
    return times


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{d} {version(d)}" for d in ("llamabin", "llama-cpp-python", "pyinstaller"))


def report(exe: Path, gguf: Path, times: dict[str, list[float]]) -> str:
    overhead = exe.stat().st_size - gguf.stat().st_size
    ref = statistics.median(times["unpackaged"])
    lines = [
        f"### Launch ({date.today().isoformat()}, {len(times['warm'])} runs)",
        "",
        f"Machine: {machine()}. Versions: {versions()}.",
        "",
        f"File size minus GGUF size: {overhead / 2**20:.1f} MiB ({exe.name}).",
        "",
        "| launch (`--cli -n 1`) | median s | min-max s | vs unpackaged |",
        "|---|---|---|---|",
    ]
    for key in ("first", "warm", "unpackaged"):
        t = times[key]
        lines.append(
            f"| {key} | {statistics.median(t):.2f} | {min(t):.2f}-{max(t):.2f} | {statistics.median(t) / ref:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exe", type=Path, required=True)
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", type=Path, help="append the table to this Markdown file")
    opts = ap.parse_args()
    text = report(opts.exe, opts.gguf, measure(opts.exe, opts.gguf, opts.runs))
    publish(text, opts.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
