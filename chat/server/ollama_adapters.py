"""Between Ollama's API and the engine: requests in, Ollama's bodies out.

As adapters.py does for OpenAI's shapes, every field's meaning is decided
here once; the routes only move data. Ollama names a model NAME:TAG, so the
loaded model answers to its own name and to NAME:latest.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from chat.engine import Chunk, EngineInfo, GenerationRequest, SamplingParams, Usage
from chat.engine.grammars import JSON_GBNF, json_schema_grammar
from chat.prompts import chat_prompt
from chat.server.adapters import checked_tools
from chat.server.adapters import finish_reason as done_reason
from chat.server.errors import ApiError
from chat.server.ollama_types import ChatRequest, Format, GenerateRequest, Options
from chat.server.settings import ServerSettings
from chat.toolcalls import Tool, ToolCall, ToolChoice, Turn, prompt_messages
from templates import ChatTemplate

LATEST = ":latest"


def check_model(name: str | None, model_id: str) -> None:
    """The loaded model under its own name or NAME:latest; else Ollama's 404
    (or its 400, when no model is named)."""
    if not name:
        raise ApiError(400, "model is required", param="model")
    if name not in (model_id, model_id + LATEST):
        raise ApiError(404, f"model '{name}' not found: this server has '{model_id}{LATEST}'", param="model")


# -- requests ------------------------------------------------------------------


def tools_of(req: ChatRequest) -> tuple[Tool, ...]:
    """The request's tools, checked (Ollama has no tool_choice: the model
    decides, as OpenAI's "auto")."""
    return checked_tools(req.tools, ToolChoice("auto"))


def chat_request(
    req: ChatRequest, template: ChatTemplate, defaults: ServerSettings, special_texts: frozenset[str]
) -> GenerationRequest:
    if req.think:
        raise ApiError(400, "think is not supported: this model has no thinking mode", param="think")
    if any(m.images for m in req.messages):
        raise ApiError(400, "images are not supported: this model reads text only", param="images")
    if not req.messages:
        raise ApiError(400, "messages is empty", param="messages")
    turns = [
        Turn(
            m.role,
            m.content,
            tuple(ToolCall(c.function.name, c.function.arguments) for c in m.tool_calls or ()),
            name=m.tool_name,
        )
        for m in req.messages
    ]
    messages, tools = prompt_messages(turns, tools_of(req), template.uses_tools)
    prompt = chat_prompt(template, messages, True, special_texts, tools)
    return _request(prompt, req.options, req.format, defaults, template.stop)


