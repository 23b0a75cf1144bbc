"""Chat prompts whose messages stay text.

A rendered chat template is tokenized with special-token parsing on, so
that its `<|im_start|>` becomes the control token it stands for. A message
that contains the same characters would become a control token too: a user
could close their turn and open a system one. So a message's content is
tokenized as plain text whenever it holds such a text. Prompts without one
(all ordinary ones) are tokenized as a whole, exactly as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from chat.engine.types import PromptPart
from chat.errors import UsageError

if TYPE_CHECKING:
    from templates import ChatTemplate

# Private-use characters that mark where each message's content starts and
# ends in the rendered text (a content's own copies of them are dropped).
OPEN, CLOSE = "\ue000", "\ue001"


def chat_prompt(
    template: ChatTemplate,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool,
    special_texts: frozenset[str],
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str | tuple[PromptPart, ...]:
    """The prompt for `messages`: a plain string when no content holds a
    control token's text, else parts in which contents are plain text.

    Tools, and the tool calls of messages, are rendered by the template as
    JSON it lays out itself, where no content can be marked as text: one
    holding a control token's text is refused."""
    _refuse_specials_in_tools(messages, tools, special_texts)
    if not any(s in m.get("content", "") for m in messages for s in special_texts):
        return template.render(messages, add_generation_prompt=add_generation_prompt, tools=tools)
    marked = [{**m, "content": OPEN + _unmarked(m.get("content", "")) + CLOSE} for m in messages]
    rendered = template.render(marked, add_generation_prompt=add_generation_prompt, tools=tools)
    parts: list[PromptPart] = []
    for i, piece in enumerate(rendered.split(OPEN)):
        content, sep, rest = piece.partition(CLOSE) if i else ("", "", piece)
        if sep:
            parts.append(PromptPart(content, special=False))
        parts.append(PromptPart(rest if sep or i == 0 else piece, special=True))
    return tuple(p for p in parts if p.text)


def _refuse_specials_in_tools(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None, special_texts: frozenset[str]
) -> None:
    calls = [m["tool_calls"] for m in messages if m.get("tool_calls")]
    for what, value in (("tools", tools), ("tool_calls", calls)):
        if value and any(s in json.dumps(value, ensure_ascii=False) for s in special_texts):
            raise UsageError(f"{what} hold the text of one of the model's control tokens")


def _unmarked(text: str) -> str:
    return text.replace(OPEN, "").replace(CLOSE, "")
