"""The engine's own request and result types.

Front ends (REPL, one-shot CLI, HTTP server) translate their inputs into these
types; the engine never sees click options, prompt_toolkit or OpenAI shapes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chat.errors import GenerationError, UsageError


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. temperature <= 0 means greedy. The
    front ends hold what they are given within SAMPLING_LIMITS."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    # OpenAI's penalties, by llama.cpp's penalties sampler: over the same
    # last repeat_last_n tokens, 0 turns each off.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    # (token id, bias) pairs added to those tokens' logits; -100 bans one.
    logit_bias: tuple[tuple[int, float], ...] = ()
    seed: int | None = None
    grammar: str | None = None


# Counts that reach llama.cpp as 32-bit ints, where a huge value would wrap
# around; the repeat window also sizes a buffer, so it stays modest.
MAX_TOP_K = 1 << 20
MAX_REPEAT_WINDOW = 1 << 16

# The values each sampling setting may take, (least, most), for every front
# end: the command line's flags and the native API's fields alike.
SAMPLING_LIMITS: dict[str, tuple[float, float]] = {
    "temperature": (0, 100),
    "top_k": (0, MAX_TOP_K),
    "top_p": (0, 1),
    "min_p": (0, 1),
    "repeat_penalty": (0, 10),
    "repeat_last_n": (-1, MAX_REPEAT_WINDOW),  # -1: the whole context
}


@dataclass(frozen=True)
class PromptPart:
    """A piece of a prompt: the template's own text (`special`: its control
    tokens are parsed as such) or what a person wrote (plain text)."""

    text: str
    special: bool


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: a prompt (text, parts or tokens) and how to continue it.

    A `str` prompt is tokenized with special tokens parsed, so a rendered
    chat template keeps its control tokens; a tuple of parts parses them
    only in the template's parts. `max_tokens` None means "until the
    context is full".
    """

    prompt: str | list[int] | tuple[PromptPart, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    add_bos: bool | None = None  # None: the model's own add-BOS rule
    # Report each generated token's logprob with this many likeliest
    # alternatives (0: none); None reports nothing.
    logprobs: int | None = None
    # Also the prompt's tokens' (each but the first), which evaluates the
    # whole prompt, none of it taken from the cache.
    prompt_logprobs: bool = False


class FinishReason(str, enum.Enum):
    STOP = "stop"  # end-of-generation token or a stop string
    LENGTH = "length"  # max_tokens or the context is full
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int  # tokens of the prompt
    cached_tokens: int  # of those, reused from the KV cache (not evaluated)
    completion_tokens: int
    prompt_seconds: float
    generation_seconds: float

    @property
    def evaluated_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def prompt_tokens_per_second(self) -> float:
        secs = self.prompt_seconds
        return self.evaluated_prompt_tokens / secs if secs > 0 else 0.0

    @property
    def generation_tokens_per_second(self) -> float:
        secs = self.generation_seconds
        return self.completion_tokens / secs if secs > 0 else 0.0


@dataclass(frozen=True)
class TokenChoice:
    token: int
    piece: bytes  # its bytes, which may be part of a character
    logprob: float | None  # None for a prompt's first token, which nothing predicts


@dataclass(frozen=True)
class TokenLogprob:
    """A token at one place, and the likeliest ones there."""

    chosen: TokenChoice
    top: tuple[TokenChoice, ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A piece of streamed output. The last chunk of a request has a finish_reason.

    `logprobs` are those of the tokens generated since the last chunk (their
    text may still be held back); `prompt_logprobs`, once, before the first
    token, those of the prompt."""

    text: str
    tokens: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    error: str | None = None
    bad_request: bool = False  # the error is the request's own (its grammar), not the engine's
    logprobs: tuple[TokenLogprob, ...] = ()
    prompt_logprobs: tuple[TokenLogprob, ...] = ()

    def raise_error(self) -> None:
        """Raise the error this chunk ends with, if any: UsageError when the
        request itself was at fault, GenerationError otherwise."""
        if self.error:
            raise (UsageError if self.bad_request else GenerationError)(self.error)


@dataclass(frozen=True)
class EngineInfo:
    """What a front end may know about the loaded engine, fixed once it is
    built: the model's name and shape, and the context it was given."""

    model_name: str  # as clients see it: the file's name
    model_path: Path
    description: str  # llama.cpp's one-line summary: architecture, size, quantization
    size_bytes: int  # the weights
    n_vocab: int
    n_embd: int  # the width of an embedding
    n_ctx_train: int
    n_ctx: int  # what one request may use
    n_parallel: int  # slots decoded together
    n_threads: int
    metadata: Mapping[str, str] = field(hash=False)  # the GGUF's key-value pairs, read-only
    rpc_workers: tuple[str, ...] = ()  # each attached worker's device: where, what, free memory


@dataclass(frozen=True)
class EngineStats:
    """Running totals at one moment (a copy: the engine's own go on).

    A generation finishing meanwhile may be partly counted; each number by
    itself is always a real total."""

    generations: int = 0  # finished, cancelled or failed
    prompt_tokens: int = 0  # evaluated, not counting those reused from the cache
    completion_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    last_tokens_per_second: float = 0.0  # the latest generation's decoding speed
    drafted_tokens: int = 0  # guessed by prompt lookup and evaluated
    accepted_tokens: int = 0  # of those, the ones the sampler picked too
    cached_prompts: int = 0  # prompts the prompt cache holds now
    cached_prompt_bytes: int = 0  # the memory they take
    restored_prompts: int = 0  # times a saved prompt was put back into a slot
    busy: bool = False  # a generation is running now
    queue_depth: int = 0  # requests waiting for a slot (not counting those running)
