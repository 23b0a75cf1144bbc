"""HTTP clients of the servers measured: one timed streaming chat request, a
burst of them released at once, and llama.cpp's `/completion` timings."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from bench.common import SEED, WAIT_S, Unavailable

# Story prompts make SmolLM2 write long answers, so streams usually run to
# max_tokens and every server does the same amount of work.
DRAGONS = ("Ember", "Quill", "Saffron", "Tamsin", "Orrin", "Vesper", "Bramble", "Ysolde", "Corvin", "Maren")


# A raw continuation for the prefill measurement; a run number goes in front
# so no server can answer it from a prompt cache.
PREFILL_SENTENCE = (
    "The old lighthouse keeper counted the ships that passed the rocky point each evening, "
    "writing their names and flags in a leather book that smelled of salt and tar. "
)


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
