"""Between the HTTP types and the engine's: requests in, chunks out.

The engine never sees OpenAI's shapes, and the routes never build a
`GenerationRequest` by hand: every field's meaning and default is decided
here, once.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from chat.engine import Chunk, FinishReason, GenerationRequest, SamplingParams, TokenChoice, TokenLogprob, Usage
from chat.engine.grammars import JSON_GBNF, json_schema_grammar
from chat.engine.types import PromptPart
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
    ChoiceLogprobs,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionUsage,
    Delta,
    EmbeddingRequest,
    FunctionCallOut,
    FunctionDelta,
    NativeCompletion,
    NativeCompletionRequest,
    NativeTimings,
    PromptTokensDetails,
    ResponseFormat,
    SamplingFields,
    ToolCallDelta,
    ToolCallIn,
    ToolCallOut,
    ToolDef,
    TopLogprob,
)
from chat.server.types import TokenLogprob as TokenLogprobOut
from chat.toolcalls import (
    CALL_OPEN,
    Tool,
    ToolCall,
    ToolChoice,
    ToolError,
    Turn,
    call_grammar,
    check_tools,
    prompt_messages,
    split_calls,
)
from templates import ChatTemplate

# -- requests ------------------------------------------------------------------


@dataclass(frozen=True)
class ToolUse:
    """The tools a chat request offers and how it lets the model use them."""

    tools: tuple[Tool, ...] = ()
    choice: ToolChoice = ToolChoice("none")

    @property
    def active(self) -> bool:
        """Calls may be in the answer, so it is searched for them."""
        return bool(self.tools) and self.choice.mode != "none"


def tool_use(req: ChatCompletionRequest) -> ToolUse:
    """OpenAI's tools and tool_choice, checked: 400s name what is wrong."""
    given = req.tool_choice
    if given is not None and not req.tools and given != "none":
        raise ApiError(400, "tool_choice needs tools: none were given", param="tool_choice")
    if given is None:
        choice = ToolChoice("auto" if req.tools else "none")
    elif isinstance(given, str):
        choice = ToolChoice(given)
    else:
        choice = ToolChoice("function", given.function.name)
    return ToolUse(checked_tools(req.tools, choice), choice)


def checked_tools(defs: Sequence[ToolDef] | None, choice: ToolChoice) -> tuple[Tool, ...]:
    """The tools of a request in OpenAI's shape (Ollama's is the same), or a
    400 naming the one that cannot be offered."""
    tools = tuple(
        Tool(d.function.name, d.function.description or "", d.function.parameters)
        if d.function.parameters
        else Tool(d.function.name, d.function.description or "")
        for d in defs or ()
    )
    try:
        check_tools(tools, choice)
    except ToolError as exc:
        raise ApiError(400, str(exc), param=exc.param) from None
    return tools


def chat_request(
    req: ChatCompletionRequest,
    template: ChatTemplate,
    defaults: ServerSettings,
    special_texts: frozenset[str] = frozenset(),
    n_vocab: int | None = None,
    use: ToolUse = ToolUse(),
) -> GenerationRequest:
    """Render the messages (and tools) with the model's chat template; its
    end-of-turn strings join the client's stops. Message contents are plain
    text: one holding a control token's text (`special_texts`) cannot open
    a turn. A required call is constrained to the tools' schemas."""
    _refuse_unsupported(req)
    if req.top_logprobs is not None and not req.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    offered = use.tools if use.choice.mode != "none" else ()
    messages, tools = prompt_messages([_turn(m, i) for i, m in enumerate(req.messages)], offered, template.uses_tools)
    prompt = chat_prompt(template, messages, True, special_texts, tools)
    grammar = _grammar(req.response_format)
    if use.choice.forced:
        if grammar is not None:
            raise ApiError(400, "response_format cannot be used with a required tool call", param="response_format")
        grammar = call_grammar(use.tools, use.choice)
        if not template.uses_tools:  # the documented format: the call's opening tag is given
            prompt = _extended(prompt, CALL_OPEN + "\n")
    return GenerationRequest(
        prompt=prompt,
        sampling=replace(_openai_sampling(req, defaults, n_vocab), grammar=grammar),
        max_tokens=req.max_completion_tokens or req.max_tokens or defaults.max_tokens,
        stop=template.stop + _stops(req.stop),
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
    )


