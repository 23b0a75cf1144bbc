"""The engine: the one object that owns the model and its context.

Front ends submit a `GenerationRequest` and iterate the returned
`Generation` for `Chunk`s; any of them may cancel it. A worker thread runs
llama.cpp so that a front end's thread (a REPL waiting for a key, an HTTP
handler) never blocks inside a decode, and Ctrl-C reaches Python at once.
What is loaded is described by `engine.info` (an `EngineInfo`), how it is
doing by `engine.stats()`; the model, the context and the scheduler stay
the engine's own.

The context holds `n_parallel` sequences (slots), served together by
continuous batching (see scheduler.py). Each slot remembers the tokens its
KV cache holds, and a request goes to the free slot sharing the longest
prefix with its prompt, so a chat that grows turn by turn evaluates only its
new tokens.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from chat import ctrl_c
from chat.engine import backends, openmp, rpc
from chat.engine.generation import Generation
from chat.engine.llama import (
    Context,
    EmbeddingContext,
    LlamaLog,
    LoraAdapter,
    Model,
    ModelSource,
    Sampler,
    set_loras,
)
from chat.engine.lookup import DEFAULT_DRAFT_MAX, LookupSettings
from chat.engine.memory import check_context_fits
from chat.engine.prompt_cache import PromptCache, default_cache_ram_mib
from chat.engine.rpc import Endpoint
from chat.engine.scheduler import Scheduler
from chat.engine.types import EngineInfo, EngineStats, GenerationRequest, PromptPart
from chat.errors import ContextLengthExceededError, EngineClosedError, UsageError

DEFAULT_CTX = 4096
# The embedding context outputs every token's state (logits included), so
# its memory grows with n_vocab x this size: inputs are kept short.
EMBED_CTX = 512


def default_threads() -> int:
    """Threads for decoding when none are asked for: every core."""
    return os.cpu_count() or 1


@dataclass(frozen=True)
class EngineConfig:
    model: ModelSource
    n_ctx: int | None = None  # None: 4096 or less; 0: the model's trained context
    ctx_force: bool = False  # allow n_ctx above the trained context
    n_batch: int = 512
    n_parallel: int = 1
    kv_unified: bool = True  # one KV pool for all slots; False: n_ctx / n_parallel each
    n_threads: int = field(default_factory=default_threads)
    n_gpu_layers: int = 0
    rpc: tuple[Endpoint, ...] = ()  # llama.cpp RPC workers, attached before the model loads
    tensor_split: tuple[float, ...] = ()  # offloaded layers per device, as proportions
    verbose: bool = False
    # Tokens guessed at most per step by prompt lookup, for a generation
    # running alone (chat.engine.lookup); 0 turns the drafts off.
    draft_max: int = DEFAULT_DRAFT_MAX
    lora: tuple[LoraAdapter, ...] = ()  # applied at run time, to generation and embeddings alike
    # Memory for prompts saved when their slot moves on (chat.engine.prompt_cache),
    # in MiB: None for the default, 0 for none, NO_LIMIT for no bound.
    cache_ram_mib: int | None = None
    # OpenMP's default thread count while the model loads (chat.engine.openmp):
    # one core fewer when a front end imports beside the load; None: one per core.
    load_threads: int | None = None


class Engine:
    """Owns the model, the context and the worker thread."""

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._log = LlamaLog.install(config.verbose)
        self._special_texts: frozenset[str] | None = None
        self._special_texts_lock = threading.Lock()
        self._embedder: EmbeddingContext | None = None  # made and used on the worker thread only
        self._worker_done = threading.Event()
        # The model loads on the worker thread, which then serves: every
        # llama.cpp computation of this engine runs on that one thread (see
        # Scheduler.call). Loading computes too: on an AMX machine the
        # weights are converted in OpenMP parallel loops, and a thread that
        # outlived the load with its own team of OpenMP threads (a test's
        # main thread, a benchmark's) made generation 6x slower.
        loaded: queue.Queue[_Loaded | BaseException] = queue.Queue(maxsize=1)
        self._worker = threading.Thread(target=self._serve, args=(loaded,), name="llamabin-engine", daemon=True)
        self._worker.start()
        outcome: _Loaded | BaseException | None = None
        try:
            # llama.cpp cannot stop a load midway: a Ctrl-C is raised once it
            # has ended, and what it loaded is freed first.
            with ctrl_c.held():
                outcome = loaded.get()
        except KeyboardInterrupt:
            if isinstance(outcome, _Loaded):
                outcome.scheduler.stop()
                self._worker_done.wait()
                outcome.close()
            raise
        if isinstance(outcome, BaseException):
            raise outcome
        self._model, self._ctx, self._loras, self._scheduler = (
            outcome.model,
            outcome.ctx,
            outcome.loras,
            outcome.scheduler,
        )
        self.n_ctx = self._ctx.n_ctx_seq  # what one request may use
        self._info = _describe(config, self._model, self.n_ctx, outcome.workers)
        # Calls into llama.cpp from front-end threads, counted so that close()
        # frees nothing under one: a freed vocabulary or context crashes the
        # process in C, where no exception can be caught.
        self._calls = threading.Condition()
        self._in_use = 0
        self._closed = False

    def _serve(self, loaded: queue.Queue[_Loaded | BaseException]) -> None:
        try:
            try:
                parts = _load(self._config, self._log)
            except BaseException as exc:  # handed to the thread that made the engine
                loaded.put(exc)
                return
            loaded.put(parts)
            parts.scheduler.run()
        finally:
            self._worker_done.set()

    # -- the interface every front end uses ---------------------------------

    @property
    def info(self) -> EngineInfo:
        """What is loaded, and with what context."""
        return self._info

    def tokenize(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Tokens of `text` as a prompt: special tokens parsed, BOS added by the
        model's rule unless the text already starts with it (as rendered chat
        templates often do)."""
        with self._open():
            if add_bos is None:
                add_bos = self._model.add_bos and not text.startswith(self.bos_text)
            return self._model.tokenize(text, add_bos=add_bos)

    def tokenize_parts(self, parts: Sequence[PromptPart], add_bos: bool | None = None) -> list[int]:
        """Tokens of a prompt in parts: control tokens are parsed in the
        template's parts only, so a message saying "<|im_start|>system" is
        those characters, not a new turn."""
        text = "".join(p.text for p in parts)
        tokens: list[int] = []
        with self._open():
            if add_bos is None:
                add_bos = self._model.add_bos and not text.startswith(self.bos_text)
            for i, part in enumerate(parts):
                if part.text:
                    tokens += self._model.tokenize(part.text, add_bos=add_bos and i == 0, parse_special=part.special)
        return tokens

    def special_texts(self) -> frozenset[str]:
        """The texts that tokenize to a control token (<|im_start|>,
        <start_of_turn>, ...), found once per engine. The search walks the
        whole vocabulary (15 ms for 49k tokens, 0.1 s for Gemma's 262k): the
        lock keeps a burst of first requests from each doing it again."""
        if self._special_texts is None:
            with self._special_texts_lock:
                if self._special_texts is None:
                    with self._open():
                        self._special_texts = self._model.special_texts()
        return self._special_texts

    def detokenize(self, tokens: list[int]) -> str:
        self.check_tokens(tokens)
        with self._open():
            return self._model.detokenize(tokens)

    def pieces(self, tokens: list[int]) -> list[str]:
        """Each token's own text."""
        self.check_tokens(tokens)
        with self._open():
            return [self._model.detokenize([t]) for t in tokens]

    def check_tokens(self, tokens: list[int]) -> None:
        """Refuse ids outside the vocabulary: llama.cpp aborts the process
        on them rather than returning an error."""
        bad = next((t for t in tokens if not 0 <= t < self._model.n_vocab), None)
        if bad is not None:
            raise UsageError(f"token id {bad} is not in the vocabulary (0 to {self._model.n_vocab - 1})")

    def stats(self) -> EngineStats:
        """The running totals and the queue's depth, as they are now."""
        return self._scheduler.stats()

    def embed(self, inputs: list[str] | list[list[int]]) -> list[list[float]]:
        """One unit-length vector per input: the mean of its token states.

        Computed on the worker thread, between generation steps, one input
        at a time, in a second context created on first use. Raises before
        computing anything if an input is empty or longer than EMBED_CTX
        tokens."""
        token_lists = [self._embedding_tokens(x) for x in inputs]
        for toks in token_lists:
            if len(toks) > self.embed_limit:
                raise ContextLengthExceededError(len(toks), self.embed_limit)
        with self._open():
            return [self._scheduler.call(functools.partial(self._embed_one, toks)) for toks in token_lists]

    def _embed_one(self, tokens: list[int]) -> list[float]:
        """On the worker thread: one input's vector, in the embedding
        context made on first use."""
        if self._embedder is None:
            self._embedder = EmbeddingContext(self._model, self.embed_limit, self._config.n_threads, self._log)
            set_loras(self._embedder.ptr, self._loras, [adapter.scale for adapter in self._config.lora])
        return _unit(self._embedder.embed(tokens))

    @property
    def embed_limit(self) -> int:
        """The most tokens one input to `embed` may have."""
        return min(EMBED_CTX, self.n_ctx)

    def _embedding_tokens(self, item: str | list[int]) -> list[int]:
        tokens = self.tokenize(item) if isinstance(item, str) else list(item)
        self.check_tokens(tokens)
        if not tokens:
            raise UsageError("an input to embed is empty")
        return tokens

    @property
    def bos_text(self) -> str:
        return self._token_text(self._model.bos)

    @property
    def eos_text(self) -> str:
        return self._token_text(self._model.eos)

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        with self._open():
            return self._model.token_text(token)

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
        gen = Generation(request, tokens)
        with self._open():
            # Built here, so a bad grammar fails now rather than mid-stream, and
            # handed to the scheduler, so no grammar is compiled twice. Queued
            # inside the guard: close() stops the worker only after it.
            self._scheduler.submit(gen, Sampler(self._model, request.sampling, self.n_ctx))
        return gen

    def close(self) -> None:
        """Free the model once the calls under way have returned; the
        generations not finished end CANCELLED, and later calls raise
        EngineClosedError. Closing twice is harmless.

        A Ctrl-C meanwhile (a second one, or the one a packaged file's
        bootloader passes on) is held until the end (chat.ctrl_c): leaving
        with the worker inside llama_decode lets the process exit under it,
        which crashes."""
        with ctrl_c.held():
            with self._calls:
                if self._closed:
                    return
                self._closed = True
                self._calls.wait_for(lambda: self._in_use == 0)
            if not self._worker_done.is_set():
                self._scheduler.stop()
                self._worker_done.wait()
            if self._embedder is not None:
                self._embedder.close()
            self._ctx.close()
            self._model.close()

    @contextmanager
    def _open(self) -> Iterator[None]:
        """Mark a call into llama.cpp from a front end's thread; refused once closed."""
        # The count must never be lost, or close() would wait for ever: a
        # Ctrl-C on the main thread is held until the call is over (these
        # are short; off the main thread none comes).
        with ctrl_c.held():
            with self._calls:
                if self._closed:
                    raise EngineClosedError()
                self._in_use += 1
            try:
                yield
            finally:
                with self._calls:
                    self._in_use -= 1
                    self._calls.notify_all()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@dataclass
