"""Prompt lookup: the drafts guessed from a sequence's own earlier tokens."""

from __future__ import annotations

import pytest

from chat.engine.lookup import RETIME_STEPS, Drafter, LookupSettings, NgramIndex, StepCosts

SETTINGS = LookupSettings(max_draft=4, min_ngram=2, max_ngram=3)


def test_the_tokens_after_the_latest_earlier_copy_of_the_tail_are_drafted() -> None:
    index = NgramIndex([1, 2, 3, 9, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3], SETTINGS)
    assert index.draft() == [4, 5, 6, 7]  # the latest copy of 1 2 3, and at most max_draft tokens
    index.append(4)
    assert index.draft() == [5, 6, 7, 1]


def test_the_longest_matching_tail_wins() -> None:
    # "8 2 3" matches nothing; "2 3" last appeared before 7.
    index = NgramIndex([5, 2, 3, 6, 1, 2, 3, 7, 8, 2, 3], SETTINGS)
    assert index.draft() == [7, 8, 2, 3]
    longer = NgramIndex([5, 2, 3, 6, 8, 2, 3, 9, 1, 2, 3, 7, 8, 2, 3], SETTINGS)
    assert longer.draft() == [9, 1, 2, 3]  # "8 2 3" appeared before 9


def test_no_earlier_copy_no_draft() -> None:
    assert NgramIndex([1, 2, 3, 4, 5], SETTINGS).draft() == []
    assert NgramIndex([1], SETTINGS).draft() == []
    assert NgramIndex([], SETTINGS).draft() == []


def test_a_run_never_drafts_from_itself() -> None:
    index = NgramIndex([7, 7], SETTINGS)
    assert index.draft() == []  # the only "7 7" is the tail itself
    index.append(7)
    assert index.draft() == [7]  # "7 7" ended one token earlier


def costs(per_size: dict[int, float]) -> StepCosts:
    """Step costs as if these step sizes had been timed (one-token steps: 1)."""
    c = StepCosts()
    for n, relative in {1: 1.0, **per_size}.items():
        c.add(n, relative / 1000)
    return c


# A CPU on which a few more tokens cost little more than one, and a Sapphire
# Rapids Xeon's AMX kernels (llama-bench pp1..pp9, 2026-12-06), on which a
# second token costs as much as the first.
CHEAP = {n: 1 + 0.1 * (n - 1) for n in range(2, 10)}
AMX = {2: 2.0, 3: 2.2, 4: 2.4, 5: 2.4, 6: 2.5, 7: 2.6, 8: 2.8, 9: 2.9}

REPEATING = [1, 2, 3, 4, 5, 6, 7, 8, 9] * 4  # a sequence that always has a guess ready


def test_no_draft_before_a_one_token_step_was_timed() -> None:
    assert Drafter(REPEATING, LookupSettings(max_draft=8), StepCosts()).draft() == []


def test_drafts_are_cut_where_they_do_not_pay_and_grow_where_they_do() -> None:
    drafter = Drafter(REPEATING, LookupSettings(max_draft=8), costs(CHEAP))
    first = drafter.draft()
    assert 1 <= len(first) <= 3 and first == [1, 2, 3][: len(first)]  # nothing known yet: a short one
    drafter.record(len(first), len(first))
    assert len(drafter.draft()) > len(first)  # right: longer
    for _ in range(20):
        drafter.record(8, 0)
    assert drafter.draft() == []  # wrong, time after time: not worth a step


def test_on_amx_kernels_a_guess_half_right_is_not_drafted_and_a_quoting_run_is() -> None:
    """A 2-token draft with one token right gave 2 tokens for 2.2 steps' time
    there; a quoting run's drafts of 8 give several times their cost."""
    drafter = Drafter(REPEATING, LookupSettings(max_draft=8), costs(AMX))
    assert drafter.draft() == []
    quoting = Drafter(REPEATING, LookupSettings(max_draft=8), costs(AMX))
    quoting.record(8, 8)
    assert len(quoting.draft()) == 8


def test_a_guess_not_drafted_is_checked_against_the_tokens_that_follow() -> None:
    """A run that stopped drafting learns, for free, that its guesses became
    right, and drafts again."""
    drafter = Drafter(REPEATING, LookupSettings(max_draft=8), costs(AMX))
    for _ in range(3):
        drafter.record(8, 0)
    assert drafter.draft() == []  # the guess [1..8] is kept
    assert drafter.draft() == []  # and while it is checked, no other
    for token in [1, 2, 3, 4, 5, 6, 7, 8]:  # it was right, every token
        drafter.append(token)
    again = drafter.draft()
    assert len(again) >= 4 and again == [9, 1, 2, 3, 4, 5, 6, 7][: len(again)]


def test_a_size_not_yet_timed_is_tried_once_then_its_timing_decides() -> None:
    c = costs({})
    assert c.relative(3) == pytest.approx(1.2)  # a guess, from the one-token step
    c.add(3, 2.2 / 1000)
    assert c.relative(3) == pytest.approx(2.2)
    assert c.relative(9) == pytest.approx(2.8)  # from the largest timed size below


def test_a_size_timed_slow_once_is_tried_again_later() -> None:
    """One step slowed by something else (a busy machine, a first use) must
    not rule its size out for the engine's life."""
    c = costs(CHEAP)
    c.add(9, 4.0 / 1000)  # once, four one-token steps' time
    c.add(9, 4.0 / 1000)
    assert c.relative(9) > 2
    drafter = Drafter(REPEATING, LookupSettings(max_draft=8), c)
    drafter.record(8, 8)
    assert len(drafter.draft()) < 8  # trusted for now
    for _ in range(RETIME_STEPS + 1):
        c.add(1, 1 / 1000)
    assert c.relative(9) == pytest.approx(1 + 0.1 * 8)  # the guess from the size below, so it is tried again
    assert len(Drafter(REPEATING, LookupSettings(max_draft=8), c).draft()) > 0


def test_guesses_right_again_and_again_are_trusted_as_such_even_when_short() -> None:
    drafter = Drafter(REPEATING, LookupSettings(max_draft=8), costs(CHEAP))
    for _ in range(40):
        drafter.record(1, 1)
    assert len(drafter.draft()) == 8  # right every time: the longest pays most
