"""A thin, typed layer over llama-cpp-python's C bindings.

This is the only module that calls `llama_cpp` directly. It stays close to
llama.h so the engine above it can manage sequences, batches and samplers
itself: the high-level `llama_cpp.Llama` class owns one sequence and cannot
share a context between requests.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import sys
import tempfile
import threading
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from chat import phases
from chat.engine import backends
from chat.engine.bindings import llama_cpp as C
from chat.engine.grammar_guard import GrammarGuard
from chat.engine.grammars import check_grammar
from chat.engine.types import SamplingParams
from chat.errors import (
    ContextAllocationError,
    GenerationError,
    ModelFileError,
    ModelMissingError,
    UsageError,
)

GGUF_MAGIC = b"GGUF"


class LlamaLog:
    """Receives llama.cpp's log lines: echoes them when verbose and keeps the
    last few so a failed load can say why.

    llama.cpp's log callback is one per process and holds only a raw
    pointer, so there is one LlamaLog per process too, kept alive here for as
    long as llama.cpp may log (freeing it while installed crashes the next
    log line). Get it with `LlamaLog.install(verbose)`."""

    _installed: LlamaLog | None = None

    def __init__(self) -> None:
        self.verbose = False
        self.recent: deque[str] = deque(maxlen=20)
        self.listener: Callable[[str], None] | None = None  # sees every line, as it comes
        self._callback = C.llama_log_callback(self._on_log)

    @classmethod
    def install(cls, verbose: bool, info: bool = False) -> LlamaLog:
        """Every line with `verbose`; else warnings and errors, the lines
        that explain a failure, and INFO lines too if `info` (the quantizer's
        progress). A load logs about 200 INFO lines; each would wake Python
        and wait for the GIL, held by the imports that run beside the load."""
        if cls._installed is None:
            cls._installed = cls()
            C.llama_log_set(cls._installed._callback, ctypes.c_void_p(0))
        cls._installed.verbose = verbose
        _set_min_level(GGML_LOG_LEVEL_NONE if verbose else GGML_LOG_LEVEL_INFO if info else GGML_LOG_LEVEL_WARN)
        return cls._installed

    def _on_log(self, level: int, text: bytes, _user: Any) -> None:
        line = text.decode("utf-8", errors="replace")
        if line.strip():
            self.recent.append(line.strip())
        if self.listener is not None:
            self.listener(line)
        if self.verbose:
            os.write(2, text)

    def last_error(self) -> str:
        """The most telling recent line: llama.cpp logs the cause as an
        "error" and then a generic "failed to ..." line."""
        for word in ("error", "failed"):
            for line in reversed(self.recent):
                if word in line.lower():
                    return line.split(" error loading model: ")[-1]
        return self.recent[-1] if self.recent else "no details from llama.cpp"


GGML_LOG_LEVEL_NONE = 0  # every line
GGML_LOG_LEVEL_INFO = 2  # all but DEBUG
GGML_LOG_LEVEL_WARN = 3  # warnings and errors


def _set_min_level(level: int) -> None:
    """Have ggml drop lines below `level` before they reach Python
    (patches/llama-cpp-log-level.patch): a model load logs thousands of
    DEBUG lines, and each is a call into Python that no one reads. A
    llama.cpp without the patch keeps sending every line."""
    base = backends.ggml_base_library()
    setter = getattr(base, "ggml_log_set_min_level", None) if base is not None else None
    if setter is not None:
        setter.argtypes, setter.restype = [ctypes.c_int], None
        setter(level)


def check_gguf_header(path: Path, offset: int = 0, what: str = "model") -> None:
    """Fail early, with a clear message, on a file that is not a GGUF;
    `what` names the file in it ("model", "LoRA adapter")."""
    if not path.exists():
        raise ModelMissingError(f"{what} file not found: {path}")
    if path.is_dir():
        raise ModelMissingError(f"{what} path is a directory, not a GGUF file: {path}")
    try:
        with path.open("rb") as f:
            f.seek(offset)
            head = f.read(24)
    except OSError as exc:
        raise ModelFileError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise ModelFileError(f"not a GGUF {what} file: {path}")
    version = struct.unpack_from("<I", head, 4)[0]
    if version not in (2, 3):
        raise ModelFileError(f"unsupported GGUF version {version} in {path}")


@dataclass(frozen=True)
class ModelSource:
    """Where the GGUF bytes are: a plain file, or a region inside a larger
    file (the packaged executable) starting at `offset`."""

    path: Path
    offset: int = 0

    @property
    def name(self) -> str:
        """What to call the model: its file's name, which for a packaged file
        is the name the user downloaded (the GGUF's own general.name is often
        a training-run label)."""
        return self.path.name.removesuffix(".exe")


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter GGUF (llama.cpp's convert_lora_to_gguf.py writes
    them), applied at run time at `scale` times its own alpha/rank. With a
    `size`, it is that many bytes at `offset` inside `path` (an adapter
    packed into the executable after its weights)."""

    path: Path
    scale: float = 1.0
    offset: int = 0
    size: int = 0

    def describe(self) -> str:
        where = f"built into this file ({self.size / 2**20:.1f} MiB)" if self.size else str(self.path)
        return f"{where}, applied at run time, scale {self.scale:g}"


