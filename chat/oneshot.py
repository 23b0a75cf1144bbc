"""One-shot front end: `--cli` (a raw completion) and `--ask` (a templated
question). Only the generated text goes to stdout."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

import templates
from chat.conversation import ConversationOptions
from chat.engine import Engine, FinishReason, GenerationRequest
from chat.engine.types import Usage
from chat.errors import EXIT_INTERRUPTED, EXIT_OK, OutputError, UsageError, write_out
from chat.session import Session


@dataclass(frozen=True)
class OneShotOptions:
    prompt: str  # already read from -p, -f or stdin
    conversation: ConversationOptions  # its sampling and length; --ask also its system prompt
    verbose_prompt: bool = False  # echo the prompt as the model sees it on stderr
    notices: bool = True  # say on stderr when an answer was cut short (not with --log-disable)


def run_completion(engine: Engine, options: OneShotOptions) -> int:
    """`--cli`: the prompt as it is, no template; the completion on stdout."""
    if options.verbose_prompt:
        sys.stderr.write(options.prompt)
        sys.stderr.flush()
    request = GenerationRequest(
        prompt=options.prompt, sampling=options.conversation.sampling, max_tokens=options.conversation.max_tokens
    )
    gen = engine.submit(request)
    try:
        _write(c.text for c in gen)
    except KeyboardInterrupt:
        gen.cancel()
        return EXIT_INTERRUPTED
    except OutputError:
        gen.cancel()
        raise
    if gen.final is not None:
        gen.final.raise_error()
        # A raw completion stops at -n as asked; but text a grammar (--json)
        # shapes is incomplete when cut, and a script should hear of it.
        if request.sampling.grammar and gen.final.finish_reason is FinishReason.LENGTH:
            _cut_short(options, gen.final.usage)
    return EXIT_OK


def run_ask(session: Session, options: OneShotOptions) -> int:
    """`--ask`: one question through the chat template; the answer on stdout."""
    conv = options.conversation.start(session)
    try:
        reply = conv.ask(options.prompt)
    # Some template faults show only once it renders the question (its own
    # raise_exception(), a size limit): the template is as unusable as one
    # that fails to load, and is reported the same way.
    except templates.TemplateError as exc:
        raise UsageError(str(exc)) from None
    if options.verbose_prompt:
        sys.stderr.write(conv.last_prompt)
        sys.stderr.flush()
    try:
        _write(reply)
    except KeyboardInterrupt:
        reply.cancel()
        return EXIT_INTERRUPTED
    except OutputError:
        reply.cancel()
        raise
    if reply.finish_reason is FinishReason.LENGTH:
        _cut_short(options, reply.usage)
    return EXIT_OK


def _cut_short(options: OneShotOptions, usage: Usage | None) -> None:
    """Say which limit ended the answer: the engine calls both "length"."""
    if options.notices:
        limit = options.conversation.max_tokens
        made = usage.completion_tokens if usage is not None else None
        if limit is not None and made is not None and made >= limit:
            why = f"the -n {limit} token limit"
        else:
            why = "the end of the context (raise it with -c)"
        sys.stderr.write(f"llamabin: note: the answer was cut short at {why}\n")


def _write(pieces: Iterable[str]) -> None:
    out = sys.stdout
    last = ""
    for piece in pieces:
        write_out(out, piece)
        last = piece or last
    # A shell prompt should not land on the answer's last line, but a pipe
    # gets the completion byte for byte.
    if out.isatty() and not last.endswith("\n"):
        write_out(out, "\n")
