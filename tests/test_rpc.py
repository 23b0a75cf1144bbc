"""A model across machines: the built file as llama.cpp RPC workers and as
the main process that offloads its layers to them, on loopback ports.

Every process runs the same CPU variant (LLAMABIN_CPU_VARIANT): variants
round differently, and the text must match a local run's exactly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import kill_tree, run_chat

VARIANT = "haswell"  # AVX2: every x86-64 machine CI runs on has it
ENV = {"LLAMABIN_CPU_VARIANT": VARIANT}
GREEDY = ("--temp", "0", "--seed", "1")
PROMPT = "The three primary colors are"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """`FILE --rpc-worker` on a port of its own, ready when its line says so."""

    def __init__(self, exe: Path, cwd: Path, *extra: str) -> None:
        self.port = _free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            ["env", "-i", f"HOME={cwd}", *(f"{k}={v}" for k, v in ENV.items()), str(exe)]
            + ["--rpc-worker", "--port", str(self.port), "-t", "1", *extra],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.banner = self.proc.stderr.readline()
        assert f"RPC worker listening on {self.endpoint}" in self.banner, self.banner + self._rest()

    def _rest(self) -> str:
        self.proc.kill()
        return self.proc.communicate(timeout=30)[1]

    def kill(self) -> None:
        kill_tree(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def workers(built: Path, tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for _ in range(2):
            started.append(Worker(built, tmp_path))
        yield started
    finally:
        for worker in started:
            worker.stop()


def _file(exe: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = ["env", "-i", f"HOME={cwd}", *(f"{k}={v}" for k, v in ENV.items())]
    return subprocess.run([*env, str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_two_workers_print_the_same_text_as_a_local_run(built: Path, workers: list[Worker], tmp_path: Path) -> None:
    rpc = ",".join(w.endpoint for w in workers)
    args = ("--cli", "-p", PROMPT, "-n", "24", *GREEDY)
    local = _file(built, tmp_path, *args, "--log-disable")
    remote = _file(built, tmp_path, *args, "--rpc", rpc, "-ngl", "99", "--verbose")
    assert local.returncode == 0, local.stderr[-2000:]
    assert remote.returncode == 0, remote.stderr[-2000:]
    assert local.stdout.strip()
    assert remote.stdout == local.stdout
    # The layers really went to the workers: llama.cpp names each one's buffer.
    for worker in workers:
        assert f"RPC0[{worker.endpoint}]" in remote.stderr or f"RPC[{worker.endpoint}]" in remote.stderr, worker
    assert "offloaded 31/31 layers" in remote.stderr


def test_doctor_lists_the_workers_and_their_free_memory(built: Path, workers: list[Worker], tmp_path: Path) -> None:
    result = _file(built, tmp_path, "--doctor", "--rpc", ",".join(w.endpoint for w in workers))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("rpc:")]
    assert len(lines) == 2, result.stdout
    for line, worker in zip(lines, workers, strict=True):
        assert worker.endpoint in line and " MiB free of " in line, line


def test_killing_a_worker_mid_generation_ends_the_run_with_its_name(
    built: Path, workers: list[Worker], tmp_path: Path
) -> None:
    rpc = ",".join(w.endpoint for w in workers)
    env = ["env", "-i", f"HOME={tmp_path}", *(f"{k}={v}" for k, v in ENV.items())]
    main = subprocess.Popen(
        [*env, str(built), "--cli", "-p", "1, 2, 3, 4, 5,", "-n", "2000", *GREEDY, "--rpc", rpc, "-ngl", "99"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert main.stdout is not None
        os.set_blocking(main.stdout.fileno(), True)
        first = main.stdout.read1(64)  # type: ignore[attr-defined]
        assert first, "no text before the kill"
        workers[1].kill()
        killed = time.monotonic()
        rest, err = main.communicate(timeout=30)
        took = time.monotonic() - killed
    finally:
        if main.poll() is None:
            main.kill()
    stderr = err.decode()
    assert main.returncode == 1, stderr
    assert took < 10
    assert stderr.strip().splitlines()[-1].startswith(f"llamabin: error: lost RPC worker {workers[1].endpoint}")
    assert workers[0].endpoint not in stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr and "core dumped" not in stderr


def test_killing_a_worker_under_the_server_cuts_the_stream_and_the_server_says_why(
    built: Path, workers: list[Worker], tmp_path: Path
) -> None:
    port = _free_port()
    env = ["env", "-i", f"HOME={tmp_path}", *(f"{k}={v}" for k, v in ENV.items())]
    server = subprocess.Popen(
        [*env, str(built), "--server", "--nobrowser", "--port", str(port), "--rpc", workers[0].endpoint],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while _health(url) != 200:
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        body = {"prompt": "1, 2, 3, 4, 5,", "max_tokens": 2000, "temperature": 0, "stream": True}
        with pytest.raises(httpx.TransportError):
            with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as stream:
                for n, _line in enumerate(stream.iter_lines()):
                    if n == 4:
                        workers[0].kill()
        _, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 1, err
    assert err.strip().splitlines()[-1].startswith(f"llamabin: error: lost RPC worker {workers[0].endpoint}")
    assert "Traceback" not in err


def _health(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code
    except httpx.TransportError:
        return None


def test_a_worker_that_is_down_at_start_is_named(smollm2: Path) -> None:
    port = _free_port()
    result = run_chat("-m", str(smollm2), "--cli", "-p", "hi", "--rpc", f"127.0.0.1:{port}", timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == f"llamabin: error: RPC worker 127.0.0.1:{port} is not reachable: Connection refused"


@pytest.mark.parametrize(
    "args, message",
    [
        (("--rpc", "nowhere"), "--rpc 'nowhere': give workers as HOST:PORT[,HOST:PORT...], e.g. 127.0.0.1:50052"),
        (("--rpc", "a:1,a:1"), "--rpc 'a:1,a:1' names a worker twice"),
        (("--rpc", "a:1", "-ts", "x"), "--tensor-split 'x': give proportions such as 3,1 (one per device)"),
        (("--rpc-worker", "--port", "0"), "--rpc-worker needs a fixed --port: main processes name it in --rpc"),
        (("--rpc-worker", "--server"), "--server and --rpc-worker cannot be used together"),
        (("--rpc-worker", "--rpc", "a:1"), "--rpc-worker loads no model: --rpc cannot be used with it"),
    ],
)
def test_bad_rpc_flags_are_one_line_and_exit_2(smollm2: Path, args: tuple[str, ...], message: str) -> None:
    result = run_chat("-m", str(smollm2), *args) if "--rpc-worker" not in args else run_chat(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"llamabin: error: {message}"


def test_a_worker_on_a_taken_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_chat("--rpc-worker", "--port", str(port), timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == f"llamabin: error: port {port} on 127.0.0.1 is taken: give another with --port"


def test_a_worker_beyond_loopback_warns_that_the_protocol_has_no_authentication() -> None:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat", "--rpc-worker", "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        warning = proc.stderr.readline()
        banner = proc.stderr.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert warning.startswith("llamabin: warning: this RPC worker listens on 0.0.0.0, beyond this machine.")
    assert "no authentication" in warning and "SSH tunnel" in warning
    assert f"RPC worker listening on 0.0.0.0:{port}" in banner
    assert proc.returncode == 130