class Model:
    """A loaded llama_model and its vocabulary."""

    def __init__(
        self, source: ModelSource, n_gpu_layers: int, log: LlamaLog, tensor_split: Sequence[float] = ()
    ) -> None:
        check_gguf_header(source.path, source.offset)
        backends.load()
        C.llama_backend_init()
        params = C.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        if tensor_split:
            if len(tensor_split) > C.LLAMA_MAX_DEVICES:
                raise UsageError(
                    f"--tensor-split has {len(tensor_split)} parts; llama.cpp takes at most {C.LLAMA_MAX_DEVICES}"
                )
            # Kept on self: llama.cpp reads the array during the load.
            self._split = (ctypes.c_float * C.LLAMA_MAX_DEVICES)(*tensor_split)
            params.tensor_split = self._split
        self.source = source
        self._ptr = _load(source, params)
        if not self._ptr:
            raise ModelFileError(f"cannot load model {source.path}: {log.last_error()}")
        phases.mark(phases.MODEL_LOADED)
        self.vocab = C.llama_model_get_vocab(self._ptr)
        # Per token id, filled as tokens are generated (dict reads and
        # writes are atomic, so any thread may fill them).
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self.n_vocab = C.llama_vocab_n_tokens(self.vocab)
        self.n_embd = C.llama_model_n_embd(self._ptr)
        self.n_ctx_train = C.llama_model_n_ctx_train(self._ptr)
        self.bos = C.llama_vocab_bos(self.vocab)
        self.eos = C.llama_vocab_eos(self.vocab)
        self.add_bos = bool(C.llama_vocab_get_add_bos(self.vocab))
        self.n_swa = int(C.llama_model_n_swa(self._ptr))  # sliding attention window; 0: none
        self.metadata = self._read_metadata()

    @property
    def ptr(self) -> Any:
        return self._ptr

    def close(self) -> None:
        if self._ptr:
            C.llama_model_free(self._ptr)  # frees its LoRA adapters too
            self._ptr = None

    def load_lora(self, adapter: LoraAdapter, log: LlamaLog) -> Any:
        """A LoRA adapter for this model, valid while the model is; llama.cpp
        checks that its tensors fit this model's."""
        check_gguf_header(adapter.path, adapter.offset, what="LoRA adapter")
        with _adapter_file(adapter) as path:
            ptr = C.llama_adapter_lora_init(self._ptr, str(path).encode())
        if not ptr:
            raise ModelFileError(f"cannot load LoRA adapter {adapter.path}: {log.last_error()}")
        return ptr

    def _read_metadata(self) -> dict[str, str]:
        buf = ctypes.create_string_buffer(1 << 16)
        out: dict[str, str] = {}
        for i in range(C.llama_model_meta_count(self._ptr)):
            C.llama_model_meta_key_by_index(self._ptr, i, buf, len(buf))
            key = buf.value.decode("utf-8", errors="replace")
            n = C.llama_model_meta_val_str_by_index(self._ptr, i, buf, len(buf))
            if n >= len(buf):  # the chat template can be long: ask again with room
                big = ctypes.create_string_buffer(n + 1)
                C.llama_model_meta_val_str_by_index(self._ptr, i, big, len(big))
                out[key] = big.value.decode("utf-8", errors="replace")
            else:
                out[key] = buf.value.decode("utf-8", errors="replace")
        return out

    def description(self) -> str:
        buf = ctypes.create_string_buffer(256)
        C.llama_model_desc(self._ptr, buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def size_bytes(self) -> int:
        return int(C.llama_model_size(self._ptr))

    def tokenize(self, text: str, add_bos: bool, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (C.llama_token * cap)()
        n = C.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos, parse_special)
        if n < 0:
            cap = -n
            buf = (C.llama_token * cap)()
            n = C.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos, parse_special)
        return list(buf[:n])

    def special_texts(self) -> frozenset[str]:
        """Texts that special-token parsing turns into one control or
        user-defined token."""
        wanted = C.LLAMA_TOKEN_ATTR_CONTROL | C.LLAMA_TOKEN_ATTR_USER_DEFINED
        texts = set()
        for token in range(self.n_vocab):
            if C.llama_vocab_get_attr(self.vocab, token) & wanted:
                text = self.token_bytes(token, special=True).decode("utf-8", errors="replace")
                if text.strip():
                    texts.add(text)
        return frozenset(texts)

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        if not special:
            # Looked up once per token id: every generated token asks, on
            # the engine's thread between two decodes, where a buffer and a
            # C call per token hold up the next one. A vocabulary is
            # finite, and an answer uses few of its tokens.
            known = self._pieces.get(token)
            if known is None:
                known = self._pieces[token] = self._piece(token, special)
            return known
        return self._piece(token, special)

    def _piece(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = C.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = C.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        raw = C.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    def detokenize(self, tokens: Sequence[int], special: bool = False) -> str:
        data = b"".join(self.token_bytes(t, special) for t in tokens)
        return data.decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        known = self._eog.get(token)
        if known is None:
            known = self._eog[token] = bool(C.llama_vocab_is_eog(self.vocab, token))
        return known


@contextlib.contextmanager
def _adapter_file(adapter: LoraAdapter) -> Iterator[Path]:
    """A path llama.cpp can open the adapter by. One packed into the
    executable is copied out (llama.cpp reads an adapter only from the start
    of a file, and reads all of it at load): into memory where Linux allows
    it, else a private temporary file; either is gone after the load."""
    if not adapter.size:
        yield adapter.path
        return
    with adapter.path.open("rb") as src:
        src.seek(adapter.offset)
        data = src.read(adapter.size)
    if len(data) != adapter.size:
        raise ModelFileError(f"{adapter.path} is cut short: its built-in LoRA adapter is incomplete")
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("llamabin-lora")
        try:
            os.write(fd, data)
            yield Path(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="llamabin-lora-") as tmp:
        path = Path(tmp) / "adapter.gguf"
        path.write_bytes(data)
        yield path


def _load(source: ModelSource, params: Any) -> Any:
    if source.offset == 0:
        return C.llama_model_load_from_file(str(source.path).encode("utf-8"), params)
    return _load_at_offset(source, params)


def _load_at_offset(source: ModelSource, params: Any) -> Any:
    """Load a GGUF embedded in a larger file through a C `FILE*` positioned
    at its first byte, so the weights are mapped in place, never copied."""
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fseeko.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
    libc.fclose.argtypes = [ctypes.c_void_p]
    fp = libc.fopen(str(source.path).encode("utf-8"), b"rb")
    if not fp:
        raise ModelFileError(f"cannot open {source.path}")
    try:
        if libc.fseeko(fp, source.offset, 0) != 0:
            raise ModelFileError(f"cannot seek to the weights in {source.path}")
        return C.llama_model_load_from_file_ptr(fp, params)
    finally:
        libc.fclose(fp)


class BatchEntry(NamedTuple):
    token: int
    seq: int
    pos: int
    logits: bool  # compute logits here (to sample the sequence's next token)


def set_loras(ctx: Any, adapters: Sequence[Any], scales: Sequence[float]) -> None:
    """Apply loaded LoRA adapters to a context (llama_context pointer)."""
    if not adapters:
        return
    ptrs = (C.llama_adapter_lora_p_ctypes * len(adapters))(*adapters)
    factors = (ctypes.c_float * len(scales))(*scales)
    if C.llama_set_adapters_lora(ctx, ptrs, len(adapters), factors) != 0:
        raise ModelFileError("llama.cpp could not apply the LoRA adapters to the context")


class _ContextHandle:
    """A llama_context, its memory and the batch it is fed through (room for
    `batch_tokens`, or for its whole context if None), freed once by close()."""

    def __init__(
        self, model: Model, params: Any, log: LlamaLog, what: str, hint: str = "", batch_tokens: int | None = None
    ) -> None:
        self._ptr = C.llama_init_from_model(model.ptr, params)
        if not self._ptr:
            raise ContextAllocationError(f"cannot allocate {what} ({log.last_error()}){hint}")
        # llama.cpp may round n_ctx up and clamp n_batch to it: use its values.
        self.n_ctx = C.llama_n_ctx(self._ptr)
        self.n_batch = C.llama_n_batch(self._ptr)
        self._memory = C.llama_get_memory(self._ptr)
        self._batch = C.llama_batch_init(batch_tokens or self.n_ctx, 0, 1)

    @property
    def ptr(self) -> Any:
        return self._ptr

    def close(self) -> None:
        if self._ptr:
            C.llama_batch_free(self._batch)
            C.llama_free(self._ptr)
            self._ptr = None


class Context(_ContextHandle):
    """A llama_context: the KV cache of up to `n_seq` sequences, either one
    pool they all draw on (`unified`) or an equal share each."""

    def __init__(
        self,
        model: Model,
        n_ctx: int,
        n_batch: int,
        n_seq: int,
        n_threads: int,
        log: LlamaLog,
        unified: bool = True,
    ) -> None:
        params = C.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        # Unified: one sequence may use the whole window, as the REPL's does,
        # but every token attends over the cells of all sequences, which
        # costs about 15% of throughput at 8 busy slots. Split: each sequence
        # has n_ctx / n_seq cells to itself (llama-server with -np).
        params.kv_unified = unified
        params.no_perf = True
        super().__init__(model, params, log, f"a context of {n_ctx} tokens", "; try a smaller -c", batch_tokens=n_batch)
        self.unified = unified
        self.n_ctx_seq = self.n_ctx if unified else int(C.llama_n_ctx_seq(self._ptr))
        self._argmax = _argmax_function()

    def forget(self, seq: int, start: int) -> None:
        """Drop positions >= start of one sequence from the KV cache."""
        C.llama_memory_seq_rm(self._memory, seq, start, -1)

    def first_position(self, seq: int) -> int:
        """The lowest position one sequence still has in the cache (-1:
        none). With a sliding window, llama.cpp may give the cells of
        positions that fell out of a sequence's window to another one."""
        return int(C.llama_memory_seq_pos_min(self._memory, seq))

    def state_size(self, seq: int) -> int:
        """Bytes that `save_state` of this sequence would take now."""
        return int(C.llama_state_seq_get_size(self._ptr, seq))

    def save_state(self, seq: int, size: int) -> bytearray | None:
        """A copy of one sequence's KV cache (`size` from `state_size`), or
        None if llama.cpp could not write it."""
        if size <= 0:
            return None
        state = bytearray(size)
        written = C.llama_state_seq_get_data(self._ptr, _first_byte(state), size, seq)
        return state if written == size else None

    def load_state(self, seq: int, state: bytearray) -> bool:
        """Put a saved KV cache into sequence `seq`, in place of what it
        held. False if it did not fit or was refused: the sequence may then
        hold part of it, and is for the caller to clear."""
        if not state:
            return False
        return int(C.llama_state_seq_set_data(self._ptr, _first_byte(state), len(state), seq)) == len(state)

    def logits(self, index: int, n_vocab: int) -> array:
        """A copy of the raw logits at batch entry `index` (one asked for in
        the last decode)."""
        ptr = C.llama_get_logits_ith(self._ptr, index)
        if not ptr:
            raise GenerationError(f"llama.cpp has no logits for batch entry {index}")
        return array("f", ctypes.string_at(ptr, 4 * n_vocab))

    def top_token(self, index: int) -> int | None:
        """The token with the largest logit at batch entry `index` (the
        first of equal ones), read where the logits are; None from a
        llama.cpp without patches/llama-cpp-greedy.patch. It reads the raw
        logits: a backend sampler set on the context (llama_set_sampler,
        which llamabin never sets) is not asked."""
        if self._argmax is None:
            return None
        token = self._argmax(self._ptr, index)
        if token < 0:
            raise GenerationError(f"llama.cpp has no logits for batch entry {index}")
        return token

    def synchronize(self) -> None:
        """Wait until the last decode's work is done: on a GPU backend
        llama_decode returns before it is (reading the logits waits too)."""
        C.llama_synchronize(self._ptr)

    def decode_batch(self, entries: Sequence[BatchEntry]) -> None:
        """Evaluate up to n_batch tokens, of any sequences, in one call."""
        batch = self._batch
        for i, e in enumerate(entries):
            batch.token[i] = e.token
            batch.pos[i] = e.pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = e.seq
            batch.logits[i] = e.logits
        batch.n_tokens = len(entries)
        rc = C.llama_decode(self._ptr, batch)
        if rc == 1:
            raise GenerationError("the context is full: no room in the KV cache for this step")
        if rc != 0:
            raise GenerationError(f"llama_decode failed with code {rc}")


def _argmax_function() -> Callable[[Any, int], int] | None:
    """libllama's llama_get_logits_argmax_ith (patches/llama-cpp-greedy.patch),
    typed, or None where the library has no such function."""
    function = getattr(getattr(C, "_lib", None), "llama_get_logits_argmax_ith", None)
    if function is not None:
        function.argtypes = [C.llama_context_p_ctypes, ctypes.c_int32]
        function.restype = ctypes.c_int32
    return function  # type: ignore[no-any-return]


def _first_byte(buf: bytearray) -> Any:
    """A pointer to a non-empty buffer's first byte, for llama.cpp to read
    or write `len(buf)` bytes: one array type for every size (ctypes keeps
    each `c_uint8 * n` type it makes for good)."""
    return (ctypes.c_uint8 * 1).from_buffer(buf)


class Sampler:
    """A llama.cpp sampler chain built from one request's settings."""

    def __init__(self, model: Model, params: SamplingParams, n_ctx: int) -> None:
        """`n_ctx` is the window of a penalty over the whole context
        (repeat_last_n -1)."""
        if params.grammar:
            check_grammar(params.grammar)  # before C code recurses into it
        self._ptr = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        self._guard: GrammarGuard | None = None
        # Nothing but the largest logit decides: the chain would only copy
        # every logit into candidates first (with SmolLM2's 49,152, 0.14 ms
        # of a 4 ms step on a 2-core Xeon, 2026-12-07).
        self._greedy_alone = _greedy_alone(params)
        with capture_stderr() as errors:
            stages = _stages(model, params, n_ctx)
        for stage in stages:
            if not stage:
                self.close()
                raise UsageError(f"invalid grammar: {errors.first_line() or 'not valid GBNF'}")
            if isinstance(stage, GrammarGuard):
                self._guard = stage
                stage = stage.ptr
            C.llama_sampler_chain_add(self._ptr, stage)  # the chain frees it
        if self._guard is not None:
            try:
                self._guard.check_start()
            except BaseException:  # GrammarError, or Ctrl-C during a slow check
                self.close()
                raise

    def sample(self, ctx: Context, index: int) -> int:
        """Pick the next token from the logits of batch entry `index`; this
        also feeds it to the stateful samplers (penalties, grammar). Raises
        GrammarError, the token thrown away, if the grammar allowed none or
        took too long to match it."""
        if self._greedy_alone and (top := ctx.top_token(index)) is not None:
            return top
        token = int(C.llama_sampler_sample(self._ptr, ctx.ptr, index))
        if self._guard is not None:
            self._guard.check()
        return token

    def draft_room(self) -> int | None:
        """At most this many drafted tokens a step, for the grammar's time
        (GrammarGuard.tokens_per_step); None: no grammar, no such bound."""
        return None if self._guard is None else self._guard.tokens_per_step() - 1

    def close(self) -> None:
        if self._ptr:
            C.llama_sampler_free(self._ptr)
            self._ptr = None


class _Captured:
    def __init__(self) -> None:
        self.text = ""

    def first_line(self) -> str:
        lines = [ln.strip() for ln in self.text.splitlines() if ln.strip()]
        return lines[0].removeprefix("parse: error parsing grammar: ") if lines else ""


# File descriptor 2 is one per process, so its capture is too: two
# overlapping captures (two requests compiling grammars at once) would each
# restore the other's temporary file, leaving fd 2 on a deleted file and
# every later error message lost.
_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def capture_stderr() -> Iterator[_Captured]:
    """Capture what C code writes straight to fd 2 (llama.cpp's grammar
    parser does not use the log callback), to report it as one line."""
    captured = _Captured()
    with _STDERR_LOCK, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode("utf-8", errors="replace")


def _greedy_alone(p: SamplingParams) -> bool:
    """Whether the chain _stages builds for `p` picks the largest logit and
    nothing else: greedy, with no bias, grammar or active penalty (llama.cpp's
    penalties sampler is off under the same condition), so it keeps no state
    that skipping it would lose."""
    penalties_off = p.repeat_last_n == 0 or (
        p.repeat_penalty == 1 and p.frequency_penalty == 0 and p.presence_penalty == 0
    )
    return p.temperature <= 0 and not p.logit_bias and not p.grammar and penalties_off


def _stages(model: Model, p: SamplingParams, n_ctx: int) -> list[Any]:
    # Same order as llama-cpp-python's Llama sampler, so greedy and seeded
    # output match a direct Llama() completion.
    stages = []
    if p.logit_bias:  # first, as llama.cpp's own chain has it; llama.cpp copies the array
        biases = (C.llama_logit_bias * len(p.logit_bias))(*(C.llama_logit_bias(t, b) for t, b in p.logit_bias))
        stages.append(C.llama_sampler_init_logit_bias(model.n_vocab, len(p.logit_bias), biases))
    # llama.cpp takes a negative window as none at all, not as the context.
    window = n_ctx if p.repeat_last_n == -1 else p.repeat_last_n
    stages.append(
        C.llama_sampler_init_penalties(model.n_vocab, window, p.repeat_penalty, p.frequency_penalty, p.presence_penalty)
    )
    if p.grammar:
        grammar = C.llama_sampler_init_grammar(model.vocab, p.grammar.encode("utf-8"), b"root")
        stages.append(GrammarGuard(grammar, model.n_vocab) if grammar else None)
    if p.temperature <= 0:
        stages.append(C.llama_sampler_init_greedy())
        return stages
    seed = p.seed if p.seed is not None else C.LLAMA_DEFAULT_SEED
    stages += [
        C.llama_sampler_init_top_k(p.top_k),
        C.llama_sampler_init_top_p(p.top_p, 1),
        C.llama_sampler_init_min_p(p.min_p, 1),
        C.llama_sampler_init_temp(p.temperature),
        C.llama_sampler_init_dist(seed & 0xFFFFFFFF),
    ]
    return stages


class EmbeddingContext(_ContextHandle):
    """A context that pools each input into one vector (the mean of its
    token states). It is separate from the generation context, so an
    embedding request never disturbs a chat's KV cache."""

    def __init__(self, model: Model, n_ctx: int, n_threads: int, log: LlamaLog) -> None:
        params = C.llama_context_default_params()
        params.n_ctx = n_ctx
        # A pooled input must fit in one micro-batch: llama.cpp pools per
        # micro-batch, so a split input would be averaged over its tail only.
        params.n_batch = n_ctx
        params.n_ubatch = n_ctx
        params.n_seq_max = 1
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.embeddings = True
        params.pooling_type = C.LLAMA_POOLING_TYPE_MEAN
        params.no_perf = True
        super().__init__(model, params, log, f"an embedding context of {n_ctx} tokens")
        self.n_embd = C.llama_model_n_embd(model.ptr)

    def embed(self, tokens: Sequence[int]) -> list[float]:
        """The pooled, unnormalised embedding of up to n_ctx tokens."""
        C.llama_memory_clear(self._memory, True)
        batch = self._batch
        for i, tok in enumerate(tokens):
            batch.token[i] = tok
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1  # pooling reads every token's state
        batch.n_tokens = len(tokens)
        rc = C.llama_decode(self._ptr, batch)
        if rc != 0:
            raise GenerationError(f"llama_decode failed with code {rc} while embedding")
        vec = C.llama_get_embeddings_seq(self._ptr, 0)
        if not vec:
            raise GenerationError("this model gave no pooled embedding")
        return [float(x) for x in vec[: self.n_embd]]
