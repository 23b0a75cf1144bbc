"""Request and response bodies, shaped like OpenAI's and llama.cpp's.

These are the HTTP contract and nothing else: `adapters.py` turns them into
the engine's own types. Validation is strict (no "0.5" for a number, no NaN)
and bounded (no million-element lists), so a bad request fails here with a
400 instead of deep inside the engine. A request's own unknown fields are
kept (`extra="allow"`) for adapters.py to refuse by name; unknown fields of
the messages inside it are ignored, since clients send back a previous
answer's message as it came (`refusal`, `annotations`).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from chat.engine.types import MAX_REPEAT_WINDOW, MAX_TOP_K

MAX_MESSAGES = 4096
MAX_STOPS = 16
MAX_EMBED_INPUTS = 2048
MAX_TOKEN_IDS = 1 << 20
MAX_LOGIT_BIAS = 1024  # OpenAI allows 300
MAX_TOOLS = 128
MAX_TOP_LOGPROBS = 20  # OpenAI's limit

PositiveInt = Annotated[int, Field(gt=0)]
TokenIds = Annotated[list[int], Field(max_length=MAX_TOKEN_IDS)]
Stop = str | Annotated[list[str], Field(max_length=MAX_STOPS)] | None


# Every model builds its validator and serializer when first used
# (defer_build), not at import: building all of them took about 30 ms of
# each server's start, and a request needs only its own few.
# This module (and ollama_types) has no `from __future__ import annotations`:
# Python evaluates each annotation as the class is made, faster than pydantic
# evaluating them from strings (about 5 ms of a start for these 60 models).
class _Request(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore", populate_by_name=True, defer_build=True)


class _Options(_Request):
    """A request's top level, whose unknown fields adapters.py refuses by name."""

    model_config = ConfigDict(extra="allow")  # the rest as _Request's: pydantic merges them


class _Response(BaseModel):
    model_config = ConfigDict(populate_by_name=True, defer_build=True)


class _Sparse(_Response):
    """A response part that leaves out its unset fields, as OpenAI's do."""

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


# -- shared sampling fields ---------------------------------------------------


class SamplingFields(_Options):
    temperature: float | None = Field(None, ge=0, le=2, description="0 picks the likeliest token.")
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, le=MAX_TOP_K, description="llama.cpp extension; 0 turns it off.")
    min_p: float | None = Field(None, ge=0, le=1, description="llama.cpp extension.")
    repeat_penalty: float | None = Field(None, ge=0, le=10, description="llama.cpp extension.")
    seed: int | None = None
    stop: Stop = Field(None, description="Up to 16 strings that end the answer.")
    presence_penalty: float | None = Field(
        None, ge=-2, le=2, description="Over the last repeat_last_n tokens, as llama.cpp applies it; 0 turns it off."
    )
    frequency_penalty: float | None = Field(
        None, ge=-2, le=2, description="Over the last repeat_last_n tokens, as llama.cpp applies it; 0 turns it off."
    )
    logit_bias: (
        Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]], Field(max_length=MAX_LOGIT_BIAS)] | None
    ) = Field(None, description="Token id (as a string) to a bias from -100 (never) to 100 (always).")
    n: int | None = Field(None, ge=1, description="Only 1 is supported.")
    user: str | None = None


class StreamOptions(_Request):
    include_usage: bool = False


# -- chat completions ----------------------------------------------------------


class TextPart(_Request):
    type: Literal["text"]
    text: str


class FunctionCall(_Request):
    name: str
    arguments: str = Field(description="The arguments, as a JSON object's text.")


class ToolCallIn(_Request):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | Annotated[list[TextPart], Field(max_length=MAX_MESSAGES)] | None = None
    name: str | None = None
    tool_calls: Annotated[list[ToolCallIn], Field(max_length=MAX_TOOLS)] | None = None
    tool_call_id: str | None = Field(None, description="In a tool message: the call it answers.")


class FunctionDef(_Request):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="A JSON schema of the arguments object.")
    strict: bool | None = Field(
        None, description="Calls always follow the schema when required; auto calls are parsed."
    )


