"""A chat template and its sandboxed rendering."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import jinja2.ext
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(Exception):
    """A chat template could not be loaded or rendered; the message is one line for the user."""


class _Rejected(Exception):
    """Raised by a template's own raise_exception() call, to tell it from a template bug."""


def _raise_exception(message: object) -> NoReturn:
    raise _Rejected(str(message))


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes <, > and & for HTML, which would corrupt
    # prompts; templates are written against the transformers filter instead.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, failing at once on an unsafe attribute.

    The stock sandbox turns `x.__class__` into an undefined value that prints
    as empty text, so a probing template would render quietly; no honest chat
    template touches such attributes, so it is reported instead.
    """

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")


def _environment() -> ImmutableSandboxedEnvironment:
    # Same settings and helpers as Hugging Face transformers, since model
    # templates are written and tested against it.  The immutable sandbox stops
    # a downloaded template from reaching Python internals or mutating inputs.
    # keep_trailing_newline stays False there too, so neither do we set it.
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _one_line(text: str) -> str:
    return " ".join(text.split())


def compile_source(name: str, source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"chat template '{name}' is not valid Jinja (line {exc.lineno}: {_one_line(exc.message or '')})"
        ) from exc


def _render_failure(name: str, exc: Exception) -> TemplateError:
    if isinstance(exc, _Rejected):
        return TemplateError(f"chat template '{name}' rejected the conversation: {_one_line(str(exc))}")
    if isinstance(exc, SecurityError):
        return TemplateError(
            f"chat template '{name}' tried an unsafe operation and was stopped: {_one_line(str(exc))}"
        )
    return TemplateError(f"chat template '{name}' failed: {type(exc).__name__}: {_one_line(str(exc))}")


def _plain_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise TemplateError(f"message {index} needs a 'role' and a 'content'")
    return [dict(message) for message in messages]


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template plus what the engine needs to use it."""

    name: str
    origin: str
    source: str
    bos_token: str
    eos_token: str
    stop: tuple[str, ...]
    _compiled: jinja2.Template = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.stop:
            raise TemplateError(
                f"chat template '{self.name}' has no end-of-turn string to stop generation on"
            )
        # Compiling up front reports a broken template when it is chosen, not
        # halfway through a chat.
        object.__setattr__(self, "_compiled", compile_source(self.name, self.source))

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """Turn a conversation into prompt text, including any BOS text the template emits."""
        plain = _plain_messages(messages)
        try:
            return self._compiled.render(
                messages=plain,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                # Passed as None, like transformers, so `tools is not none`
                # checks in model templates behave.
                tools=None,
                documents=None,
            )
        # The template is foreign code: any failure inside it, whatever its
        # type, is the template's fault and must reach the user as one line.
        except Exception as exc:
            raise _render_failure(self.name, exc) from exc
