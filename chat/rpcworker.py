"""`--rpc-worker`: lend this machine's CPU (or GPU) to a main process
started with `--rpc HOST:PORT`. No model is loaded here."""

from __future__ import annotations

import errno
import socket
import sys
import threading
from dataclasses import dataclass

from chat.engine.llama import LlamaLog
from chat.engine.rpc import Endpoint, describe_devices, is_loopback, lendable_devices, serve_worker
from chat.errors import LlamabinError, UsageError

UNSAFE = (
    "llamabin: warning: this RPC worker listens on {host}, beyond this machine. llama.cpp's RPC protocol has no"
    " authentication: anyone who reaches the port can run computations and read or write this process's memory"
    " buffers. Reach it only through an SSH tunnel or a private network (WireGuard); see docs/deploy.md."
)


@dataclass(frozen=True)
class WorkerOptions:
    host: str
    port: int
    threads: int
    announce: bool = True
    verbose: bool = False


def run_worker(options: WorkerOptions) -> int:
    endpoint = Endpoint(options.host, options.port)
    _check_free(endpoint)  # a host that does not resolve, or a taken port: one line, no warning first
    if not is_loopback(options.host):
        print(UNSAFE.format(host=options.host), file=sys.stderr, flush=True)
    LlamaLog.install(options.verbose)  # ggml's own lines only with --verbose
    devices = lendable_devices()
    if not devices:
        raise LlamabinError("this machine has no device llama.cpp can lend")
    # ggml's server loop never returns to Python, so it runs in a thread and
    # this one stays free to take Ctrl-C.
    done = threading.Event()

    def serve() -> None:
        try:
            serve_worker(endpoint, options.threads, devices)
        finally:
            done.set()

    threading.Thread(target=serve, name="llamabin-rpc-worker", daemon=True).start()
    if options.announce and _answers(endpoint, done):
        lent = "; ".join(describe_devices(devices))
        print(f"llamabin: RPC worker listening on {endpoint}, lending {lent} (Ctrl-C stops it)", file=sys.stderr)
    done.wait()
    raise LlamabinError(f"the RPC worker could not listen on {endpoint}")


def _check_free(endpoint: Endpoint) -> None:
    """A taken port is named here: ggml would only say it failed."""
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--host {endpoint.host}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LlamabinError(
                    f"port {endpoint.port} on {endpoint.host} is taken: give another with --port"
                ) from None
            raise LlamabinError(f"cannot listen on {endpoint}: {exc.strerror}") from None


def _answers(endpoint: Endpoint, failed: threading.Event) -> bool:
    """Wait until the worker accepts connections (a connection that sends
    nothing is closed by it at once), or its thread has given up."""
    host = "127.0.0.1" if endpoint.host in ("0.0.0.0", "") else endpoint.host
    while not failed.is_set():
        try:
            with socket.create_connection((host, endpoint.port), timeout=1.0):
                return True
        except OSError:
            failed.wait(0.05)
    return False
