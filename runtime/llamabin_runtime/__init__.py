"""llamabin's runtime for one target: the executable `llamabin build` copies
and puts a model into, and runtime.json, what it is (target, versions, sha256).

The executable is not Python: this package only carries it, so that pip
picks the one for the machine it installs on by the wheel's platform tag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def metadata() -> dict[str, Any]:
    """runtime.json: target, llamabin version, versions inside, sha256, executable name."""
    data: dict[str, Any] = json.loads((HERE / "runtime.json").read_text(encoding="utf-8"))
    return data


def executable() -> Path:
    return HERE / str(metadata()["executable"])
