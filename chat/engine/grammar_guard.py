"""A grammar sampler that cannot take the process down.

llama.cpp's grammar sampler masks every token the grammar does not allow.
When it allows none (an empty range such as `[b-a]`, a NUL character, a
token id past the vocabulary, or a dead end after some text), the chain
still picks a token, and feeding it back to the grammar aborts the process
(llama-grammar.cpp: GGML_ABORT on an end-of-generation token the grammar
does not accept, an uncaught C++ exception on any other). A grammar whose
alternatives overlap can also make each token's matching take seconds,
growing token by token, while every other request waits on the engine.

`GrammarGuard` stands in the chain where the grammar sampler would: it runs
the real one, and when no token survives it marks itself dead and lets one
through instead, so the chain completes and the grammar never sees it; it
also times the grammar's work on each token. `check()` then raises, and the
scheduler ends that request alone. `check_start()` does the same for the
first token before the request is queued, so the common case is refused
with its reason at once.
"""

from __future__ import annotations

import ctypes
import math
import struct
import time
from array import array
from typing import Any

from chat.engine.bindings import llama_cpp as C
from chat.errors import UsageError

# One token's matching may take this long. JSON schemas' grammars take a few
# milliseconds over a 262k-token vocabulary; past this, the grammar is
# ambiguous enough to stall every other request for longer each token.
STEP_LIMIT_S = 1.0

SAMPLES = (64, 512, 4096, 32768)  # candidates timed before a token's matching, to stop a slow one early

_MINUS_INF = struct.pack("<f", -math.inf)

NAME = ctypes.create_string_buffer(b"llamabin-grammar-guard")  # static: llama.cpp keeps the pointer it is given
_NameFunction = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)

DEAD_END = "the grammar allows no token here{where}: check it for an empty character range or an impossible rule"


class GrammarError(UsageError):
    """The request's grammar cannot be followed any further."""


