"""Start-up shared by every front end: the engine and the chat template."""

from __future__ import annotations

import sys

from chat.engine import Engine
from chat.errors import UsageError
from chat.settings import Settings
from templates import ChatTemplate, TemplateError, from_source, resolve


def open_engine(settings: Settings) -> Engine:
    if not settings.log_disable and settings.verbose:
        print(f"loading {settings.model.path}", file=sys.stderr)
    return Engine(settings.engine_config())


def resolve_template(engine: Engine, settings: Settings) -> ChatTemplate:
    baked = settings.baked_template
    try:
        if settings.template is None and baked:
            return from_source(baked["name"], baked["source"], engine.bos_text, engine.eos_text)
        return resolve(settings.template, engine.model.metadata, engine.bos_text, engine.eos_text)
    except TemplateError as exc:
        raise UsageError(str(exc)) from None
