"""Where a start goes, on this machine: the file's own phases
(chat/phases.py) beside llama.cpp's tools running the same CPU kernels.

    python bench/startup.py --exe dist/SmolLM2-135M-Instruct.Q4_1-linux-x86_64 \\
        --gguf path/to/SmolLM2-135M-Instruct.Q4_1.gguf [--runs 10] [--out bench/RESULTS.md]

Every run launches four programs, in an order flipped each run: the file
with `--server -np 1` until `/health` answers 200, then llama-server the
same way; the file with `--cli -p ... -n 16` to its end, then
llama-completion. The file runs with LLAMABIN_TRACE_START, so it also says
when it reached each phase: the bootloader and interpreter (until "python
up"), the command line's imports, the load (in its own thread) and, beside
it, the front end's imports. Run on two machines, the tables say where the
difference between them goes. The first run of each program is a warm-up
(the runtime unpacked, the weights verified, the files in the page cache)
and is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import WAIT_S, fail, log, machine  # noqa: E402
from bench.config import ONESHOT_PROMPT, ONESHOT_TOKENS  # noqa: E402
from bench.processes import free_port, kill_session  # noqa: E402
from bench.reference import reference_tools  # noqa: E402
from bench.report import publish  # noqa: E402
from bench.targets import ONESHOT_LIMIT, START_LIMIT  # noqa: E402
from chat import phases  # noqa: E402

PROMPT = ["-p", ONESHOT_PROMPT, "-n", str(ONESHOT_TOKENS), "--temp", "0"]
Phases = dict[str, float]
FIRST_ANSWER = "first chat answer"
END = "200 from /health, or the process's end"


def spawn(argv: list[str], env: dict[str, str], log: IO[bytes]) -> tuple[subprocess.Popen[bytes], float]:
    """Start `argv` with the launch time in the trace variable, its stderr
    into `log` (a file: a pipe read only at the end could fill, and stall
    a program that logs as much as llama-server); (process, perf_counter
    at launch)."""
    env = dict(env, **{phases.TRACE_VAR: repr(time.time())})
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    return proc, start


def read_phases(log: IO[bytes]) -> Phases:
    log.seek(0)
    found: Phases = {}
    for line in log.read().decode(errors="replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == phases.PREFIX:
            found.setdefault(parts[2], float(parts[1]))
    return found


FIRST_CHAT = {"model": "m", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}


def start_to_health(argv: list[str], env: dict[str, str]) -> tuple[float, Phases]:
    """Seconds to the first 200 from /health; the phases hold, beside the
    file's own, "first answer": the end of a short chat asked right then
    (what a start costs a client, whatever a server leaves to its first
    request)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc, start = spawn([*argv, "--port", str(port)], env, log)
        ready = None
        try:
            with httpx.Client(timeout=WAIT_S) as client:
                while ready is None:
                    if proc.poll() is not None:
                        fail(f"{argv[0]} exited with {proc.returncode} before /health answered")
                    try:
                        if client.get(f"{url}/health", timeout=2.0).status_code == 200:
                            ready = time.perf_counter() - start
                    except httpx.HTTPError:
                        pass
                    if time.perf_counter() - start > WAIT_S:
                        fail(f"{argv[0]}: /health did not answer within {WAIT_S:.0f} s")
                    time.sleep(0.002)
                answer = client.post(f"{url}/v1/chat/completions", json=FIRST_CHAT)
                answered = time.perf_counter() - start
                if answer.status_code != 200:
                    fail(f"{argv[0]}: the first chat request got {answer.status_code}: {answer.text[:300]}")
        finally:
            kill_session(proc)
        return ready, {**read_phases(log), FIRST_ANSWER: answered}


def oneshot(argv: list[str], env: dict[str, str]) -> tuple[float, Phases]:
    with tempfile.TemporaryFile() as log:
        proc, start = spawn(argv, env, log)
        try:
            proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            kill_session(proc)
            fail(f"{argv[0]} did not finish within {WAIT_S:.0f} s")
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            log.seek(0)
            fail(f"{argv[0]} exited with {proc.returncode}: {log.read().decode(errors='replace')[-500:]}")
        return wall, read_phases(log)


def measure(
    exe: Path, gguf: Path, bin_dir: Path, runs: int, threads: int, ctx: int
) -> dict[str, list[tuple[float, Phases]]]:
    # The same flags as compare.py's (bench/programs.py), so the two agree.
    t = ["-t", str(threads), "-c", str(ctx)]
    programs = {
        "file --server": lambda env: start_to_health(
            [str(exe), "--server", "--nobrowser", "--host", "127.0.0.1", "-np", "1", *t], env
        ),
        "llama-server": lambda env: start_to_health(
            [str(bin_dir / "llama-server"), "-m", str(gguf), "--host", "127.0.0.1", "-np", "1", *t], env
        ),
        "file --cli": lambda env: oneshot([str(exe), "--cli", *PROMPT, *t, "--log-disable"], env),
        "llama-completion": lambda env: oneshot(
            [str(bin_dir / "llama-completion"), "-m", str(gguf), *PROMPT, *t, "-no-cnv"], env
        ),
    }
    results: dict[str, list[tuple[float, Phases]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, LLAMABIN_HOME=home)
        for name, run in programs.items():
            log(f"warm-up: {name}")
            run(env)
        for i in range(runs):
            order = list(programs) if i % 2 == 0 else list(reversed(programs))
            for name in order:
                results[name].append(programs[name](env))
            log(f"run {i + 1}/{runs}")
    return results


def median_of(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})" if values else "-"


