"""llama.cpp's RPC backend: other machines' devices as this process's own
(`attach`, before the model loads), and this process's devices lent to
another (`serve_worker`).

A worker holds no model: the main process sends it tensors and graphs over
TCP. The protocol has no authentication, so a worker listens on loopback
unless told otherwise. ggml aborts the process when a worker stops
answering mid-computation; `attach` turns that abort into one line naming
the worker and exit 1, instead of a core dump.
"""

from __future__ import annotations

import ctypes
import functools
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chat.engine import backends
from chat.errors import EXIT_RUNTIME, LlamabinError, ModelFileError, UsageError

DEFAULT_WORKER_PORT = 50052  # llama.cpp's rpc-server's
CONNECT_TIMEOUT = 3.0
MiB = 2**20
# enum ggml_backend_dev_type
_CPU, _GPU, _IGPU, _ACCEL = 0, 1, 2, 3


class RpcWorkerError(LlamabinError):
    """A worker cannot be reached, or does not speak llama.cpp's RPC."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class WorkerDevice:
    """One device a worker lends: what --doctor shows."""

    endpoint: Endpoint
    name: str
    description: str
    free: int
    total: int

    def describe(self) -> str:
        return f"{self.endpoint}: {_memory(self.free, self.total)}"


def _memory(free: int, total: int) -> str:
    return f"{free / MiB:.0f} MiB free of {total / MiB:.0f} MiB"


def parse_endpoints(text: str) -> tuple[Endpoint, ...]:
    """`HOST:PORT[,HOST:PORT...]`, as llama.cpp's --rpc takes them."""
    found = []
    for part in text.split(","):
        part = part.strip()
        host, sep, port = part.rpartition(":")
        # ggml splits at the first colon, so an IPv6 address cannot be given.
        if not sep or not host or ":" in host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--rpc {text!r}: give workers as HOST:PORT[,HOST:PORT...], e.g. 127.0.0.1:50052")
        found.append(Endpoint(host, int(port)))
    if len(set(found)) != len(found):
        raise UsageError(f"--rpc {text!r} names a worker twice")
    return tuple(found)