def _extended(prompt: str | tuple[PromptPart, ...], text: str) -> str | tuple[PromptPart, ...]:
    return prompt + text if isinstance(prompt, str) else (*prompt, PromptPart(text, special=True))


def _turn(message: ChatMessage, index: int) -> Turn:
    calls = tuple(_call_in(c, index, i) for i, c in enumerate(message.tool_calls or ()))
    if calls and message.role != "assistant":
        raise ApiError(400, f"messages[{index}]: only assistant messages carry tool_calls", param=f"messages[{index}]")
    if message.role == "tool" and not message.tool_call_id:
        raise ApiError(
            400, f"messages[{index}]: a tool message needs the tool_call_id it answers", param=f"messages[{index}]"
        )
    return Turn(_role(message), _text(message), calls, message.tool_call_id, message.name)


def _call_in(call: ToolCallIn, index: int, i: int) -> ToolCall:
    where = f"messages[{index}].tool_calls[{i}].function.arguments"
    try:
        arguments = json.loads(call.function.arguments or "{}")
    except (ValueError, RecursionError):
        raise ApiError(400, f"{where}: not valid JSON", param=where) from None
    if not isinstance(arguments, dict):
        raise ApiError(400, f"{where}: must be a JSON object", param=where)
    return ToolCall(call.function.name, arguments, call.id)


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
        logprobs=req.logprobs,
        prompt_logprobs=req.echo and req.logprobs is not None,
    )


def completion_prompt(req: CompletionRequest) -> str | list[int]:
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]  # a list holding one prompt
    if not prompt:
        raise ApiError(400, "The prompt is empty", param="prompt")
    return prompt  # type: ignore[return-value]  # narrowed above: str or list[int]


def native_request(req: NativeCompletionRequest, defaults: ServerSettings) -> GenerationRequest:
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
        repeat_last_n=req.repeat_last_n,  # -1, the whole context, as the engine takes it
        seed=req.seed if req.seed is not None and req.seed >= 0 else None,  # -1: random, as in llama.cpp
        grammar=grammar,
    )
    if not req.prompt:
        raise ApiError(400, "The prompt is empty", param="prompt")
    n_predict = req.n_predict if req.n_predict > 0 else defaults.max_tokens
    return GenerationRequest(prompt=req.prompt, sampling=sampling, max_tokens=n_predict, stop=_stops(req.stop))


# OpenAI's fields this server does not have, and why; given with a value
# (not null, false or empty), each is refused by name.
UNSUPPORTED: dict[str, str] = {
    "audio": "audio output is not supported: this model writes text",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "this model has no reasoning setting",
    "verbosity": "this model has no verbosity setting",
    "web_search_options": "web search is not supported",
    "functions": "functions are not supported: use tools",
    "function_call": "function_call is not supported: use tool_choice",
    "store": "stored completions are not supported",
    "metadata": "metadata is for stored completions, which are not supported",
    "service_tier": "service tiers are not supported",
}
# Accepted as they are: hints that change nothing here.
HARMLESS = frozenset({"prompt_cache_key", "safety_identifier"})


def refuse_unknown(req: SamplingFields | EmbeddingRequest) -> None:
    """A field this server does not know gets a 400 naming it, never silence."""
    for name, value in (req.model_extra or {}).items():
        if name in HARMLESS:
            continue
        if name in UNSUPPORTED:
            if value in (None, False, "", [], {}) or (name == "modalities" and value == ["text"]):
                continue
            raise ApiError(400, f"{name}: {UNSUPPORTED[name]}", param=name, code="unsupported_parameter")
        raise ApiError(400, f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter")


def _refuse_unsupported(req: SamplingFields) -> None:
    refuse_unknown(req)
    if req.n is not None and req.n > 1:
        raise ApiError(400, "Only n=1 is supported: this server generates one choice per request", param="n")


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
        digits = key.strip()
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses, and "١٢", which it reads as 12.
        token = int(digits) if digits.isascii() and digits.isdigit() else -1
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
    if final.finish_reason is FinishReason.ERROR and final.bad_request:
        raise ApiError(400, final.error or "the request cannot go on")
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
        prompt_tokens_details=PromptTokensDetails(cached_tokens=u.cached_tokens),
    )


