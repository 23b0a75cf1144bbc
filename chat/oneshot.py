"""One-shot front end: `--cli` (a raw completion) and `--ask` (a templated
question). Only the generated text goes to stdout."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from chat.conversation import Conversation
from chat.engine import Engine, GenerationRequest
from chat.errors import EXIT_INTERRUPTED, EXIT_OK, GenerationError, UsageError
from chat.session import resolve_template
from chat.settings import Mode, Settings
from templates import TemplateError


def run_oneshot(settings: Settings, engine: Engine) -> int:
    assert settings.prompt is not None
    if settings.mode is Mode.ASK:
        return _ask(engine, settings)
    return _complete(engine, settings)


def _complete(engine: Engine, settings: Settings) -> int:
    if settings.verbose_prompt:
        sys.stderr.write(settings.prompt or "")
        sys.stderr.flush()
    gen = engine.submit(
        GenerationRequest(prompt=settings.prompt or "", sampling=settings.sampling, max_tokens=settings.n_predict)
    )
    try:
        _write(c.text for c in gen)
    except KeyboardInterrupt:
        gen.cancel()
        return EXIT_INTERRUPTED
    final = gen.final
    if final is not None and final.error:
        raise GenerationError(final.error)
    return EXIT_OK


def _ask(engine: Engine, settings: Settings) -> int:
    conv = Conversation(
        engine,
        resolve_template(engine, settings),
        system_prompt=settings.system_prompt,
        sampling=settings.sampling,
        max_tokens=settings.n_predict,
    )
    try:
        reply = conv.ask(settings.prompt or "")
    # Some template faults show only once it renders the question (its own
    # raise_exception(), a size limit): the template is as unusable as one
    # that fails to load, and is reported the same way.
    except TemplateError as exc:
        raise UsageError(str(exc)) from None
    if settings.verbose_prompt:
        sys.stderr.write(conv.last_prompt)
        sys.stderr.flush()
    try:
        _write(reply)
    except KeyboardInterrupt:
        reply.cancel()
        return EXIT_INTERRUPTED
    return EXIT_OK


def _write(pieces: Iterable[str]) -> None:
    out = sys.stdout
    last = ""
    for piece in pieces:
        out.write(piece)
        out.flush()
        last = piece or last
    # A shell prompt should not land on the answer's last line, but a pipe
    # gets the completion byte for byte.
    if out.isatty() and not last.endswith("\n"):
        out.write("\n")
    out.flush()
