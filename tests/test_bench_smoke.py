"""bench/compare.py --smoke, end to end: the real built file against llama.cpp's
real tools (built by scripts/build-llama-cpp.sh portable-tools, ~8 minutes
the first time, then kept) running the same CPU variant, and nothing left
running afterwards."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

NUM = r"\d+(?:\.\d+)?"
SPREAD = rf"{NUM}(?: \({NUM}-{NUM}\))?"  # a median, with (min-max) when there are several runs
ROWS = {
    "target rows": rf"\| single stream decode, engine [^|]*\| {NUM}x \| >= 0\.97x \| (PASS|MISS) \(",
    "engine, llamabin": rf"\| llamabin \| {SPREAD} \| {NUM}x \| {SPREAD} \| {NUM}x \| \d+/\d+ \|",
    "engine, llama-server": rf"\| llama-server \| {SPREAD} \| 1\.00x \| {SPREAD} \| 1\.00x \| \d+/\d+ \|",
    "llama-bench": rf"\| llama-bench \(pp\d+/tg\d+[^|]*\) \| {NUM} \| {NUM}x \| {NUM} \| {NUM}x \|",
    "streaming client": rf"\| llamabin \| {SPREAD} \| {NUM}x \| {SPREAD} \| {NUM}x \|\n",
    "4 clients, llamabin": rf"\| llamabin \| 4 \| 4 \| {SPREAD} \| {NUM}x \| {NUM} \| {NUM} \| 4 \| 0 \| \d+ \|",
    "4 clients, llama-server": rf"\| llama-server \| 4 \| 4 \| {SPREAD} \| 1\.00x \| {NUM} \| {NUM} \| 4 \| 0 \| \d+ \|",
    # Measured, or said why not: it must never crash the run.
    "llama-cpp-python": r"\| llama-cpp-python \| 1 \(serial\) \| 4 \| (\d|not available: )",
    "start to ready": rf"\| llamabin \| {SPREAD} \| {NUM}x \|\n",
    "one-shot, llamabin": rf"\| llamabin `--cli` \(warm\) \| {SPREAD} \| {NUM}x \| {SPREAD} \| -?{NUM} \|",
    "one-shot, llama-completion": rf"\| llama-completion \| {SPREAD} \| 1\.00x \| {SPREAD} \| 0 \|",
    "size": rf"\| file size minus GGUF size \| {NUM} MB \|",
    "first launch": rf"\| first launch `--cli -n 16` \(fresh LLAMABIN_HOME\) s \| {SPREAD} \|",
}


def tagged_pids(tag: str) -> list[int]:
    """Live processes whose environment carries the tag: every program the
    harness started inherits it, wherever it re-parented itself."""
    needle = f"LLAMABIN_BENCH_TAG={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_compare_smoke(built: Path, smollm2: Path) -> None:
    if shutil.which("cmake") is None:
        pytest.skip("cmake is missing: llama.cpp's reference tools cannot be built")
    tag = uuid.uuid4().hex
    env = dict(os.environ, LLAMABIN_BENCH_TAG=tag)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--smoke", "--exe", str(built), "--gguf", str(smollm2)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=3 * 3600,  # a cold build of the tools included
    )
    assert result.returncode == 0, result.stderr[-3000:]
    md = result.stdout
    assert md.startswith("### llamabin vs llama.cpp (20"), md[:200]
    assert "Machine: " in md and "llama-cpp-python 0.3.36" in md, md[:600]
    # The reference ran the kernels the file picked here, and says which.
    doctor = subprocess.run([str(built), "--doctor"], capture_output=True, text=True, timeout=120).stdout
    picked = re.search(r"^kernels:\s+(\S+), picked at start", doctor, re.MULTILINE)
    assert picked, doctor
    assert f"given only the `{picked.group(1)}` CPU library" in md, md[:1200]
    missing = [name for name, pattern in ROWS.items() if not re.search(pattern, md)]
    assert not missing, f"rows missing or without numbers: {missing}\n{md}"
    assert tagged_pids(tag) == [], "a process the benchmark started is still running"


def test_readme_table_never_replaces_a_file_it_did_not_write(built: Path, smollm2: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# A project\n\nIts whole documentation.\n")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "compare.py"),
            "--exe",
            str(built),
            "--gguf",
            str(smollm2),
            "--smoke",
            "--readme-table",
            str(readme),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "the file exists and is not a table this script wrote" in result.stderr
    assert readme.read_text() == "# A project\n\nIts whole documentation.\n"


STARTUP_ROWS = {
    "start to /health": rf"\| start to /health, s \| {SPREAD} \| {SPREAD} \| {NUM}x \| <= 1\.25x \| (PASS|MISS) \|",
    "first answer": rf"\| start to the first chat answer \(4 tokens\), s \| {SPREAD} \| {SPREAD} \| {NUM}x \| \| \|",
    "one-shot": rf"\| `--cli -n 16` wall, s \| {SPREAD} \| {SPREAD} \| {NUM}x \| <= 1\.2x \| (PASS|MISS) \|",
    # The file's own phases, read from its trace; a one-shot neither serves nor takes a chat.
    "python up": rf"\| python up \| {SPREAD} \| {SPREAD} \|",
    "model loaded": rf"\| model loaded \| {SPREAD} \| {SPREAD} \|",
    "serving": rf"\| serving \| {SPREAD} \| - \|",
    "first chat answer": rf"\| first chat answer \| {SPREAD} \| - \|",
    "answered": rf"\| answered \| - \| {SPREAD} \|",
    "load span": rf"\| model and context load \(its own thread\) \| {SPREAD} \| {SPREAD} \|",
}


def test_startup_phases_smoke(built: Path, smollm2: Path) -> None:
    """bench/startup.py, one run: the file's phases beside llama.cpp's starts,
    with the same command lines as compare.py's, and nothing left running."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake is missing: llama.cpp's reference tools cannot be built")
    tag = uuid.uuid4().hex
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "startup.py"),
            "--runs",
            "1",
            "--exe",
            str(built),
            "--gguf",
            str(smollm2),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, LLAMABIN_BENCH_TAG=tag),
        timeout=3 * 3600,  # a cold build of the tools included
    )
    assert result.returncode == 0, result.stderr[-3000:]
    md = result.stdout
    assert md.startswith("### Start-up phases (20") and "Machine: " in md, md[:300]
    missing = [name for name, pattern in STARTUP_ROWS.items() if not re.search(pattern, md)]
    assert not missing, f"rows missing or without numbers: {missing}\n{md}"
    assert "[startup] run 1/1" in result.stderr
    assert tagged_pids(tag) == [], "a process the benchmark started is still running"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--exe", "no-such-file"], "startup.py: --exe no-such-file: no such executable file"),
        (["--runs", "0"], "startup.py: --runs must be at least 1, not 0"),
    ],
)
def test_startup_refuses_bad_input_in_one_line(built: Path, smollm2: Path, args: list[str], said: str) -> None:
    argv = ["--exe", str(built), "--gguf", str(smollm2), *args]
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "startup.py"), *argv], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and result.stderr == said + "\n"
