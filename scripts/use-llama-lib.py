"""Make the installed llama-cpp-python load the given llama.cpp libraries.

    python scripts/use-llama-lib.py "$(scripts/build-llama-cpp.sh portable)/lib"

Replaces the package's lib/ folder with a copy of LIB_DIR, so that
`python -m chat`, the tests and the benchmarks run the very libraries (and
CPU-variant picker) a packaged file ships, whatever llama-cpp-python was
compiled with. The new folder is complete before it takes the old one's
place, so an interrupted run leaves one or the other, never a mix.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path


def package_dir() -> Path:
    # Located without importing it: importing would load the old libraries.
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("use-llama-lib: llama-cpp-python is not installed in this Python")
    return Path(list(spec.submodule_search_locations)[0])


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: use-llama-lib.py LIB_DIR (a folder from scripts/build-llama-cpp.sh)", file=sys.stderr)
        return 2
    source = Path(argv[0])
    # An empty path from a failed build would otherwise copy /lib itself.
    wanted = {"win32": "llama.dll", "darwin": "libllama.dylib"}.get(sys.platform, "libllama.so")
    if not (source / wanted).is_file():
        print(
            f"use-llama-lib: {source} holds no {wanted}: give the lib folder build-llama-cpp.sh prints", file=sys.stderr
        )
        return 2
    lib = package_dir() / "lib"
    fresh, old = lib.with_name("lib.new"), lib.with_name("lib.old")
    for leftover in (fresh, old):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(source, fresh, symlinks=False)
    if lib.exists():
        lib.rename(old)
    fresh.rename(lib)
    shutil.rmtree(old, ignore_errors=True)
    print(f"llama-cpp-python now loads {source}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
