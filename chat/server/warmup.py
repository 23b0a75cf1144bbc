"""The first chat request's one-time work, done once the server is open.

A chat request's path builds things on first use: the request and chunk
models' validators and serializers (pydantic builds them when first used,
which keeps them out of the start), and the control tokens' texts (a walk
of the whole vocabulary: 15 ms for SmolLM2, 0.1 s for Gemma 3). Done here,
on the thread that opened the server, a user's first message does not wait
for them. A request that comes meanwhile does what is not done yet, and
the two share what is: the engine computes the texts once, under a lock.
"""

from __future__ import annotations

from chat.server import adapters
from chat.server.sse import TextEvents
from chat.server.state import ServerState
from chat.server.types import ChatCompletionRequest, Delta

_HELLO = {"messages": [{"role": "user", "content": "Hello"}], "stream": True}


def warm_up(state: ServerState) -> None:
    """Run a chat request's path up to the engine, without queueing it."""
    body = ChatCompletionRequest.model_validate(_HELLO)
    use = adapters.tool_use(body)
    adapters.chat_request(
        body, state.template, state.settings, state.engine.special_texts(), state.engine.info.n_vocab, use
    )
    ids = adapters.Ids("chatcmpl")
    TextEvents(adapters.chat_chunk(ids, state.model_id, Delta(content="")), "content").render("Hello")