class GrammarGuard:
    """Owns a llama.cpp grammar sampler and a sampler of its own wrapping it,
    to add to a chain (which then frees both)."""

    def __init__(self, grammar: Any, n_vocab: int, step_limit_s: float | None = None) -> None:
        self._grammar = grammar
        self._n_vocab = n_vocab
        self._limit = STEP_LIMIT_S if step_limit_s is None else step_limit_s
        self._spent = 0.0  # the grammar's seconds on the current token
        self._sampled = 0.0  # of which, not counted in _spent: its matching of samples of the candidates
        self.problem: str | None = None
        # Kept on self: llama.cpp calls these for as long as the chain lives.
        # The name is handed over as an address: a callback returning bytes
        # would give llama.cpp a pointer into a freed Python object.
        self._name = _NameFunction(lambda _s: ctypes.addressof(NAME))
        self._callbacks = (
            ctypes.cast(self._name, C.llama_sampler_i_name),
            C.llama_sampler_i_accept(self._accept),
            C.llama_sampler_i_apply(self._apply),
            C.llama_sampler_i_reset(self._reset),
            C.llama_sampler_i_free(self._free),
        )
        name, accept, apply, reset, free = self._callbacks
        self._iface = C.llama_sampler_i(name=name, accept=accept, apply=apply, reset=reset, free=free)
        self.ptr = C.llama_sampler_init(ctypes.byref(self._iface), None)

    def check_start(self) -> None:
        """Raise GrammarError unless the grammar allows some first token, or
        if matching one would take longer than a token may."""
        n = self._n_vocab
        fields = array("i", bytes(12 * n))  # (id, logit, p) per token; 0 bits are 0.0
        fields[0::3] = array("i", range(n))  # once per request: ~10 ms for 262k tokens
        cur = (C.llama_token_data * n).from_buffer(fields)
        arr = C.llama_token_data_array(cur, n, -1, False)
        spent = self._too_slow_on_samples(arr)
        if spent is None:
            spent = self._time_all(ctypes.byref(arr))
        if spent > self._limit:
            raise GrammarError(_too_slow(spent, self._limit))
        if _all_masked(arr):
            raise GrammarError(DEAD_END.format(where=" at the start"))

    def tokens_per_step(self) -> int:
        """How many tokens a step may give this grammar to check (the
        sampled one and a draft's), so that the step's matching stays
        within one token's limit at the last token's pace: a draft of
        eight tokens would otherwise hold every other request for up to
        nine times the limit, each token just under it."""
        per_token = self._spent + self._sampled  # with the sampled matching: a tenth to a seventh more
        if per_token <= 0:
            return 1 << 30
        return max(1, int(self._limit / per_token))

    def check(self) -> None:
        """Raise GrammarError if the token just sampled was not the grammar's."""
        if self.problem is not None:
            raise GrammarError(self.problem)

    # -- llama.cpp's calls, from inside llama_sampler_sample ---------------------
    # An exception cannot cross back into C: each callback only records.

    def _apply(self, _smpl: Any, cur_p: Any) -> None:
        arr = cur_p.contents
        try:
            if self.problem is None:
                self._match(cur_p)
        except BaseException as exc:  # nothing may cross back into C
            self.problem = f"the grammar failed: {exc!r}"
        if self.problem is not None and arr.size:
            # The chain must still pick a token: any one, as the grammar
            # never sees it and check() throws it away.
            arr.data[0].logit = 0.0

    def _match(self, cur_p: Any) -> None:
        arr = cur_p.contents
        spent = self._too_slow_on_samples(arr)
        if spent is not None:
            self.problem = _too_slow(spent, self._limit)
            return
        self._spent = self._time_all(cur_p)
        if _all_masked(arr):
            self.problem = DEAD_END.format(where=" after the text so far")

    def _time_all(self, cur_p: Any) -> float:
        start = time.perf_counter()
        C.llama_sampler_apply(self._grammar, cur_p)
        return time.perf_counter() - start

    def _accept(self, _smpl: Any, token: int) -> None:
        if self.problem is not None:
            return
        try:
            start = time.perf_counter()
            C.llama_sampler_accept(self._grammar, token)
            self._spent += time.perf_counter() - start
            if self._spent > self._limit:
                self.problem = _too_slow(self._spent, self._limit)
        except BaseException as exc:  # nothing may cross back into C
            self.problem = f"the grammar failed: {exc!r}"

    def _too_slow_on_samples(self, arr: Any) -> float | None:
        """Seconds the grammar took over a sample of `arr`'s candidates, if
        that was already too long; None if no sample was.

        Matching more candidates never costs less, so the samples grow
        eightfold (SAMPLES) and the first over the limit ends the search: a
        grammar that would hold the engine for minutes is stopped after
        seconds, and a sound one pays about a tenth more."""
        n = int(arr.size)
        ids = _ids(arr)
        self._sampled = 0.0
        for k in SAMPLES:
            if k * 2 > n:
                break
            spent = self._time(ids[:: n // k][:k])
            self._sampled += spent
            if spent > self._limit:
                return spent
        return None

    def _time(self, ids: memoryview) -> float:
        """Seconds the grammar takes to judge the tokens `ids`."""
        k = len(ids)
        fields = bytearray(12 * k)  # (id, logit, p) per token; 0 bits are 0.0
        memoryview(fields).cast("i")[0::3] = ids
        sample = C.llama_token_data_array((C.llama_token_data * k).from_buffer(fields), k, -1, False)
        start = time.perf_counter()
        C.llama_sampler_apply(self._grammar, ctypes.byref(sample))
        return time.perf_counter() - start

    def _reset(self, _smpl: Any) -> None:
        C.llama_sampler_reset(self._grammar)
        self.problem = None

    def _free(self, _smpl: Any) -> None:
        if self._grammar:
            C.llama_sampler_free(self._grammar)
            self._grammar = None


def _all_masked(arr: Any) -> bool:
    """No candidate left: every logit is -inf (compared as bytes, at C's
    speed: a Python loop over a 262k vocabulary took ~10 ms a token)."""
    n = int(arr.size)
    return n == 0 or _fields(arr).cast("I")[1::3].tobytes() == _MINUS_INF * n


def _ids(arr: Any) -> memoryview:
    return _fields(arr).cast("i")[0::3]


def _fields(arr: Any) -> memoryview:
    """The candidates' bytes in place, (id, logit, p) each, to cast as
    needed (ctypes calls them "<f", a format memoryview cannot read)."""
    fields = (ctypes.c_float * (3 * int(arr.size))).from_address(ctypes.addressof(arr.data.contents))
    return memoryview(fields).cast("B")


def _too_slow(spent: float, limit: float) -> str:
    return (
        f"the grammar is too ambiguous to follow: matching the next token took over {spent:.1f} s"
        f" (at most {limit:g} s); make its alternatives and repetitions overlap less"
    )
