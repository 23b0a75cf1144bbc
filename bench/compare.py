"""llamabin against llama.cpp's own programs, on the same GGUF, threads and context.

    python bench/compare.py --exe dist/SmolLM2-135M-Instruct.Q4_1-linux-x86_64 \
        --gguf path/to/SmolLM2-135M-Instruct.Q4_1.gguf [--runs 5] [--out bench/RESULTS.md]

The reference is llama.cpp's own tools, built from exactly the source the
pinned llama-cpp-python vendors, with the file's CPU libraries
(`scripts/build-llama-cpp.sh portable-tools`) and given only the variant the
file picks on this machine, so both run the same kernels whatever the CPU
(bench/reference.py; `--llama-bin DIR` names another build). Beside it:
llama-cpp-python's own server and the unpackaged runtime (`python -m chat`)
where they tell something. What is measured:

1. single stream, one slot: prefill and decode tokens/s as each engine times
   them (llama.cpp's `/completion` `timings`, which both servers return, on the
   same prompt), llama-bench's numbers beside them, and a streaming chat
   client, six requests to each server a run, sent to the servers in turn
   while all of them are up (time to first token, tokens/s after it);
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

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clients import Stream, burst, native_timings, prefill_prompt, story, stream_chat  # noqa: E402
from bench.common import ROOT, WAIT_S, Unavailable, log, machine  # noqa: E402
from bench.config import STREAMS_PER_RUN, Config, make_config, parse_args  # noqa: E402
from bench.processes import Running, ServerSpec, launch, run_oneshot  # noqa: E402
from bench.programs import Programs, llama_bench_argv, oneshot_argvs, server_specs, versions  # noqa: E402
from bench.report import publish  # noqa: E402
from bench.results import LoadStats, OneShotStats, SingleStats, add_burst  # noqa: E402
from bench.stats import Samples  # noqa: E402
from bench.tables import report  # noqa: E402
from bench.targets import readme_table  # noqa: E402


def alternate(names: Sequence[str], run: int) -> list[str]:
    """A B C, then C B A: each program goes first as often as last, so drift
    and warm caches favour none of them."""
    return list(names) if run % 2 == 0 else list(reversed(names))


def measure_oneshots(cfg: Config, env: dict[str, str], tmp: Path) -> OneShotStats:
    """First launch (a fresh LLAMABIN_HOME, so the one-time unpack of the
    runtime and sha256 of the weights) and warm launch of the file, against
    llama-completion and the unpackaged runtime."""
    stats = OneShotStats()
    argvs = oneshot_argvs(Programs.of(cfg))
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


def measure_single(cfg: Config, specs: dict[str, ServerSpec], env: dict[str, str], tmp: Path) -> SingleStats:
    """One slot, one request at a time: the engine's own timings and one
    streaming client. Every launch also times spawn to ready.

    Each run starts every server (in alternated order), and they stay up
    together: the streaming requests then go to each in turn, the order
    flipped every round, so that the samples of all of them come from the
    same few seconds. A shared machine's speed drifts: one program's
    samples spread from 160 to 236 t/s within a run, and with a launch's
    streams in a block of their own, two runs of nearly the same code read
    0.968x and 1.01x (2-core Xeon, 2026-12-07). A server
    waiting for its turn uses no CPU, but holds its model and cache: the
    four need four times one's memory. Each start to ready is timed with the
    servers launched before it up and idle; the order alternates, so each
    program starts first as often as last. A server that fails is stopped
    at once and left out of the run's remaining streams."""
    stats = SingleStats()
    names = ["llamabin", "llama-server", "python -m chat", "llama-cpp-python"]
    for run in range(cfg.runs):
        with contextlib.ExitStack() as up, httpx.Client(timeout=WAIT_S) as client:
            running: list[tuple[Running, contextlib.ExitStack]] = []  # each server and what stops it
            for name in alternate(names, run):
                if name in stats.errors:
                    continue
                log(f"single stream run {run + 1}/{cfg.runs}: {name}")
                with contextlib.ExitStack() as own:
                    try:
                        srv = own.enter_context(launch(specs[name], 1, env, tmp))
                        stats.start.setdefault(name, Samples()).add(srv.start_s)
                        engine_timings(cfg, client, srv, run, stats)
                    except (Unavailable, httpx.HTTPError, KeyError, ValueError) as exc:
                        stats.errors[name] = _why(exc)
                        continue  # stopped here: it must not run beside the others' streams
                    running.append((srv, up.enter_context(own.pop_all())))
            log(f"single stream run {run + 1}/{cfg.runs}: {STREAMS_PER_RUN} streams to each, in turn")
            for k in range(STREAMS_PER_RUN):
                prompt = story(1000 + run * STREAMS_PER_RUN + k)
                for srv, stop in running if k % 2 == 0 else reversed(running):
                    if srv.spec.name in stats.errors:
                        continue
                    try:
                        add_stream(cfg, stream_chat(client, srv.url, prompt, cfg.tokens), srv.spec.name, stats)
                    except (Unavailable, httpx.HTTPError, KeyError, ValueError) as exc:
                        stats.errors[srv.spec.name] = _why(exc)
                        stop.close()  # it may still be generating: not beside the others
    return stats


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, Unavailable) else f"{type(exc).__name__}: {exc}"


def engine_timings(cfg: Config, client: httpx.Client, srv: Running, run: int, stats: SingleStats) -> None:
    """A fresh server's warm-up request, then, where it has llama.cpp's
    `/completion`, the engine's own prefill and decode timings."""
    name = srv.spec.name
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


def add_stream(cfg: Config, s: Stream, name: str, stats: SingleStats) -> None:
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
    argv = llama_bench_argv(cfg, pp)
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


def terminate_on_sigterm() -> None:
    # SIGTERM becomes an exception, so the `finally` blocks kill the servers.
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = make_config(parse_args(__doc__ or "", argv))
    terminate_on_sigterm()
    started, t0 = datetime.now(), time.monotonic()
    machine_txt = machine(load=True)  # before we load the machine ourselves
    specs = server_specs(Programs.of(cfg))
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
    publish(text, cfg.out)
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