class ToolDef(_Request):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Request):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatCompletionRequest(SamplingFields):
    model: str | None = Field(None, description="Any name: this server serves its one model.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[ToolDef], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = Field(None, description="Auto answers may call several; required ones call one.")
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


class PromptTokensDetails(_Response):
    cached_tokens: int  # prompt tokens whose KV was reused, not evaluated


class CompletionUsage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class FunctionCallOut(_Response):
    name: str
    arguments: str


class ToolCallOut(_Response):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(_Response):
    content: list[TokenLogprob]
    refusal: None = None


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[ToolCallOut] | None = None

    @model_serializer(mode="wrap")
    def _omit_no_calls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("tool_calls") is None:
            data.pop("tool_calls", None)
        return data


class ChatChoice(_Response):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


class FunctionDelta(_Sparse):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Sparse):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta


class Delta(_Sparse):
    """OpenAI's deltas carry only what changed: {"content": "..."}, and {} at the end."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(_Response):
    index: int = 0
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None


# -- legacy completions --------------------------------------------------------


class CompletionRequest(SamplingFields):
    model: str | None = None
    prompt: (
        str | TokenIds | Annotated[list[str], Field(max_length=1)] | Annotated[list[TokenIds], Field(max_length=1)]
    ) = Field(description="One prompt: text or token ids.")
    max_tokens: PositiveInt | None = Field(None, description="Default: until the answer ends.")
    echo: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    suffix: str | None = Field(None, description="Not supported: must be absent or null.")
    best_of: int | None = Field(None, ge=1, le=1)
    logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="How many likeliest tokens to list at each place, beside the chosen one.",
    )


class CompletionLogprobs(_Response):
    """The legacy shape: parallel lists, one entry per token (with echo, the
    prompt's first: its first token has no logprob)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(_Response):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class Completion(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None


# -- models and embeddings -------------------------------------------------------


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llamabin"


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class EmbeddingRequest(_Options):
    model: str | None = None
    input: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=MAX_EMBED_INPUTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_EMBED_INPUTS)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, gt=0, description="Not supported: must be absent or the model's size.")
    user: str | None = None


class Embedding(_Response):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(_Response):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Response):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# -- llama.cpp's native endpoints --------------------------------------------------


class NativeCompletionRequest(_Request):
    prompt: str | TokenIds
    n_predict: int = Field(-1, ge=-1, description="-1: until the answer ends.")
    temperature: float | None = Field(None, ge=0, le=100)
    top_k: int | None = Field(None, ge=0, le=MAX_TOP_K)
    top_p: float | None = Field(None, ge=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0, le=10)
    repeat_last_n: int | None = Field(None, ge=-1, le=MAX_REPEAT_WINDOW, description="-1: the whole context.")
    seed: int | None = None
    stop: Annotated[list[str], Field(max_length=MAX_STOPS)] = []
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    stream: bool = False
    cache_prompt: bool = Field(True, description="Accepted; the prompt cache is always used.")


class NativeTimings(_Response):
    prompt_n: int
    prompt_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_second: float


class NativeCompletion(_Response):
    content: str
    stop: bool = True
    model: str
    tokens_predicted: int
    tokens_evaluated: int
    tokens_cached: int
    stop_type: Literal["eos", "limit", "none"]
    timings: NativeTimings


class TokenizeRequest(_Request):
    content: str
    add_special: bool = False
    with_pieces: bool = False


class TokenPiece(_Response):
    id: int
    piece: str


class TokenizeResponse(_Response):
    tokens: list[int] | list[TokenPiece]


class DetokenizeRequest(_Request):
    tokens: TokenIds


class DetokenizeResponse(_Response):
    content: str


class Health(_Response):
    status: Literal["ok"] = "ok"
    queue_depth: int
    busy: bool


class Props(_Response):
    model: str
    model_path: str
    n_ctx: int
    n_vocab: int
    total_slots: int
    chat_template: str
    chat_template_name: str
    build: str
    api_key_required: bool


# -- errors ----------------------------------------------------------------------


class ErrorDetail(_Response):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Response):
    error: ErrorDetail
