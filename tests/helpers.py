"""Running the real command line in a child process, as a user would."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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


def llamabin(*args: str, timeout: float = 900, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The packer, run from `cwd` (the checkout unless given) as a user would."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # found from any folder, as an installed packer is
    return subprocess.run(
        [sys.executable, "-m", "packager", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def llamabin_with_file_limit(limit: int, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`llamabin ARGS` unable to write a file past `limit` bytes (RLIMIT_FSIZE;
    Python ignores SIGXFSZ, so the write fails): a disk that fills up mid-write."""

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "packager", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        preexec_fn=limited,
    )


def run_file(
    exe: Path, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the file with nothing inherited: no PATH, no HOME, no Python."""
    env_args = [f"{k}={v}" for k, v in (env or {}).items()]
    return subprocess.run(
        ["env", "-i", *env_args, str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def kill_tree(pid: int) -> None:
    """SIGKILL a packaged file: the program is the bootloader's child, which
    a kill of the parent alone would leave running."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        os.kill(int(child), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


@contextmanager
def tmpfs(point: Path, options: str) -> Iterator[Path]:
    """A tmpfs of our own at `point` (created here), unmounted afterwards;
    the test is skipped where mounting is not allowed (not root)."""
    point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, timeout=60
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=60)
