"""llamabin against llama.cpp's own programs, on the same GGUF, threads and context.

    python bench/compare.py --exe dist/SmolLM2-135M-Instruct.Q4_1-linux-x86_64 \
        --gguf path/to/SmolLM2-135M-Instruct.Q4_1.gguf [--runs 5] [--out bench/RESULTS.md]

The reference is llama.cpp built from exactly the source the pinned
llama-cpp-python vendors (`scripts/build-llama-cpp.sh native`, or
`--llama-bin DIR`), plus llama-cpp-python's own server and the unpackaged
runtime (`python -m chat`) where they tell something. What is measured:

1. single stream, one slot: prefill and decode tokens/s as each engine times
   them (llama.cpp's `/completion` `timings`, which both servers return, on the
   same prompt), llama-bench's numbers beside them, and one streaming chat
   client (time to first token, tokens/s after it);
2. 1, 4 and 8 concurrent streaming clients against 4 and 8 slots: aggregate
   tokens/s, p50/p95 time to first token, cut streams;
3. spawn to ready (`/health` 200), and wall time and peak RSS of a one-shot
   `-n 16` completion (llamabin `--cli` against `llama-completion`, which is
   llama.cpp's one-shot program: its `llama-cli` is the chat);
4. file size minus GGUF size, and first (fresh LLAMABIN_HOME) against warm
   launch.

Runs alternate between the programs (and the order flips every run) so the
drift of a shared machine hits all of them alike; tables give the median with
the min-max spread and the ratio llamabin/reference. The markdown goes to
stdout, and is appended to `--out` if given; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

import httpx

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build-llama-cpp.sh"
TOOLS = ("llama-server", "llama-completion", "llama-bench")

WAIT_S = 120.0  # any single wait: a server's start, a request, a one-shot
BUILD_WAIT_S = 3 * 3600.0  # a cold llama.cpp build takes ~25 min on two cores
SEED = 42
ONESHOT_PROMPT = "four score and seven"
ONESHOT_TOKENS = 16
MB = 1_000_000  # the limits are in MB; sizes are printed in them too

# Story prompts make SmolLM2 write long answers, so streams usually run to
# max_tokens and every server does the same amount of work.
DRAGONS = ("Ember", "Quill", "Saffron", "Tamsin", "Orrin", "Vesper", "Bramble", "Ysolde", "Corvin", "Maren")

# A raw continuation for the prefill measurement; a run number goes in front
# so no server can answer it from a prompt cache.
PREFILL_SENTENCE = (
    "The old lighthouse keeper counted the ships that passed the rocky point each evening, "
    "writing their names and flags in a leather book that smelled of salt and tar. "
)


class Unavailable(Exception):
    """A program that could not be run or measured; its table rows say why."""


# -- configuration -----------------------------------------------------------


@dataclass(frozen=True)
class Config:
    exe: Path
    gguf: Path
    bin_dir: Path
    threads: int
    ctx: int
    runs: int
    tokens: int
    prefill_chars: int
    loads: tuple[tuple[int, tuple[int, ...]], ...]  # (slots, client counts served by them)
    smoke: bool
    out: Path | None
    readme_table: str | None
    server_args: tuple[str, ...]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--exe", type=Path, required=True, help="a built llamabin file")
    p.add_argument("--gguf", type=Path, required=True, help="the same model as a plain GGUF")
    p.add_argument(
        "--llama-bin",
        type=Path,
        help="llama.cpp build folder (or its bin/); default: scripts/build-llama-cpp.sh native",
    )
    p.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for every program (default: all cores)"
    )
    p.add_argument(
        "--ctx", type=int, default=4096, help="context size, shared by all slots as llama-server does (default 4096)"
    )
    p.add_argument("--runs", type=int, help="repetitions, alternated between programs (default 5; 1 with --smoke)")
    p.add_argument("--tokens", type=int, help="tokens generated per request (default 128; 16 with --smoke)")
    p.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one run, 4 slots only: a check that everything works"
    )
    p.add_argument("--out", type=Path, help="append the markdown section to this file (e.g. bench/RESULTS.md)")
    p.add_argument(
        "--readme-table",
        metavar="FILE",
        help="write a short summary table to FILE, a new file or one this script wrote ('-' for stdout)",
    )
    p.add_argument("--server-args", default="", help="extra llama-server flags, e.g. '-kvu' (listed in the report)")
    return p.parse_args(argv)


def make_config(ns: argparse.Namespace) -> Config:
    """Checks every input up front, so a typo fails in a second, not after a build."""
    exe, gguf = ns.exe.resolve(), ns.gguf.resolve()
    if not exe.is_file() or not os.access(exe, os.X_OK):
        fail(f"--exe {ns.exe}: no such executable file")
    if not gguf.is_file():
        fail(f"--gguf {ns.gguf}: no such file")
    for name, value in (("--threads", ns.threads), ("--ctx", ns.ctx), ("--runs", ns.runs), ("--tokens", ns.tokens)):
        if value is not None and value < 1:
            fail(f"{name} must be at least 1, not {value}")
    for name, path in (("--out", ns.out), ("--readme-table", Path(ns.readme_table or "-"))):
        if path is not None and str(path) != "-" and not path.resolve().parent.is_dir():
            fail(f"{name} {path}: its folder does not exist")
    table = Path(ns.readme_table) if ns.readme_table not in (None, "-") else None
    if table is not None and table.exists() and not table.read_text(errors="replace").startswith(TABLE_HEADER):
        # Checked before minutes of measuring, and the file is kept: the
        # name invites `--readme-table README.md`, which would replace it.
        fail(
            f"--readme-table {table}: the file exists and is not a table this script wrote; "
            "give a new file, or '-' to print the table"
        )
    smoke = bool(ns.smoke)
    loads: tuple[tuple[int, tuple[int, ...]], ...] = ((4, (1, 4)),) if smoke else ((4, (1, 4)), (8, (8,)))
    return Config(
        exe=exe,
        gguf=gguf,
        bin_dir=llama_bin_dir(ns.llama_bin),
        threads=ns.threads,
        ctx=ns.ctx,
        runs=ns.runs or (1 if smoke else 5),
        tokens=ns.tokens or (16 if smoke else 128),
        # SmolLM2 makes ~0.21 tokens a character of this text: about 100 tokens
        # for a smoke run, ~520 otherwise (llama-bench runs pp512); the report
        # gives the real count.
        prefill_chars=500 if smoke else 2480,
        loads=loads,
        smoke=smoke,
        out=ns.out,
        readme_table=ns.readme_table,
        server_args=tuple(ns.server_args.split()),
    )


def fail(message: str) -> NoReturn:
    """One line on stderr and exit 1: input errors need no traceback."""
    raise SystemExit(f"compare.py: {message}")


def llama_bin_dir(given: Path | None) -> Path:
    if given is None:
        given = build_llama_cpp()
    for candidate in (given / "bin", given):
        if all((candidate / t).is_file() for t in TOOLS):
            return candidate.resolve()
    fail(f"{given}: no {', '.join(TOOLS)} in it or in its bin/")


def build_llama_cpp() -> Path:
    """The build script prints its folder (at once when the build is done);
    its own progress goes to our stderr."""
    if not BUILD_SCRIPT.is_file():
        fail(f"{BUILD_SCRIPT} is missing")
    log("getting llama.cpp's tools (scripts/build-llama-cpp.sh native; ~25 min the first time)")
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "native"], stdout=subprocess.PIPE, text=True, timeout=BUILD_WAIT_S, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        fail(f"scripts/build-llama-cpp.sh native took more than {BUILD_WAIT_S:.0f} s")
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        fail(f"scripts/build-llama-cpp.sh native failed (exit {result.returncode}); see its output above")
    return Path(lines[-1])


def log(message: str) -> None:
    print(f"[compare] {message}", file=sys.stderr, flush=True)


# -- numbers -----------------------------------------------------------------


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


# -- processes ---------------------------------------------------------------


def free_port() -> int:
    # The OS picks an unused port; the tiny window before the server binds
    # it is acceptable on a benchmark machine.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def session_pids(sid: int) -> list[int]:
    """Every live process of a session: with start_new_session the session id
    is the launched pid, and it survives re-parenting, so this finds the
    whole tree (PyInstaller's bootloader and the child it forks)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp session ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def peak_rss_kib(pids: Sequence[int]) -> int | None:
    """The largest VmHWM (peak RSS) among the processes: the biggest process
    in the tree, as for the one-shots."""
    best = None
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    kib = int(line.split()[1])
                    best = kib if best is None else max(best, kib)
        except (OSError, ValueError):
            continue
    return best


def kill_session(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to the whole process group, SIGKILL whatever is left after the
    grace time, and wait until nothing of it runs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is not None and not session_pids(proc.pid):
            return
        if time.monotonic() > deadline:
            log(f"warning: process group {proc.pid} still has {session_pids(proc.pid)} after SIGKILL")
            return
        time.sleep(0.05)


def tail(path: Path, n: int = 400) -> str:
    """The last meaningful line of a log, for a one-line 'why'."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1][:n] if lines else "no output"


# -- servers -----------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    name: str
    argv: Callable[[int, int], list[str]]  # (port, slots) -> command line
    ready_path: str  # the URL that answers 200 once the model is loaded
    native: bool  # has llama.cpp's /completion with `timings`


def server_specs(cfg: Config) -> dict[str, ServerSpec]:
    common = ["--host", "127.0.0.1"]

    def llamabin(port: int, slots: int) -> list[str]:
        return [
            str(cfg.exe),
            "--server",
            "--nobrowser",
            *common,
            "--port",
            str(port),
            "-t",
            str(cfg.threads),
            "-c",
            str(cfg.ctx),
            "-np",
            str(slots),
        ]

    def unpackaged(port: int, slots: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "chat",
            "-m",
            str(cfg.gguf),
            "--server",
            "--nobrowser",
            *common,
            "--port",
            str(port),
            "-t",
            str(cfg.threads),
            "-c",
            str(cfg.ctx),
            "-np",
            str(slots),
        ]

    def llama_server(port: int, slots: int) -> list[str]:
        return [
            str(cfg.bin_dir / "llama-server"),
            "-m",
            str(cfg.gguf),
            *common,
            "--port",
            str(port),
            "-t",
            str(cfg.threads),
            "-c",
            str(cfg.ctx),
            "-np",
            str(slots),
            *cfg.server_args,
        ]

    def llama_cpp_python(port: int, slots: int) -> list[str]:
        # No slots: it serves one request at a time. Both thread counts are
        # set, as the others use -t threads for prompt and generation alike.
        # By default a new request cuts the stream in progress short (it ends
        # with [DONE] and no finish_reason); queueing is what the others do.
        return [
            sys.executable,
            str(ROOT / "bench" / "llama_cpp_server.py"),
            "--model",
            str(cfg.gguf),
            *common,
            "--port",
            str(port),
            "--n_threads",
            str(cfg.threads),
            "--n_threads_batch",
            str(cfg.threads),
            "--n_ctx",
            str(cfg.ctx),
            "--interrupt_requests",
            "false",
        ]

    return {
        "llamabin": ServerSpec("llamabin", llamabin, "/health", native=True),
        "llama-server": ServerSpec("llama-server", llama_server, "/health", native=True),
        "python -m chat": ServerSpec("python -m chat", unpackaged, "/health", native=True),
        # It has no /health; /v1/models answers once the model is loaded.
        "llama-cpp-python": ServerSpec("llama-cpp-python", llama_cpp_python, "/v1/models", native=False),
    }


@dataclass
class Running:
    spec: ServerSpec
    proc: subprocess.Popen[bytes]
    url: str
    start_s: float
    log_path: Path

    def peak_rss_kib(self) -> int | None:
        return peak_rss_kib(session_pids(self.proc.pid))


@contextlib.contextmanager
def launch(spec: ServerSpec, slots: int, env: dict[str, str], log_dir: Path) -> Iterator[Running]:
    """A started, ready server; it and everything it forked are gone on exit,
    whatever happened inside."""
    port = free_port()
    log_path = log_dir / f"{spec.name.replace(' ', '_')}-{port}.log"
    with open(log_path, "wb") as logf:
        start = time.perf_counter()
        # Its own session: one killpg ends the tree, and a Ctrl-C in our
        # terminal does not reach it before our cleanup does.
        try:
            proc = subprocess.Popen(
                spec.argv(port, slots),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
        except OSError as exc:
            raise Unavailable(f"cannot start: {exc}") from exc
    try:
        url = f"http://127.0.0.1:{port}"
        start_s = wait_ready(proc, url + spec.ready_path, start, log_path)
        yield Running(spec, proc, url, start_s, log_path)
    finally:
        kill_session(proc)


def wait_ready(proc: subprocess.Popen[bytes], url: str, start: float, log_path: Path) -> float:
    """Seconds from spawn to the first 200 (llama-server answers 503 while it loads)."""
    with httpx.Client(timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                raise Unavailable(f"exited with {proc.returncode} before it was ready: {tail(log_path)}")
            try:
                if client.get(url).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            if time.perf_counter() - start > WAIT_S:
                raise Unavailable(f"not ready after {WAIT_S:.0f} s: {tail(log_path)}")
            time.sleep(0.01)


# -- clients -----------------------------------------------------------------


@dataclass
class Stream:
    """One streaming chat request, timed from the moment it was sent."""

    status: int = 0
    ttft: float | None = None  # to the first content delta
    last: float | None = None
    tokens: int = 0
    finish: str | None = None
    done: bool = False  # saw `data: [DONE]`
    error: str | None = None

    def cut_reason(self, asked: int) -> str | None:
        """Why this stream does not count as a whole answer, or None."""
        if self.error:
            return self.error
        if self.status != 200:
            return f"HTTP {self.status}"
        if not self.done:
            return "ended without [DONE]"
        if self.finish not in ("stop", "length"):
            return f"finish_reason {self.finish}"
        if self.finish == "length" and self.tokens < asked:
            return f"length after {self.tokens} of {asked} tokens"
        return None

    def tps_after_first(self) -> float | None:
        if self.ttft is None or self.last is None or self.tokens < 2 or self.last <= self.ttft:
            return None
        return (self.tokens - 1) / (self.last - self.ttft)


def chat_body(prompt: str, max_tokens: int) -> dict[str, object]:
    return {
        "model": "bench",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": SEED,
        "stream": True,
        # llamabin and llama-server then end with a usage chunk, the exact
        # token count; llama-cpp-python ignores it, and its deltas are counted.
        "stream_options": {"include_usage": True},
    }


def stream_chat(client: httpx.Client, url: str, prompt: str, max_tokens: int) -> Stream:
    s = Stream()
    deltas = 0
    usage_tokens = None
    start = time.perf_counter()
    try:
        with client.stream("POST", url + "/v1/chat/completions", json=chat_body(prompt, max_tokens)) as r:
            s.status = r.status_code
            if r.status_code != 200:
                r.read()
                return s
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    s.done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    s.error = f"error event: {str(event['error'])[:100]}"
                    break
                if event.get("usage"):
                    usage_tokens = event["usage"].get("completion_tokens")
                for choice in event.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        now = time.perf_counter() - start
                        s.ttft = now if s.ttft is None else s.ttft
                        s.last = now
                        deltas += 1
                    if choice.get("finish_reason"):
                        s.finish = choice["finish_reason"]
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        s.error = f"{type(exc).__name__}: {exc}"[:120]
    s.tokens = usage_tokens if isinstance(usage_tokens, int) else deltas
    return s


def story(n: int) -> str:
    # Each request its own prompt, so no prompt cache shortens any of them.
    return f"Write a long story about a dragon named {DRAGONS[n % len(DRAGONS)]} (tale number {n})."


@dataclass
class Burst:
    wall: float
    streams: list[Stream]

    def aggregate_tps(self) -> float:
        return sum(s.tokens for s in self.streams) / self.wall


def burst(url: str, clients: int, max_tokens: int, first_prompt: int) -> Burst:
    """`clients` streams sent at once; the wall time runs from their release
    to the end of the last one."""
    barrier = threading.Barrier(clients + 1)
    limits = httpx.Limits(max_connections=clients)
    timeout = httpx.Timeout(WAIT_S)

    def one(i: int) -> Stream:
        with httpx.Client(timeout=timeout, limits=limits) as client:
            barrier.wait()
            return stream_chat(client, url, story(first_prompt + i), max_tokens)

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(one, i) for i in range(clients)]
        barrier.wait(WAIT_S)
        start = time.perf_counter()
        streams = [f.result(timeout=WAIT_S * 2) for f in futures]
    return Burst(time.perf_counter() - start, streams)


def native_timings(url: str, prompt: str, n_predict: int) -> dict[str, float]:
    """llama.cpp's /completion: the engine's own prefill and decode timings,
    the same fields in llamabin and llama-server."""
    body = {"prompt": prompt, "n_predict": n_predict, "temperature": 0, "seed": SEED, "cache_prompt": False}
    r = httpx.post(url + "/completion", json=body, timeout=WAIT_S)
    if r.status_code != 200:
        raise Unavailable(f"/completion answered HTTP {r.status_code}: {r.text[:100]}")
    timings: dict[str, float] = r.json()["timings"]
    return timings


def prefill_prompt(run: int, chars: int) -> str:
    text = f"Logbook number {run}. "
    while len(text) < chars:
        text += PREFILL_SENTENCE
    return text


# -- one-shots ---------------------------------------------------------------


@dataclass
class OneShot:
    wall: float
    rss_kib: int
    stdout: str


def run_oneshot(argv: list[str], env: dict[str, str]) -> OneShot:
    """Wall time and peak RSS of one program run to its end.

    Peak RSS is the ru_maxrss that wait4 returns. On Linux that is not only
    the direct child's: the kernel fills it from the zombie's RUSAGE_BOTH,
    the max of its own peak and of every descendant it waited for. A
    PyInstaller onefile bootloader waits for the child it forks, so this is
    the peak of the biggest process in the tree, exactly, with no sampling
    (polling /proc would miss short peaks) and no /usr/bin/time (not on every
    machine). Checked: a parent whose child touches 300 MiB reports ~310 MiB.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=ROOT, start_new_session=True
            )
        except OSError as exc:
            raise Unavailable(f"cannot start: {exc}") from exc
        # wait4 has no timeout: a timer kills the group instead of hanging.
        timer = threading.Timer(WAIT_S, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        if proc.returncode != 0:
            lines = err.read().decode(errors="replace").strip().splitlines() or ["no output"]
            raise Unavailable(f"{Path(argv[0]).name} exited with {proc.returncode}: {lines[-1][:200]}")
    return OneShot(wall, usage.ru_maxrss, stdout)


def oneshot_argvs(cfg: Config) -> dict[str, list[str]]:
    flags = ["-p", ONESHOT_PROMPT, "-n", str(ONESHOT_TOKENS), "--temp", "0", "-t", str(cfg.threads), "-c", str(cfg.ctx)]
    return {
        "llamabin": [str(cfg.exe), "--cli", *flags, "--log-disable"],
        "python -m chat": [sys.executable, "-m", "chat", "-m", str(cfg.gguf), "--cli", *flags, "--log-disable"],
        # -no-cnv: with a chat template in the GGUF it would otherwise start
        # an interactive conversation; stdin is /dev/null as well.
        "llama-completion": [str(cfg.bin_dir / "llama-completion"), "-m", str(cfg.gguf), *flags, "-no-cnv"],
    }


# -- the measurements ------------------------------------------------------------


def alternate(names: Sequence[str], run: int) -> list[str]:
    """A B C, then C B A: each program goes first as often as last, so drift
    and warm caches favour none of them."""
    return list(names) if run % 2 == 0 else list(reversed(names))


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


def measure_oneshots(cfg: Config, env: dict[str, str], tmp: Path) -> OneShotStats:
    """First launch (a fresh LLAMABIN_HOME, so the one-time unpack of the
    runtime and sha256 of the weights) and warm launch of the file, against
    llama-completion and the unpackaged runtime."""
    stats = OneShotStats()
    argvs = oneshot_argvs(cfg)
    for run in range(cfg.runs):
        home = tmp / f"oneshot-home-{run}"
        run_env = dict(env, LLAMABIN_HOME=str(home))
        for group in alternate(("llamabin", "llama-completion", "python -m chat"), run):
            # "first" must come right before "warm" in the same home.
            steps = (
                [("llamabin first", "llamabin"), ("llamabin", "llamabin")] if group == "llamabin" else [(group, group)]
            )
            for label, program in steps:
                if label in stats.errors:
                    continue
                log(f"one-shot run {run + 1}/{cfg.runs}: {label}")
                try:
                    stats.add(label, run_oneshot(argvs[program], run_env))
                except Unavailable as exc:
                    stats.errors[label] = str(exc)
    return stats


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


def measure_single(cfg: Config, specs: dict[str, ServerSpec], env: dict[str, str], tmp: Path) -> SingleStats:
    """One slot, one request at a time: the engine's own timings and one
    streaming client. Every launch also times spawn to ready."""
    stats = SingleStats()
    names = ["llamabin", "llama-server", "python -m chat", "llama-cpp-python"]
    for run in range(cfg.runs):
        for name in alternate(names, run):
            if name in stats.errors:
                continue
            log(f"single stream run {run + 1}/{cfg.runs}: {name}")
            try:
                with launch(specs[name], 1, env, tmp) as srv:
                    stats.start.setdefault(name, Samples()).add(srv.start_s)
                    single_requests(cfg, srv, run, stats)
            except (Unavailable, httpx.HTTPError, KeyError, ValueError) as exc:
                stats.errors[name] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, Unavailable) else str(exc)
    return stats


def single_requests(cfg: Config, srv: Running, run: int, stats: SingleStats) -> None:
    name = srv.spec.name
    with httpx.Client(timeout=WAIT_S) as client:
        # A few tokens first: the first request of a fresh process pays for
        # allocations the others do not, and that is start-up, not speed.
        warm = stream_chat(client, srv.url, "Say hello.", 4)
        if warm.cut_reason(4):
            raise Unavailable(f"warm-up request failed: {warm.cut_reason(4)}")
        if srv.spec.native:
            t = native_timings(srv.url, prefill_prompt(run, cfg.prefill_chars), cfg.tokens)
            stats.prefill.setdefault(name, Samples()).add(float(t["prompt_per_second"]))
            stats.decode.setdefault(name, Samples()).add(float(t["predicted_per_second"]))
            stats.prompt_n[name] = int(t["prompt_n"])
            stats.predicted_n[name] = int(t["predicted_n"])
        s = stream_chat(client, srv.url, story(1000 + run), cfg.tokens)
    why = s.cut_reason(cfg.tokens)
    if why:
        raise Unavailable(f"the streaming request was cut: {why}")
    if s.ttft is not None:
        stats.ttft.setdefault(name, Samples()).add(s.ttft)
    tps = s.tps_after_first()
    if tps is not None:
        stats.stream_tps.setdefault(name, Samples()).add(tps)


def run_llama_bench(cfg: Config, env: dict[str, str], stats: SingleStats) -> None:
    """llama-bench's pp/tg figures: llama.cpp with no server at all."""
    pp = 512 if not cfg.smoke else 128
    argv = [
        str(cfg.bin_dir / "llama-bench"),
        "-m",
        str(cfg.gguf),
        "-p",
        str(pp),
        "-n",
        str(cfg.tokens),
        "-t",
        str(cfg.threads),
        "-r",
        str(cfg.runs),
        "-o",
        "json",
    ]
    stats.bench_spec = f"pp{pp}/tg{cfg.tokens}, -r {cfg.runs}"
    log(f"llama-bench {stats.bench_spec}")
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_S * 5, env=env, cwd=ROOT)
        if r.returncode != 0:
            raise Unavailable(f"exited with {r.returncode}: {(r.stderr.strip().splitlines() or ['?'])[-1][:200]}")
        for test in json.loads(r.stdout):
            key = "prefill" if test.get("n_gen", 0) == 0 else "decode"
            stats.bench[key] = float(test["avg_ts"])
    except (Unavailable, subprocess.TimeoutExpired, json.JSONDecodeError, KeyError, ValueError) as exc:
        stats.errors["llama-bench"] = str(exc)[:200]


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


