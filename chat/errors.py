"""Domain errors and process exit codes, shared by every front end.

Each error carries the one line a user sees and the exit code the command
line uses for it; the server maps the same classes to HTTP statuses.
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


class ModelFileError(LlamabinError):
    """The model file is missing, unreadable, not a GGUF, or damaged."""


class ModelMissingError(ModelFileError):
    exit_code = EXIT_USAGE


class ContextAllocationError(LlamabinError):
    """The context (KV cache) could not be allocated, usually for lack of memory."""


class ContextLengthExceededError(LlamabinError):
    """A prompt does not fit in the context window."""

    def __init__(self, n_prompt: int, n_ctx: int) -> None:
        super().__init__(
            f"the prompt is {n_prompt} tokens, more than the context of {n_ctx} tokens"
            " allows (raise it with -c, or shorten the prompt)"
        )
        self.n_prompt = n_prompt
        self.n_ctx = n_ctx


class GenerationError(LlamabinError):
    """llama.cpp failed while evaluating tokens."""
