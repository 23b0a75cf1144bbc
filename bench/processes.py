"""The programs measured, as processes: each in its own session so that one
killpg ends its whole tree, servers started and waited for until ready,
one-shots timed with their peak RSS, and nothing left running."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import ROOT, WAIT_S, Unavailable, log


def free_port() -> int:
    # The OS picks an unused port; the tiny window before the server binds
    # it is acceptable on a benchmark machine.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def session_pids(sid: int) -> list[int]:
    """Every live process of a session: with start_new_session the session id
    is the launched pid, and it survives re-parenting, so this finds the
    whole tree (PyInstaller's bootloader and the child it forks)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state ppid pgrp session ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def peak_rss_kib(pids: Sequence[int]) -> int | None:
    """The largest VmHWM (peak RSS) among the processes: the biggest process
    in the tree, as for the one-shots."""
    best = None
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    kib = int(line.split()[1])
                    best = kib if best is None else max(best, kib)
        except (OSError, ValueError):
            continue
    return best


def kill_session(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to the whole process group, SIGKILL whatever is left after the
    grace time, and wait until nothing of it runs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is not None and not session_pids(proc.pid):
            return
        if time.monotonic() > deadline:
            log(f"warning: process group {proc.pid} still has {session_pids(proc.pid)} after SIGKILL")
            return
        time.sleep(0.05)


def tail(path: Path, n: int = 400) -> str:
    """The last meaningful line of a log, for a one-line 'why'."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1][:n] if lines else "no output"


@dataclass(frozen=True)
class ServerSpec:
    name: str
    argv: Callable[[int, int], list[str]]  # (port, slots) -> command line
    ready_path: str  # the URL that answers 200 once the model is loaded
    native: bool  # has llama.cpp's /completion with `timings`


@dataclass
class Running:
    spec: ServerSpec
    proc: subprocess.Popen[bytes]
    url: str
    start_s: float
    log_path: Path

    def peak_rss_kib(self) -> int | None:
        return peak_rss_kib(session_pids(self.proc.pid))


@contextlib.contextmanager
def launch(spec: ServerSpec, slots: int, env: dict[str, str], log_dir: Path, poll_s: float = 0.01) -> Iterator[Running]:
    """A started, ready server (its output in `log_path`); it and everything
    it forked are gone on exit, whatever happened inside. `poll_s`: how
    often readiness is asked, which bounds how precise `start_s` is."""
    port = free_port()
    log_path = log_dir / f"{spec.name.replace(' ', '_')}-{port}.log"
    with open(log_path, "wb") as logf:
        start = time.perf_counter()
        # Its own session: one killpg ends the tree, and a Ctrl-C in our
        # terminal does not reach it before our cleanup does.
        try:
            proc = subprocess.Popen(
                spec.argv(port, slots),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
        except OSError as exc:
            raise Unavailable(f"cannot start: {exc}") from exc
    try:
        url = f"http://127.0.0.1:{port}"
        start_s = wait_ready(proc, url + spec.ready_path, start, log_path, poll_s)
        yield Running(spec, proc, url, start_s, log_path)
    finally:
        kill_session(proc)


def wait_ready(proc: subprocess.Popen[bytes], url: str, start: float, log_path: Path, poll_s: float = 0.01) -> float:
    """Seconds from spawn to the first 200 (llama-server answers 503 while it loads)."""
    with httpx.Client(timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                raise Unavailable(f"exited with {proc.returncode} before it was ready: {tail(log_path)}")
            try:
                if client.get(url).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            if time.perf_counter() - start > WAIT_S:
                raise Unavailable(f"not ready after {WAIT_S:.0f} s: {tail(log_path)}")
            time.sleep(poll_s)


@dataclass
class OneShot:
    wall: float
    rss_kib: int
    stdout: str
    stderr: str


def run_oneshot(argv: list[str], env: dict[str, str]) -> OneShot:
    """Wall time and peak RSS of one program run to its end.

    Peak RSS is the ru_maxrss that wait4 returns. On Linux that is not only
    the direct child's: the kernel fills it from the zombie's RUSAGE_BOTH,
    the max of its own peak and of every descendant it waited for. A
    PyInstaller onefile bootloader waits for the child it forks, so this is
    the peak of the biggest process in the tree, exactly, with no sampling
    (polling /proc would miss short peaks) and no /usr/bin/time (not on every
    machine). Checked: a parent whose child touches 300 MiB reports ~310 MiB.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=ROOT, start_new_session=True
            )
        except OSError as exc:
            raise Unavailable(f"cannot start: {exc}") from exc
        # wait4 has no timeout: a timer kills the group instead of hanging.
        timer = threading.Timer(WAIT_S, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        if proc.returncode != 0:
            lines = stderr.strip().splitlines() or ["no output"]
            raise Unavailable(f"{Path(argv[0]).name} exited with {proc.returncode}: {lines[-1][:200]}")
    return OneShot(wall, usage.ru_maxrss, stdout, stderr)
