#!/usr/bin/env python3
"""Print the requirements a clone's venv installs, one per line: llamabin's
own dependencies but the runtime wheel (a clone freezes its runtime from the
sources), and those of the extras named.

    python3 scripts/dev-requirements.py runtime build test bench > requirements.txt

The Makefile installs these and then llamabin itself with --no-deps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_WHEEL = "llamabin-runtime"


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"dev-requirements: no such extra: {', '.join(unknown)} (have {', '.join(optional)})")
    found: list[str] = []
    for req in project["dependencies"] + [r for e in extras for r in optional[e]]:
        name = req.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()
        if name != RUNTIME_WHEEL and req not in found:
            found.append(req)
    return found


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
