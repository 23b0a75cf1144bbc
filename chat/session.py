"""What every front end starts from: the loaded engine and the chat
template resolved for it, once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import templates
from chat.engine import Engine
from chat.errors import UsageError

if TYPE_CHECKING:
    from templates import ChatTemplate


@dataclass(frozen=True)
class TemplateChoice:
    """The template asked for: a built-in name or a file (`--template`), the
    one built into a packaged file, or (both None) the model's own."""

    name: str | None = None
    baked: dict[str, str] | None = None

    def resolve(self, engine: Engine) -> ChatTemplate:
        try:
            if self.name is None and self.baked:
                return templates.from_source(self.baked["name"], self.baked["source"], engine.bos_text, engine.eos_text)
            return templates.resolve(self.name, engine.info.metadata, engine.bos_text, engine.eos_text)
        except templates.TemplateError as exc:
            raise UsageError(str(exc)) from None


@dataclass(frozen=True)
class Session:
    """The engine and its template: what the chat, `--ask` and the server
    share. Whoever made it closes the engine."""

    engine: Engine
    template: ChatTemplate
