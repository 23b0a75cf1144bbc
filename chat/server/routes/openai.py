"""OpenAI's endpoints: chat completions, completions, models, embeddings."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from chat.engine import Generation
from chat.server import adapters
from chat.server.connections import BodyWriter, body_writer
from chat.server.embeddings import check_count, embed
from chat.server.errors import ApiError, errors_in_stream
from chat.server.generations import GenerationStream, plain_text
from chat.server.routing import Router
from chat.server.sse import DONE, TextEvents, sse
from chat.server.state import ServerState
from chat.server.types import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    Delta,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    ModelCard,
    ModelList,
)
from chat.toolcalls import CallSplitter, ToolCall

router = Router(prefix="/v1", tag="OpenAI")
SSE = "text/event-stream"


@router.post("/chat/completions", body=ChatCompletionRequest, response=ChatCompletion, streams=SSE)
async def chat_completions(body: ChatCompletionRequest, request: Request, st: ServerState) -> ChatCompletion | Response:
    use = adapters.tool_use(body)
    gen = await st.generations.start(
        lambda: adapters.chat_request(
            body, st.template, st.settings, st.engine.special_texts(), st.engine.info.n_vocab, use
        )
    )
    ids = adapters.Ids("chatcmpl")
    if body.stream:
        with_usage = bool(body.stream_options and body.stream_options.include_usage)
        writer = body_writer(request.scope)
        events = errors_in_stream(_chat_events(st, gen, ids, with_usage, use, bool(body.logprobs), writer), done=DONE)
        return GenerationStream(events, gen, st.generations)
    answer = await st.generations.collect(gen, request)
    logprobs = answer.logprobs if body.logprobs else None
    return adapters.chat_completion(ids, st.model_id, answer.text, answer.final, use, logprobs)


async def _chat_events(
    st: ServerState,
    gen: Generation,
    ids: adapters.Ids,
    with_usage: bool,
    use: adapters.ToolUse,
    logprobs: bool,
    writer: BodyWriter | None,
) -> AsyncGenerator[str, None]:
    """Content deltas as the text comes; with tools, any text that may be a
    call is held until the end, then sent as calls, or as text if it holds none.
    Plain text's events go straight out through `writer`, when there is one."""
    model = st.model_id
    splitter = CallSplitter(use.tools) if use.active else None
    yield sse(adapters.chat_chunk(ids, model, Delta(role="assistant", content="")))
    content = TextEvents(adapters.chat_chunk(ids, model, Delta(content="")), "content")
    direct = plain_text(writer, content.render) if splitter is None and not logprobs else None
    async for chunk in st.generations.chunks(gen, direct=direct):
        calls: list[ToolCall] = []
        text = splitter.feed(chunk.text) if splitter else chunk.text
        if chunk.finish_reason is not None and splitter:
            rest, calls = splitter.finish()
            text += rest
        if logprobs and (text or chunk.logprobs):  # every event then carries its logprobs, if only []
            yield sse(adapters.chat_chunk(ids, model, Delta(content=text), logprobs=list(chunk.logprobs)))
        elif text:
            yield content.render(text)
        for delta in adapters.call_deltas(calls):
            yield sse(adapters.chat_chunk(ids, model, delta))
        if chunk.finish_reason is not None:
            reason = adapters.finish_reason(chunk)
            yield sse(adapters.chat_chunk(ids, model, Delta(), "tool_calls" if calls else reason))
            if with_usage:
                yield sse(adapters.chat_usage_chunk(ids, model, chunk))


@router.post("/completions", body=CompletionRequest, response=Completion, streams=SSE)
async def completions(body: CompletionRequest, request: Request, st: ServerState) -> Completion | Response:
    # The prompt's length is checked as it is queued; only then is it
    # detokenized for the echo, off the event loop.
    gen = await st.generations.start(lambda: adapters.completion_request(body, st.settings, st.engine.info.n_vocab))
    try:
        echo = await anyio.to_thread.run_sync(_echo, st, body) if body.echo else ""
    except BaseException:
        st.generations.release(gen)
        raise
    ids = adapters.Ids("cmpl")
    if body.stream:
        with_usage = bool(body.stream_options and body.stream_options.include_usage)
        writer = body_writer(request.scope)
        events = errors_in_stream(_completion_events(st, gen, ids, echo, with_usage, body, writer), done=DONE)
        return GenerationStream(events, gen, st.generations)
    answer = await st.generations.collect(gen, request)
    scored = [*answer.prompt_logprobs, *answer.logprobs]
    logprobs = adapters.completion_logprobs(scored) if body.logprobs is not None else None
    finish = adapters.finish_reason(answer.final)
    return adapters.completion(ids, st.model_id, echo + answer.text, finish, answer.final.usage, logprobs)


