"""Server-sent events spliced from a rendering: the same objects as the models'."""

from __future__ import annotations

import json

import pytest

from chat.server import adapters
from chat.server.sse import TextEvents, sse
from chat.server.types import Delta

TEXTS = [
    "Hello",
    "",
    ' "quoted" ',
    "line\nbreak\ttab",
    "\x00\x01\x1f\x7f",
    "héllo 世界 🦙",
    "\\",
    "</s>",
    '"content":""',
]


def event(rendered: str) -> object:
    assert rendered.startswith("data: ") and rendered.endswith("\n\n")
    return json.loads(rendered[len("data: ") : -2])


@pytest.mark.parametrize("text", TEXTS)
def test_a_chat_content_event_is_the_models_own(text: str) -> None:
    ids = adapters.Ids("chatcmpl")
    model = 'a "model" named "content":""'  # the key's text inside a value does not confuse it
    events = TextEvents(adapters.chat_chunk(ids, model, Delta(content="")), "content")
    assert event(events.render(text)) == event(sse(adapters.chat_chunk(ids, model, Delta(content=text))))


@pytest.mark.parametrize("text", TEXTS)
def test_a_completion_text_event_is_the_models_own(text: str) -> None:
    ids = adapters.Ids("cmpl")
    events = TextEvents(adapters.completion(ids, "m", "", None, None), "text")
    assert event(events.render(text)) == event(sse(adapters.completion(ids, "m", text, None, None)))


def test_a_model_without_the_empty_field_is_refused() -> None:
    ids = adapters.Ids("chatcmpl")
    with pytest.raises(ValueError, match="no single empty 'content'"):
        TextEvents(adapters.chat_chunk(ids, "m", Delta(content="x")), "content")
