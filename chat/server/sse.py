"""Server-sent events: one JSON object per event, as OpenAI streams them.

Most events of a stream differ only in their text: one token's content.
Building and serializing the response models for each cost the event loop,
which shares the cores with the model's threads, about 0.08 ms of CPU per
token (2-core Xeon, 2026-12-06). So the event is rendered once through its
model, with empty text, and each token's text is spliced into that
rendering, JSON-escaped: the same object.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

DONE = "data: [DONE]\n\n"


def sse(event: BaseModel) -> str:
    return f"data: {event.model_dump_json()}\n\n"


class TextEvents:
    """The events of one stream that carry only a text field (`field`),
    made from `blank`: the event with that field empty."""

    def __init__(self, blank: BaseModel, field: str) -> None:
        rendered = sse(blank)
        empty = f'"{field}":""'
        # A string value's own quotes are escaped, so the key with its empty
        # value is found once, as a key, or the model is not of this shape.
        if rendered.count(empty) != 1:
            raise ValueError(f"{type(blank).__name__} has no single empty {field!r} to fill")
        head, _, self._tail = rendered.partition(empty)
        self._head = f'{head}"{field}":'

    def render(self, text: str) -> str:
        return self._head + json.dumps(text, ensure_ascii=False) + self._tail
