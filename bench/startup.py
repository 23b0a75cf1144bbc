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
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import WAIT_S, Unavailable, fail, log, machine  # noqa: E402
from bench.config import checked_programs  # noqa: E402
from bench.processes import ServerSpec, launch, run_oneshot  # noqa: E402
from bench.programs import Programs, oneshot_argvs, server_specs  # noqa: E402
from bench.reference import reference_tools  # noqa: E402
from bench.report import publish  # noqa: E402
from bench.targets import ONESHOT_LIMIT, START_LIMIT  # noqa: E402
from chat import phases  # noqa: E402

Phases = dict[str, float]
Sample = tuple[float, Phases]  # the measured seconds, and the phases reached by then
FIRST_ANSWER = "first chat answer"
END = "200 from /health, or the process's end"
FIRST_CHAT = {"model": "m", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}
POLL_S = 0.002  # /health is asked this often: a start is ~0.3 s, and 10 ms steps would blur it


def traced(env: dict[str, str]) -> dict[str, str]:
    """`env` with the launch time in the trace variable: the file then says
    on stderr when it reached each phase, counted from it. Made just before
    the launch."""
    return dict(env, **{phases.TRACE_VAR: repr(time.time())})


def read_phases(output: str) -> Phases:
    found: Phases = {}
    for line in output.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == phases.PREFIX:
            found.setdefault(parts[2], float(parts[1]))
    return found


def start_to_health(spec: ServerSpec, env: dict[str, str], log_dir: Path) -> Sample:
    """Seconds to the first 200 from /health; the phases hold, beside the
    file's own, "first answer": the end of a short chat asked right then
    (what a start costs a client, whatever a server leaves to its first
    request)."""
    with launch(spec, 1, traced(env), log_dir, POLL_S) as server, httpx.Client(timeout=WAIT_S) as client:
        asked = time.perf_counter()
        answer = client.post(f"{server.url}/v1/chat/completions", json=FIRST_CHAT)
        answered = server.start_s + time.perf_counter() - asked
        if answer.status_code != 200:
            raise Unavailable(f"the first chat request got {answer.status_code}: {answer.text[:300]}")
        output = server.log_path.read_text(errors="replace")
    return server.start_s, {**read_phases(output), FIRST_ANSWER: answered}


def oneshot(argv: list[str], env: dict[str, str]) -> Sample:
    shot = run_oneshot(argv, traced(env))
    return shot.wall, read_phases(shot.stderr)


def measure(programs: Programs, runs: int) -> dict[str, list[Sample]]:
    # The command lines are compare.py's (bench/programs.py), so the two agree.
    specs, argvs = server_specs(programs), oneshot_argvs(programs)
    results: dict[str, list[Sample]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, LLAMABIN_HOME=home)
        logs = Path(home)
        runners: dict[str, Callable[[], Sample]] = {
            "file --server": lambda: start_to_health(specs["llamabin"], env, logs),
            "llama-server": lambda: start_to_health(specs["llama-server"], env, logs),
            "file --cli": lambda: oneshot(argvs["llamabin"], env),
            "llama-completion": lambda: oneshot(argvs["llama-completion"], env),
        }
        for name, run in runners.items():
            log(f"warm-up: {name}")
            _measured(name, run)
        for i in range(runs):
            order = list(runners) if i % 2 == 0 else list(reversed(runners))
            for name in order:
                results[name].append(_measured(name, runners[name]))
            log(f"run {i + 1}/{runs}")
    return results


def _measured(name: str, run: Callable[[], Sample]) -> Sample:
    try:
        return run()
    except Unavailable as exc:
        fail(f"{name}: {exc}")


def median_of(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})" if values else "-"


def phase_rows(samples: list[Sample]) -> list[tuple[str, list[float]]]:
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


def spans(samples: list[Sample]) -> list[tuple[str, list[float]]]:
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


def _first(samples: list[Sample]) -> list[float]:
    return [p[FIRST_ANSWER] for _, p in samples if FIRST_ANSWER in p]


def report(results: dict[str, list[Sample]], ref_description: str, runs: int, threads: int, ctx: int) -> str:
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
    exe, gguf = checked_programs(opts.exe, opts.gguf)
    for name, value in (("--runs", opts.runs), ("--threads", opts.threads), ("--ctx", opts.ctx)):
        if value < 1:
            fail(f"{name} must be at least 1, not {value}")
    ref = reference_tools(exe, gguf, opts.llama_bin)
    programs = Programs(exe, gguf, ref.bin_dir, opts.threads, opts.ctx)
    results = measure(programs, opts.runs)
    publish(report(results, ref.description, opts.runs, opts.threads, opts.ctx), opts.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