def is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def unreachable(endpoint: Endpoint, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """Why a TCP connection to the worker fails, or None when it opens.
    ggml itself aborts the process on a worker it cannot reach, so every
    worker is tried here first."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)


class _Ggml:
    """The few ggml calls RPC needs, typed once per process (`_ggml()`)."""

    def __init__(self) -> None:
        backends.load()  # the CPU kernels, and libggml-rpc beside them
        lib = backends.ggml_library()
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        for name, args, result in (
            ("ggml_backend_reg_by_name", [ctypes.c_char_p], vp),
            ("ggml_backend_reg_get_proc_address", [vp, ctypes.c_char_p], vp),
            ("ggml_backend_register", [vp], None),
            ("ggml_backend_reg_dev_count", [vp], sz),
            ("ggml_backend_reg_dev_get", [vp, sz], vp),
            ("ggml_backend_dev_count", [], sz),
            ("ggml_backend_dev_get", [sz], vp),
            ("ggml_backend_dev_type", [vp], ctypes.c_int),
            ("ggml_backend_dev_name", [vp], ctypes.c_char_p),
            ("ggml_backend_dev_description", [vp], ctypes.c_char_p),
            ("ggml_backend_dev_memory", [vp, ctypes.POINTER(sz), ctypes.POINTER(sz)], None),
        ):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, result
        self.lib = lib
        self.reg = lib.ggml_backend_reg_by_name(b"RPC")  # None in a build without GGML_RPC

    def proc(self, name: str, prototype: type) -> Any:
        """A function of the RPC backend, or why there is none."""
        if not self.reg:
            raise ModelFileError("this build of llama.cpp has no RPC backend (it was built without GGML_RPC)")
        address = self.lib.ggml_backend_reg_get_proc_address(self.reg, name.encode())
        if not address:
            raise ModelFileError(f"llama.cpp's RPC backend lacks {name}")
        fn: Any = prototype(address)
        return fn

    def devices(self, *kinds: int) -> list[int]:
        """This process's devices of these types, in ggml's order."""
        found = [self.lib.ggml_backend_dev_get(i) for i in range(self.lib.ggml_backend_dev_count())]
        return [d for d in found if self.lib.ggml_backend_dev_type(d) in kinds]

    def name(self, dev: int) -> str:
        return (self.lib.ggml_backend_dev_name(dev) or b"").decode()

    def description(self, dev: int) -> str:
        return (self.lib.ggml_backend_dev_description(dev) or b"").decode()

    def memory(self, dev: int) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self.lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        return free.value, total.value


@functools.cache  # ggml's registry is per process, and so is this
def _ggml() -> _Ggml:
    return _Ggml()


_ABORT = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_ADD_SERVER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)
_START_SERVER = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)
)


class _AbortHandler:
    """ggml's abort callback while workers are attached. ggml holds only a
    raw pointer, so the one handler is kept on the class for the life of the
    process, as the log callback is."""

    installed: _AbortHandler | None = None

    def __init__(self, ggml: _Ggml, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)
        self.callback = _ABORT(self._on_abort)
        setter = ggml.lib.ggml_set_abort_callback
        setter.argtypes, setter.restype = [_ABORT], ctypes.c_void_p
        setter(self.callback)

    def _on_abort(self, message: bytes) -> None:
        # ggml calls abort() once this returns, so this never returns.
        text = message.decode("utf-8", errors="replace").strip().split(": ", 1)[-1]
        lost = self._lost()
        who = (
            f"lost RPC worker {', '.join(lost)}"
            if lost
            else f"an RPC worker of {', '.join(map(str, self.endpoints))} failed"
        )
        try:
            sys.stdout.flush()
        except Exception:  # the interpreter may be mid-write; the line below matters more
            pass
        os.write(2, f"llamabin: error: {who}: {text}\n".encode())
        os._exit(EXIT_RUNTIME)

    def _lost(self) -> list[str]:
        """The workers that no longer answer. A killed worker's connection
        can break a moment before its listening socket closes, so they are
        asked again for a few seconds before giving up on naming one."""
        deadline = time.monotonic() + 3.0
        while True:
            lost = [f"{e} ({why})" for e in self.endpoints if (why := unreachable(e, timeout=1.0))]
            if lost or time.monotonic() > deadline:
                return lost
            time.sleep(0.1)


def attach(endpoints: Sequence[Endpoint]) -> tuple[WorkerDevice, ...]:
    """Make each worker's devices this process's, before the model loads:
    llama.cpp then offloads -ngl layers to them as to GPUs. A worker that
    cannot be reached is named, and nothing is attached."""
    for endpoint in endpoints:
        why = unreachable(endpoint)
        if why:
            raise RpcWorkerError(f"RPC worker {endpoint} is not reachable: {why}")
    ggml = _ggml()
    if _AbortHandler.installed is None:
        _AbortHandler.installed = _AbortHandler(ggml, endpoints)
    add_server = ggml.proc("ggml_backend_rpc_add_server", _ADD_SERVER)
    devices = []
    for endpoint in endpoints:
        reg = add_server(str(endpoint).encode())
        if not reg:
            raise RpcWorkerError(f"RPC worker {endpoint} did not answer as llama.cpp's RPC server")
        ggml.lib.ggml_backend_register(reg)
        for i in range(ggml.lib.ggml_backend_reg_dev_count(reg)):
            dev = ggml.lib.ggml_backend_reg_dev_get(reg, i)
            devices.append(WorkerDevice(endpoint, ggml.name(dev), ggml.description(dev), *ggml.memory(dev)))
    return tuple(devices)


def lendable_devices() -> tuple[int, ...]:
    """The devices a worker serves: its GPUs when it has any, else its CPU
    (as llama.cpp's rpc-server picks them)."""
    ggml = _ggml()
    return tuple(ggml.devices(_GPU, _IGPU) or ggml.devices(_CPU)[:1])


def gpu_devices() -> tuple[int, ...]:
    """This machine's own GPUs (attached RPC workers, which ggml also
    counts as GPUs, left out)."""
    ggml = _ggml()
    return tuple(d for d in ggml.devices(_GPU, _IGPU) if not ggml.name(d).startswith("RPC"))


def describe_devices(devices: Sequence[int]) -> list[str]:
    """Each device as `description (name), memory`."""
    ggml = _ggml()
    return [f"{ggml.description(d)} ({ggml.name(d)}), {_memory(*ggml.memory(d))}" for d in devices]


def serve_worker(endpoint: Endpoint, n_threads: int, devices: Sequence[int]) -> None:
    """Serve `devices` to main processes on `endpoint`, one at a time; runs
    until the process ends, and returns only if ggml cannot listen."""
    ggml = _ggml()
    start = ggml.proc("ggml_backend_rpc_start_server", _START_SERVER)
    array = (ctypes.c_void_p * len(devices))(*devices)
    start(str(endpoint).encode(), None, n_threads, len(devices), array)
