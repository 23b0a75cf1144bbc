"""Request bodies of Ollama's API (`/api/chat`, `/api/generate`, `/api/embed`,
...), for the many local apps that speak only it.

The HTTP contract and nothing else, as types.py is for OpenAI's:
ollama_adapters.py turns these into the engine's own types. Validation is
as strict and bounded as OpenAI's. Ollama's sampling `options` that this
server has are mapped; those that only tune how Ollama loads a model
(threads, GPU layers, memory mapping) are accepted and have no effect, since
the model here is loaded once with the command line's settings; any other
option is refused with a 400 that names it, never silently ignored.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chat.server.types import (
    MAX_EMBED_INPUTS,
    MAX_MESSAGES,
    MAX_REPEAT_WINDOW,
    MAX_STOPS,
    MAX_TOOLS,
    MAX_TOP_K,
    ToolDef,
)

# Options that tune loading, which happened once at start: accepted, no effect.
LOAD_OPTIONS = frozenset(
    {"num_thread", "num_gpu", "main_gpu", "use_mmap", "use_mlock", "numa", "num_batch", "low_vram", "num_keep"}
)  # num_ctx too, a field below: the context is the one the model was loaded with


# Built when first used, as chat.server.types' are.
class _Request(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore", defer_build=True)


class Options(_Request):
    """Ollama's `options`: the sampling ones, and `num_ctx`."""

    model_config = ConfigDict(extra="allow")  # the rest as _Request's: pydantic merges them

    temperature: float | None = Field(None, ge=0, le=2)
    top_k: int | None = Field(None, ge=0, le=MAX_TOP_K)
    top_p: float | None = Field(None, ge=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0, le=10)
    repeat_last_n: int | None = Field(None, ge=-1, le=MAX_REPEAT_WINDOW)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    num_predict: int | None = Field(None, ge=-2)
    num_ctx: int | None = Field(None, gt=0)
    stop: Annotated[list[str], Field(max_length=MAX_STOPS)] | None = None

    @model_validator(mode="after")
    def _known(self) -> "Options":
        unknown = sorted(set(self.model_extra or {}) - LOAD_OPTIONS)
        if unknown:
            raise ValueError(f"option '{unknown[0]}' is not supported by this server")
        return self


# `format`: "json", or a JSON schema the answer must follow.
Format = Literal["", "json"] | dict[str, Any] | None


class CalledFunction(_Request):
    name: str
    arguments: dict[str, Any] = {}


class ToolCall(_Request):
    function: CalledFunction


class Message(_Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field("", max_length=1 << 22)
    images: list[str] | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOLS)] | None = None
    tool_name: str | None = Field(None, description="In a tool message: the tool whose result it is.")


class ChatRequest(_Request):
    model: str
    messages: Annotated[list[Message], Field(max_length=MAX_MESSAGES)] = []
    stream: bool = True
    format: Format = None
    options: Options | None = None
    keep_alive: Any = None  # the model stays loaded for the server's life
    tools: Annotated[list[ToolDef], Field(max_length=MAX_TOOLS)] | None = None
    think: bool | None = None


class GenerateRequest(_Request):
    model: str
    prompt: str = Field("", max_length=1 << 22)
    system: str | None = None
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    stream: bool = True
    format: Format = None
    options: Options | None = None
    keep_alive: Any = None
    images: list[str] | None = None
    think: bool | None = None


class EmbedRequest(_Request):
    model: str
    input: str | Annotated[list[str], Field(min_length=1, max_length=MAX_EMBED_INPUTS)]
    truncate: bool = True
    options: Options | None = None
    keep_alive: Any = None


class EmbeddingsRequest(_Request):
    """The older `/api/embeddings`: one prompt, one vector."""

    model: str
    prompt: str
    options: Options | None = None
    keep_alive: Any = None


class ShowRequest(_Request):
    model: str | None = None
    name: str | None = None  # older clients' name for it
    verbose: bool = False


class OllamaError(BaseModel):
    """Every refusal under /api/, as Ollama's clients read it."""

    model_config = ConfigDict(defer_build=True)

    error: str
