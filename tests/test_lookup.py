"""Prompt lookup: the drafts guessed from a sequence's own earlier tokens."""

from __future__ import annotations

from chat.engine.lookup import LookupSettings, NgramIndex

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
