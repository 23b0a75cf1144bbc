"""Soak: streaming clients against a packaged file's server for a while.

    python bench/soak.py --exe dist/SmolLM2-135M-Instruct.Q4_1-linux-x86_64 \
        [--clients 8] [--minutes 10] [--out bench/RESULTS.md]

Each client streams chat completions back to back (64 tokens, varied
prompts). Recorded: the server's resident memory (VmRSS of the process and
its children) after warm-up and at the end, completed and cut streams (a
stream that ends without a finish reason and [DONE]), and 5xx answers.
Goals: memory growth under 5%, no cut stream, no 5xx. All traffic stays on
loopback and the run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402
from bench.report import publish  # noqa: E402

TOPICS = ["a dragon", "the sea", "a small town", "the moon", "a lost key", "winter", "a robot", "bread"]


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its descendants (the bootloader's
    child is the Python runtime)."""
    total = 0
    for line in subprocess.run(
        ["ps", "-o", "pid=,ppid=,rss=", "-A"], capture_output=True, text=True
    ).stdout.splitlines():
        p, pp, rss = (int(x) for x in line.split())
        if p == pid or pp == pid:
            total += rss
    return total


def client(url: str, n: int, until: float, tally: Counter[str], lock: threading.Lock) -> None:
    with httpx.Client(base_url=url, timeout=120) as http:
        i = 0
        while time.monotonic() < until:
            body = {
                "messages": [{"role": "user", "content": f"Write about {TOPICS[(n + i) % len(TOPICS)]}."}],
                "max_tokens": 64,
                "stream": True,
                "temperature": 0.8,
                "seed": n * 1000 + i,
            }
            i += 1
            outcome = "cut"
            try:
                with http.stream("POST", "/v1/chat/completions", json=body) as r:
                    if r.status_code >= 500:
                        outcome = "5xx"
                    elif r.status_code != 200:
                        outcome = f"status {r.status_code}"
                    else:
                        finished = done = False
                        for line in r.iter_lines():
                            if line == "data: [DONE]":
                                done = True
                            elif line.startswith("data: "):
                                finished |= json.loads(line[6:])["choices"][0].get("finish_reason") is not None
                        outcome = "complete" if finished and done else "cut"
            except httpx.HTTPError:
                outcome = "cut"
            with lock:
                tally[outcome] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exe", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=30, help="seconds of load before the first memory reading")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not args.exe.is_file():
        print(f"soak: no such file: {args.exe}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.Popen(
            [str(args.exe), "--server", "--nobrowser", "--port", "0", "-np", str(args.clients)],
            env=dict(os.environ, LLAMABIN_HOME=home),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            url = None
            while url is None:
                line = proc.stderr.readline()
                if not line:
                    print("soak: the server did not start", file=sys.stderr)
                    return 1
                match = re.search(r"listening on (http://\S+)", line)
                url = match.group(1) if match else None
            threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()  # type: ignore[union-attr]
            tally: Counter[str] = Counter()
            lock = threading.Lock()
            until = time.monotonic() + args.warmup + args.minutes * 60
            threads = [threading.Thread(target=client, args=(url, n, until, tally, lock)) for n in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(args.warmup)
            rss_start = rss_kib(proc.pid)
            for t in threads:
                t.join()
            rss_end = rss_kib(proc.pid)
            health = httpx.get(f"{url}/health", timeout=10).json()
        finally:
            proc.terminate()
            proc.wait(30)
    growth = (rss_end - rss_start) / rss_start * 100
    verdict = "PASS" if growth < 5 and tally["cut"] == 0 and tally["5xx"] == 0 else "MISS"
    text = "\n".join(
        [
            f"### Soak ({datetime.now():%Y-%m-%d %H:%M}, {args.clients} streaming clients, {args.minutes:g} min)",
            "",
            f"Machine: {machine()}. File: `{args.exe.name}`, `--server -np {args.clients}`; each client streams"
            " 64-token chat answers back to back.",
            "",
            "| measure | value | goal |",
            "|---|---|---|",
            f"| resident memory after {args.warmup:g} s of load | {rss_start / 1024:.1f} MiB | |",
            f"| resident memory at the end | {rss_end / 1024:.1f} MiB | |",
            f"| growth | {growth:+.2f}% | < 5% |",
            f"| streams completed | {tally['complete']} | |",
            f"| cut streams | {tally['cut']} | 0 |",
            f"| 5xx answers | {tally['5xx']} | 0 |",
            f"| other answers | {sum(v for k, v in tally.items() if k.startswith('status'))} | |",
            f"| /health at the end | {health.get('status')} | ok |",
            "",
            f"Result: {verdict}.",
            "",
        ]
    )
    publish(text, args.out)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
