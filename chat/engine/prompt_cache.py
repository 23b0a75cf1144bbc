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
    def save_state(self, seq: int, size: int) -> bytearray: ...
    def load_state(self, seq: int, state: bytearray) -> bool: ...


@dataclass
class SavedPrompt:
    tokens: list[int]
    state: bytearray  # the sequence's KV cache, as llama.cpp wrote it


class PromptCache:
    """Saved sequences, up to `limit_mib` MiB (NO_LIMIT: no bound)."""

    def __init__(self, limit_mib: int) -> None:
        self.limit = None if limit_mib == NO_LIMIT else limit_mib * MIB
        self._saved: list[SavedPrompt] = []  # least recently used first
        self.bytes = 0
        self.restored = 0  # prompts put back into a slot

    def __len__(self) -> int:
        return len(self._saved)

    def save(self, ctx: SequenceStates, seq: int, tokens: list[int]) -> None:
        """Copy sequence `seq` (which holds `tokens`), unless a saved prompt
        holds them all already or it is bigger than the whole cache."""
        if not tokens or any(common_prefix(s.tokens, tokens) == len(tokens) for s in self._saved):
            return
        size = ctx.state_size(seq)
        if self.limit is not None and size > self.limit:
            return
        for old in [s for s in self._saved if common_prefix(s.tokens, tokens) == len(s.tokens)]:
            self._drop(old)  # a prefix of these tokens: the new copy holds it too
        while self._saved and self.limit is not None and self.bytes + size > self.limit:
            self._drop(self._saved[0])
        saved = SavedPrompt(list(tokens), ctx.save_state(seq, size))
        self._saved.append(saved)
        self.bytes += len(saved.state)

    def best(self, prompt: list[int]) -> tuple[SavedPrompt, int] | None:
        """The saved prompt sharing the longest prefix with `prompt`, and
        that prefix's length; None if none shares a token."""
        scored = [(common_prefix(s.tokens, prompt), s) for s in self._saved]
        shared, saved = max(scored, key=lambda pair: pair[0], default=(0, None))
        return (saved, shared) if saved is not None and shared > 0 else None

    def restore(self, ctx: SequenceStates, seq: int, saved: SavedPrompt) -> bool:
        """Put `saved` into sequence `seq`; False if the cache had no room
        for it (the sequence is empty then)."""
        if not ctx.load_state(seq, saved.state):
            return False
        self._saved.remove(saved)
        self._saved.append(saved)  # the most recently used now
        self.restored += 1
        return True

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