def chat_completion(
    ids: Ids, model: str, text: str, final: Chunk, use: ToolUse, logprobs: list[TokenLogprob] | None
) -> ChatCompletion:
    reason = finish_reason(final)
    calls: list[ToolCall] = []
    if use.active:
        text, calls = split_calls(text, use.tools)
    message = AssistantMessage(
        content=text or None if calls else text, tool_calls=[_call_out(c) for c in calls] or None
    )
    choice = ChatChoice(
        message=message,
        finish_reason="tool_calls" if calls else reason,
        logprobs=chat_logprobs(logprobs) if logprobs is not None else None,
    )
    return ChatCompletion(id=ids.id, created=ids.created, model=model, choices=[choice], usage=usage(final.usage))


def _call_out(call: ToolCall) -> ToolCallOut:
    return ToolCallOut(id=call.id, function=FunctionCallOut(name=call.name, arguments=call.arguments_json))


def call_deltas(calls: list[ToolCall]) -> list[Delta]:
    """Each call as two deltas, its name and then its arguments, as OpenAI
    streams them (the client's helpers join the pieces by index)."""
    deltas = []
    for i, call in enumerate(calls):
        named = ToolCallDelta(
            index=i, id=call.id, type="function", function=FunctionDelta(name=call.name, arguments="")
        )
        deltas.append(Delta(tool_calls=[named]))
        deltas.append(Delta(tool_calls=[ToolCallDelta(index=i, function=FunctionDelta(arguments=call.arguments_json))]))
    return deltas


def chat_chunk(
    ids: Ids, model: str, delta: Delta, finish: str | None = None, logprobs: list[TokenLogprob] | None = None
) -> ChatCompletionChunk:
    lp = chat_logprobs(logprobs) if logprobs is not None else None
    choice = ChunkChoice(delta=delta, finish_reason=finish, logprobs=lp)
    return ChatCompletionChunk(id=ids.id, created=ids.created, model=model, choices=[choice])


def _piece(choice: TokenChoice) -> TopLogprob:
    text = choice.piece.decode("utf-8", errors="replace")
    return TopLogprob(token=text, logprob=choice.logprob or 0.0, bytes=list(choice.piece))


def chat_logprobs(items: list[TokenLogprob]) -> ChoiceLogprobs:
    """The engine's logprobs in the chat shape: one entry per token."""
    content = []
    for item in items:
        chosen = _piece(item.chosen)
        top = [_piece(t) for t in item.top]
        content.append(
            TokenLogprobOut(token=chosen.token, logprob=chosen.logprob, bytes=chosen.bytes, top_logprobs=top)
        )
    return ChoiceLogprobs(content=content)


def completion_logprobs(items: list[TokenLogprob], offset: int = 0) -> CompletionLogprobs:
    """The legacy shape: parallel lists, and where each token's text begins
    in the choice's text (counted from `offset`). A prompt's first token has
    no logprob, nor alternatives: null, as OpenAI's echo gives it."""
    tokens, values, tops, offsets = [], [], [], []
    for item in items:
        text = item.chosen.piece.decode("utf-8", errors="replace")
        tokens.append(text)
        values.append(item.chosen.logprob)
        known = item.chosen.logprob is not None
        tops.append({t.piece.decode("utf-8", errors="replace"): t.logprob or 0.0 for t in item.top} if known else None)
        offsets.append(offset)
        offset += len(text)
    return CompletionLogprobs(tokens=tokens, token_logprobs=values, top_logprobs=tops, text_offset=offsets)


def chat_usage_chunk(ids: Ids, model: str, final: Chunk) -> ChatCompletionChunk:
    """The extra last chunk `stream_options.include_usage` asks for."""
    return ChatCompletionChunk(id=ids.id, created=ids.created, model=model, choices=[], usage=usage(final.usage))


def completion(
    ids: Ids, model: str, text: str, finish: str | None, u: Usage | None, logprobs: CompletionLogprobs | None = None
) -> Completion:
    choice = CompletionChoice(text=text, finish_reason=finish, logprobs=logprobs)
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
