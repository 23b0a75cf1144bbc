"""Prompt-lookup drafts on and off, through llamabin's engine, on a prompt
whose answer quotes it and on one whose answer does not.

    python bench/lookup.py --gguf MODEL.gguf [--runs 8] [--tokens 160] [--out bench/RESULTS.md]

Two engines, the same model, threads and context, one with drafts
(`EngineConfig.draft_max`, 0 for none), each in a process of its own: two
engines in one process run 6x slower (libgomp, under ggml's kernels, stops
spinning at its barriers while two teams of its threads exist). Runs
alternate between them, the order flipping every run. Each run decodes the same request on both, greedy
and seeded sampling alike, and checks that both wrote the same text: the
drafts may only change the speed. The figure is decode tokens/s (completion
tokens over the generation time the engine reports), as the ratio on/off.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from datetime import date
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402
from bench.report import publish  # noqa: E402
from bench.stats import Samples, fmt_ratio, ratio  # noqa: E402

CODE = '''def parse_date(text):
    """Parse an ISO date like 2024-05-17 into a (year, month, day) tuple."""
    year, month, day = text.split("-")
    return int(year), int(month), int(day)


def format_date(year, month, day):
    return f"{year:04d}-{month:02d}-{day:02d}"
'''
PROMPTS = {
    # The answer repeats the input with a small change: what drafts are for.
    "quoting (code edit)": f"Rename the function parse_date to read_date in this code, and write out the whole "
    f"code again:\n```python\n{CODE}```",
    # The answer is new text: drafts are rarely right, and cost what they cost.
    "not quoting (story)": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
}
SAMPLINGS = {"greedy": (0.0, None), "temperature 0.8, seed 7": (0.8, 7)}


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--gguf", type=Path, required=True)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--tokens", type=int, default=160)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path)
    ns = p.parse_args()
    if not ns.gguf.is_file():
        raise SystemExit(f"lookup.py: --gguf {ns.gguf}: no such file")

    from templates import resolve

    machine_txt = machine()
    speeds: dict[tuple[str, str, bool], Samples] = {}
    tokens: dict[tuple[str, str], int] = {}
    accepted: dict[tuple[str, str], float] = {}
    drafted_share: dict[tuple[str, str], float] = {}
    spawn = multiprocessing.get_context("spawn")
    engines: dict[bool, tuple[BaseProcess, Connection]] = {}
    try:
        for drafts in (False, True):
            ours, theirs = spawn.Pipe()
            proc: BaseProcess = spawn.Process(
                target=_engine_process, args=(theirs, ns.gguf, ns.threads, drafts), daemon=True
            )
            proc.start()
            theirs.close()  # the child's end: if the child dies, recv() then ends with EOFError, not a hang
            engines[drafts] = (proc, ours)
        described = {drafts: conn.recv() for drafts, (_, conn) in engines.items()}
        metadata, bos_text, eos_text = described[False]
        template = resolve(None, metadata, bos_text, eos_text)
        for run in range(ns.runs):
            order = (False, True) if run % 2 == 0 else (True, False)
            for prompt_name, prompt in PROMPTS.items():
                text = template.render([{"role": "user", "content": prompt}])
                for sampling_name, (temp, seed) in SAMPLINGS.items():
                    request = (text, temp, seed, ns.tokens, template.stop)
                    answers = {}
                    for on in order:
                        conn = engines[on][1]
                        conn.send(request)
                        answer, tps, completion, drafted, taken = conn.recv()
                        answers[on] = answer
                        key = (prompt_name, sampling_name)
                        speeds.setdefault((*key, on), Samples()).add(tps)
                        tokens[key] = completion
                        if on:
                            accepted[key] = taken / max(1, drafted)
                            drafted_share[key] = drafted / max(1, completion)
                    if answers[False] != answers[True]:
                        raise SystemExit(
                            f"lookup.py: the answers differ with drafts on ({prompt_name}, {sampling_name})"
                        )
            print(f"[lookup] run {run + 1}/{ns.runs} done", file=sys.stderr, flush=True)
    except EOFError:
        raise SystemExit("lookup.py: an engine process ended early (its error is above)") from None
    finally:
        for proc, conn in engines.values():
            try:
                conn.send(None)
            except OSError:  # it has ended already
                pass
            proc.join(timeout=60)

    lines = [
        f"### Prompt-lookup drafts on and off ({date.today()}, {ns.runs} alternating runs)",
        "",
        f"Machine: {machine_txt}. Model: {ns.gguf.name} through llamabin's engine, {ns.threads} threads, "
        f"at most {ns.tokens} tokens, the model's chat template; decode tokens/s, median (min-max). "
        "Both engines wrote the same text in every run.",
        "",
        "| prompt | sampling | tokens | drafts off t/s | drafts on t/s | on/off | drafted per token | drafted tokens accepted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for prompt_name in PROMPTS:
        for sampling_name in SAMPLINGS:
            key = (prompt_name, sampling_name)
            off, with_drafts = speeds[(*key, False)], speeds[(*key, True)]
            lines.append(
                f"| {prompt_name} | {sampling_name} | {tokens[key]} | {off.fmt()} | {with_drafts.fmt()} | "
                f"{fmt_ratio(ratio(with_drafts.median, off.median))} | {drafted_share[key]:.2f} | {accepted[key]:.0%} |"
            )
    publish("\n".join(lines) + "\n", ns.out)
    return 0


def _engine_process(conn: Connection, gguf: Path, threads: int, drafts: bool) -> None:
    """One engine in a process of its own: says what the template needs,
    then answers requests until it receives None."""
    from chat.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
    from chat.engine.llama import ModelSource
    from chat.engine.lookup import DEFAULT_DRAFT_MAX

    config = EngineConfig(
        ModelSource(gguf), n_ctx=4096, n_threads=threads, draft_max=DEFAULT_DRAFT_MAX if drafts else 0
    )
    with Engine(config) as engine:
        conn.send((dict(engine.info.metadata), engine.bos_text, engine.eos_text))
        while (job := conn.recv()) is not None:
            text, temp, seed, max_tokens, stop = job
            request = GenerationRequest(
                text, SamplingParams(temperature=temp, seed=seed), max_tokens=max_tokens, stop=stop
            )
            before = engine.stats()
            gen = engine.submit(request)
            answer = gen.text()
            usage = gen.final.usage if gen.final else None
            assert usage is not None and usage.generation_seconds > 0
            after = engine.stats()
            conn.send(
                (
                    answer,
                    usage.generation_tokens_per_second,
                    usage.completion_tokens,
                    after.drafted_tokens - before.drafted_tokens,
                    after.accepted_tokens - before.accepted_tokens,
                )
            )


if __name__ == "__main__":
    sys.exit(main())
