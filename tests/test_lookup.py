"""Prompt lookup: the drafts guessed from a sequence's own earlier tokens."""

from __future__ import annotations

from chat.engine.lookup import Drafter, LookupSettings, NgramIndex

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


def repeating_drafter() -> Drafter:
    """A drafter over a sequence that always has a draft ready."""
    return Drafter([1, 2, 3, 4, 5, 6, 7, 8, 9] * 4, LookupSettings(max_draft=8, first_draft=2))


def test_a_draft_taken_whole_grows_when_its_step_paid() -> None:
    drafter = repeating_drafter()
    assert len(drafter.draft()) == 2
    drafter.record(2, 2, cost=1.2)  # 3 tokens for the time of 1.2 plain steps
    assert len(drafter.draft()) == 4


def test_a_draft_whose_step_cost_more_than_it_gave_pauses_the_drafts() -> None:
    """On a Sapphire Rapids Xeon a step of 3 tokens took 2.2 one-token steps:
    a 2-token draft with one token right gave 2 tokens for 2.2 steps' time."""
    drafter = repeating_drafter()
    drafter.draft()
    drafter.record(2, 1, cost=2.2)
    assert drafter.draft() == []  # paused for a step
    assert len(drafter.draft()) == 1  # then shorter
    drafter.record(1, 1, cost=2.5)  # taken whole, and still a loss
    assert drafter.draft() == [] and drafter.draft() == []  # the pause doubled


def test_without_a_timing_a_hit_is_judged_by_its_tokens_alone() -> None:
    drafter = repeating_drafter()
    drafter.draft()
    drafter.record(2, 1)
    assert len(drafter.draft()) == 2  # no pause, the same length
