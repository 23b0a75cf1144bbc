"""`llamabin upgrade` and `llamabin set` never rewrite the weights: the same
offset and sha256 after each, and the time of an in-place `set` does not
grow with the model.

    python bench/rewrite.py --exe dist/SmolLM2-135M-Instruct.Q4_1-linux-x86_64 \
        [--llama-lib DIR] [--big-mib 1024] [--runs 3] [--out bench/RESULTS.md]

Two files: a copy of the built SmolLM2 file (--exe), and a synthetic one of
about 1 GiB: the same runtime and SmolLM2's GGUF followed by random bytes up
to --big-mib (a GGUF reader stops at its own end, so the file still runs).
For each, the median wall time of the command line (which includes starting
the result once, as build does) for: `upgrade` (copies the weights),
`set --system-prompt` in place, and `set` with a manifest too large for the
spare room (a copy). After each, the weights' offset and the sha256 of
those bytes are checked against the first.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402
from bench.report import publish  # noqa: E402
from packager.build import BuildOptions, select_runtime  # noqa: E402
from packager.elf import insert_payload  # noqa: E402
from payload.find import read_payload  # noqa: E402
from payload.manifest import encode_manifest  # noqa: E402

MiB = 1 << 20


def llamabin(*args: str) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "packager", *args], capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"rewrite.py: llamabin {args[0]} failed: {result.stderr.strip()}")
    return elapsed


def weights(path: Path) -> tuple[int, str]:
    payload = read_payload(path)
    assert payload is not None, path
    h = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(payload.blob_offset)
        left = payload.blob_size
        while left:
            block = f.read(min(left, 8 * MiB))
            h.update(block)
            left -= len(block)
    if h.hexdigest() != payload.manifest["gguf"]["sha256"]:
        raise SystemExit(f"rewrite.py: {path}: the weights no longer match the manifest's sha256")
    return payload.blob_offset, h.hexdigest()


def make_big(small: Path, out: Path, size: int, llama_lib: Path | None) -> None:
    """The SmolLM2 file's runtime and GGUF, the GGUF padded with random bytes to ``size``."""
    payload = read_payload(small)
    assert payload is not None
    blob = out.with_suffix(".blob")
    h = hashlib.sha256()
    with small.open("rb") as src, blob.open("wb") as dst:
        src.seek(payload.blob_offset)
        gguf = src.read(payload.blob_size)
        dst.write(gguf)
        h.update(gguf)
        left = size - len(gguf)
        while left > 0:
            block = os.urandom(min(left, 8 * MiB))
            dst.write(block)
            h.update(block)
            left -= len(block)
    manifest = dict(payload.manifest, gguf=dict(payload.manifest["gguf"], size=size, sha256=h.hexdigest()))
    runtime = select_runtime(BuildOptions(small, llama_lib=llama_lib), lambda _msg: None)
    insert_payload(runtime, out, blob, encode_manifest(manifest))
    blob.unlink()


# More than the spare room a build leaves (64 to 128 KiB), in two arguments
# of at most 128 KiB each (MAX_ARG_STRLEN).
TOO_BIG = ("--system-prompt", "x" * 120_000, "--", "--grammar", "root ::= " + '"a" ' * 30_000)


def measure(original: Path, runs: int, llama_lib: Path | None) -> dict[str, float]:
    """Each run on a fresh copy of ``original`` (the copy is not timed)."""
    lib = ["--llama-lib", str(llama_lib)] if llama_lib else []
    first = weights(original)
    exe = original.with_name(original.name + "-run")
    times: dict[str, list[float]] = {"upgrade": [], "set, in place": [], "set, by copy": []}
    for run in range(runs):
        shutil.copy2(original, exe)
        times["upgrade"].append(llamabin("upgrade", str(exe), *lib))
        if weights(exe) != first:
            raise SystemExit("rewrite.py: upgrade moved or changed the weights")
        size = exe.stat().st_size
        times["set, in place"].append(llamabin("set", str(exe), "--system-prompt", f"You are run {run}."))
        if weights(exe) != first or exe.stat().st_size != size:
            raise SystemExit("rewrite.py: set in place moved or changed the weights, or the size")
        times["set, by copy"].append(llamabin("set", str(exe), *TOO_BIG))
        if weights(exe) != first or exe.stat().st_size == size:
            raise SystemExit("rewrite.py: set by copy moved or changed the weights, or did not copy")
    exe.unlink()
    return {k: statistics.median(v) for k, v in times.items()}


def report(rows: list[tuple[str, int, int, dict[str, float]]], runs: int) -> str:
    lines = [
        f"### `llamabin upgrade` and `set`: the weights are not rewritten ({date.today().isoformat()}, {runs} runs)",
        "",
        f"Machine: {machine(load=True)}; files in page cache."
        " `bench/rewrite.py`: median wall time of the command, which starts the result once (`--help`)."
        " After every command the weights' offset and the sha256 of their bytes were the same as before.",
        "",
        "| file | weights | offset | upgrade | set, in place | set, by copy |",
        "|---|---|---|---|---|---|",
    ]
    for name, size, offset, t in rows:
        lines.append(
            f"| {name} | {size / MiB:,.0f} MiB | {offset:,} | {t['upgrade']:.2f} s"
            f" | {t['set, in place']:.2f} s | {t['set, by copy']:.2f} s |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exe", type=Path, required=True, help="a built SmolLM2 file")
    parser.add_argument("--llama-lib", type=Path, help="as for build (the runtime upgrade uses)")
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="append the table to this file (bench/RESULTS.md)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
        small = Path(tmp) / "small"
        shutil.copy2(args.exe, small)
        big = Path(tmp) / "big"
        make_big(small, big, args.big_mib * MiB, args.llama_lib)
        for name, path in (("SmolLM2-135M Q4_1", small), ("synthetic", big)):
            payload = read_payload(path)
            assert payload is not None
            rows.append((name, payload.blob_size, payload.blob_offset, measure(path, args.runs, args.llama_lib)))
    publish(report(rows, args.runs), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
