"""The real `--server`, with one fault injected: the model's load waits
until the test creates a file, so the test sees the port while it loads.

    python tests/slowload.py GATE_FILE [llamabin flags...]

If GATE_FILE holds "fail", the load fails as a corrupt model would.
`SlowLoad` starts it on a free port and opens the gate.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import chat.loading
from chat.cli import main
from chat.engine import Engine
from chat.errors import ModelFileError
from chat.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
_real_open_engine = chat.loading.open_engine


def _gated_open_engine(settings: Settings, load_threads: int | None = None) -> Engine:
    gate = Path(sys.argv[1])
    while not gate.exists():
        time.sleep(0.02)
    if gate.read_text().strip() == "fail":
        raise ModelFileError(f"cannot load model {settings.model.path}: injected failure")
    return _real_open_engine(settings, load_threads)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlowLoad:
    """The server above, its load held back until `release()`."""

    def __init__(self, tmp: Path, model: Path) -> None:
        self.gate = tmp / "gate"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(self.gate), "-m", str(model)]
            + ["--server", "--nobrowser", "--port", str(self.port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def first_answer(self, timeout: float = 60) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()[1]
            try:
                return httpx.get(f"{self.url}/health", timeout=5)
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("the port never answered")

    def release(self, text: str = "") -> None:
        self.gate.write_text(text)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.communicate(timeout=30)[1]


if __name__ == "__main__":
    chat.loading.open_engine = _gated_open_engine
    sys.exit(main(sys.argv[2:]))