def phase_rows(samples: list[tuple[float, Phases]]) -> list[tuple[str, list[float]]]:
    names = [
        phases.PYTHON_UP,
        phases.COMMAND_LINE,
        phases.LOAD_BEGINS,
        phases.MODEL_LOADED,
        phases.ENGINE_READY,
        phases.FRONT_END_IMPORTED,
        phases.SERVING,
        FIRST_ANSWER,
        phases.ANSWERED,
    ]
    rows = [(name, [p[name] for _, p in samples if name in p]) for name in names]
    return [row for row in rows if row[1]] + [(END, [wall for wall, _ in samples])]


def spans(samples: list[tuple[float, Phases]]) -> list[tuple[str, list[float]]]:
    """The phases as durations: what each part of the start cost."""

    def each(a: str, b: str) -> list[float]:
        return [p[b] - p[a] for _, p in samples if a in p and b in p]

    return [
        (
            "bootloader and interpreter (launch to python up)",
            [p[phases.PYTHON_UP] for _, p in samples if phases.PYTHON_UP in p],
        ),
        ("command line's imports and checks", each(phases.PYTHON_UP, phases.LOAD_BEGINS)),
        ("model and context load (its own thread)", each(phases.LOAD_BEGINS, phases.ENGINE_READY)),
        ("front end's imports, beside the load", each(phases.LOAD_BEGINS, phases.FRONT_END_IMPORTED)),
    ]


def _first(samples: list[tuple[float, Phases]]) -> list[float]:
    return [p[FIRST_ANSWER] for _, p in samples if FIRST_ANSWER in p]


def report(
    results: dict[str, list[tuple[float, Phases]]], ref_description: str, runs: int, threads: int, ctx: int
) -> str:
    server, cli = results["file --server"], results["file --cli"]
    health = statistics.median(w for w, _ in server) / statistics.median(w for w, _ in results["llama-server"])
    shot = statistics.median(w for w, _ in cli) / statistics.median(w for w, _ in results["llama-completion"])
    first = statistics.median(_first(server)) / statistics.median(_first(results["llama-server"]))
    lines = [
        f"### Start-up phases ({datetime.now():%Y-%m-%d %H:%M}, {runs} alternated runs)",
        "",
        f"Machine: {machine(load=True)}. Threads {threads}, context {ctx}.",
        "",
        f"Reference: {ref_description}.",
        "",
        "| measure | file | llama.cpp | ratio | limit | result |",
        "|---|---|---|---|---|---|",
        f"| start to /health, s | {median_of([w for w, _ in server])} | "
        f"{median_of([w for w, _ in results['llama-server']])} | {health:.2f}x | <= {START_LIMIT}x | "
        f"{'PASS' if health <= START_LIMIT else 'MISS'} |",
        f"| start to the first chat answer (4 tokens), s | {median_of(_first(server))} | "
        f"{median_of(_first(results['llama-server']))} | {first:.2f}x | | |",
        f"| `--cli -n 16` wall, s | {median_of([w for w, _ in cli])} | "
        f"{median_of([w for w, _ in results['llama-completion']])} | {shot:.2f}x | <= {ONESHOT_LIMIT}x | "
        f"{'PASS' if shot <= ONESHOT_LIMIT else 'MISS'} |",
        "",
        "The file's phases, seconds since launch (median, min-max):",
        "",
        "| phase | `--server` | `--cli -n 16` |",
        "|---|---|---|",
    ]
    server_rows = dict(phase_rows(server))
    cli_rows = dict(phase_rows(cli))
    names = [n for n in dict.fromkeys([*server_rows, *cli_rows]) if n != END] + [END]
    for name in names:
        lines.append(f"| {name} | {median_of(server_rows.get(name, []))} | {median_of(cli_rows.get(name, []))} |")
    lines += ["", "The same as durations:", "", "| part | `--server` | `--cli -n 16` |", "|---|---|---|"]
    for (label, a), (_, b) in zip(spans(server), spans(cli), strict=True):
        lines.append(f"| {label} | {median_of(a)} | {median_of(b)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exe", type=Path, required=True, help="the built file")
    ap.add_argument("--gguf", type=Path, required=True, help="the GGUF inside it, for llama.cpp's tools")
    ap.add_argument("--llama-bin", type=Path, help="llama.cpp's tools to compare with (default: the portable build)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ctx", type=int, default=4096, help="context size for every program (default 4096)")
    ap.add_argument("--out", type=Path, help="append the tables to this Markdown file")
    opts = ap.parse_args()
    ref = reference_tools(opts.exe, opts.gguf, opts.llama_bin)
    results = measure(opts.exe.resolve(), opts.gguf.resolve(), ref.bin_dir, opts.runs, opts.threads, opts.ctx)
    publish(report(results, ref.description, opts.runs, opts.threads, opts.ctx), opts.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
