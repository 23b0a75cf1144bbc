"""The packager's errors: the message is shown to the user as is, and the
class names the exit code (the shared bases in payload.errors)."""

from __future__ import annotations

from payload.errors import LlamabinError


class BuildError(LlamabinError):
    """A build, inspect, upgrade or set failed for a reason the user can act on (exit 1)."""
