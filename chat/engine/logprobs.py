"""Log-probabilities of tokens, from a position's raw logits.

They are the model's own distribution (a softmax over the whole
vocabulary, before any sampling setting), as OpenAI reports them. Plain
Python, since numpy stays out of the packaged file: about 6 ms a token for
a 49k vocabulary on one core, paid only by requests that ask.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Callable
from itertools import repeat
from operator import sub

from chat.engine.types import TokenChoice, TokenLogprob


def log_normalizer(logits: array) -> float:
    """log(sum(exp(logits))), computed without overflow."""
    top = max(logits)
    return top + math.log(sum(map(math.exp, map(sub, logits, repeat(top)))))


def likeliest(logits: array, n: int) -> list[int]:
    """The ids of the `n` largest logits, largest first."""
    if n <= 0:
        return []
    ids: list[int] = []
    for value in heapq.nlargest(n, logits):
        start = 0
        while True:  # equal values: take the next id holding this one
            found = logits.index(value, start)
            if found not in ids:
                break
            start = found + 1
        ids.append(found)
    return ids


def token_logprob(logits: array, token: int, top_n: int, piece: Callable[[int], bytes]) -> TokenLogprob:
    """The logprob of `token` here, and the `top_n` likeliest tokens'."""
    norm = log_normalizer(logits)

    def choice(t: int) -> TokenChoice:
        return TokenChoice(t, piece(t), logits[t] - norm)

    return TokenLogprob(choice(token), tuple(choice(t) for t in likeliest(logits, top_n)))
