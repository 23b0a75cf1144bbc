"""Between the HTTP types and the engine's: requests in, chunks out.

The engine never sees OpenAI's shapes, and the routes never build a
`GenerationRequest` by hand: every field's meaning and default is decided
here, once.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from dataclasses import replace
from typing import Any

from chat.engine import Chunk, FinishReason, GenerationRequest, SamplingParams, Usage
from chat.engine.grammars import JSON_GBNF, json_schema_grammar
from chat.prompts import chat_prompt
from chat.server.errors import SERVER_ERROR, ApiError
from chat.server.settings import ServerSettings
from chat.server.types import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionRequest,
    CompletionUsage,
    Delta,
    NativeCompletion,
    NativeCompletionRequest,
    NativeTimings,
    ResponseFormat,
    SamplingFields,
)
from templates import ChatTemplate

# -- requests ------------------------------------------------------------------


def chat_request(
    req: ChatCompletionRequest,
    template: ChatTemplate,
    defaults: ServerSettings,
    special_texts: frozenset[str] = frozenset(),
    n_vocab: int | None = None,
) -> GenerationRequest:
    """Render the messages with the model's chat template; its end-of-turn
    strings join the client's stops. Message contents are plain text: one
    holding a control token's text (`special_texts`) cannot open a turn."""
    _refuse_unsupported(req)
    if req.tools:
        raise ApiError(400, "Tools are not supported by this server", param="tools")
    messages = [{"role": _role(m), "content": _text(m)} for m in req.messages]
    prompt = chat_prompt(template, messages, True, special_texts)
    grammar = _grammar(req.response_format)
    return GenerationRequest(
        prompt=prompt,
        sampling=replace(_openai_sampling(req, defaults, n_vocab), grammar=grammar),
        max_tokens=req.max_completion_tokens or req.max_tokens or defaults.max_tokens,
        stop=template.stop + _stops(req.stop),
    )


def completion_request(
    req: CompletionRequest, defaults: ServerSettings, n_vocab: int | None = None
) -> GenerationRequest:
    """The prompt as it is, no template: a raw continuation."""
    _refuse_unsupported(req)
    if req.suffix:
        raise ApiError(400, "suffix is not supported by this server", param="suffix")
    return GenerationRequest(
        prompt=completion_prompt(req),
        sampling=_openai_sampling(req, defaults, n_vocab),
        max_tokens=req.max_tokens or defaults.max_tokens,
        stop=_stops(req.stop),
    )


def completion_prompt(req: CompletionRequest) -> str | list[int]:
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]  # a list holding one prompt
    if not prompt:
        raise ApiError(400, "The prompt is empty", param="prompt")
    return prompt  # type: ignore[return-value]  # narrowed above: str or list[int]


def native_request(req: NativeCompletionRequest, defaults: ServerSettings, n_ctx: int) -> GenerationRequest:
    """llama.cpp's /completion fields onto the engine's."""
    if req.grammar and req.json_schema is not None:
        raise ApiError(400, "Give grammar or json_schema, not both", param="grammar")
    grammar = req.grammar or (json_schema_grammar(req.json_schema) if req.json_schema is not None else None)
    sampling = _sampling(
        defaults,
        temperature=req.temperature,
        top_k=req.top_k,
        top_p=req.top_p,
        min_p=req.min_p,
        repeat_penalty=req.repeat_penalty,
        repeat_last_n=n_ctx if req.repeat_last_n == -1 else req.repeat_last_n,
        seed=req.seed if req.seed is not None and req.seed >= 0 else None,  # -1: random, as in llama.cpp
        grammar=grammar,
    )
    if not req.prompt:
        raise ApiError(400, "The prompt is empty", param="prompt")
    n_predict = req.n_predict if req.n_predict > 0 else defaults.max_tokens
    return GenerationRequest(prompt=req.prompt, sampling=sampling, max_tokens=n_predict, stop=_stops(req.stop))


def _refuse_unsupported(req: SamplingFields) -> None:
    if req.n is not None and req.n > 1:
        raise ApiError(400, "Only n=1 is supported: this server generates one choice per request", param="n")
    if req.logprobs not in (None, False, 0):
        raise ApiError(400, "logprobs are not supported by this server", param="logprobs")


def _role(message: ChatMessage) -> str:
    # OpenAI's newer name for the system role; chat templates know only "system".
    return "system" if message.role == "developer" else message.role


def _text(message: ChatMessage) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "\n".join(part.text for part in message.content)


