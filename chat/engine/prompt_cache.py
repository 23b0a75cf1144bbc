"""Prompts kept in memory after their slot moves on.

A slot's KV cache holds one sequence. When a request takes the slot for a
prompt that shares little with it, what the slot held is about to be lost:
it is copied here first (llama_state_seq_get_data). A later request whose
prompt shares more with a saved one than with any free slot gets it put back
(llama_state_seq_set_data) and evaluates only what follows. So two
conversations taking turns on one slot, or a long system prompt used between
other requests, are evaluated once, as llama-server does by default
(its `--cache-ram`, llama.cpp PR 16391).

The cache is bounded in bytes; the least recently used prompts go first.
A saved prompt stays saved when it is put back (another request may want it
too), and one that a newer saved prompt extends is dropped.

With a sliding window (Gemma 2 and 3, ...), llama.cpp saves the windowed
layers' cells of the last window only, and answers continuing such a partial
state drift from those of a slot that kept its whole sequence (Gemma 3 270M,
prompts of 513 to 1000 tokens: the same first token, log-probabilities 0.02
to 0.2 apart after it; llama.cpp issue 25295, open). Only prompts no longer
than the window, saved whole, are kept for such a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

MIB = 1 << 20
DEFAULT_CACHE_RAM_MIB = 8192  # llama-server's default
NO_LIMIT = -1


def default_cache_ram_mib() -> int:
    """llama-server's 8 GiB, or a quarter of this machine's memory if that
    is less: a saved prompt is memory a small machine may need."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or not these names
        return DEFAULT_CACHE_RAM_MIB
    return max(1, min(DEFAULT_CACHE_RAM_MIB, total // 4 // MIB))


class SequenceStates(Protocol):
    """What the cache needs of a context (chat.engine.llama.Context)."""

    def state_size(self, seq: int) -> int: ...
    def save_state(self, seq: int, size: int) -> bytearray | None: ...
    def load_state(self, seq: int, state: bytearray) -> bool: ...


@dataclass(eq=False)  # one saved prompt is itself only: compared by identity, never by its bytes
class SavedPrompt:
    tokens: list[int]
    state: bytearray  # the sequence's KV cache, as llama.cpp wrote it


class PromptCache:
    """Saved sequences, up to `limit_mib` MiB (NO_LIMIT: no bound), of a
    model whose sliding window is `window` tokens (0: none)."""

    def __init__(self, limit_mib: int, window: int = 0) -> None:
        self.limit = None if limit_mib == NO_LIMIT else limit_mib * MIB
        self.window = window
        self._saved: list[SavedPrompt] = []  # least recently used first
        self.bytes = 0
        self.restored = 0  # prompts put back into a slot

    def __len__(self) -> int:
        return len(self._saved)

    def save(self, ctx: SequenceStates, seq: int, tokens: list[int]) -> None:
        """Copy sequence `seq` (which holds `tokens`), unless a saved prompt
        holds them all already, it is bigger than the whole cache, or the
        model's window would keep it from coming back."""
        if not tokens or (self.window and len(tokens) > self.window):
            return  # none of it would come back (see the module's note)
        if any(self._holds(s.tokens, tokens) for s in self._saved):
            return
        size = ctx.state_size(seq)
        if size <= 0 or (self.limit is not None and size > self.limit):
            return
        state = ctx.save_state(seq, size)  # before dropping any: it may fail
        if state is None:
            return
        for old in [s for s in self._saved if self._holds(tokens, s.tokens)]:
            self._drop(old)  # the new copy stands in for it
        while self._saved and self.limit is not None and self.bytes + len(state) > self.limit:
            self._drop(self._saved[0])
        self._saved.append(SavedPrompt(list(tokens), state))
        self.bytes += len(state)

    def best(self, prompt: list[int]) -> tuple[SavedPrompt, int] | None:
        """The saved prompt sharing the longest prefix with `prompt`, and
        that prefix's length; None if none shares a token."""
        scored = [(common_prefix(s.tokens, prompt), s) for s in self._saved]
        usable = [(n, s) for n, s in scored if n > 0]
        shared, saved = max(usable, key=lambda pair: pair[0], default=(0, None))
        return (saved, shared) if saved is not None else None

    def restore(self, ctx: SequenceStates, seq: int, saved: SavedPrompt) -> bool:
        """Put `saved` into sequence `seq`; False if llama.cpp had no room
        for it or refused it (the sequence may then hold part of it, and is
        for the caller to clear)."""
        if not ctx.load_state(seq, saved.state):
            return False
        if saved in self._saved:  # else dropped meanwhile, to make room: put back all the same
            self._saved.remove(saved)
            self._saved.append(saved)  # the most recently used now
        self.restored += 1
        return True

    def _holds(self, longer: list[int], tokens: list[int]) -> bool:
        """Whether a saved prompt of `longer` tokens stands in for all of
        `tokens` (every saved prompt is whole: save keeps no other)."""
        return common_prefix(longer, tokens) == len(tokens)

    def _drop(self, saved: SavedPrompt) -> None:
        self._saved.remove(saved)
        self.bytes -= len(saved.state)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` share from the start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
