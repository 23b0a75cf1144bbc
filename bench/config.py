"""compare.py's command line, checked up front into a Config."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import fail
from bench.reference import reference_tools
from bench.targets import TABLE_HEADER

ONESHOT_PROMPT = "four score and seven"
ONESHOT_TOKENS = 16
# Streaming chat requests to each server per run (each a sample of the
# single-stream row), sent to the servers in turn. One stream of 128 tokens
# is well under a second and a shared machine's hiccup moved a single
# sample by 20%; with 3 a launch (15 in all, before the servers were asked
# in turn) the row's ratio moved by 0.04 between two runs of the same file
# (2-core Xeon, 2026-12-07: 1.00x, 0.96x).
STREAMS_PER_RUN = 6


@dataclass(frozen=True)
class Config:
    exe: Path
    gguf: Path
    bin_dir: Path
    reference: str  # how the reference tools were built, for the report
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


def parse_args(doc: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; `doc` is compare.py's docstring, whose first
    paragraph heads --help."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exe", type=Path, required=True, help="a built llamabin file")
    p.add_argument("--gguf", type=Path, required=True, help="the same model as a plain GGUF")
    p.add_argument(
        "--llama-bin",
        type=Path,
        help="llama.cpp build folder (or its bin/); default: the portable tools, given only the file's CPU variant",
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


def checked_programs(exe: Path, gguf: Path) -> tuple[Path, Path]:
    """--exe and --gguf made absolute, or the one-line error saying which is missing."""
    if not exe.resolve().is_file() or not os.access(exe, os.X_OK):
        fail(f"--exe {exe}: no such executable file")
    if not gguf.resolve().is_file():
        fail(f"--gguf {gguf}: no such file")
    return exe.resolve(), gguf.resolve()


def make_config(ns: argparse.Namespace) -> Config:
    """Checks every input up front, so a typo fails in a second, not after a build."""
    exe, gguf = checked_programs(ns.exe, ns.gguf)
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
    reference = reference_tools(exe, gguf, ns.llama_bin)
    return Config(
        exe=exe,
        gguf=gguf,
        bin_dir=reference.bin_dir,
        reference=reference.description,
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
