"""llama-cpp-python's own server, run on the venv's portable libraries.

    python bench/llama_cpp_server.py --model MODEL.gguf ...   (its own flags)

The venv's llama-cpp-python ships no llama.cpp of its own: it loads the
portable build, whose CPU kernels nothing loads until asked. llamabin's
picker loads them (the same variant the file would run), then the server
starts as `python -m llama_cpp.server` would.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat.engine import backends  # noqa: E402

if __name__ == "__main__":
    backends.load()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
