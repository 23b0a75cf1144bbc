"""`--doctor`: what a user needs when something does not work, in a dozen
lines: versions, CPU features, GPU, where the weights come from and whether
they are verified, memory, template, and how long each start-up phase took."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from chat import __version__, hwcap
from chat.bundle import Bundle, verify
from chat.engine import Engine, backends, rpc
from chat.engine.bindings import llama_cpp as C
from chat.engine.engine import EngineConfig
from chat.engine.llama import LlamaLog, ModelSource
from chat.engine.memory import available_memory, kv_cache_bytes
from chat.errors import EXIT_OK
from chat.machine import cpu_model
from chat.session import TemplateChoice

T = TypeVar("T")
MiB = 2**20


def run_doctor(config: EngineConfig, template_choice: TemplateChoice, bundle: Bundle | None) -> int:
    phases: list[tuple[str, float]] = []

    def timed(name: str, step: Callable[[], T]) -> T:
        start = time.perf_counter()
        result = step()
        phases.append((name, time.perf_counter() - start))
        return result

    print(f"llamabin {__version__} (llama-cpp-python {_version('llama-cpp-python')})")
    print(f"runtime:   {_runtime()}")
    LlamaLog.install(config.verbose)  # before the kernels load: they log where they came from
    kernels = timed("load CPU kernels", backends.load)
    # On ARM the variants are picked by the kernel's HWCAP bits (under QEMU
    # the emulated CPU's, while /proc/cpuinfo is the host's): show them.
    arm = f"; HWCAP: {hwcap.kernel_features()}" if hwcap.is_arm_linux() else ""
    print(f"cpu:       {cpu_model()}; llama.cpp sees: {_cpu_features()}{arm}")
    print(f"kernels:   {kernels.describe()}")
    if kernels.variants:
        print(f"self-test: {kernels.selftest}")
    print(f"gpu:       {_gpu()}")
    weights = _weights(config.model, bundle, timed)
    print(f"weights:   {weights}")
    for adapter in config.lora:  # loaded (and so checked against the model) with the engine below
        print(f"lora:      {adapter.describe()}")
    with timed("load model and context", lambda: Engine(config)) as engine:
        template = template_choice.resolve(engine)
        need = engine.info.size_bytes + kv_cache_bytes(engine.info.metadata, engine.n_ctx)
        free = available_memory()
        print(
            f"memory:    {need / MiB:.0f} MiB needed (model and a {engine.n_ctx}-token cache),"
            f" {'unknown' if free is None else f'{free / MiB:.0f} MiB'} free"
        )
        name = "the model's own" if template.origin == "gguf" else f"{template.name} ({template.origin})"
        print(f"template:  {name}; stops on {', '.join(template.stop)}")
        for worker in engine.info.rpc_workers:
            print(f"rpc:       {worker}")
    print("start-up:  " + ", ".join(f"{name} {secs:.2f} s" for name, secs in phases))
    return EXIT_OK


def _weights(source: ModelSource, bundle: Bundle | None, timed: Callable[[str, Callable[[], bool]], bool]) -> str:
    if bundle is None or source != bundle.source:
        return f"{source.path} (a plain GGUF file)"
    checked = timed("verify weights", lambda: verify(bundle, force=False))
    status = "sha256 verified now" if checked else "sha256 verified at an earlier launch"
    where = "inside this file" if source.offset else "in the sidecar file"
    return f"{where}, {source.path} at byte {source.offset:,}, mapped in place; {status}"


def _runtime() -> str:
    unpacked = getattr(sys, "_MEIPASS", None)
    if unpacked is None:
        return f"Python {sys.version.split()[0]}, run from source"
    # The packaged file's bootloader (patches/pyinstaller-unpack-cache.patch)
    # falls back to a _MEI* temporary directory when it has no cache to use,
    # and names the cache directory it found but would not trust.
    if Path(unpacked).name.startswith("_MEI"):
        refused = os.environ.get("_PYI_UNPACK_CACHE_REFUSED")
        why = (
            f"not used as the cache: {refused} must be a directory of this user's that no one else can write"
            if refused
            else "no writable cache directory"
        )
        return f"unpacked into {unpacked} for this launch only ({why})"
    return f"unpacked into {unpacked} at the first launch, reused since"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "bundled"  # a packaged file carries no distribution metadata


def _cpu_features() -> str:
    info = C.llama_print_system_info().decode("utf-8", errors="replace")
    on = [part.split("=")[0].strip() for part in info.split("|") if part.strip().endswith("= 1")]
    return " ".join(name.removeprefix("CPU : ") for name in on) or info.strip()


def _gpu() -> str:
    # llama_supports_gpu_offload() also says yes for the RPC backend alone.
    gpus = rpc.gpu_devices()
    if gpus:
        return f"{'; '.join(rpc.describe_devices(gpus))}: offload layers with -ngl N"
    return "none: llama.cpp found no GPU (-ngl offloads only to --rpc workers)"
