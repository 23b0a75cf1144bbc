"""Versions recorded in every build's manifest, for `inspect` and bug reports."""

from __future__ import annotations

import ctypes
from importlib import metadata
from pathlib import Path


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def llama_cpp_version() -> str:
    """The vendored llama.cpp's ggml version and commit, from the library itself."""
    try:
        import llama_cpp

        lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml.so.0"))
        lib.ggml_version.restype = ctypes.c_char_p
        lib.ggml_commit.restype = ctypes.c_char_p
        return f"ggml {lib.ggml_version().decode()} ({lib.ggml_commit().decode()})"
    except (OSError, AttributeError, ImportError):
        return "unknown"


def build_versions() -> dict[str, str]:
    return {
        "llamabin": _dist_version("llamabin"),
        "llama-cpp-python": _dist_version("llama-cpp-python"),
        "llama.cpp": llama_cpp_version(),
        "pyinstaller": _dist_version("pyinstaller"),
    }
