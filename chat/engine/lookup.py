"""Prompt lookup: guessing the next tokens from what was already said.

An answer that quotes its input (a summary, a code edit, JSON built from a
document) repeats runs of tokens that are already in the prompt or the
answer so far. When the last few tokens appeared earlier, the tokens that
followed them there are a cheap guess (a draft) of what comes next: no
draft model is needed. The engine evaluates the draft in the same step as
the token before it and keeps the part the sampler agrees with, so the
output is what it would have been without drafts, and a step can yield
several tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Measured in bench/lookup.py: quoting answers decode 1.5-1.8x as fast,
# others within noise, since a run whose drafts do not pay soon stops drafting.
DEFAULT_DRAFT_MAX = 8


@dataclass(frozen=True)
class LookupSettings:
    max_draft: int = DEFAULT_DRAFT_MAX  # tokens guessed at most per step
    first_draft: int = 2  # at most, until drafts of this run have been right
    min_ngram: int = 3  # the shortest run of last tokens that must match
    max_ngram: int = 5
    max_backoff: int = 32  # steps without drafts at most, after drafts that all missed


class NgramIndex:
    """A sequence's tokens, and where each of its short runs last ended, so
    a draft costs a few dictionary lookups however long the sequence is."""

    def __init__(self, tokens: Sequence[int], settings: LookupSettings) -> None:
        self.settings = settings
        self.tokens: list[int] = []
        self._ends: dict[tuple[int, ...], int] = {}  # a run of 2 to 4 tokens -> where its latest copy ends
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        # The run that ended just before this token becomes findable now, so
        # that the run ending at the last token only ever finds earlier copies.
        tokens = self.tokens
        end = len(tokens)
        for n in range(self.settings.min_ngram, self.settings.max_ngram + 1):
            if end >= n:
                self._ends[tuple(tokens[end - n : end])] = end
        tokens.append(token)

    def draft(self) -> list[int]:
        """The tokens that followed the latest earlier copy of the longest
        run of last tokens that has one; [] if none has."""
        tokens, s = self.tokens, self.settings
        for n in range(s.max_ngram, s.min_ngram - 1, -1):
            if len(tokens) < n:
                continue
            end = self._ends.get(tuple(tokens[len(tokens) - n :]))
            if end is not None:
                return tokens[end : end + s.max_draft]
        return []


class Drafter:
    """A run's drafts: the index of its tokens, and how much to guess.

    A wrong draft costs its evaluation (a step of 1 + n tokens instead of 1),
    so guessing starts short and is cut back where it does not pay: the
    length halves after a draft that missed from its first token, or whose
    step gave fewer tokens than plain steps would have in its time, and
    drafting pauses for a number of steps that doubles with each such draft
    in a row; a draft taken whole doubles the length again, and any other
    hit ends the pause."""

    def __init__(self, tokens: Sequence[int], settings: LookupSettings) -> None:
        # Indexed at the first draft: a run that never runs alone (the
        # server's, busy) costs the engine's thread a list, not an index.
        self._tokens: list[int] | None = list(tokens)
        self._index: NgramIndex | None = None
        self.settings = settings
        self.length = settings.first_draft
        self._pause = 0  # steps left without drafts
        self._backoff = 1

    def append(self, token: int) -> None:
        if self._index is not None:
            self._index.append(token)
        elif self._tokens is not None:
            self._tokens.append(token)

    def draft(self) -> list[int]:
        if self._pause:
            self._pause -= 1
            return []
        if self._index is None:
            self._index = NgramIndex(self._tokens or [], self.settings)
            self._tokens = None
        return self._index.draft()[: self.length]

    def record(self, drafted: int, accepted: int, cost: float | None = None) -> None:
        """How a draft of `drafted` tokens fared; `cost`: its step's time in
        steps of one token, when known."""
        if not drafted:
            return
        # The step gave the sampled token and the accepted ones: fewer than
        # plain one-token steps give in the same time is a loss.
        lost = cost is not None and accepted + 1 < cost
        if accepted == drafted and not lost:
            self.length = min(self.settings.max_draft, self.length * 2)
            self._backoff = 1
        elif accepted == 0 or lost:
            self.length = max(1, self.length // 2)
            self._pause = self._backoff
            self._backoff = min(self.settings.max_backoff, self._backoff * 2)
        else:
            self._backoff = 1
