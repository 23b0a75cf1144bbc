"""A chat template and its sandboxed rendering."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import jinja2.ext
from jinja2 import meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ._budget import BudgetedContext, stepped
from ._guards import (
    CheckedCodeGenerator,
    called,
    checked_call_args,
    checked_filters,
    checked_format,
    checked_lipsum,
    is_str_format,
)
from ._limits import (
    GUARDED_OPERATORS,
    CappedBuffer,
    LimitError,
    check_concat,
    check_constants,
    check_length,
    check_made,
    check_weight,
    checked_binop,
    join_capped,
    kind_of,
    longest_string,
    output_limit,
    take_joinable,
)


class TemplateError(Exception):
    """A chat template could not be loaded or rendered; the message is one line for the user."""


class _Rejected(Exception):
    """Raised by a template's own raise_exception() call, to tell it from a template bug."""


def _raise_exception(message: object) -> NoReturn:
    raise _Rejected(str(message))


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes <, > and & for HTML, which would corrupt
    # prompts; templates are written against the transformers filter instead.
    # The indent is repeated on every line and the text is taken piece by
    # piece, so `tojson(indent=1000000000)` is refused before it is made.
    check_length("tojson's indent", len(indent) if isinstance(indent, str) else indent or 0)
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    return "".join(take_joinable("", encoder.iterencode(value), "tojson"))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, failing at once on an unsafe attribute or on an
    operation past the size limits.

    The stock sandbox turns `x.__class__` into an undefined value that prints
    as empty text, so a probing template would render quietly; no honest chat
    template touches such attributes, so it is reported instead.
    """

    intercepted_binops = GUARDED_OPERATORS
    code_generator_class = CheckedCodeGenerator
    context_class = BudgetedContext

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe.")

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        return checked_binop(operator, left, right)

    # The context is always ours (see context_class), which Jinja's signature cannot say.
    def call(  # type: ignore[override]
        self, context: BudgetedContext, obj: Any, /, *args: Any, **kwargs: Any
    ) -> Any:
        # Every call, a macro's included, takes a step: a macro calling
        # itself twice makes work without a single loop.
        context.budget.step()
        made = super().call(context, obj, *checked_call_args(obj, args, kwargs), **kwargs)
        return check_made(lambda: called(obj), made)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        return checked_format(self, value) if is_str_format(value) else None

    # Called by the compiled template (CheckedCodeGenerator).
    def capped_buffer(self) -> CappedBuffer:
        return CappedBuffer()

    def checked_pieces(self, pieces: tuple[Any, ...]) -> tuple[Any, ...]:
        check_concat(pieces)
        return pieces

    def stepped(self, context: BudgetedContext, items: Any) -> Any:
        return stepped(context.budget, items)

    def built(self, value: Any) -> Any:
        return check_weight(lambda: f"building {kind_of(value)}", value)

    def printable(self, value: Any) -> Any:
        return value if type(value) is str else check_weight(lambda: f"printing {kind_of(value)}", value)


def _environment() -> ImmutableSandboxedEnvironment:
    # Same settings and helpers as Hugging Face transformers, since model
    # templates are written and tested against it.  The immutable sandbox stops
    # a downloaded template from reaching Python internals or mutating inputs.
    # keep_trailing_newline stays False there too, so neither do we set it.
    # optimized=False: the optimizer evaluates constant expressions and
    # filters while compiling, which would run a hostile template's work
    # (`"x" | center(1000000000)`) at load.  Jinja still folds constants in
    # `{{ }}` while compiling, but a refusal there only leaves the work for
    # rendering, where it is refused again and reported.
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols], optimized=False)
    env.filters = checked_filters(env.filters)
    env.filters["tojson"] = _tojson
    env.globals["lipsum"] = checked_lipsum(env.globals["lipsum"])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _stopped(name: str, exc: LimitError) -> TemplateError:
    return TemplateError(f"chat template '{name}' was stopped at a {exc.kind}: {_one_line(str(exc))}")


def _compile_failure(name: str, exc: Exception) -> TemplateError:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return TemplateError(
            f"chat template '{name}' is not valid Jinja (line {exc.lineno}: {_one_line(exc.message or '')})"
        )
    if isinstance(exc, LimitError):
        return _stopped(name, exc)
    if isinstance(exc, RecursionError):
        return TemplateError(f"chat template '{name}' is nested too deeply to compile")
    # Python's own SyntaxError (e.g. too many nested blocks) points into the
    # generated code, so only its message means anything to the user.
    reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    return TemplateError(f"chat template '{name}' cannot be compiled: {type(exc).__name__}: {_one_line(reason or '')}")


def compile_source(name: str, source: str) -> jinja2.Template:
    env = _environment()
    try:
        tree = env.parse(source)
        compiled = env.from_string(tree)
        check_constants(tree)
    # The source may be a downloaded file's: whatever it breaks while
    # compiling must reach the user as one line, not a traceback.
    except Exception as exc:
        raise _compile_failure(name, exc) from exc
    return compiled


def _render_failure(name: str, exc: Exception) -> TemplateError:
    if isinstance(exc, _Rejected):
        return TemplateError(f"chat template '{name}' rejected the conversation: {_one_line(str(exc))}")
    if isinstance(exc, LimitError):
        return _stopped(name, exc)
    if isinstance(exc, SecurityError):
        return TemplateError(f"chat template '{name}' tried an unsafe operation and was stopped: {_one_line(str(exc))}")
    return TemplateError(f"chat template '{name}' failed: {type(exc).__name__}: {_one_line(str(exc))}")


def _plain_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
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
    _uses_tools: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.stop:
            raise TemplateError(f"chat template '{self.name}' has no end-of-turn string to stop generation on")
        # Compiling up front reports a broken template when it is chosen, not
        # halfway through a chat.
        object.__setattr__(self, "_compiled", compile_source(self.name, self.source))
        object.__setattr__(
            self, "_uses_tools", "tools" in meta.find_undeclared_variables(_environment().parse(self.source))
        )

    @property
    def uses_tools(self) -> bool:
        """The template renders the `tools` it is given (and, presumably,
        tool calls and results): Qwen's, Llama 3.1's and Mistral's do."""
        return self._uses_tools

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Turn a conversation into prompt text, including any BOS text the
        template emits; `tools` in OpenAI's shape, for a template that uses them."""
        plain = _plain_messages(messages)
        try:
            pieces = self._compiled.generate(
                messages=plain,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                # None when there are none, like transformers, so `tools is
                # not none` checks in model templates behave.
                tools=[dict(t) for t in tools] if tools else None,
                documents=None,
            )
            limit = output_limit(plain) + (2 * len(json.dumps(tools)) if tools else 0)
            with longest_string(limit):
                return join_capped(pieces, limit)
        # The template is foreign code: any failure inside it, whatever its
        # type, is the template's fault and must reach the user as one line.
        except Exception as exc:
            raise _render_failure(self.name, exc) from exc
