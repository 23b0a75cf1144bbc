"""The runtime executable: `python -m chat` frozen by PyInstaller.

It is the same for every model, so it is built once per source version and
cached under build/runtime/; each model's file is a copy of it with the
weights inserted.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packager.errors import BuildError
from packager.versions import build_versions, ggml_file

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "build.spec"
SOURCES = ("chat", "payload", "templates", "build.spec")
RUNTIME_NAME = "llamabin-runtime"
LIBLLAMA = {"win32": "llama.dll", "darwin": "libllama.dylib"}.get(sys.platform, "libllama.so")


def installed_lib_dir() -> Path | None:
    """The installed llama-cpp-python's lib/ folder (found without importing
    it), which `make setup` fills with the portable libraries."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
    return lib if (lib / LIBLLAMA).is_file() else None


def has_cpu_variants(lib_dir: Path) -> bool:
    """Whether the CPU kernels come as one library per CPU level (portable)."""
    return any(lib_dir.glob("*ggml-cpu-*"))


def check_lib_dir(lib_dir: Path | None) -> Path | None:
    """A --llama-lib folder must hold what llama-cpp-python opens."""
    if lib_dir is None:
        return None
    if not lib_dir.is_dir():
        raise BuildError(f"--llama-lib: no such folder: {lib_dir}")
    if not (lib_dir / LIBLLAMA).is_file() or not ggml_file(lib_dir).is_file():
        raise BuildError(
            f"--llama-lib: {lib_dir} has no {LIBLLAMA} and {ggml_file(lib_dir).name};"
            " give the lib folder that scripts/build-llama-cpp.sh prints"
        )
    return lib_dir.resolve()


def source_hash(lib_dir: Path | None = None) -> str:
    """Changes whenever anything frozen into the runtime changes."""
    h = hashlib.sha256(repr(sorted(build_versions(lib_dir).items())).encode())
    for loader in _bootloaders():  # a patched bootloader keeps PyInstaller's version number
        h.update(hashlib.sha256(loader.read_bytes()).digest())
    if lib_dir is not None:
        for path in sorted(lib_dir.iterdir()):
            h.update(path.name.encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    for rel in SOURCES:
        base = ROOT / rel
        files = sorted(base.rglob("*")) if base.is_dir() else [base]
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(ROOT)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _bootloaders() -> list[Path]:
    spec = importlib.util.find_spec("PyInstaller")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "bootloader").glob("*/run*"))


def runtime_executable(lib_dir: Path | None = None, verbose: bool = False) -> Path:
    """The cached runtime for the current sources and llama.cpp libraries
    (`lib_dir`, or the installed wheel's), built if missing."""
    if not SPEC.is_file():
        raise BuildError(f"llamabin build needs its source tree ({SPEC} is missing)")
    out_dir = ROOT / "build" / "runtime" / source_hash(lib_dir)
    exe = out_dir / (RUNTIME_NAME + (".exe" if os.name == "nt" else ""))
    if exe.is_file():
        with contextlib.suppress(OSError):
            os.utime(out_dir)  # recently used: kept by prune()
        return exe
    # Each build freezes in a private directory and renames the result into
    # place, so two builds at once never read a half-written runtime.
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".building-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "INFO" if verbose else "WARN",
            "--distpath",
            str(Path(tmp) / "dist"),
            "--workpath",
            str(Path(tmp) / "work"),
            str(SPEC),
        ]
        env = dict(os.environ)
        env.pop("LLAMABIN_LLAMA_LIB", None)
        if lib_dir is not None:
            env["LLAMABIN_LLAMA_LIB"] = str(lib_dir)  # build.spec reads it
        result = subprocess.run(cmd, capture_output=not verbose, text=True, cwd=ROOT, env=env)
        built = Path(tmp) / "dist" / exe.name
        if result.returncode != 0 or not built.is_file():
            tail = (result.stderr or "").strip().splitlines()[-1:] if not verbose else []
            raise BuildError("PyInstaller failed to build the runtime" + (f": {tail[0]}" if tail else ""))
        os.replace(built, exe)
    prune(out_dir.parent, keep=out_dir)
    return exe


KEEP_RUNTIMES = 4  # enough to switch between a few branches without rebuilding


def prune(runtimes: Path, keep: Path) -> None:
    """Remove all but the KEEP_RUNTIMES most recently used runtimes: each is
    about 30 MB, and every change to the sources makes a new one."""
    others = [d for d in runtimes.iterdir() if d.is_dir() and not d.name.startswith(".") and d != keep]
    others.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    for old in others[KEEP_RUNTIMES - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
