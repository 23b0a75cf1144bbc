"""Grammars that allow no token, or that take too long to follow, end their
own request with a reason; llama.cpp, left to itself, aborts the whole
process on the first and stalls every request on the second. Real model,
real llama.cpp grammar sampler."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.engine import Chunk, Engine, EngineConfig, FinishReason, GenerationRequest, SamplingParams, grammar_guard
from chat.engine.llama import ModelSource
from chat.engine.lookup import StepCosts
from chat.errors import UsageError

AT_THE_START = "the grammar allows no token here at the start"
LATER = "the grammar allows no token here after the text so far"
# Eleven optional parts of thirty overlapping alternatives each: the number of
# ways to parse a run of "a" explodes, and llama.cpp's matcher tries them all
# (about two minutes for the first token on a 2-core AMD EPYC).
AMBIGUOUS = "root ::= " + " ".join(["x"] * 11) + "\nx ::= " + " | ".join(['"a"*'] * 30)


@pytest.fixture(scope="module")
def engine(smollm2: Path) -> Iterator[Engine]:
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=1024, n_parallel=2)) as eng:
        yield eng


def ask(engine: Engine, grammar: str | None, prompt: str = "Answer:", temperature: float = 0) -> tuple[str, Chunk]:
    gen = engine.submit(
        GenerationRequest(prompt, SamplingParams(temperature=temperature, seed=1, grammar=grammar), max_tokens=6)
    )
    chunks = list(gen)
    return "".join(c.text for c in chunks), chunks[-1]


@pytest.mark.parametrize(
    "grammar",
    [
        "root ::= [b-a]",  # an empty range
        "root ::= [^\\u0000-\\U0010FFFF]",  # every character excluded
        'root ::= "\\x00"',  # no token holds a NUL
        "root ::= <[49152]>",  # SmolLM2's vocabulary ends at 49151
        "root ::= <[2000000000]>",
    ],
)
@pytest.mark.parametrize("temperature", [0, 0.8])
def test_a_grammar_allowing_no_first_token_is_refused_before_it_runs(
    engine: Engine, grammar: str, temperature: float
) -> None:
    with pytest.raises(UsageError, match=AT_THE_START):
        ask(engine, grammar, temperature=temperature)
    assert ask(engine, None, "The capital of France is")[0].strip()  # the engine goes on


def test_a_grammar_that_dead_ends_later_ends_its_request_alone(engine: Engine) -> None:
    """Two requests share each step; the one whose grammar allows nothing
    after "a" ends with the reason, marked as the request's fault, and the
    other runs to its length."""
    results: dict[str, tuple[str, Chunk]] = {}
    other = threading.Thread(target=lambda: results.update(other=ask(engine, None, "Once upon a time")))
    other.start()
    text, final = ask(engine, 'root ::= "a" [b-a]')
    other.join(60)
    assert text == "a"
    assert final.finish_reason is FinishReason.ERROR and final.bad_request
    assert final.error and final.error.startswith(LATER)
    with pytest.raises(UsageError, match=LATER):
        final.raise_error()
    other_text, other_final = results["other"]
    assert other_final.finish_reason is FinishReason.LENGTH and other_final.error is None and other_text.strip()


def test_a_request_ended_by_its_grammar_leaves_its_prompt_cached(smollm2: Path) -> None:
    """The engine is fine and so is the cache: the next request that starts
    the same way evaluates only what is new."""
    prompt = "The history of the printing press, in three short paragraphs. " * 4
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=1024)) as eng:
        _, final = ask(eng, 'root ::= "a" [b-a]', prompt)
        assert final.finish_reason is FinishReason.ERROR and final.bad_request
        _, after = ask(eng, None, prompt)
        n_prompt = len(eng.tokenize(prompt))
    assert after.usage is not None and after.usage.cached_tokens >= n_prompt - 1


def test_a_grammar_too_ambiguous_to_follow_is_refused(engine: Engine) -> None:
    with pytest.raises(UsageError, match="the grammar is too ambiguous to follow: matching the next token took over"):
        ask(engine, AMBIGUOUS, "aaaa")
    assert ask(engine, 'root ::= "yes" | "no"')[0] in ("yes", "no")


def test_the_time_limit_is_what_refuses(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sound grammar passes the default limit and is refused under a
    limit no matching can meet: the refusal comes from the clock."""
    assert ask(engine, 'root ::= "yes" | "no"')[0] in ("yes", "no")
    monkeypatch.setattr(grammar_guard, "STEP_LIMIT_S", 0.0)
    with pytest.raises(UsageError, match="too ambiguous"):
        ask(engine, 'root ::= "yes" | "no"')


def test_a_slow_grammar_gets_no_draft_that_would_take_a_step_past_its_limit(
    smollm2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each drafted token is matched by the grammar too. A grammar that
    takes 0.6 s a token (a clock that says so) is under the 1 s limit, but
    a draft would put each step at several times it: a quoting answer that
    drafts freely otherwise drafts nothing, and says what it says without
    drafts."""
    monkeypatch.setattr(StepCosts, "relative", lambda self, n: 1 + 0.1 * (n - 1))  # drafts pay here
    prompt = "def add(a, b):\n    return a + b\n\n\n" * 10  # a raw continuation that goes on repeating
    printable = "root ::= [ -~\\n]*"

    def answer(draft_max: int) -> tuple[str, int]:
        with Engine(EngineConfig(ModelSource(smollm2), n_ctx=1024, draft_max=draft_max)) as eng:
            gen = eng.submit(GenerationRequest(prompt, SamplingParams(temperature=0, grammar=printable), max_tokens=60))
            text = gen.text()
            assert gen.final is not None and gen.final.finish_reason is FinishReason.LENGTH, gen.final
            return text, eng.stats().drafted_tokens

    _, free_drafts = answer(8)
    assert free_drafts >= 20, "the grammar's answer drafts nothing: the test tests nothing"
    plain_text, _ = answer(0)

    class Clock:
        now = 0.0

        def perf_counter(self) -> float:
            self.now += 0.3  # every timed span of the grammar's work: 0.3 s
            return self.now

    # Each token: its samples of the candidates (3 x 0.3 s, none over the
    # limit), then all of them (0.3 s) and the accepted token (0.3 s).
    monkeypatch.setattr(grammar_guard, "time", Clock())
    slow_text, slow_drafts = answer(8)
    assert slow_drafts == 0
    assert slow_text == plain_text  # one-token steps, as without drafts: the same kernels, the same text
