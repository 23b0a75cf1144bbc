"""Packing time from the installed wheels: `llamabin build` with a runtime
that comes from the llamabin-runtime wheel, so nothing is frozen.

    .venv/bin/python bench/pack.py [--wheelhouse wheelhouse] [--runs 3] [--out bench/RESULTS.md]

Makes a fresh venv in a temporary folder, installs llamabin from the
wheelhouse (`make wheels`), and runs there, outside the source tree:

- `llamabin build` on SmolLM2 (98 MB) and on a synthetic 1 GiB GGUF (random
  weights, written here with `gguf`): wall time, best and median of --runs,
  from the command's start to its exit (Python start-up, imports, the smoke
  test included);
- the same build's steps timed one by one in the packer's own functions:
  sha256 of the weights, finding the installed runtime (with its
  sha256 check), copying runtime and weights into the file, the smoke test.

The weights are in the page cache (warm) for every run but the first.
--out FILE appends the section (machine, date, table) to FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 1 << 30


def synthetic_gguf(path: Path, size: int) -> None:
    """A GGUF the packer accepts: llama metadata and one I8 tensor of `size` random bytes."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_name("synthetic-1GiB")
    writer.add_context_length(2048)
    writer.add_file_type(1)
    rng = np.random.default_rng(1)
    writer.add_tensor("blob", rng.integers(-128, 128, size=size, dtype=np.int8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def inner(model: Path, runs: int, work: Path) -> dict[str, object]:
    """Runs in the packer's venv: wall times of the command, then its steps."""
    from packager.build import _hash_file, _smoke_test
    from packager.elf import insert_payload
    from packager.targets import extract, installed_runtime
    from payload.manifest import encode_manifest

    bin_dir = Path(sys.executable).parent
    walls = []
    for i in range(runs):
        out = work / f"out-{i}"
        t0 = time.perf_counter()
        subprocess.run(
            [str(bin_dir / "llamabin"), "build", str(model), "-o", f"{out}/"], check=True, capture_output=True
        )
        walls.append(time.perf_counter() - t0)
        if i < runs - 1:
            for f in out.iterdir():
                f.unlink()
    (built,) = (work / f"out-{runs - 1}").iterdir()
    size = model.stat().st_size
    t0 = time.perf_counter()
    digest = _hash_file(model, size)
    t_hash = time.perf_counter() - t0
    runtime = installed_runtime()
    assert runtime is not None, "llamabin-runtime is not installed"
    t0 = time.perf_counter()
    exe = extract(runtime, work)
    t_runtime = time.perf_counter() - t0
    manifest = encode_manifest({"format": 1, "name": "bench", "gguf": {"sha256": digest, "size": size}})
    out = work / "steps.bin"
    t0 = time.perf_counter()
    insert_payload(exe, out, model, manifest)
    t_copy = time.perf_counter() - t0
    out.unlink()
    t0 = time.perf_counter()
    _smoke_test(built)  # the build's own check, on the file the last run wrote
    t_smoke = time.perf_counter() - t0
    return {
        "size": size,
        "wall_best": min(walls),
        "wall_median": statistics.median(walls),
        "sha256": t_hash,
        "runtime": t_runtime,
        "copy": t_copy,
        "smoke": t_smoke,
        "runtime_size": exe.stat().st_size,
    }


def make_venv(wheelhouse: Path, tmp: Path) -> Path:
    venv = tmp / "venv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, cwd=tmp)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--find-links", str(wheelhouse), "llamabin"],
        check=True,
        env=env,
        cwd=tmp,
    )
    return venv / "bin" / "python"


def table(rows: list[tuple[str, dict[str, object]]], runs: int) -> str:
    # Here, not at the top: the timed half of this script runs inside the
    # packer's venv, where neither bench/ nor chat/ exists.
    from bench.common import machine

    lines = [
        f"### Packing from the wheels ({date.today().isoformat()})",
        "",
        f"Machine: {machine()}. `bench/pack.py`:"
        " llamabin installed from `wheelhouse/` into a fresh venv, run outside the source tree;"
        f" wall = best / median of {runs} runs of `llamabin build MODEL -o DIR/` (start to exit);"
        " then the same steps timed one by one in the packer's functions. Warm page cache.",
        "",
        "| model | size | wall (best / median) | sha256 of the weights | installed runtime, sha256 checked | copy into the file | smoke test (`--help`, fresh unpack) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        smoke = f"{r['smoke']:.2f} s"
        lines.append(
            f"| {name} | {int(r['size']) / 1e6:,.0f} MB | {r['wall_best']:.2f} s / {r['wall_median']:.2f} s"
            f" | {r['sha256']:.2f} s | {r['runtime']:.2f} s | {r['copy']:.2f} s | {smoke} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheelhouse", type=Path, default=ROOT / "wheelhouse")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="append the section to this file (bench/RESULTS.md)")
    parser.add_argument("--inner", nargs=2, metavar=("MODEL", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(inner(Path(args.inner[0]), args.runs, Path(args.inner[1]))))
        return 0
    sys.path.insert(0, str(ROOT))
    from tests.conftest import smollm2_path

    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp_name:
        tmp = Path(tmp_name)
        python = make_venv(args.wheelhouse.resolve(), tmp)
        big = tmp / "synthetic-1GiB.gguf"
        synthetic_gguf(big, GIB)
        rows = []
        for name, model in (("SmolLM2-135M Q4_1", smollm2_path()), ("synthetic 1 GiB", big)):
            work = tmp / f"work-{len(rows)}"
            work.mkdir()
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            env["LLAMABIN_HOME"] = str(tmp / "home")
            result = subprocess.run(
                [
                    str(python),
                    "-I",
                    str(Path(__file__).resolve()),
                    "--runs",
                    str(args.runs),
                    "--inner",
                    str(model),
                    str(work),
                ],
                capture_output=True,
                text=True,
                cwd=work,
                env=env,
            )
            if result.returncode != 0:
                sys.exit(f"bench/pack.py: {name}: {result.stderr[-2000:]}")
            rows.append((name, json.loads(result.stdout.strip().splitlines()[-1])))
    from bench.report import publish

    publish(table(rows, args.runs), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
