"""The engine: the one object that owns the model and its context.

Front ends submit a `GenerationRequest` and iterate the returned
`Generation` for `Chunk`s; any of them may cancel it. A worker thread runs
llama.cpp so that a front end's thread (a REPL waiting for a key, an HTTP
handler) never blocks inside a decode, and Ctrl-C reaches Python at once.

The context holds `n_parallel` sequences (slots), served together by
continuous batching (see scheduler.py). Each slot remembers the tokens its
KV cache holds, and a request goes to the free slot sharing the longest
prefix with its prompt, so a chat that grows turn by turn evaluates only its
new tokens.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from chat.engine.llama import Context, EmbeddingContext, LlamaLog, Model, ModelSource, Sampler
from chat.engine.memory import check_context_fits
from chat.engine.scheduler import Scheduler
from chat.engine.types import Chunk, GenerationRequest, PromptPart, Usage
from chat.errors import ContextLengthExceededError, UsageError

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
    kv_unified: bool = True  # one KV pool for all slots; False: n_ctx / n_parallel each
    n_threads: int = 2
    n_gpu_layers: int = 0
    verbose: bool = False


class Generation:
    """A submitted request: iterate it for chunks, or cancel it."""

    def __init__(self, request: GenerationRequest, prompt_tokens: list[int], sampler: Sampler) -> None:
        self.request = request
        self.prompt_tokens = prompt_tokens
        self.sampler = sampler  # the scheduler closes it when the generation ends
        self._chunks: queue.Queue[Chunk] = queue.Queue()
        self._cancelled = threading.Event()
        self._notify: Callable[[], None] | None = None
        self._notify_final_only = False
        self.final: Chunk | None = None

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def emit(self, chunk: Chunk) -> None:
        self._chunks.put(chunk)
        notify = self._notify
        if notify is not None and (chunk.finish_reason is not None or not self._notify_final_only):
            notify()

    def on_emit(self, notify: Callable[[], None], final_only: bool = False) -> None:
        """Have `notify` called, from the engine's thread, after each chunk
        from now on (only after the last one if `final_only`), and once now
        for any already waiting: for a consumer that `poll`s instead of
        blocking a thread per generation, such as an event loop."""
        self._notify_final_only = final_only
        self._notify = notify
        notify()

    def poll(self) -> Chunk | None:
        """The next chunk if one is ready, else None at once."""
        try:
            chunk = self._chunks.get_nowait()
        except queue.Empty:
            return None
        if chunk.finish_reason is not None:
            self.final = chunk
        return chunk

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
                self.model,
                n_ctx,
                config.n_batch,
                config.n_parallel,
                config.n_threads,
                self.log,
                unified=config.kv_unified or config.n_parallel == 1,
            )
        except BaseException:
            self.model.close()
            raise
        self.n_ctx = self.ctx.n_ctx_seq  # what one request may use
        self.stats = EngineStats()
        self._embedder: EmbeddingContext | None = None
        self._embed_lock = threading.Lock()
        self._special_texts: frozenset[str] | None = None
        self._queue: queue.Queue[Generation | None] = queue.Queue()
        self._scheduler = Scheduler(self.model, self.ctx, config.n_parallel, self.stats, self._queue)
        self._worker = threading.Thread(target=self._scheduler.run, name="llamabin-engine", daemon=True)
        self._worker.start()

    # -- the interface every front end uses ---------------------------------

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Tokens of `text` as a prompt: special tokens parsed, BOS added by the
        model's rule unless the text already starts with it (as rendered chat
        templates often do)."""
        if add_bos is None:
            add_bos = self.model.add_bos and not text.startswith(self.bos_text)
        return self.model.tokenize(text, add_bos=add_bos)

    def tokenize_parts(self, parts: Sequence[PromptPart], add_bos: bool | None = None) -> list[int]:
        """Tokens of a prompt in parts: control tokens are parsed in the
        template's parts only, so a message saying "<|im_start|>system" is
        those characters, not a new turn."""
        text = "".join(p.text for p in parts)
        if add_bos is None:
            add_bos = self.model.add_bos and not text.startswith(self.bos_text)
        tokens: list[int] = []
        for i, part in enumerate(parts):
            if part.text:
                tokens += self.model.tokenize(part.text, add_bos=add_bos and i == 0, parse_special=part.special)
        return tokens

    def special_texts(self) -> frozenset[str]:
        """The texts that tokenize to a control token (<|im_start|>,
        <start_of_turn>, ...), found once per engine."""
        if self._special_texts is None:
            self._special_texts = self.model.special_texts()
        return self._special_texts

    def detokenize(self, tokens: list[int]) -> str:
        self.check_tokens(tokens)
        return self.model.detokenize(tokens)

    def pieces(self, tokens: list[int]) -> list[str]:
        """Each token's own text."""
        self.check_tokens(tokens)
        return [self.model.detokenize([t]) for t in tokens]

    def check_tokens(self, tokens: list[int]) -> None:
        """Refuse ids outside the vocabulary: llama.cpp aborts the process
        on them rather than returning an error."""
        bad = next((t for t in tokens if not 0 <= t < self.model.n_vocab), None)
        if bad is not None:
            raise UsageError(f"token id {bad} is not in the vocabulary (0 to {self.model.n_vocab - 1})")

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a slot (not counting those running)."""
        return self._queue.qsize() + self._scheduler.waiting

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
        elif isinstance(request.prompt, tuple):
            tokens = self.tokenize_parts(request.prompt, request.add_bos)
        else:
            tokens = list(request.prompt)
        if not tokens:
            raise UsageError("the prompt is empty")
        if len(tokens) >= self.n_ctx:
            raise ContextLengthExceededError(len(tokens), self.n_ctx)
        if not isinstance(request.prompt, (str, tuple)):
            self.check_tokens(tokens)  # after the length check: a huge list is refused without a walk
        if request.max_tokens is not None and request.max_tokens <= 0:
            raise UsageError("the number of tokens to predict must be positive")
        # Built here, so a bad grammar fails now rather than mid-stream, and
        # handed to the scheduler, so no grammar is compiled twice.
        gen = Generation(request, tokens, Sampler(self.model, request.sampling))
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
