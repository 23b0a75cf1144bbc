"""Where llamabin keeps its files: the one place that knows.

LLAMABIN_HOME overrides everything (tests point it at a temporary
directory); otherwise platformdirs picks the platform's usual places.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "llamabin"


class NoHomeError(OSError):
    """There is no home to keep files in (HOME unset and no passwd entry,
    as under `docker run --user 54321`): callers go on without keeping any."""


def _base(kind: str) -> Path:
    home = os.environ.get("LLAMABIN_HOME")
    if home:
        return Path(home) / kind
    try:
        if kind == "data":
            return Path(platformdirs.user_data_dir(APP, appauthor=False))
        return Path(platformdirs.user_cache_dir(APP, appauthor=False))
    except RuntimeError as exc:  # platformdirs' way of saying "no home"
        raise NoHomeError(str(exc)) from None


def data_dir() -> Path:
    return _base("data")


def cache_dir() -> Path:
    return _base("cache")


def history_file() -> Path:
    return data_dir() / "history"
