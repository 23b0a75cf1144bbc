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


def make_private_dir(path: Path) -> None:
    """Create `path` and any missing parents as directories only this user
    can enter (0700, whatever the umask): the packaged file's bootloader
    refuses a cache directory that others can write."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made meanwhile by another launch
        directory.chmod(0o700)  # mkdir's mode is masked by the umask


def history_file() -> Path:
    return data_dir() / "history"
