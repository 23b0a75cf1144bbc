"""A stand-in for `chat.engine.Engine` with no model behind it, for building
the server in-process: just the interface the front ends use (`info`,
`stats()`, `n_ctx`, `submit` and the token helpers).

Obviously fake and fully deterministic: each character is one token (its
code point), and every answer is the same few words (or the pieces it is
given), emitted at once. A
prompt holding FAIL breaks after two pieces, as a failed decode would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

from chat.engine import Chunk, EngineInfo, EngineStats, FinishReason, Generation, GenerationRequest, Usage
from chat.engine.types import PromptPart
from chat.errors import ContextLengthExceededError, EngineClosedError, UsageError

REPLY = ("Hello", " from", " a", " fake", " engine", ".")
FAIL = "FAIL"
N_VOCAB = 0x110000  # every code point
N_EMBD = 8


class FakeEngine:
    def __init__(
        self, name: str = "fake-model.gguf", n_ctx: int = 256, n_parallel: int = 1, reply: Sequence[str] = REPLY
    ) -> None:
        self.n_ctx = n_ctx
        self.reply = tuple(reply)  # the pieces every answer is made of
        self.info = EngineInfo(
            model_name=name,
            model_path=Path("models") / name,
            description="fake 0M",
            size_bytes=0,
            n_vocab=N_VOCAB,
            n_embd=N_EMBD,
            n_ctx_train=n_ctx,
            n_ctx=n_ctx,
            n_parallel=n_parallel,
            n_threads=1,
            metadata=MappingProxyType({"general.architecture": "fake"}),
        )
        self.requests: list[GenerationRequest] = []
        self._stats = EngineStats()
        self.closed = False
        self.embed_limit = n_ctx

    def close(self) -> None:
        """Later calls are refused, as the real engine's are."""
        self.closed = True

    def stats(self) -> EngineStats:
        return self._stats

    def special_texts(self) -> frozenset[str]:
        return frozenset({"<|im_start|>", "<|im_end|>"})

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        if self.closed:
            raise EngineClosedError()
        return [ord(c) for c in text]

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(self.pieces(tokens))

    def pieces(self, tokens: list[int]) -> list[str]:
        if self.closed:
            raise EngineClosedError()
        bad = next((t for t in tokens if not 0 <= t < N_VOCAB), None)
        if bad is not None:
            raise UsageError(f"token id {bad} is not in the vocabulary (0 to {N_VOCAB - 1})")
        return [chr(t) for t in tokens]

    def embed(self, inputs: list[str] | list[list[int]]) -> list[list[float]]:
        vectors = []
        for item in inputs:
            tokens = self.tokenize(item) if isinstance(item, str) else item
            if not tokens:
                raise UsageError("an input to embed is empty")
            vec = [float(sum(1 for t in tokens if t % N_EMBD == i)) for i in range(N_EMBD)]
            norm = math.sqrt(sum(x * x for x in vec))
            vectors.append([x / norm for x in vec])
        return vectors

    def submit(self, request: GenerationRequest) -> Generation:
        """Checks the prompt as the real engine does, then emits the whole
        answer before returning."""
        prompt = request.prompt
        if isinstance(prompt, list):
            self.pieces(prompt)
            text = "".join(chr(t) for t in prompt)
        else:
            text = prompt if isinstance(prompt, str) else _joined(prompt)
        tokens = self.tokenize(text)
        if not tokens:
            raise UsageError("the prompt is empty")
        if len(tokens) >= self.n_ctx:
            raise ContextLengthExceededError(len(tokens), self.n_ctx)
        if request.max_tokens is not None and request.max_tokens <= 0:
            raise UsageError("the number of tokens to predict must be positive")
        self.requests.append(request)
        gen = Generation(request, tokens)
        reply = self.reply
        limit = len(reply) if request.max_tokens is None else min(request.max_tokens, len(reply))
        pieces = reply[: min(limit, 2)] if FAIL in text else reply[:limit]
        for piece in pieces:
            gen.emit(Chunk(piece, (ord(piece[0]),)))
        usage = Usage(len(tokens), 0, len(pieces), 0.01, 0.01)
        self._stats = EngineStats(
            generations=self._stats.generations + 1,
            prompt_tokens=self._stats.prompt_tokens + len(tokens),
            completion_tokens=self._stats.completion_tokens + len(pieces),
        )
        if FAIL in text:
            gen.emit(Chunk("", finish_reason=FinishReason.ERROR, error="fake decode failure"))
        else:
            reason = FinishReason.STOP if limit == len(reply) else FinishReason.LENGTH
            gen.emit(Chunk("", finish_reason=reason, usage=usage))
        return gen


def _joined(parts: Sequence[PromptPart]) -> str:
    return "".join(p.text for p in parts)
