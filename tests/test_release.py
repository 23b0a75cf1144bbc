"""The release matrix's linux-x86_64 leg, run here with the same scripts
the workflow calls: portable llama.cpp, the default model's file, and the
smoke test a user's first minutes amount to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def test_the_linux_leg_builds_and_passes_its_smoke_test(portable_lib: Path, tmp_path: Path) -> None:
    env = dict(os.environ, LLAMABIN_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [str(ROOT / "scripts" / "ci" / "build-leg.sh"), sys.executable, str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    exe = Path(result.stdout.strip())
    assert exe == tmp_path / "dist" / "SmolLM2-135M-Instruct.Q4_1-linux-x86_64"
    assert "smoke-test: ok" in result.stderr
    assert "kernels:   " in result.stderr and "picked at start from 14 variants" in result.stderr
    inspect = subprocess.run([sys.executable, "-m", "packager", "inspect", str(exe)], capture_output=True, text=True)
    assert "cpu kernels:      14 variants, picked at start" in inspect.stdout
    assert "license:          apache-2.0 (text included)" in inspect.stdout.lower()


def test_the_glibc_floor_is_read_off_the_file(built: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "glibc-floor.py"), str(built), "--details"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    head = result.stdout.splitlines()[0]
    version = tuple(int(x) for x in head.split()[1].split("."))
    # At least what every packed libpython and libstdc++ asks for, at most
    # this machine's own glibc: the file cannot need more than it was built with.
    libc = os.confstr("CS_GNU_LIBC_VERSION") or "glibc 99.0"
    assert (2, 17) <= version <= tuple(int(x) for x in libc.split()[1].split("."))
    assert "libpython3.11.so.1.0" in result.stdout and "llama_cpp/lib/libllama.so" in result.stdout


def test_the_glibc_floor_refuses_other_files(tmp_path: Path) -> None:
    other = tmp_path / "not-a-bundle"
    other.write_bytes(b"\x7fELF" + bytes(60))
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "glibc-floor.py"), str(other)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "is not a PyInstaller onefile program" in result.stderr and "Traceback" not in result.stderr
