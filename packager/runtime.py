"""The runtime executable: `python -m chat` frozen by PyInstaller.

It is the same for every model, so it is built once per source version and
cached under build/runtime/; each model's file is a copy of it with the
weights inserted.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from packager.errors import BuildError
from packager.versions import build_versions

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "build.spec"
SOURCES = ("chat", "templates", "packager/layout.py", "build.spec")
RUNTIME_NAME = "llamabin-runtime"


def source_hash() -> str:
    """Changes whenever anything frozen into the runtime changes."""
    h = hashlib.sha256(repr(sorted(build_versions().items())).encode())
    for rel in SOURCES:
        base = ROOT / rel
        files = sorted(base.rglob("*")) if base.is_dir() else [base]
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(ROOT)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def runtime_executable(verbose: bool = False) -> Path:
    """The cached runtime for the current sources, built if missing."""
    if not SPEC.is_file():
        raise BuildError(f"llamabin build needs its source tree ({SPEC} is missing)")
    out_dir = ROOT / "build" / "runtime" / source_hash()
    exe = out_dir / (RUNTIME_NAME + (".exe" if os.name == "nt" else ""))
    if exe.is_file():
        return exe
    # Each build freezes in a private directory and renames the result into
    # place, so two builds at once never read a half-written runtime.
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".building-") as tmp:
        cmd = [
            sys.executable, "-m", "PyInstaller", "--noconfirm",
            "--log-level", "INFO" if verbose else "WARN",
            "--distpath", str(Path(tmp) / "dist"), "--workpath", str(Path(tmp) / "work"), str(SPEC),
        ]
        result = subprocess.run(cmd, capture_output=not verbose, text=True, cwd=ROOT)
        built = Path(tmp) / "dist" / exe.name
        if result.returncode != 0 or not built.is_file():
            tail = (result.stderr or "").strip().splitlines()[-1:] if not verbose else []
            raise BuildError("PyInstaller failed to build the runtime" + (f": {tail[0]}" if tail else ""))
        os.replace(built, exe)
    return exe
