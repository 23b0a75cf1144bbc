"""Portable CPU kernels against llama.cpp compiled for this very CPU, or
one portable variant against another.

    python bench/variants.py --gguf MODEL.gguf [--runs 10] [--tokens 128] [--out bench/RESULTS.md]
    python bench/variants.py --gguf MODEL.gguf --variants zen4,sapphirerapids

The packaged file ships llama.cpp with its CPU kernels split into variants
picked at start (`scripts/build-llama-cpp.sh portable`); the native build
(`scripts/build-llama-cpp.sh native-lib`) is compiled with -march=native for
this machine. Both are the same llama.cpp source. With --variants, both
sides are the portable libraries with one variant forced on each
(LLAMABIN_CPU_VARIANT): on an AMX machine, `zen4,sapphirerapids` tells
whether the AMX kernels earn their place. Each run is a fresh process that
loads the model through llamabin's engine with its libraries
(LLAMA_CPP_LIB_PATH), prefills a 256-token prompt and decodes `--tokens`
tokens greedily; runs alternate so the drift of a shared machine hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402
from bench.report import publish  # noqa: E402

PROMPT = "Once upon a time, in a land far away, there lived a dragon who loved to read books. " * 14


def worker(gguf: Path, tokens: int, threads: int) -> dict[str, float | str]:
    """One measurement, in this process (run as a child with the libraries chosen)."""
    from chat.engine import Engine, EngineConfig, GenerationRequest, SamplingParams, backends
    from chat.engine.llama import ModelSource

    with Engine(EngineConfig(ModelSource(gguf), n_ctx=2048, n_threads=threads)) as engine:
        prompt = engine.tokenize(PROMPT)[:256]
        request = GenerationRequest(prompt, SamplingParams(temperature=0.0), max_tokens=tokens, stop=())
        usage = None
        for chunk in engine.submit(request):
            usage = chunk.usage or usage
        assert usage is not None
        return {
            "kernels": backends.load().cpu_variant or "native",
            "prefill": usage.prompt_tokens_per_second,
            "decode": usage.generation_tokens_per_second,
            "tokens": usage.completion_tokens,
        }


def run(gguf: Path, tokens: int, threads: int, lib: Path, variant: str | None) -> dict[str, float | str]:
    env = dict(os.environ, LLAMA_CPP_LIB_PATH=str(lib))
    env.pop("LLAMABIN_CPU_VARIANT", None)
    if variant is not None:
        env["LLAMABIN_CPU_VARIANT"] = variant
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--gguf",
        str(gguf),
        "--tokens",
        str(tokens),
        "--threads",
        str(threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def built_lib(flavour: str) -> Path:
    out = subprocess.run(
        [str(ROOT / "scripts" / "build-llama-cpp.sh"), flavour], capture_output=True, text=True, check=True
    ).stdout
    return Path(out.strip().splitlines()[-1]) / "lib"


def report(
    results: dict[str, list[dict[str, float | str]]], runs: int, tokens: int, threads: int, gguf_name: str
) -> str:
    (name_a, a_runs), (name_b, b_runs) = results.items()
    what = (
        f"Portable picked `{b_runs[0]['kernels']}`; native is `build-llama-cpp.sh native-lib` (-march=native)"
        if name_a == "native"
        else f"Both the portable libraries, `{name_a}` and `{name_b}` forced"
    )
    lines = [
        f"### CPU kernels: {name_b} vs {name_a} ({date.today().isoformat()}, {runs} alternating runs)",
        "",
        f"Machine: {machine()}. Model: {gguf_name} through llamabin's engine, "
        f"{threads} threads, 256-token prompt, {tokens} greedy tokens. {what}.",
        "",
        f"| tokens/s | {name_a} median (min-max) | {name_b} median (min-max) | {name_b}/{name_a} |",
        "|---|---|---|---|",
    ]
    for key in ("prefill", "decode"):
        a = [float(r[key]) for r in a_runs]
        b = [float(r[key]) for r in b_runs]
        lines.append(
            f"| {key} | {statistics.median(a):.1f} ({min(a):.1f}-{max(a):.1f}) | "
            f"{statistics.median(b):.1f} ({min(b):.1f}-{max(b):.1f}) | "
            f"{statistics.median(b) / statistics.median(a):.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--portable-lib", type=Path, help="default: scripts/build-llama-cpp.sh portable")
    parser.add_argument("--native-lib", type=Path, help="default: scripts/build-llama-cpp.sh native-lib")
    parser.add_argument("--variants", metavar="A,B", help="compare two portable variants instead of native")
    parser.add_argument("--out", type=Path, help="append the section to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.gguf.is_file():
        print(f"variants: no such model file: {args.gguf}", file=sys.stderr)
        return 2
    if args.worker:
        print(json.dumps(worker(args.gguf, args.tokens, args.threads)))
        return 0
    portable = args.portable_lib or built_lib("portable")
    sides: list[tuple[str, Path, str | None]]
    if args.variants:
        names = args.variants.split(",")
        if len(names) != 2:
            print("variants: --variants takes two names, as zen4,sapphirerapids", file=sys.stderr)
            return 2
        sides = [(names[0], portable, names[0]), (names[1], portable, names[1])]
    else:
        sides = [("native", args.native_lib or built_lib("native-lib"), None), ("portable", portable, None)]
    results: dict[str, list[dict[str, float | str]]] = {name: [] for name, _, _ in sides}
    for i in range(args.runs):
        for name, lib, variant in sides if i % 2 == 0 else reversed(sides):
            results[name].append(run(args.gguf, args.tokens, args.threads, lib, variant))
    text = report(results, args.runs, args.tokens, args.threads, args.gguf.name)
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
