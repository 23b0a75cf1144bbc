"""Running the real command line in a child process, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_chat(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m chat ARGS`, capturing stdout and stderr separately."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "chat", *args],
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def llamabin(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "packager", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def run_file(exe: Path, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the file with nothing inherited: no PATH, no HOME, no Python."""
    env_args = [f"{k}={v}" for k, v in (env or {}).items()]
    return subprocess.run(
        ["env", "-i", *env_args, str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
