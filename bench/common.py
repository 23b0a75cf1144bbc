"""What the benchmark scripts share: the checkout's paths, the waits, the
machine's description, one-line errors and progress under the running
script's name, and llama.cpp's builds (`scripts/build-llama-cpp.sh`)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

from chat.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build-llama-cpp.sh"
TOOLS = ("llama-server", "llama-completion", "llama-bench")

WAIT_S = 120.0  # any single wait: a server's start, a request, a one-shot
BUILD_WAIT_S = 3 * 3600.0  # a cold llama.cpp build takes ~25 min on two cores
SEED = 42
MB = 1_000_000  # the limits are in MB; sizes are printed in them too


class Unavailable(Exception):
    """A program that could not be run or measured; its table rows say why."""


def fail(message: str) -> NoReturn:
    """An error: one line on stderr, named by the script that was run, and
    exit 1; input errors need no traceback."""
    raise SystemExit(f"{_script().name}: {message}")


def log(message: str) -> None:
    """Progress, on stderr (the report goes to stdout)."""
    print(f"[{_script().stem}] {message}", file=sys.stderr, flush=True)


def _script() -> Path:
    return Path(sys.argv[0] or "bench")


def machine(load: bool = False) -> str:
    """The "Machine:" line of a report: the CPU and its cores, then the
    Python version, or with `load` the kernel and the 1-minute load average
    (compare.py takes it at its start, before it loads the machine itself)."""
    cpu = cpu_model(default=platform.machine())
    if not load:
        return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
    # A 1-minute load average well above 0 means something else is running:
    # the numbers are then worth less, whatever the alternation evens out.
    load_avg = os.getloadavg()[0]
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, load average {load_avg:.2f} at the start"


def build_llama_cpp(flavour: str, timeout: float = BUILD_WAIT_S) -> Path:
    """The build script prints its folder (at once when the build is done);
    its own progress goes to our stderr."""
    if not BUILD_SCRIPT.is_file():
        fail(f"{BUILD_SCRIPT} is missing")
    log(f"getting llama.cpp's tools (scripts/build-llama-cpp.sh {flavour}; minutes the first time, then kept)")
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT), flavour], stdout=subprocess.PIPE, text=True, timeout=timeout, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        fail(f"scripts/build-llama-cpp.sh {flavour} took more than {timeout:.0f} s")
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        fail(f"scripts/build-llama-cpp.sh {flavour} failed (exit {result.returncode}); see its output above")
    return Path(lines[-1])
