"""Embeddings for both APIs: the inputs' vectors, one input at a time, under
the same admission limit as generations."""

from __future__ import annotations

from functools import partial

from starlette.requests import Request

from chat.server.errors import ApiError
from chat.server.state import ServerState

# A 10 KB request listing many short inputs would otherwise ask for tens of
# megabytes of JSON: the answer's numbers are capped (about 20 MB as JSON).
MAX_EMBEDDING_VALUES = 1 << 20


def check_count(n_inputs: int, width: int, param: str = "input") -> None:
    if n_inputs * width > MAX_EMBEDDING_VALUES:
        raise ApiError(
            400,
            f"At most {MAX_EMBEDDING_VALUES // width} inputs per request for this model's"
            f" {width}-dimensional embeddings",
            param=param,
            code="too_many_inputs",
        )


async def embed(
    st: ServerState, request: Request, inputs: list[str | list[int]], truncate: bool = False
) -> tuple[list[list[float]], int]:
    """(the vectors, the tokens read). A client that leaves stops the work.
    `truncate`: an input too long for the model is cut to its first tokens
    (Ollama's default) rather than refused."""
    engine = st.engine
    vectors: list[list[float]] = []
    n_tokens = 0
    async with st.generations.admitted():
        for item in inputs:
            if await request.is_disconnected():
                raise ApiError(400, "The client closed the connection")
            tokens = item if isinstance(item, list) else await st.generations.in_thread(partial(engine.tokenize, item))
            if truncate:
                tokens = tokens[: engine.embed_limit]
            vectors += await st.generations.in_thread(partial(engine.embed, [tokens]))
            n_tokens += len(tokens)
    return vectors, n_tokens