def measure_load(cfg: Config, specs: dict[str, ServerSpec], env: dict[str, str], tmp: Path) -> LoadStats:
    """Concurrent streaming clients against the same slot count on both
    engines, and against llama-cpp-python's server (one request at a time)."""
    stats = LoadStats()
    names = ["llamabin", "llama-server", "llama-cpp-python"]
    for slots, client_counts in cfg.loads:
        for run in range(cfg.runs):
            for name in alternate(names, run):
                if name in stats.errors:
                    continue
                log(f"{slots} slots run {run + 1}/{cfg.runs}: {name}, clients {client_counts}")
                try:
                    with launch(specs[name], slots, env, tmp) as srv:
                        prompt_no = 0
                        for clients in client_counts:
                            b = burst(srv.url, clients, cfg.tokens, prompt_no)
                            prompt_no += clients
                            add_burst(stats, (name, slots, clients), b, cfg.tokens)
                            rss = srv.peak_rss_kib()
                            if rss is not None:
                                stats.rows[(name, slots, clients)].rss_mib.add(rss / 1024)
                except (Unavailable, httpx.HTTPError) as exc:
                    stats.errors[name] = str(exc)
    return stats


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


# -- the report ----------------------------------------------------------------


def machine() -> str:
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0]
    # A 1-minute load average well above 0 means something else is running:
    # the numbers are then worth less, whatever the alternation evens out.
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, load average {load:.2f} at the start"


