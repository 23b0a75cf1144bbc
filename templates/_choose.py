"""Finding the chat template to use: built-in, from a file, or the model's own."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from . import _sources
from ._chat import ChatTemplate, TemplateError
from ._sources import BUILTIN_NAMES

# Each built-in's Jinja text and the end-of-turn strings its format uses.
_BUILTINS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "alpaca": (_sources.ALPACA, ("### Instruction:",)),
    "chatml": (_sources.CHATML, ("<|im_end|>",)),
    "gemma": (_sources.GEMMA, ("<end_of_turn>",)),
    "llama3": (_sources.LLAMA3, ("<|eot_id|>",)),
}

# End-of-turn markers of common chat formats.  A model's own template names
# the one it uses, so spotting it in the source tells where replies end even
# when the vocabulary's EOS token is a different one.
_TURN_END_MARKERS: tuple[str, ...] = (
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|end|>",
    "<|END_OF_TURN_TOKEN|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "### Instruction:",
)

_GGUF_TEMPLATE_KEY = "tokenizer.chat_template"


def _names() -> str:
    return ", ".join(BUILTIN_NAMES)


def _with_eos(stop: tuple[str, ...], eos_token: str) -> tuple[str, ...]:
    if eos_token and eos_token not in stop:
        return (*stop, eos_token)
    return stop


def builtin(name: str, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """One of the templates shipped with llamabin."""
    if name not in _BUILTINS:
        raise TemplateError(f"unknown built-in template '{name}': use one of {_names()}")
    source, stop = _BUILTINS[name]
    # Only Alpaca has no end-of-turn marker of its own: replies end with EOS.
    if name == "alpaca":
        stop = _with_eos(stop, eos_token)
    return ChatTemplate(name, "builtin", source, bos_token, eos_token, stop)


def detect_stop(source: str, eos_token: str = "") -> tuple[str, ...]:
    """End-of-turn strings for a template we did not write, found in its text."""
    found = tuple(marker for marker in _TURN_END_MARKERS if marker in source)
    stop = _with_eos(found, eos_token)
    if not stop:
        raise TemplateError(
            "cannot tell where the model's replies end: its template names no known "
            f"end-of-turn marker and it has no EOS token; choose a template with one of {_names()}"
        )
    return stop


def _from_text(name: str, origin: str, source: str, bos_token: str, eos_token: str) -> ChatTemplate:
    return ChatTemplate(name, origin, source, bos_token, eos_token, detect_stop(source, eos_token))


def from_source(name: str, source: str, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """A Jinja template given as text, e.g. one built into a packaged file."""
    return _from_text(name, "file", source, bos_token, eos_token)


def from_file(path: str | os.PathLike[str], bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """A Jinja chat template read from a UTF-8 file."""
    file = Path(path)
    try:
        source = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TemplateError(f"cannot read template file '{file}': {reason}") from exc
    return _from_text(file.name, "file", source, bos_token, eos_token)


def _by_architecture(metadata: Mapping[str, str]) -> str:
    architecture = str(metadata.get("general.architecture", "")).lower()
    if architecture.startswith("gemma"):
        return "gemma"
    # The "llama" architecture covers Llama 1, 2 and 3 and many fine-tunes;
    # only Llama 3's tokenizer pre-processing marks the Llama 3 chat format.
    if architecture == "llama" and metadata.get("tokenizer.ggml.pre") == "llama-bpe":
        return "llama3"
    return "chatml"


def _chosen(choice: str, bos_token: str, eos_token: str) -> ChatTemplate:
    if choice in _BUILTINS:
        return builtin(choice, bos_token, eos_token)
    if os.path.isfile(choice):
        return from_file(choice, bos_token, eos_token)
    raise TemplateError(f"unknown template '{choice}': use one of {_names()}, or a path to a Jinja file")


def resolve(choice: str | None, metadata: Mapping[str, str], bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """The template the user chose, else the model's own, else a built-in fitting the model."""
    if choice is not None:
        return _chosen(choice, bos_token, eos_token)
    own = metadata.get(_GGUF_TEMPLATE_KEY)
    if isinstance(own, str) and own.strip():
        return _from_text("gguf", "gguf", own, bos_token, eos_token)
    return builtin(_by_architecture(metadata), bos_token, eos_token)
