"""What emulating aarch64 costs on this machine: the same one-shot, the
linux-x86_64 file run natively against the linux-aarch64 file run under
qemu-user as each ARM CPU, alternated run by run. A factor for planning the
tests' time, not a claim about ARM hardware.

    .venv/bin/python bench/emulation.py --x86 FILE --aarch64 FILE [--runs 5] [--out bench/RESULTS.md]

Both files hold the same model (`llamabin build --target
linux-x86_64,linux-aarch64`). Each run is `--cli -p ... -n 16 --temp 0 -t 2
--log-disable` in a clean environment (`env -i`), warm: one untimed run of
each first unpacks the runtime and settles the CPU kernels' self-test.
--out FILE appends the section (machine, date, table) to FILE.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402
from bench.report import publish  # noqa: E402

CPUS = ("cortex-a53", "cortex-a76", "neoverse-n1")
ARGS = ("--cli", "-p", "four score and seven", "-n", "16", "--temp", "0", "-t", "2", "--log-disable")
NATIVE = "x86-64, native"


def run_once(exe: Path, cpu: str | None, home: Path) -> float:
    env = [f"HOME={home}"] + ([f"QEMU_CPU={cpu}"] if cpu else [])
    start = time.perf_counter()
    result = subprocess.run(["env", "-i", *env, str(exe), *ARGS], capture_output=True, text=True, timeout=900)
    took = time.perf_counter() - start
    if result.returncode != 0 or not result.stdout.strip():
        raise SystemExit(f"emulation.py: {exe} ({cpu or 'native'}) failed: {result.stderr.strip()[-300:]}")
    return took


def measure(x86: Path, aarch64: Path, runs: int) -> dict[str, list[float]]:
    configs: list[tuple[str, Path, str | None]] = [(NATIVE, x86, None)] + [(cpu, aarch64, cpu) for cpu in CPUS]
    times: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory(prefix="llamabin-emulation-") as tmp:
        home = Path(tmp)
        for _, exe, cpu in configs:
            run_once(exe, cpu, home)  # unpack and self-test, untimed
        for i in range(runs):
            for name, exe, cpu in configs:
                times[name].append(run_once(exe, cpu, home))
            print(f"[emulation] run {i + 1}/{runs} done", file=sys.stderr, flush=True)
    return times


def report(times: dict[str, list[float]], runs: int, model: str) -> str:
    native = statistics.median(times[NATIVE])
    lines = [
        f"## Emulating aarch64 ({date.today().isoformat()})",
        "",
        f"Machine: {machine()}. `bench/emulation.py`, {runs} alternating runs of `{' '.join(ARGS)}` (warm),"
        f" the {model} file for each target; qemu-user's TCG, one QEMU_CPU per row.",
        "",
        "| CPU | median s | range s | vs native x86-64 |",
        "|---|---|---|---|",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.2f} | {min(values):.2f}-{max(values):.2f} | {median / native:.1f}x |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--x86", type=Path, required=True, help="the linux-x86_64 file")
    parser.add_argument("--aarch64", type=Path, required=True, help="the linux-aarch64 file of the same model")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, help="append the section to this file (bench/RESULTS.md)")
    args = parser.parse_args()
    for exe in (args.x86, args.aarch64):
        if not exe.is_file():
            parser.error(f"{exe}: no such file")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    model = args.x86.name.removesuffix("-linux-x86_64")
    publish(report(measure(args.x86, args.aarch64, args.runs), args.runs, model), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