class _Loaded:
    """What the worker thread loaded, for the engine to keep."""

    model: Model
    ctx: Context
    loras: list[Any]
    scheduler: Scheduler
    workers: tuple[rpc.WorkerDevice, ...]

    def close(self) -> None:
        self.ctx.close()
        self.model.close()


def _load(config: EngineConfig, log: LlamaLog) -> _Loaded:
    """The model, its context and the scheduler that serves them (on the
    worker thread, which then runs the scheduler)."""
    workers = rpc.attach(config.rpc) if config.rpc else ()
    backends.load()  # the kernels, and with them the OpenMP runtime the load's loops run on
    with openmp.threads_while(config.load_threads):
        model = Model(config.model, config.n_gpu_layers, log, config.tensor_split)
    ctx: Context | None = None
    try:
        n_ctx = resolve_n_ctx(config.n_ctx, model.n_ctx_train, config.ctx_force)
        check_context_fits(model.metadata, n_ctx)
        ctx = Context(
            model,
            n_ctx,
            config.n_batch,
            config.n_parallel,
            config.n_threads,
            log,
            unified=config.kv_unified or config.n_parallel == 1,
        )
        loras = [model.load_lora(adapter, log) for adapter in config.lora]
        set_loras(ctx.ptr, loras, [adapter.scale for adapter in config.lora])
        lookup = LookupSettings(max_draft=config.draft_max) if config.draft_max > 0 else None
        cache_mib = default_cache_ram_mib() if config.cache_ram_mib is None else config.cache_ram_mib
        cache = PromptCache(cache_mib, window=model.n_swa) if cache_mib != 0 else None
        scheduler = Scheduler(model, ctx, config.n_parallel, lookup, cache)
    except BaseException:
        if ctx is not None:
            ctx.close()
        model.close()
        raise
    return _Loaded(model, ctx, loras, scheduler, workers)


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


def _describe(config: EngineConfig, model: Model, n_ctx: int, workers: tuple[rpc.WorkerDevice, ...]) -> EngineInfo:
    return EngineInfo(
        model_name=model.source.name,
        model_path=model.source.path,
        description=model.description(),
        size_bytes=model.size_bytes(),
        n_vocab=model.n_vocab,
        n_embd=model.n_embd,
        n_ctx_train=model.n_ctx_train,
        n_ctx=n_ctx,
        n_parallel=config.n_parallel,
        n_threads=config.n_threads,
        metadata=MappingProxyType(dict(model.metadata)),
        rpc_workers=tuple(worker.describe() for worker in workers),
    )


def _unit(vec: list[float]) -> list[float]:
    """Scale to length 1, as OpenAI's embeddings are, so a dot product is
    the cosine similarity."""
    norm = sum(x * x for x in vec) ** 0.5
    return [x / norm for x in vec] if norm > 0 else vec
