"""Versions recorded in every build's manifest, for `inspect` and bug reports."""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from importlib import metadata
from pathlib import Path


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def installed_lib_dir() -> Path | None:
    """The installed llama-cpp-python's own libraries (built for this CPU)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "lib"


def ggml_file(lib_dir: Path) -> Path:
    """The libggml file libllama links (one name per platform)."""
    name = {"win32": "ggml.dll", "darwin": "libggml.0.dylib"}.get(sys.platform, "libggml.so.0")
    return lib_dir / name


def llama_cpp_version(lib_dir: Path | None) -> str:
    """The llama.cpp build's ggml version and commit, from the library itself."""
    if lib_dir is None:
        return "unknown"
    try:
        lib = ctypes.CDLL(str(ggml_file(lib_dir)))
        lib.ggml_version.restype = ctypes.c_char_p
        lib.ggml_commit.restype = ctypes.c_char_p
        return f"ggml {lib.ggml_version().decode()} ({lib.ggml_commit().decode()})"
    except (OSError, AttributeError):
        pass
    # Another architecture's libraries (a cross build) do not load here;
    # scripts/build-llama-cpp.sh notes the same text beside them.
    try:
        return (lib_dir.parent / "ggml-version").read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def cpu_kernels(lib_dir: Path | None) -> str:
    """How the shipped llama.cpp picks its CPU code."""
    variants = len(list(lib_dir.glob("*ggml-cpu-*"))) if lib_dir else 0
    if variants:
        return f"{variants} variants, picked at start"
    return "compiled for the build machine's CPU"


def build_versions(lib_dir: Path | None = None) -> dict[str, str]:
    lib_dir = lib_dir or installed_lib_dir()
    return {
        "llamabin": _dist_version("llamabin"),
        "llama-cpp-python": _dist_version("llama-cpp-python"),
        "llama.cpp": llama_cpp_version(lib_dir),
        "cpu kernels": cpu_kernels(lib_dir),
        "pyinstaller": _dist_version("pyinstaller"),
    }
