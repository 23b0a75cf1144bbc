"""The real `--server`, with one fault injected: the model's load waits
until the test creates a file, so the test sees the port while it loads.

    python tests/slowload.py GATE_FILE [llamabin flags...]

If GATE_FILE holds "fail", the load fails as a corrupt model would.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import chat.loading
from chat.cli import main
from chat.engine import Engine
from chat.errors import ModelFileError
from chat.settings import Settings

_real_open_engine = chat.loading.open_engine


def _gated_open_engine(settings: Settings) -> Engine:
    gate = Path(sys.argv[1])
    while not gate.exists():
        time.sleep(0.02)
    if gate.read_text().strip() == "fail":
        raise ModelFileError(f"cannot load model {settings.model.path}: injected failure")
    return _real_open_engine(settings)


if __name__ == "__main__":
    chat.loading.open_engine = _gated_open_engine
    sys.exit(main(sys.argv[2:]))
