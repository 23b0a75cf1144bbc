"""The engine: the one object that owns the model and its context.

Front ends submit a `GenerationRequest` and iterate the returned
`Generation` for `Chunk`s; any of them may cancel it. A worker thread runs
llama.cpp so that a front end's thread (a REPL waiting for a key, an HTTP
handler) never blocks inside a decode, and Ctrl-C reaches Python at once.

The context holds `n_parallel` sequences (slots). Each slot remembers the
tokens its KV cache holds, and a request goes to the free slot sharing the
longest prefix with its prompt, so a chat that grows turn by turn evaluates
only its new tokens.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from chat.engine.llama import Context, EmbeddingContext, LlamaLog, Model, ModelSource, Sampler
from chat.engine.memory import check_context_fits
from chat.engine.stream import TextStream
from chat.engine.types import Chunk, FinishReason, GenerationRequest, Usage
from chat.errors import ContextLengthExceededError, LlamabinError, UsageError

DEFAULT_CTX = 4096
# The embedding context outputs every token's state (logits included), so
# its memory grows with n_vocab x this size: inputs are kept short.
EMBED_CTX = 512


@dataclass(frozen=True)
class EngineConfig:
    model: ModelSource
    n_ctx: int | None = None  # None: 4096 or less; 0: the model's trained context
    ctx_force: bool = False  # allow n_ctx above the trained context
    n_batch: int = 512
    n_parallel: int = 1
    n_threads: int = 2
    n_gpu_layers: int = 0
    verbose: bool = False


class Generation:
    """A submitted request: iterate it for chunks, or cancel it."""

    def __init__(self, request: GenerationRequest, prompt_tokens: list[int]) -> None:
        self.request = request
        self.prompt_tokens = prompt_tokens
        self._chunks: queue.Queue[Chunk] = queue.Queue()
        self._cancelled = threading.Event()
        self.final: Chunk | None = None

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def emit(self, chunk: Chunk) -> None:
        self._chunks.put(chunk)

    def __iter__(self) -> Iterator[Chunk]:
        while self.final is None:
            chunk = self._chunks.get()
            if chunk.finish_reason is not None:
                self.final = chunk
            yield chunk

    def text(self) -> str:
        """Wait for the end and return the whole completion."""
        return "".join(c.text for c in self)


@dataclass
class EngineStats:
    """Running totals, written only by the worker thread and read by anyone
    (the server's /metrics). A reader may see one generation's numbers
    partly added; each number by itself is always a real total."""

    generations: int = 0  # finished, cancelled or failed
    prompt_tokens: int = 0  # evaluated, not counting those reused from the cache
    completion_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    last_tokens_per_second: float = 0.0  # the latest generation's decoding speed
    busy: bool = False  # a generation is running now

    def add(self, usage: Usage) -> None:
        self.prompt_tokens += usage.evaluated_prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.prompt_seconds += usage.prompt_seconds
        self.generation_seconds += usage.generation_seconds
        if usage.completion_tokens:
            self.last_tokens_per_second = usage.generation_tokens_per_second


@dataclass
class _Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV is in the cache
    last_used: int = 0  # request counter, to evict the least recently used


class Engine:
    """Owns the model, the context and the worker thread."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.log = LlamaLog.install(config.verbose)
        self.model = Model(config.model, config.n_gpu_layers, self.log)
        try:
            n_ctx = resolve_n_ctx(config.n_ctx, self.model.n_ctx_train, config.ctx_force)
            check_context_fits(self.model.metadata, n_ctx)
            self.ctx = Context(
                self.model, n_ctx, config.n_batch, config.n_parallel, config.n_threads, self.log
            )
        except BaseException:
            self.model.close()
            raise
        self.n_ctx = self.ctx.n_ctx
        self._slots = [_Slot(seq) for seq in range(config.n_parallel)]
        self._served = 0
        self.stats = EngineStats()
        self._embedder: EmbeddingContext | None = None
        self._embed_lock = threading.Lock()
        self._queue: queue.Queue[Generation | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="llamabin-engine", daemon=True)
        self._worker.start()

    # -- the interface every front end uses ---------------------------------

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Tokens of `text` as a prompt: special tokens parsed, BOS added by the
        model's rule unless the text already starts with it (as rendered chat
        templates often do)."""
        if add_bos is None:
            add_bos = self.model.add_bos and not text.startswith(self.bos_text)
        return self.model.tokenize(text, add_bos=add_bos)

    def detokenize(self, tokens: list[int]) -> str:
        self.check_tokens(tokens)
        return self.model.detokenize(tokens)

    def check_tokens(self, tokens: list[int]) -> None:
        """Refuse ids outside the vocabulary: llama.cpp aborts the process
        on them rather than returning an error."""
        bad = next((t for t in tokens if not 0 <= t < self.model.n_vocab), None)
        if bad is not None:
            raise UsageError(f"token id {bad} is not in the vocabulary (0 to {self.model.n_vocab - 1})")

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the worker (not counting the one running)."""
        return self._queue.qsize()

    def embed(self, inputs: list[str] | list[list[int]]) -> list[list[float]]:
        """One unit-length vector per input: the mean of its token states.

        Runs on the caller's thread in a second context created on first
        use, one call at a time, beside generation. Raises before computing
        anything if an input is empty or longer than EMBED_CTX tokens."""
        token_lists = [self._embedding_tokens(x) for x in inputs]
        with self._embed_lock:
            if self._embedder is None:
                n_ctx = min(EMBED_CTX, self.n_ctx)
                cfg = self.config
                self._embedder = EmbeddingContext(self.model, n_ctx, cfg.n_threads, self.log)
            embedder = self._embedder
            for toks in token_lists:
                if len(toks) > embedder.n_ctx:
                    raise ContextLengthExceededError(len(toks), embedder.n_ctx)
            return [_unit(embedder.embed(toks)) for toks in token_lists]

    def _embedding_tokens(self, item: str | list[int]) -> list[int]:
        tokens = self.tokenize(item) if isinstance(item, str) else list(item)
        self.check_tokens(tokens)
        if not tokens:
            raise UsageError("an input to embed is empty")
        return tokens

    @property
    def bos_text(self) -> str:
        return self.model.token_text(self.model.bos) if self.model.bos >= 0 else ""

    @property
    def eos_text(self) -> str:
        return self.model.token_text(self.model.eos) if self.model.eos >= 0 else ""

    def submit(self, request: GenerationRequest) -> Generation:
        """Queue a request. Raises at once for a prompt that cannot run."""
        if isinstance(request.prompt, str):
            tokens = self.tokenize(request.prompt, request.add_bos)
        else:
            tokens = list(request.prompt)
            self.check_tokens(tokens)
        if not tokens:
            raise UsageError("the prompt is empty")
        if len(tokens) >= self.n_ctx:
            raise ContextLengthExceededError(len(tokens), self.n_ctx)
        if request.max_tokens is not None and request.max_tokens <= 0:
            raise UsageError("the number of tokens to predict must be positive")
        if request.sampling.grammar:
            Sampler(self.model, request.sampling).close()  # a bad grammar fails here, not mid-stream
        gen = Generation(request, tokens)
        self._queue.put(gen)
        return gen

    def close(self) -> None:
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join()
        if self._embedder is not None:
            self._embedder.close()
        self.ctx.close()
        self.model.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the worker ---------------------------------------------------------

    def _run(self) -> None:
        while (gen := self._queue.get()) is not None:
            if gen.cancelled:
                gen.emit(Chunk("", finish_reason=FinishReason.CANCELLED))
                self.stats.generations += 1
                continue
            self.stats.busy = True
            try:
                self._generate(gen, self._pick_slot(gen.prompt_tokens))
            except LlamabinError as exc:
                gen.emit(Chunk("", finish_reason=FinishReason.ERROR, error=str(exc)))
            except Exception as exc:  # keep serving others; report, never die
                gen.emit(Chunk("", finish_reason=FinishReason.ERROR, error=repr(exc)))
            finally:
                self.stats.busy = False
                self.stats.generations += 1

    def _pick_slot(self, prompt: list[int]) -> _Slot:
        """The slot sharing the longest prefix; with none shared, the least
        recently used, so another chat's cache survives as long as it can."""
        slot = max(self._slots, key=lambda s: (_common_prefix(s.cached, prompt), -s.last_used))
        self._served += 1
        slot.last_used = self._served
        return slot

    def _generate(self, gen: Generation, slot: _Slot) -> None:
        req = gen.request
        t0 = time.perf_counter()
        cached = self._prefill(gen, slot)
        t1 = time.perf_counter()
        sampler = Sampler(self.model, req.sampling)
        try:
            finish, n_out = self._decode_loop(gen, slot, sampler)
        finally:
            sampler.close()
        usage = Usage(len(gen.prompt_tokens), cached, n_out, t1 - t0, time.perf_counter() - t1)
        self.stats.add(usage)
        gen.emit(Chunk("", finish_reason=finish, usage=usage))

    def _prefill(self, gen: Generation, slot: _Slot) -> int:
        """Evaluate the prompt tokens the slot's cache lacks; return how many
        were reused. The last token is always evaluated: its logits pick the
        first new token."""
        prompt = gen.prompt_tokens
        keep = min(_common_prefix(slot.cached, prompt), len(prompt) - 1)
        self.ctx.forget(slot.seq, keep)
        slot.cached = prompt[:keep]
        for start in range(keep, len(prompt), self.ctx.n_batch):
            if gen.cancelled:
                break
            part = prompt[start : start + self.ctx.n_batch]
            last = start + len(part) == len(prompt)
            self.ctx.decode(part, slot.seq, start, want_last_logits=last)
            slot.cached.extend(part)
        return keep

    def _decode_loop(self, gen: Generation, slot: _Slot, sampler: Sampler) -> tuple[FinishReason, int]:
        req = gen.request
        if gen.cancelled:
            return FinishReason.CANCELLED, 0
        stop_ids = self._stop_token_ids(req.stop)
        text = TextStream(req.stop)
        limit = req.max_tokens if req.max_tokens is not None else self.n_ctx
        n_out = 0
        while True:
            token = sampler.sample(self.ctx)
            if self.model.is_eog(token) or token in stop_ids:
                reason = FinishReason.STOP
                break
            n_out += 1
            piece = text.feed(self.model.token_bytes(token))
            if piece or text.stopped:
                gen.emit(Chunk(piece, (token,)))
            if text.stopped:
                reason = FinishReason.STOP
                break
            if n_out >= limit or len(slot.cached) + 1 >= self.n_ctx:
                reason = FinishReason.LENGTH
                break
            if gen.cancelled:
                reason = FinishReason.CANCELLED
                break
            self.ctx.decode([token], slot.seq, len(slot.cached), want_last_logits=True)
            slot.cached.append(token)
        tail = text.finish()
        if tail:
            gen.emit(Chunk(tail))
        return reason, n_out

    def _stop_token_ids(self, stops: tuple[str, ...]) -> set[int]:
        """Stop strings that are single control tokens (like <|im_end|>) never
        show up as text, so they must be caught by id."""
        ids: set[int] = set()
        for stop in stops:
            toks = self.model.tokenize(stop, add_bos=False)
            if len(toks) == 1 and self.model.token_text(toks[0]) == stop:
                ids.add(toks[0])
        return ids


def resolve_n_ctx(requested: int | None, n_ctx_train: int, force: bool) -> int:
    """The context size to allocate: None means the default (never above the
    trained size), 0 the trained size; more than the trained size is refused
    unless forced, since the model's output falls apart there."""
    if requested is None:
        return min(DEFAULT_CTX, n_ctx_train) if n_ctx_train > 0 else DEFAULT_CTX
    if requested < 0:
        raise UsageError(f"context size must be positive, not {requested}")
    if requested == 0 or n_ctx_train <= 0:
        return requested or n_ctx_train or DEFAULT_CTX
    if requested > n_ctx_train and not force:
        raise UsageError(
            f"context size {requested} is above the {n_ctx_train} tokens this model"
            " was trained for (pass --ctx-force to use it anyway)"
        )
    return requested


def _unit(vec: list[float]) -> list[float]:
    """Scale to length 1, as OpenAI's embeddings are, so a dot product is
    the cosine similarity."""
    norm = sum(x * x for x in vec) ** 0.5
    return [x / norm for x in vec] if norm > 0 else vec


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
