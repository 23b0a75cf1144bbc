"""The packager's one error type: its message is shown to the user as is."""

from __future__ import annotations


class BuildError(Exception):
    """A build or inspect failed for a reason the user can act on."""
