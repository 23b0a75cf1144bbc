"""Which of llama.cpp's compute backends this process runs on.

A portable build of llama.cpp (GGML_BACKEND_DL with GGML_CPU_ALL_VARIANTS)
keeps its CPU kernels out of libggml, as one library per instruction-set
level (libggml-cpu-x64.so ... libggml-cpu-zen4.so). Nothing runs until one
of them is loaded, and llama-cpp-python never does it, so every model load
would fail with "no backends are loaded". `load()` asks libggml to score the
variants beside libllama and load the best one for this CPU that passes a
self-test (`cpu_choice`: a variant that crashes is never run). A build with the
kernels inside libggml (llama-cpp-python's default) has no variant files and
needs nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from chat.engine import cpu_choice
from chat.engine.bindings import llama_cpp as C
from chat.errors import ModelFileError

FORCE_ENV = "LLAMABIN_CPU_VARIANT"


def _names() -> tuple[str, str, str]:
    """(variant prefix, variant suffix, the file name libllama links libggml
    by). The exact linked name matters: a wheel stores libggml.so,
    libggml.so.0 and libggml.so.0.x.y as separate copies, and backends
    registered in a copy libllama does not use leave its registry empty."""
    if sys.platform == "win32":
        return "ggml-cpu-", ".dll", "ggml.dll"
    if sys.platform == "darwin":
        return "libggml-cpu-", ".so", "libggml.0.dylib"
    return "libggml-cpu-", ".so", "libggml.so.0"


@dataclass(frozen=True)
class Backends:
    lib_dir: Path
    variants: tuple[str, ...]  # CPU variants shipped; empty when built in
    cpu_variant: str | None  # the one loaded, when it can be told
    selftest: str = ""  # what the self-test found, for --doctor
    notes: tuple[str, ...] = ()  # one line each, for stderr: a variant skipped at this launch

    def describe(self) -> str:
        if not self.variants:
            return f"built into libggml, compiled for the CPU it was built on ({self.lib_dir})"
        chosen = self.cpu_variant or "one of them (this system cannot say which)"
        return f"{chosen}, picked at start from {len(self.variants)} variants ({', '.join(self.variants)})"


def lib_dir() -> Path:
    """Where llama-cpp-python loaded libllama from (LLAMA_CPP_LIB_PATH or
    its own lib/ folder, inside a packaged file too)."""
    return Path(getattr(C, "_base_path", Path(C.__file__).parent / "lib"))


@functools.cache  # ggml's backend registry is per process, so is this
def load() -> Backends:
    """Load the best CPU variant that passes its self-test, once per process,
    before the first model."""
    directory = lib_dir()
    prefix, suffix, ggml_name = _names()
    files = {p.name[len(prefix) : -len(suffix)]: p for p in directory.glob(f"{prefix}*{suffix}")}
    variants = tuple(sorted(files))
    if not variants:
        return Backends(directory, (), None)
    ggml_path = _mapped(ggml_name) or directory / ggml_name
    ggml = ctypes.CDLL(str(ggml_path))
    ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    _load_other_backends(ggml, directory, prefix, suffix)
    forced = os.environ.get(FORCE_ENV)
    if forced:
        # For bug reports and tests: the same kernels on any CPU that has
        # their instructions, so two machines can be compared exactly.
        if forced not in variants:
            raise ModelFileError(f"{FORCE_ENV}={forced}: no such CPU variant (there are: {', '.join(variants)})")
        if not ggml.ggml_backend_load(str(files[forced]).encode()):
            raise ModelFileError(f"{FORCE_ENV}={forced}: this CPU lacks instructions that variant needs")
        return Backends(directory, variants, forced, f"not run: {forced} forced by {FORCE_ENV}")
    choice = cpu_choice.choose(files, ggml_path)
    if choice.variant is None or not ggml.ggml_backend_load(str(files[choice.variant]).encode()):
        raise ModelFileError(
            f"none of llama.cpp's CPU variants in {directory} can run on this CPU "
            f"({choice.summary() or ', '.join(variants)})"
        )
    return Backends(directory, variants, choice.variant, choice.summary(), choice.notes)


def ggml_library() -> ctypes.CDLL:
    """The libggml libllama uses (its backend registry, its devices), after
    `load()`."""
    _prefix, _suffix, ggml_name = _names()
    return ctypes.CDLL(str(_mapped(ggml_name) or lib_dir() / ggml_name))


def ggml_base_library() -> ctypes.CDLL | None:
    """libggml-base, where ggml's logger lives; None when this process has
    not mapped it under its usual name."""
    found = next((p for p in _mapped_files() if p.name.startswith(("libggml-base.", "ggml-base."))), None)
    return ctypes.CDLL(str(found)) if found else None


def _load_other_backends(ggml: ctypes.CDLL, directory: Path, prefix: str, suffix: str) -> None:
    """GPU and other backends shipped beside the CPU variants (libggml-cuda.so,
    ...), loaded as ggml_backend_load_all_from_path would."""
    stem = prefix.removesuffix("cpu-")
    for path in sorted(directory.glob(f"{stem}*{suffix}")):
        name = path.name[len(stem) : -len(suffix)]
        if name != "base" and not name.startswith("cpu-"):
            ggml.ggml_backend_load(str(path).encode())


def _mapped_files() -> list[Path]:
    """The files mapped into this process (Linux; empty elsewhere)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return [Path(line.split(None, 5)[5].rstrip()) for line in maps if line.count(" ") >= 5 and "/" in line]
    except OSError:
        return []


def _mapped(name: str) -> Path | None:
    """The copy of `name` libllama really uses. It can differ from the one
    beside libllama: a packaged file's loader path (LD_LIBRARY_PATH) may hold
    another copy, and that one, not ours, must get the backends."""
    return next((p for p in _mapped_files() if p.name == name), None)
