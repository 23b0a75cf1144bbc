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
# others within noise, since a run drafts only where its guesses pay.
DEFAULT_DRAFT_MAX = 8

# An unmeasured step size is guessed to cost this much more per extra token
# than the largest measured size below it: low enough that a size gets tried
# once (and so measured), after which its own timings decide.
UNMEASURED_SLOPE = 0.1
# A size's timing is trusted for this many one-token steps; then the guess
# above may beat it, and the size is tried, and timed, again. One slow step
# (the machine busy, a first use) must not rule a size out for good, and a
# longer context changes what sizes cost. A retry that loses costs about one
# step in this many.
RETIME_STEPS = 512
# A draft is evaluated only when its expected tokens per unit of step time
# beat plain one-token steps by this much: a margin for the error in both
# estimates, so that answers that do not quote lose no more than noise.
MIN_GAIN = 1.15
# How much each checked guessed token outweighs the one before it, in the
# run's estimate of how often a guessed token is right: quoting comes in
# stretches, and about the last ten tokens checked decide.
DECAY = 0.9


@dataclass(frozen=True)
class LookupSettings:
    max_draft: int = DEFAULT_DRAFT_MAX  # tokens guessed at most per step
    min_ngram: int = 3  # the shortest run of last tokens that must match
    max_ngram: int = 5


class StepCosts:
    """What a step of n tokens (each with its logits, one sequence) costs on
    this machine, relative to a step of one token, as timed.

    It depends on the CPU's kernels, and not in proportion: on a Sapphire
    Rapids Xeon (AMX) a step of 2 tokens took 2.0 one-token steps, of 3 2.2,
    of 9 2.9 (one token goes through a matrix-vector kernel, more through the
    AMX tiles), where on other CPUs a few tokens cost little more than one.
    The scheduler owns one, times its steps into it, and its drafters read it."""

    def __init__(self) -> None:
        self._one_token_s: float | None = None  # a one-token step's time, averaged
        self._ones = 0  # one-token steps timed
        self._relative: dict[int, tuple[float, int]] = {}  # size -> (its cost in one-token steps, _ones then)

    def add(self, n_tokens: int, seconds: float) -> None:
        if n_tokens == 1:
            last = self._one_token_s
            self._one_token_s = seconds if last is None else 0.8 * last + 0.2 * seconds
            self._ones += 1
        elif self._one_token_s:
            # As a ratio to the one-token steps of the same time: both grow
            # with the context, the ratio much less.
            ratio = seconds / self._one_token_s
            timed = self._relative.get(n_tokens)
            self._relative[n_tokens] = (ratio if timed is None else 0.8 * timed[0] + 0.2 * ratio, self._ones)

    def relative(self, n_tokens: int) -> float | None:
        """A step of `n_tokens` in one-token steps; None until one was timed."""
        if self._one_token_s is None:
            return None
        if n_tokens == 1:
            return 1.0
        below = max((n for n in self._relative if n < n_tokens), default=1)
        base = self._relative[below][0] if below > 1 else 1.0
        guess = base + UNMEASURED_SLOPE * (n_tokens - below)
        timed = self._relative.get(n_tokens)
        if timed is None:
            return guess
        cost, when = timed
        return min(cost, guess) if self._ones - when > RETIME_STEPS else cost


class NgramIndex:
    """A sequence's tokens, and where each of its short runs last ended, so
    a draft costs a few dictionary lookups however long the sequence is."""

    def __init__(self, tokens: Sequence[int], settings: LookupSettings) -> None:
        self.settings = settings
        self.tokens: list[int] = []
        self._ends: dict[tuple[int, ...], int] = {}  # a run of min_ngram to max_ngram tokens -> its latest end
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

    A draft of L tokens is worth its step when the tokens it is expected to
    give (the sampled one, and each guessed one while all before it were
    right: 1 + p + ... + p^L, p being how often a guessed token is right)
    beat the step's cost in one-token steps (StepCosts) by MIN_GAIN. The
    length that gives most per unit of time is drafted, or nothing.

    p is learnt from every guess, drafted or not: a guess not worth drafting
    is kept, and checked against the tokens that follow, for free. So a run
    that stopped drafting starts again where its guesses become right."""

    def __init__(self, tokens: Sequence[int], settings: LookupSettings, costs: StepCosts) -> None:
        # Indexed at the first draft: a run that never runs alone (the
        # server's, busy) costs the engine's thread a list, not an index.
        self._tokens: list[int] | None = list(tokens)
        self._index: NgramIndex | None = None
        self.settings = settings
        self._costs = costs
        self._right = 0.0  # guessed tokens that were right, decayed per token checked
        self._tried = 0.0  # guessed tokens checked (up to the first wrong one), decayed alike
        self._shadow: list[int] = []  # a guess not drafted, checked as tokens come
        self._shadow_right = 0

    def append(self, token: int) -> None:
        if self._index is not None:
            self._index.append(token)
        elif self._tokens is not None:
            self._tokens.append(token)
        if self._shadow:
            if token == self._shadow[self._shadow_right]:
                self._shadow_right += 1
                if self._shadow_right < len(self._shadow):
                    return
            self.record(len(self._shadow), self._shadow_right)
            self._shadow = []

    def draft(self) -> list[int]:
        if self._shadow:  # the last guess is still being checked
            return []
        if self._index is None:
            self._index = NgramIndex(self._tokens or [], self.settings)
            self._tokens = None
        guess = self._index.draft()
        length = self._worth(len(guess))
        if not length:
            self._shadow, self._shadow_right = guess, 0
        return guess[:length]

    def record(self, guessed: int, right: int) -> None:
        """How a guess of `guessed` tokens fared: the first `right` were."""
        if not guessed:
            return
        checked = right + (right < guessed)
        fade = DECAY**checked
        self._right = fade * self._right + right
        self._tried = fade * self._tried + checked

    def _worth(self, longest: int) -> int:
        """The draft length (at most `longest`) that gives most tokens per
        unit of step time, if that beats plain steps by MIN_GAIN; else 0."""
        p = (self._right + 0.5) / (self._tried + 1)  # half right, until told; soon outweighed
        best, best_gain = 0, MIN_GAIN
        expected, term = 1.0, 1.0
        for length in range(1, longest + 1):
            term *= p
            expected += term
            cost = self._costs.relative(length + 1)
            if cost is None:
                return 0
            if expected / cost > best_gain:
                best, best_gain = length, expected / cost
        return best
