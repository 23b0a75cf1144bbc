"""What llama.cpp's RPC backend costs on loopback: the same file serving
the same greedy completion with its layers local, and with them on two
`--rpc-worker` processes of itself, requests alternated between the two
servers (both up, only one busy at a time).

    .venv/bin/python bench/rpc.py --exe dist/SmolLM2-135M-Instruct.Q4_1-linux-x86_64 --runs 8 --out bench/RESULTS.md

Every process runs the same CPU variant (--variant), so only the transport
differs. Reported: prompt and decode tokens/s of each, from the stream's
own timing, and RPC's ratio to local (median of the alternated pairs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fail, machine  # noqa: E402

PROMPT = "Count with me: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(argv: list[str], env: dict[str, str], ready: str | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if ready is not None:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        if ready not in line:
            proc.kill()
            fail(f"{' '.join(argv)} did not start: {line.strip() or proc.stderr.read()[-500:]}")
    return proc


def _wait_health(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"the server at {url} exited: {proc.stderr.read()[-500:] if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    fail(f"the server at {url} did not answer /health")


def _measure(url: str, tokens: int) -> tuple[float, float]:
    """(prompt tokens/s, decode tokens/s) of one streamed greedy completion:
    the prompt's time is to the first token, decoding's from there to the
    last."""
    body = {
        "prompt": PROMPT,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    stamps: list[float] = []
    usage: dict[str, int] = {}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                stamps.append(time.perf_counter())
    if len(stamps) < 2 or not usage:
        fail(f"{url} streamed {len(stamps)} chunks and no usage")
    decoded = usage["completion_tokens"] - 1
    return usage["prompt_tokens"] / (stamps[0] - start), decoded / (stamps[-1] - stamps[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exe", type=Path, required=True, help="a built llamabin file")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--variant", default="haswell", help="LLAMABIN_CPU_VARIANT for every process")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, help="append the section to this file")
    args = parser.parse_args()
    if not os.access(args.exe, os.X_OK):
        fail(f"{args.exe} is not an executable file")
    env = dict(os.environ, LLAMABIN_CPU_VARIANT=args.variant)
    exe, t = str(args.exe.resolve()), str(args.threads)
    procs: list[subprocess.Popen[str]] = []
    try:
        endpoints = []
        for _ in range(2):
            port = _free_port()
            procs.append(_start([exe, "--rpc-worker", "--port", str(port), "-t", t], env, "RPC worker listening"))
            endpoints.append(f"127.0.0.1:{port}")
        urls = {}
        for name, extra in (("local", []), ("rpc", ["--rpc", ",".join(endpoints), "-ngl", "99"])):
            port = _free_port()
            procs.append(
                _start([exe, "--server", "--nobrowser", "--port", str(port), "-t", t, "-np", "1", *extra], env)
            )
            urls[name] = f"http://127.0.0.1:{port}"
            _wait_health(urls[name], procs[-1])
        for url in urls.values():  # warm both: first requests page the weights in
            _measure(url, 8)
        results: dict[str, list[tuple[float, float]]] = {"local": [], "rpc": []}
        for run in range(args.runs):
            order = ("local", "rpc") if run % 2 == 0 else ("rpc", "local")
            for name in order:
                results[name].append(_measure(urls[name], args.tokens))
            print(
                f"[rpc] run {run + 1}/{args.runs}: " + ", ".join(f"{n} {results[n][-1][1]:.1f} tok/s" for n in urls),
                file=sys.stderr,
            )
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    prompt_ratio = statistics.median(
        rpc[0] / local[0] for rpc, local in zip(results["rpc"], results["local"], strict=True)
    )
    decode_ratio = statistics.median(
        rpc[1] / local[1] for rpc, local in zip(results["rpc"], results["local"], strict=True)
    )
    today = datetime.date.today().isoformat()
    lines = [
        f"### RPC workers on loopback against local layers ({today}, {args.runs} alternated runs)",
        "",
        f"Machine: {machine()}. File: {args.exe.name}; every process with LLAMABIN_CPU_VARIANT={args.variant},"
        f" -t {args.threads}; two workers, the main process with -ngl 99; {args.tokens} greedy tokens per request.",
        "",
        "| | prompt tok/s (median) | decode tok/s (median) |",
        "|---|---|---|",
    ]
    for name in ("local", "rpc"):
        lines.append(
            f"| {name} | {statistics.median(r[0] for r in results[name]):.1f}"
            f" | {statistics.median(r[1] for r in results[name]):.1f} |"
        )
    lines += ["", f"RPC / local, median of pairs: prompt {prompt_ratio:.2f}x, decode {decode_ratio:.2f}x.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with args.out.open("a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
