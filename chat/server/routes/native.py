"""llama.cpp server's own endpoints, for clients written against it."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from functools import partial

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from chat import __version__
from chat.engine import Engine, Generation
from chat.server import adapters
from chat.server.connections import BodyWriter, body_writer
from chat.server.errors import errors_in_stream
from chat.server.generations import GenerationStream, plain_text
from chat.server.metrics import prometheus_text
from chat.server.routing import Router
from chat.server.state import ServerState
from chat.server.types import (
    DetokenizeRequest,
    DetokenizeResponse,
    Health,
    NativeCompletion,
    NativeCompletionRequest,
    Props,
    TokenizeRequest,
    TokenizeResponse,
)

router = Router(tag="llama.cpp")


@router.post("/completion", body=NativeCompletionRequest, response=NativeCompletion, streams="text/event-stream")
async def completion(body: NativeCompletionRequest, request: Request, st: ServerState) -> NativeCompletion | Response:
    gen = await st.generations.start(lambda: adapters.native_request(body, st.settings))
    if body.stream:
        return GenerationStream(errors_in_stream(_events(st, gen, body_writer(request.scope))), gen, st.generations)
    text, final, *_ = await st.generations.collect(gen, request)
    return adapters.native_completion(st.model_id, text, final)


async def _events(st: ServerState, gen: Generation, writer: BodyWriter | None) -> AsyncGenerator[str, None]:
    """llama.cpp's stream: pieces with stop false, then the summary with
    stop true; no [DONE] line."""
    async for chunk in st.generations.chunks(gen, direct=plain_text(writer, _piece)):
        if chunk.text:
            yield _piece(chunk.text)
        if chunk.finish_reason is not None:
            summary = adapters.native_completion(st.model_id, "", chunk)
            yield f"data: {summary.model_dump_json()}\n\n"


def _piece(text: str) -> str:
    return f"data: {json.dumps({'content': text, 'stop': False}, ensure_ascii=False)}\n\n"


PIECES_PER_STEP = 4096


@router.post("/tokenize", body=TokenizeRequest, response=TokenizeResponse)
async def tokenize(body: TokenizeRequest, request: Request, st: ServerState) -> Response:
    """Built and serialized in worker threads, and pieces a few thousand at
    a time with the event loop free in between: a few hundred thousand
    pieces are a long Python loop, which would otherwise hold the loop (and
    /health) for a second."""
    engine = st.engine
    generations = st.generations
    async with generations.admitted():
        tokens = await generations.in_thread(partial(engine.tokenize, body.content, add_bos=body.add_special))
        if not body.with_pieces:
            return Response(await generations.in_thread(partial(_json_tokens, tokens)), media_type="application/json")
        parts = []
        for start in range(0, len(tokens), PIECES_PER_STEP):
            step = tokens[start : start + PIECES_PER_STEP]
            parts.append(await generations.in_thread(partial(_json_pieces, engine, step)))
    return Response('{"tokens": [' + ",".join(p for p in parts if p) + "]}", media_type="application/json")


def _json_tokens(tokens: list[int]) -> str:
    return json.dumps({"tokens": tokens})


def _json_pieces(engine: Engine, tokens: list[int]) -> str:
    pieces = engine.pieces(tokens)
    return ",".join(json.dumps({"id": t, "piece": p}, ensure_ascii=False) for t, p in zip(tokens, pieces, strict=False))


@router.post("/detokenize", body=DetokenizeRequest, response=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, request: Request, st: ServerState) -> DetokenizeResponse:
    content = await st.generations.work(lambda: st.engine.detokenize(body.tokens))
    return DetokenizeResponse(content=content)


@router.get("/health", response=Health)
async def health(request: Request, st: ServerState) -> Health:
    stats = st.engine.stats()
    return Health(queue_depth=stats.queue_depth, busy=stats.busy)


@router.get("/props", response=Props)
async def props(request: Request, st: ServerState) -> Props:
    info = st.engine.info
    return Props(
        model=st.model_id,
        model_path=str(info.model_path),
        n_ctx=info.n_ctx,
        n_vocab=info.n_vocab,
        total_slots=info.n_parallel,
        chat_template=st.template.source,
        chat_template_name=st.template.name,
        build=f"llamabin {__version__}",
        api_key_required=st.settings.api_key is not None,
    )


@router.get("/metrics", media_type="text/plain")
async def metrics(request: Request, st: ServerState) -> PlainTextResponse:
    return PlainTextResponse(prometheus_text(st), media_type="text/plain; version=0.0.4; charset=utf-8")