def versions(cfg: Config, env: dict[str, str]) -> str:
    def first_line(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_S, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unknown ({exc})"
        lines = [ln.strip() for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        return lines[0] if lines else "unknown"

    try:
        lcp = version("llama-cpp-python")
    except PackageNotFoundError:
        lcp = "not installed"
    llamabin = first_line([str(cfg.exe), "--version"])
    llama_cpp = first_line([str(cfg.bin_dir / "llama-server"), "--version"])
    return f"{llamabin} (the file), llama-cpp-python {lcp}, llama.cpp {llama_cpp} (llama-server --version)"


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
            "start to /health", ratio(med(single.start, "llamabin"), med(single.start, "llama-server")), 2.0, False, "x"
        )
    )
    found.append(
        Target(
            "`--cli -n 16` wall time vs llama-completion",
            ratio(med(oneshot.wall, "llamabin"), med(oneshot.wall, "llama-completion")),
            1.5,
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


def with_ratio(
    samples: dict[str, Samples], name: str, ref: str, digits: int = 1, scale: float = 1.0
) -> tuple[str, str]:
    s = samples.get(name)
    if s is None:
        return "n/a", "n/a"
    r = samples.get(ref)
    return s.fmt(digits, scale), fmt_ratio(ratio(s.median, r.median if r else None))


def single_tables(cfg: Config, st: SingleStats) -> list[str]:
    prompt_n = max(st.prompt_n.values(), default=0)
    predicted_n = max(st.predicted_n.values(), default=0)
    lines = [
        "#### 1. Single stream (1 slot)",
        "",
        f"Engine: llama.cpp's `/completion` on the same raw prompt (~{prompt_n} tokens, not cached) and "
        f"{cfg.tokens} generated tokens, as each engine times them itself (`timings`).",
        "",
        "| engine | prefill t/s | vs llama-server | decode t/s | vs llama-server | tokens (prompt/generated) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("llamabin", "llama-server", "python -m chat"):
        if name in st.errors:
            lines.append(f"| {name} | not available: {st.errors[name]} | | | | |")
            continue
        pf, pf_r = with_ratio(st.prefill, name, "llama-server")
        dc, dc_r = with_ratio(st.decode, name, "llama-server")
        lines.append(
            f"| {name} | {pf} | {pf_r} | {dc} | {dc_r} | {st.prompt_n.get(name, 0)}/{st.predicted_n.get(name, 0)} |"
        )
    if "llama-bench" in st.errors:
        lines.append(f"| llama-bench | not available: {st.errors['llama-bench']} | | | | |")
    else:
        pp, tg = st.bench.get("prefill"), st.bench.get("decode")
        ref_pf, ref_dc = st.prefill.get("llama-server"), st.decode.get("llama-server")
        lines.append(
            f"| llama-bench ({st.bench_spec}, no server) | {fmt_num(pp)} | "
            f"{fmt_ratio(ratio(pp, ref_pf.median if ref_pf else None))} | {fmt_num(tg)} | "
            f"{fmt_ratio(ratio(tg, ref_dc.median if ref_dc else None))} | |"
        )
    lines += [
        "",
        f"Server: one streaming chat client, {cfg.tokens} tokens asked (generated: {predicted_n} on the engine row above).",
        "",
        "| server | time to first token ms | vs llama-server | t/s after first token | vs llama-server |",
        "|---|---|---|---|---|",
    ]
    for name in ("llamabin", "llama-server", "python -m chat", "llama-cpp-python"):
        if name in st.errors:
            lines.append(f"| {name} | not available: {st.errors[name]} | | | |")
            continue
        tt, tt_r = with_ratio(st.ttft, name, "llama-server", 0, 1000)
        tps, tps_r = with_ratio(st.stream_tps, name, "llama-server")
        lines.append(f"| {name} | {tt} | {tt_r} | {tps} | {tps_r} |")
    return lines


def load_table(cfg: Config, ls: LoadStats) -> list[str]:
    lines = [
        "#### 2. Concurrent streaming clients",
        "",
        f"Every client streams a chat answer of at most {cfg.tokens} tokens (temperature 0, seed {SEED}), "
        "all released at once; aggregate = completion tokens / wall time. Cut: non-200, an error, "
        "no `[DONE]`, or `length` with fewer tokens than asked. Early: the model ended the answer itself. "
        "llama-cpp-python's server has no slots: it answers one request at a time (run with "
        "`--interrupt_requests false`, else each new request cuts the stream in progress). Peak RSS: the largest "
        "VmHWM in the server's process tree.",
        "",
        "| server | slots | clients | aggregate t/s | vs llama-server | TTFT p50 ms | TTFT p95 ms | streams | cut | early | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for slots, client_counts in cfg.loads:
        for clients in client_counts:
            ref = ls.rows.get(("llama-server", slots, clients))
            for name in ("llamabin", "llama-server", "llama-cpp-python"):
                slot_txt = str(slots) if name != "llama-cpp-python" else "1 (serial)"
                if name in ls.errors:
                    lines.append(
                        f"| {name} | {slot_txt} | {clients} | not available: {ls.errors[name]} | | | | | | | |"
                    )
                    continue
                row = ls.rows.get((name, slots, clients))
                if row is None:
                    lines.append(f"| {name} | {slot_txt} | {clients} | n/a | | | | | | | |")
                    continue
                p50, p95 = percentile(row.ttfts, 50), percentile(row.ttfts, 95)
                lines.append(
                    f"| {name} | {slot_txt} | {clients} | {row.agg.fmt()} | "
                    f"{fmt_ratio(ratio(row.agg.median, ref.agg.median if ref else None))} | "
                    f"{fmt_num(p50 * 1000 if p50 is not None else None, 0)} | "
                    f"{fmt_num(p95 * 1000 if p95 is not None else None, 0)} | "
                    f"{row.streams} | {row.cut} | {row.early} | {row.rss_mib.fmt(0)} |"
                )
    reasons = sorted({f"{name}: {why}" for (name, _, _), row in ls.rows.items() for why in row.cut_reasons})
    if reasons:
        lines += ["", "Cut streams: " + "; ".join(reasons[:10]) + "."]
    return lines


def start_and_oneshot_tables(single: SingleStats, os_: OneShotStats) -> list[str]:
    lines = [
        "#### 3. Start and one-shot",
        "",
        "Start: spawn to the first 200 from `/health` (`/v1/models` for llama-cpp-python), 1 slot, "
        "LLAMABIN_HOME already verified and its runtime unpacked.",
        "",
        "| server | start to ready s | vs llama-server |",
        "|---|---|---|",
    ]
    for name in ("llamabin", "llama-server", "python -m chat", "llama-cpp-python"):
        if name in single.errors and name not in single.start:
            lines.append(f"| {name} | not available: {single.errors[name]} | |")
            continue
        s, r = with_ratio(single.start, name, "llama-server", 2)
        lines.append(f"| {name} | {s} | {r} |")
    lines += [
        "",
        f"One-shot: `-p '{ONESHOT_PROMPT}' -n {ONESHOT_TOKENS} --temp 0`, whole-process wall time and peak RSS "
        "(wait4's ru_maxrss: the biggest process of the tree, the bootloader's child included). llama.cpp's "
        "one-shot program is `llama-completion -no-cnv` (its `llama-cli` is an interactive chat).",
        "",
        "| program | wall s | vs llama-completion | peak RSS MiB | minus llama-completion's MiB |",
        "|---|---|---|---|---|",
    ]
    ref_rss = os_.rss_mib.get("llama-completion")
    for name in ("llamabin", "llamabin first", "llama-completion", "python -m chat"):
        label = {"llamabin": "llamabin `--cli` (warm)", "llamabin first": "llamabin `--cli` (first launch)"}.get(
            name, name
        )
        if name in os_.errors:
            lines.append(f"| {label} | not available: {os_.errors[name]} | | | |")
            continue
        w, w_r = with_ratio(os_.wall, name, "llama-completion", 2)
        rss = os_.rss_mib.get(name)
        diff = (
            None
            if rss is None or ref_rss is None or rss.median is None or ref_rss.median is None
            else rss.median - ref_rss.median
        )
        lines.append(f"| {label} | {w} | {w_r} | {rss.fmt(0) if rss else 'n/a'} | {fmt_num(diff, 0)} |")
    return lines


def size_table(cfg: Config, os_: OneShotStats) -> list[str]:
    exe, gguf = cfg.exe.stat().st_size, cfg.gguf.stat().st_size
    first, warm = os_.wall.get("llamabin first"), os_.wall.get("llamabin")
    return [
        "#### 4. Size and first launch",
        "",
        "| item | value |",
        "|---|---|",
        f"| file size | {exe / MB:.1f} MB |",
        f"| GGUF size | {gguf / MB:.1f} MB |",
        f"| file size minus GGUF size | {(exe - gguf) / MB:.1f} MB |",
        f"| first launch `--cli -n {ONESHOT_TOKENS}` (fresh LLAMABIN_HOME) s | {first.fmt(2) if first else 'n/a'} |",
        f"| warm launch `--cli -n {ONESHOT_TOKENS}` s | {warm.fmt(2) if warm else 'n/a'} |",
        f"| first / warm | {fmt_ratio(ratio(first.median if first else None, warm.median if warm else None))} |",
    ]


def report(
    cfg: Config,
    started: datetime,
    machine_txt: str,
    versions_txt: str,
    single: SingleStats,
    load: LoadStats,
    oneshot: OneShotStats,
    elapsed: float,
) -> str:
    found = targets(cfg, single, load, oneshot)
    extra = f" llama-server extra flags: `{' '.join(cfg.server_args)}`." if cfg.server_args else ""
    lines = [
        f"### llamabin vs llama.cpp ({started:%Y-%m-%d %H:%M}{', smoke run' if cfg.smoke else ''})",
        "",
        f"Machine: {machine_txt}. Versions: {versions_txt}; llama.cpp built by "
        f"`scripts/build-llama-cpp.sh native` from the source llama-cpp-python vendors.",
        "",
        f"Model: {cfg.gguf.name}; file: {cfg.exe.name}. Threads {cfg.threads}, context {cfg.ctx} (shared by the slots), "
        f"{cfg.runs} run{'s' if cfg.runs != 1 else ''} alternated (order flipped every run), {cfg.tokens} tokens "
        f"per request; medians with (min-max); ratios are llamabin (or the row) / reference.{extra} "
        f"Took {elapsed:.0f} s.",
        "",
        "#### Targets",
        "",
        "| target | llamabin | limit | result |",
        "|---|---|---|---|",
        *[t.row() for t in found],
        "",
        *single_tables(cfg, single),
        "",
        *load_table(cfg, load),
        "",
        *start_and_oneshot_tables(single, oneshot),
        "",
        *size_table(cfg, oneshot),
        "",
    ]
    return "\n".join(lines)


TABLE_HEADER = "| measure | llamabin vs llama.cpp | target | result |"


def readme_table(cfg: Config, single: SingleStats, load: LoadStats, oneshot: OneShotStats) -> str:
    """A short table for the README: the targets, one line each."""
    rows = [TABLE_HEADER, "|---|---|---|---|"]
    for t in targets(cfg, single, load, oneshot):
        sign = ">=" if t.higher_is_better else "<="
        value = "n/a" if t.value is None else f"{t.value:.{2 if t.unit == 'x' else 1}f}{t.unit}"
        rows.append(f"| {t.what} | {value} | {sign} {t.limit:g}{t.unit} | {t.verdict().split(' ')[0]} |")
    return "\n".join(rows) + "\n"


# -- main ----------------------------------------------------------------------


def terminate_on_sigterm() -> None:
    # SIGTERM becomes an exception, so the `finally` blocks kill the servers.
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = make_config(parse_args(argv))
    terminate_on_sigterm()
    started, t0 = datetime.now(), time.monotonic()
    machine_txt = machine()  # before we load the machine ourselves
    specs = server_specs(cfg)
    with tempfile.TemporaryDirectory(prefix="llamabin-bench-") as tmp_s:
        tmp = Path(tmp_s)
        env = dict(os.environ, LLAMABIN_HOME=str(tmp / "home"))
        versions_txt = versions(cfg, env)
        oneshot = measure_oneshots(cfg, env, tmp)
        # Servers use one home, verified (and the runtime unpacked into it)
        # here, so no launch pays the sha256 or the first unpack.
        with contextlib.suppress(Unavailable):
            run_oneshot([str(cfg.exe), "--cli", "-p", "hi", "-n", "1", "--log-disable"], env)
        single = measure_single(cfg, specs, env, tmp)
        run_llama_bench(cfg, env, single)
        load = measure_load(cfg, specs, env, tmp)
    text = report(cfg, started, machine_txt, versions_txt, single, load, oneshot, time.monotonic() - t0)
    print(text)
    if cfg.out is not None:
        with open(cfg.out, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    if cfg.readme_table:
        table = readme_table(cfg, single, load, oneshot)
        if cfg.readme_table == "-":
            print(table)
        else:
            Path(cfg.readme_table).write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("compare.py: interrupted; every server it started has been stopped")
