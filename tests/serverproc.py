"""The real server in a child process, on a free loopback port, as a user
would start it: `python -m chat -m MODEL --server --nobrowser --port 0`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
LISTENING_RE = re.compile(r"listening on (http://\S+)")


class ServerProcess:
    """A running server; `stderr` collects what it printed so far."""

    def __init__(
        self,
        model: Path | None,
        *flags: str,
        home: Path | None = None,
        start_timeout: float = 90,
        program: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`program` replaces `python -m chat` (a packaged file, say, with
        `model` None for its own); `env` is added to the environment."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        if home is not None:
            env["LLAMABIN_HOME"] = str(home)
        argv = list(program) if program is not None else [sys.executable, "-m", "chat"]
        argv += ["-m", str(model)] if model is not None else []
        argv += ["--server", "--nobrowser", "--port", "0", *flags]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: list[str] = []
        self._url = threading.Event()
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        if not self._url.wait(start_timeout):
            self.stop()
            raise AssertionError(f"the server did not start; it printed:\n{self.stderr}")
        match = LISTENING_RE.search(self.stderr)
        assert match, self.stderr
        self.url = match.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])

    def _drain(self) -> None:
        # Read stderr to the end, so the child never blocks on a full pipe.
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.append(line)
            if LISTENING_RE.search(line):
                self._url.set()
        self._url.set()  # it ended: stop waiting

    @property
    def stderr(self) -> str:
        return "".join(self._lines)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def health(self) -> dict[str, object]:
        result: dict[str, object] = httpx.get(f"{self.url}/health", timeout=10).json()
        return result

    def wait_idle(self, timeout: float = 30) -> float:
        """Seconds until no generation runs or waits; fails after `timeout`."""
        start = time.monotonic()
        while True:
            h = self.health()
            if not h["busy"] and h["queue_depth"] == 0:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"still busy after {timeout}s: {h}")
            time.sleep(0.05)

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C, as a terminal would send it; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drainer.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
