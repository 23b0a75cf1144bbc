"""The error base classes and process exit codes of both commands.

`llamabin build`/`inspect`/`upgrade`/`set` (the packer) and a built file
(the runtime) show an error the same way: one line, `llamabin: error:
MESSAGE`, and the exit code the error class names.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class LlamabinError(Exception):
    """An error whose message is fit to show a user as it is."""

    exit_code = EXIT_RUNTIME


class UsageError(LlamabinError):
    """The command line asked for something impossible (exit 2)."""

    exit_code = EXIT_USAGE
