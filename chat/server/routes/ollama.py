"""Ollama's API on the same server and model: chat, generate, embeddings,
and the listings its clients read first (Open WebUI, Continue, Copilot's
Ollama provider). Answers stream as NDJSON, one object a line, unless
`"stream": false`; errors are Ollama's `{"error": "..."}` (errors.py).
A body is read as JSON whatever its Content-Type, as Ollama's own
`curl -d` examples send it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat.engine import Generation, GenerationRequest
from chat.server import ollama_adapters as ad
from chat.server.connections import BodyWriter, body_writer
from chat.server.embeddings import check_count, embed
from chat.server.errors import errors_in_stream
from chat.server.generations import GenerationStream, plain_text
from chat.server.ollama_types import ChatRequest, EmbeddingsRequest, EmbedRequest, GenerateRequest, ShowRequest
from chat.server.routing import Router
from chat.server.settings import ServerSettings
from chat.server.state import ServerState
from chat.toolcalls import CallSplitter, Tool, ToolCall, split_calls
from templates import ChatTemplate

router = Router(prefix="/api", tag="Ollama", any_content_type=True)
# Ollama clients compare the server's version with a minimum of their own;
# the shapes here are those the `ollama` Python client 0.6.3 reads (tests).
OLLAMA_VERSION = "0.6.4"
Answered = TypeVar("Answered", ChatRequest, GenerateRequest)


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


@router.get("/version")
async def version(request: Request, st: ServerState) -> dict[str, str]:
    return {"version": OLLAMA_VERSION}


@router.get("/tags")
async def tags(request: Request, st: ServerState) -> dict[str, Any]:
    return {"models": [ad.listing(st.model_id, st.engine.info, st.started)]}


@router.get("/ps")
async def ps(request: Request, st: ServerState) -> dict[str, Any]:
    running = ad.listing(st.model_id, st.engine.info, st.started)
    running.update(expires_at="9999-12-31T23:59:59Z", size_vram=0, context_length=st.engine.info.n_ctx)
    return {"models": [running]}


@router.post("/show", body=ShowRequest)
async def show(body: ShowRequest, request: Request, st: ServerState) -> dict[str, Any]:
    ad.check_model(body.model or body.name, st.model_id)
    return ad.show(st.engine.info, st.template, st.started)


@router.post("/chat", body=ChatRequest, streams="application/x-ndjson")
async def chat(body: ChatRequest, request: Request, st: ServerState) -> Response:
    return await _answer(st, request, body, ad.chat_request, ad.chat_piece, ad.tools_of(body))


@router.post("/generate", body=GenerateRequest, streams="application/x-ndjson")
async def generate(body: GenerateRequest, request: Request, st: ServerState) -> Response:
    return await _answer(st, request, body, ad.generate_request, ad.generate_piece)


async def _answer(
    st: ServerState,
    request: Request,
    body: Answered,
    adapt: Callable[[Answered, ChatTemplate, ServerSettings, frozenset[str]], GenerationRequest],
    piece: Callable[[str, str], dict[str, Any]],
    tools: tuple[Tool, ...] = (),
) -> Response:
    """One answer to /api/chat or /api/generate: NDJSON pieces, or one
    object. With tools, calls found in the answer go in its message."""
    ad.check_model(body.model, st.model_id)
    specials = st.engine.special_texts()
    started = time.monotonic()
    gen = await st.generations.start(lambda: adapt(body, st.template, st.settings, specials))
    if body.stream:
        pieces = _pieces(st, gen, body.model, piece, started, tools, body_writer(request.scope))
        lines = errors_in_stream(pieces, encode=lambda e: _line(e.ollama_body()))
        return GenerationStream(lines, gen, st.generations, "application/x-ndjson")
    text, final, *_ = await st.generations.collect(gen, request)
    text, calls = split_calls(text, tools) if tools else (text, [])
    answer = piece(body.model, text)
    if calls:
        answer["message"]["tool_calls"] = ad.calls_out(calls)
    answer.update(done=True, **ad.stats(final, started))
    return JSONResponse(answer)


async def _pieces(
    st: ServerState,
    gen: Generation,
    model: str,
    piece: Callable[[str, str], dict[str, Any]],
    started: float,
    tools: tuple[Tool, ...],
    writer: BodyWriter | None,
) -> AsyncGenerator[str, None]:
    """The answer's pieces, then the last object with done and the counts;
    text that may be a call is held until the end, as for OpenAI's. Plain
    pieces go straight out through `writer`, when there is one."""
    splitter = CallSplitter(tools) if tools else None
    direct = plain_text(writer, lambda text: _line(piece(model, text))) if splitter is None else None
    async for chunk in st.generations.chunks(gen, direct=direct):
        text = splitter.feed(chunk.text) if splitter else chunk.text
        calls: list[ToolCall] = []
        if chunk.finish_reason is not None and splitter:
            rest, calls = splitter.finish()
            text += rest
        if text:
            yield _line(piece(model, text))
        if calls:
            called = piece(model, "")
            called["message"]["tool_calls"] = ad.calls_out(calls)
            yield _line(called)
        if chunk.finish_reason is not None:
            last = piece(model, "")
            last.update(done=True, **ad.stats(chunk, started))
            yield _line(last)


@router.post("/embed", body=EmbedRequest)
async def embed_route(body: EmbedRequest, request: Request, st: ServerState) -> dict[str, Any]:
    ad.check_model(body.model, st.model_id)
    started = time.monotonic()
    inputs: list[str | list[int]] = [body.input] if isinstance(body.input, str) else list(body.input)
    check_count(len(inputs), st.engine.info.n_embd)
    vectors, n_tokens = await embed(st, request, inputs, truncate=body.truncate)
    return {
        "model": body.model,
        "embeddings": vectors,
        "total_duration": int((time.monotonic() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": n_tokens,
    }


@router.post("/embeddings", body=EmbeddingsRequest)
async def embeddings(body: EmbeddingsRequest, request: Request, st: ServerState) -> dict[str, Any]:
    ad.check_model(body.model, st.model_id)
    (vector,), _ = await embed(st, request, [body.prompt])
    return {"embedding": vector}