def _openai_sampling(req: SamplingFields, defaults: ServerSettings, n_vocab: int | None = None) -> SamplingParams:
    return _sampling(
        defaults,
        logit_bias=_logit_bias(req.logit_bias, n_vocab),
        temperature=req.temperature,
        top_k=req.top_k,
        top_p=req.top_p,
        min_p=req.min_p,
        repeat_penalty=req.repeat_penalty,
        frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty,
        seed=req.seed,
    )


def _sampling(defaults: ServerSettings, **given: Any) -> SamplingParams:
    """The server's defaults (the command line's sampling flags), with
    whatever the request gave in their place."""
    return replace(defaults.sampling, **{k: v for k, v in given.items() if v is not None})


def _logit_bias(given: dict[str, float] | None, n_vocab: int | None) -> tuple[tuple[int, float], ...] | None:
    """OpenAI's {"token id": bias} as (id, bias) pairs, each id a token of this model."""
    if not given:
        return None
    pairs = []
    for key, bias in given.items():
        token = int(key) if key.strip().isdigit() else -1
        if token < 0 or (n_vocab is not None and token >= n_vocab):
            limit = f" (0 to {n_vocab - 1})" if n_vocab is not None else ""
            raise ApiError(400, f"logit_bias: '{key}' is not a token id of this model{limit}", param="logit_bias")
        pairs.append((token, float(bias)))
    return tuple(pairs)


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    return tuple(s for s in stops if s)  # an empty stop string would end every answer at once


def _grammar(fmt: ResponseFormat | None) -> str | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return JSON_GBNF
    if fmt.json_schema is None:
        raise ApiError(400, "response_format json_schema needs a 'json_schema' object", param="response_format")
    return json_schema_grammar(fmt.json_schema.schema_)


# -- responses -------------------------------------------------------------------


class Ids:
    """The id and creation time shared by every chunk of one response."""

    def __init__(self, prefix: str) -> None:
        self.id = f"{prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())


def finish_reason(final: Chunk) -> str:
    """OpenAI's finish_reason for the engine's, or the error to report."""
    if final.finish_reason is FinishReason.ERROR:
        raise ApiError(500, f"generation failed: {final.error}", type=SERVER_ERROR)
    if final.finish_reason is FinishReason.CANCELLED:
        raise ApiError(503, "The generation was cancelled: the server is stopping", type=SERVER_ERROR)
    return "length" if final.finish_reason is FinishReason.LENGTH else "stop"


def usage(u: Usage | None) -> CompletionUsage:
    if u is None:
        return CompletionUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
    return CompletionUsage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.prompt_tokens + u.completion_tokens,
    )


def chat_completion(ids: Ids, model: str, text: str, final: Chunk) -> ChatCompletion:
    choice = ChatChoice(message=AssistantMessage(content=text), finish_reason=finish_reason(final))
    return ChatCompletion(id=ids.id, created=ids.created, model=model, choices=[choice], usage=usage(final.usage))


def chat_chunk(ids: Ids, model: str, delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
    choice = ChunkChoice(delta=delta, finish_reason=finish)
    return ChatCompletionChunk(id=ids.id, created=ids.created, model=model, choices=[choice])


def chat_usage_chunk(ids: Ids, model: str, final: Chunk) -> ChatCompletionChunk:
    """The extra last chunk `stream_options.include_usage` asks for."""
    return ChatCompletionChunk(id=ids.id, created=ids.created, model=model, choices=[], usage=usage(final.usage))


def completion(ids: Ids, model: str, text: str, finish: str | None, u: Usage | None) -> Completion:
    choice = CompletionChoice(text=text, finish_reason=finish)
    return Completion(id=ids.id, created=ids.created, model=model, choices=[choice], usage=usage(u) if u else None)


def native_completion(model: str, text: str, final: Chunk) -> NativeCompletion:
    reason = final.finish_reason
    if reason in (FinishReason.ERROR, FinishReason.CANCELLED):
        finish_reason(final)  # raises the matching error
    u = final.usage or Usage(0, 0, 0, 0.0, 0.0)
    return NativeCompletion(
        content=text,
        model=model,
        tokens_predicted=u.completion_tokens,
        tokens_evaluated=u.prompt_tokens,
        tokens_cached=u.cached_tokens,
        stop_type="limit" if reason is FinishReason.LENGTH else "eos",
        timings=NativeTimings(
            prompt_n=u.evaluated_prompt_tokens,
            prompt_ms=u.prompt_seconds * 1000,
            prompt_per_second=u.prompt_tokens_per_second,
            predicted_n=u.completion_tokens,
            predicted_ms=u.generation_seconds * 1000,
            predicted_per_second=u.generation_tokens_per_second,
        ),
    )


def encode_embedding(vec: list[float], encoding: str) -> list[float] | str:
    """Floats as they are, or OpenAI's base64 of little-endian float32s
    (what the official client asks for by default)."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
    return vec
