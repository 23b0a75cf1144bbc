"""Domain errors and process exit codes, shared by every front end.

Each error carries the one line a user sees and the exit code the command
line uses for it; the server maps the same classes to HTTP statuses. The
base classes and the exit codes are the packer's too (payload.errors).
"""

from __future__ import annotations

from typing import TextIO

from payload.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, LlamabinError, UsageError

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "ContextAllocationError",
    "ContextLengthExceededError",
    "EngineClosedError",
    "GenerationError",
    "LlamabinError",
    "ModelFileError",
    "ModelMissingError",
    "OutputError",
    "UsageError",
]


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


class EngineClosedError(LlamabinError):
    """The engine was closed (the program is shutting down) before this call."""

    def __init__(self) -> None:
        super().__init__("the model is closed: the program is stopping")


class OutputError(LlamabinError):
    """Standard output cannot be written (a full disk, a closed pipe): the
    answer has nowhere to go, so the run ends rather than going on unseen."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(f"cannot write to standard output: {exc.strerror or exc}")
        self.broken_pipe = isinstance(exc, BrokenPipeError)


def write_out(out: TextIO, text: str) -> None:
    """`text` to `out`, flushed (streamed pieces must show as they arrive);
    a failure is an OutputError."""
    try:
        out.write(text)
        out.flush()
    except OSError as exc:
        raise OutputError(exc) from None


class GenerationError(LlamabinError):
    """llama.cpp failed while evaluating tokens."""