def calls_out(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Calls as Ollama's messages carry them: arguments as an object."""
    return [{"function": {"index": i, "name": c.name, "arguments": dict(c.arguments)}} for i, c in enumerate(calls)]


def generate_request(
    req: GenerateRequest, template: ChatTemplate, defaults: ServerSettings, special_texts: frozenset[str]
) -> GenerationRequest:
    """The prompt through the model's chat template (with `system`), or as
    it is with `raw`, as Ollama does."""
    for field, value in (("suffix", req.suffix), ("template", req.template), ("context", req.context)):
        if value:
            raise ApiError(400, f"{field} is not supported by this server", param=field)
    if req.images:
        raise ApiError(400, "images are not supported: this model reads text only", param="images")
    if req.think:
        raise ApiError(400, "think is not supported: this model has no thinking mode", param="think")
    if not req.prompt:
        raise ApiError(400, "prompt is empty", param="prompt")
    if req.raw:
        return _request(req.prompt, req.options, req.format, defaults, ())
    messages = ([{"role": "system", "content": req.system}] if req.system else []) + [
        {"role": "user", "content": req.prompt}
    ]
    prompt = chat_prompt(template, messages, True, special_texts)
    return _request(prompt, req.options, req.format, defaults, template.stop)


def _request(
    prompt: Any, options: Options | None, fmt: Format, defaults: ServerSettings, stops: tuple[str, ...]
) -> GenerationRequest:
    o = options or Options.model_validate({})
    sampling = replace(_sampling(o, defaults.sampling), grammar=_grammar(fmt))
    # num_predict -1 (until the end) and -2 (fill the context) both mean no
    # limit of the request's own here; num_ctx cannot change per request.
    max_tokens = o.num_predict if o.num_predict is not None and o.num_predict > 0 else defaults.max_tokens
    return GenerationRequest(
        prompt=prompt, sampling=sampling, max_tokens=max_tokens, stop=stops + tuple(s for s in (o.stop or []) if s)
    )


def _sampling(o: Options, base: SamplingParams) -> SamplingParams:
    given: dict[str, Any] = {
        "temperature": o.temperature,
        "top_k": o.top_k,
        "top_p": o.top_p,
        "min_p": o.min_p,
        "repeat_penalty": o.repeat_penalty,
        "repeat_last_n": o.repeat_last_n,  # -1, the whole context, as the engine takes it
        "frequency_penalty": o.frequency_penalty,
        "presence_penalty": o.presence_penalty,
        "seed": o.seed if o.seed is not None and o.seed >= 0 else None,
    }
    return replace(base, **{k: v for k, v in given.items() if v is not None})


def _grammar(fmt: Format) -> str | None:
    if not fmt:
        return None
    if fmt == "json":
        return JSON_GBNF
    assert isinstance(fmt, dict)
    return json_schema_grammar(fmt)


# -- responses -------------------------------------------------------------------


def now(at: float | None = None) -> str:
    """Ollama's timestamps: RFC 3339, UTC; the current time, or `at` (a Unix time)."""
    moment = datetime.now(timezone.utc) if at is None else datetime.fromtimestamp(at, timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def stats(final: Chunk, started: float) -> dict[str, Any]:
    """The counts and durations (nanoseconds) of a finished answer."""
    u = final.usage or Usage(0, 0, 0, 0.0, 0.0)
    return {
        "done_reason": done_reason(final),
        "total_duration": int((time.monotonic() - started) * 1e9),
        "load_duration": 0,  # loaded once, at start
        "prompt_eval_count": u.prompt_tokens,
        "prompt_eval_duration": int(u.prompt_seconds * 1e9),
        "eval_count": u.completion_tokens,
        "eval_duration": int(u.generation_seconds * 1e9),
    }


def chat_piece(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "created_at": now(), "message": {"role": "assistant", "content": text}, "done": False}


def generate_piece(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "created_at": now(), "response": text, "done": False}


def details(info: EngineInfo) -> dict[str, Any]:
    arch = info.metadata.get("general.architecture", "")
    return {
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch] if arch else [],
        "parameter_size": info.metadata.get("general.size_label", ""),
        "quantization_level": info.description.split()[-1] if info.description else "",
    }


def digest(info: EngineInfo) -> str:
    """Stands for the weights in listings: the file's name and size."""
    return hashlib.sha256(f"{info.model_path.name}\0{info.size_bytes}".encode()).hexdigest()


def listing(model: str, info: EngineInfo, started: int) -> dict[str, Any]:
    """The model as /api/tags and /api/ps list it."""
    return {
        "name": model + LATEST,
        "model": model + LATEST,
        "modified_at": now(started),
        "size": info.size_bytes,
        "digest": digest(info),
        "details": details(info),
    }


def show(info: EngineInfo, template: ChatTemplate, started: int) -> dict[str, Any]:
    arch = info.metadata.get("general.architecture", "")
    return {
        "modelfile": "",
        "parameters": "",
        "template": template.source,
        "details": details(info),
        "model_info": {
            "general.architecture": arch,
            f"{arch}.context_length": info.n_ctx_train,
            f"{arch}.embedding_length": info.n_embd,
        },
        # Tools work with every template: in its own format or the documented one.
        "capabilities": ["completion", "embedding", "tools"],
        "modified_at": now(started),
    }