def _echo(st: ServerState, body: CompletionRequest) -> str:
    prompt = adapters.completion_prompt(body)
    return prompt if isinstance(prompt, str) else st.engine.detokenize(prompt)


async def _completion_events(
    st: ServerState,
    gen: Generation,
    ids: adapters.Ids,
    echo: str,
    with_usage: bool,
    body: CompletionRequest,
    writer: BodyWriter | None,
) -> AsyncGenerator[str, None]:
    model = st.model_id
    scored = body.logprobs is not None
    offset = 0
    if echo and not scored:
        yield sse(adapters.completion(ids, model, echo, None, None))
    plain = TextEvents(adapters.completion(ids, model, "", None, None), "text")
    async for chunk in st.generations.chunks(gen, direct=None if scored else plain_text(writer, plain.render)):
        if scored and chunk.prompt_logprobs:  # the echo, with its tokens' logprobs
            echoed = adapters.completion_logprobs(list(chunk.prompt_logprobs))
            offset = len(echo)
            yield sse(adapters.completion(ids, model, echo, None, None, echoed))
        if scored and (chunk.text or chunk.logprobs):
            lp = adapters.completion_logprobs(list(chunk.logprobs), offset)
            offset += len(chunk.text)
            yield sse(adapters.completion(ids, model, chunk.text, None, None, lp))
        elif chunk.text:
            yield plain.render(chunk.text)
        if chunk.finish_reason is not None:
            yield sse(adapters.completion(ids, model, "", adapters.finish_reason(chunk), None))
            if with_usage:
                done = adapters.completion(ids, model, "", None, chunk.usage)
                yield sse(done.model_copy(update={"choices": []}))


@router.get("/models", response=ModelList)
async def models(request: Request, st: ServerState) -> ModelList:
    return ModelList(data=[_card(st)])


@router.get("/models/{name:path}", response=ModelCard)
async def model(request: Request, st: ServerState) -> ModelCard:
    name = request.path_params["name"]
    if name != st.model_id:
        message = f"The model '{name}' does not exist; this server has '{st.model_id}'"
        raise ApiError(404, message, param="model", code="model_not_found")
    return _card(st)


def _card(st: ServerState) -> ModelCard:
    return ModelCard(id=st.model_id, created=st.started)


@router.post("/embeddings", body=EmbeddingRequest, response=EmbeddingList)
async def embeddings(body: EmbeddingRequest, request: Request, st: ServerState) -> EmbeddingList:
    adapters.refuse_unknown(body)
    inputs = _embedding_inputs(body.input)
    width = st.engine.info.n_embd
    if body.dimensions is not None and body.dimensions != width:
        raise ApiError(400, f"This model's embeddings have {width} dimensions", param="dimensions")
    check_count(len(inputs), width)
    vectors, n_tokens = await embed(st, request, inputs)
    data = [
        Embedding(index=i, embedding=adapters.encode_embedding(v, body.encoding_format)) for i, v in enumerate(vectors)
    ]
    usage = EmbeddingUsage(prompt_tokens=n_tokens, total_tokens=n_tokens)
    return EmbeddingList(data=data, model=st.model_id, usage=usage)


def _embedding_inputs(items: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """OpenAI's four shapes of `input` as one list of texts or token lists."""
    if isinstance(items, str):
        return [items]
    if items and isinstance(items[0], int):
        return [[int(t) for t in items]]  # type: ignore[arg-type]  # a list of ints here
    return list(items)  # type: ignore[arg-type]  # a list of texts or of token lists
