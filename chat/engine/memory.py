"""Refusing a context the machine cannot hold, before llama.cpp tries.

On Linux a huge allocation often "succeeds" (memory is overcommitted) and the
process is killed later, mid-answer. Estimating the KV cache from the GGUF's
hyperparameters lets us say so up front instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from chat.errors import ContextAllocationError

F16_BYTES = 2


def kv_cache_bytes(metadata: Mapping[str, str], n_ctx: int) -> int:
    """Size of an f16 KV cache of n_ctx tokens, from GGUF hyperparameters."""
    arch = metadata.get("general.architecture", "")

    def num(key: str, default: int = 0) -> int:
        try:
            return int(metadata.get(f"{arch}.{key}", default))
        except ValueError:
            return default

    n_layer = num("block_count")
    n_head = num("attention.head_count", 1) or 1
    n_head_kv = num("attention.head_count_kv", n_head) or n_head
    n_embd = num("embedding_length")
    head_k = num("attention.key_length", n_embd // n_head)
    head_v = num("attention.value_length", n_embd // n_head)
    return n_ctx * n_layer * n_head_kv * (head_k + head_v) * F16_BYTES


def available_memory() -> int | None:
    """Physical memory free for us (MemAvailable on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_context_fits(metadata: Mapping[str, str], n_ctx: int) -> None:
    need = kv_cache_bytes(metadata, n_ctx)
    have = available_memory()
    if have is not None and need > have:
        raise ContextAllocationError(
            f"a context of {n_ctx} tokens needs {need / 2**30:.1f} GiB of memory"
            f" for its cache, but only {have / 2**30:.1f} GiB is free; use a smaller -c"
        )
