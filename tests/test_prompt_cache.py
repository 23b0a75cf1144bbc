"""Prompts kept in memory after their slot moves on, and put back when a
request comes back to them; and prefixes a sliding window has lost."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chat.engine import Engine, EngineConfig, FinishReason, GenerationRequest, SamplingParams
from chat.engine.llama import ModelSource
from chat.engine.prompt_cache import MIB, NO_LIMIT, PromptCache, default_cache_ram_mib
from chat.engine.types import Usage

GREEDY = SamplingParams(temperature=0, seed=1)
CORPUS = (Path(__file__).parent / "corpus.txt").read_text()
# A long shared start, as a system prompt or a document being asked about.
DOCUMENT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + CORPUS[:1500]


def ask(engine: Engine, prompt: str, max_tokens: int = 16, score: bool = False) -> tuple[str, Usage]:
    gen = engine.submit(GenerationRequest(prompt, GREEDY, max_tokens=max_tokens, prompt_logprobs=score))
    text = gen.text()
    assert gen.final is not None and gen.final.usage is not None, gen.final
    return text, gen.final.usage


def question(q: str) -> str:
    return f"{DOCUMENT}\n{q}<|im_end|>\n<|im_start|>assistant\n"


def first_logprobs(engine: Engine, prompt: str, n: int = 8) -> tuple[list[int], list[float], Usage]:
    """The first `n` greedy tokens of an answer and their log-probabilities."""
    gen = engine.submit(GenerationRequest(prompt, GREEDY, max_tokens=n, logprobs=0))
    chosen = [lp.chosen for chunk in gen for lp in chunk.logprobs]
    assert gen.final is not None and gen.final.usage is not None
    return [c.token for c in chosen], [c.logprob or 0.0 for c in chosen], gen.final.usage


Answer = tuple[list[int], list[float], Usage]


def same_answer(a: Answer, b: Answer) -> None:
    """The same tokens, scored alike: a KV put back is the one computed
    before, but the new tokens may be evaluated in batches of another shape,
    whose sums llama.cpp may do in another order (last bits only). Both
    engines run without drafts: whether a draft is tried depends on how
    long this machine's steps took, and on an AMX CPU a step of several
    tokens goes through other kernels than a step of one, which moved a
    logprob by 0.07 (2-core Xeon, 2026-12-07)."""
    assert a[0] == b[0] and a[0]
    assert a[1] == pytest.approx(b[1], abs=1e-3)


def three_requests(engine: Engine) -> Answer:
    """A question about the document, an unrelated prompt that takes the
    only slot, then another question about the document."""
    ask(engine, question("What is this about?"))
    ask(engine, CORPUS[5000:7000])
    return first_logprobs(engine, question("Summarise it."))


def test_a_prompt_comes_back_after_another_took_its_slot(smollm2: Path) -> None:
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=4096, draft_max=0)) as engine:
        answer = three_requests(engine)
        stats = engine.stats()
        shared = len(engine.tokenize(question(""))) - 8  # the document, give or take the question's first tokens
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=4096, draft_max=0, cache_ram_mib=0)) as engine:
        without = three_requests(engine)
        assert engine.stats().cached_prompts == 0
    usage, usage_without = answer[2], without[2]
    assert usage.cached_tokens >= shared, usage
    assert usage_without.cached_tokens < 8, usage_without
    assert usage.evaluated_prompt_tokens < usage_without.evaluated_prompt_tokens / 10
    same_answer(answer, without)
    assert stats.restored_prompts == 1
    assert stats.cached_prompts == 2  # the first question's, and the unrelated prompt's
    assert stats.cached_prompt_bytes > 1 * MIB


def test_a_request_sharing_only_the_template_start_takes_an_empty_slot(smollm2: Path) -> None:
    """Two slots: a request whose prompt shares only a chat template's first
    tokens with a conversation goes to the empty slot, so the conversation's
    next turn finds its cache in place, with nothing saved or put back."""
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=2048, n_parallel=2)) as engine:
        first = question("What is this about?")
        ask(engine, first)
        ask(engine, "<|im_start|>user\nTell me a joke.<|im_end|>\n<|im_start|>assistant\n")
        _, usage = ask(engine, first)
        assert usage.cached_tokens == usage.prompt_tokens - 1
        stats = engine.stats()
        assert (stats.cached_prompts, stats.restored_prompts) == (0, 0)


def test_a_prompt_bigger_than_the_cache_is_not_kept(smollm2: Path) -> None:
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=4096, cache_ram_mib=1)) as engine:
        usage = three_requests(engine)[2]
        assert engine.stats().cached_prompts == 0
        assert usage.cached_tokens < 8


def test_scoring_a_prompt_evaluates_all_of_it(smollm2: Path) -> None:
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=4096)) as engine:
        ask(engine, question("What is this about?"))
        ask(engine, CORPUS[5000:7000])
        _, usage = ask(engine, question("Summarise it."), max_tokens=1, score=True)
        assert usage.cached_tokens == 0


@pytest.mark.parametrize("limit_mib", [None, 30])
def test_the_unified_cache_makes_room_for_a_saved_prompt(smollm2: Path, limit_mib: int | None) -> None:
    """Two slots sharing 1024 cells: the saved document comes back although
    the other slot's prompt fills most of the cells; that prompt is saved
    before its cells are taken. With 30 MiB (about 1,300 of SmolLM2's tokens),
    saving it pushes the document itself out of the cache on the way back."""
    with Engine(
        EngineConfig(ModelSource(smollm2), n_ctx=1024, n_parallel=2, draft_max=0, cache_ram_mib=limit_mib)
    ) as engine:
        document = len(engine.tokenize(question(""))) - 8
        ask(engine, question("What is this about?"))  # slot 0
        ask(engine, CORPUS[5000:6100])  # slot 1
        ask(engine, CORPUS[9000:11600])  # back in slot 0: the document is saved, slot 1's cells taken
        assert engine.stats().cached_prompts == 2
        answer = first_logprobs(engine, question("Summarise it."))  # slot 1: the document needs slot 0's cells
        assert answer[2].cached_tokens >= document, answer[2]
        stats = engine.stats()
        assert stats.restored_prompts == 1
        assert stats.cached_prompts == (3 if limit_mib is None else 2)
        assert ask(engine, "Once upon a time", max_tokens=4)[0]  # still serving
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=1024, draft_max=0, cache_ram_mib=0)) as engine:
        same_answer(answer, first_logprobs(engine, question("Summarise it.")))


def test_gemma_does_not_reuse_a_prefix_its_window_lost(gemma: Path) -> None:
    """Gemma 3 attends to the last 512 positions in most layers, and
    llama.cpp gives the cells of positions that fell out of that window to
    other sequences. A request reusing the start of such a sequence would
    attend to cells that hold another prompt's tokens: it must be evaluated
    again, and give the answer a full evaluation gives."""

    def scenario(score: bool) -> tuple[str, Usage]:
        with Engine(EngineConfig(ModelSource(gemma), n_ctx=2048, n_parallel=2, draft_max=0, cache_ram_mib=0)) as eng:
            tokens = eng.tokenize(CORPUS)
            text = eng.detokenize
            # Together, so each gets a slot: a short prompt, and a long one
            # whose first ~700 positions fall out of its window.
            short = eng.submit(GenerationRequest("Hello there, " * 30, GREEDY, max_tokens=4))
            long = eng.submit(GenerationRequest(text(tokens[1:1200]), GREEDY, max_tokens=4))
            short.text(), long.text()
            # The short one's slot again: its cells, then the long one's
            # out-of-window cells, take this prompt.
            ask(eng, text(tokens[3000:3300]), max_tokens=4)
            # Scoring the prompt evaluates all of it: the reference.
            return ask(eng, text(tokens[1:400]) + " Which brings us, at last, to", max_tokens=24, score=score)

    reused, usage = scenario(score=False)
    full, _ = scenario(score=True)
    assert usage.cached_tokens == 0
    assert reused == full


def test_gemma_gets_back_only_a_saved_prompt_within_its_window(gemma: Path) -> None:
    """llama.cpp saves a windowed layer's last 512 positions only. A saved
    prompt of 400 tokens comes back and scores the answer exactly as if its
    slot had kept it; one of 1000 does not."""
    with Engine(EngineConfig(ModelSource(gemma), n_ctx=4096, draft_max=0)) as engine:
        tokens = engine.tokenize(CORPUS)
        short, long, other = (engine.detokenize(tokens[a:b]) for a, b in ((1, 400), (1, 1000), (4000, 4100)))
        ask(engine, short, max_tokens=1)
        ask(engine, other, max_tokens=1)  # takes the only slot: `short` is saved
        restored = first_logprobs(engine, short + " In the end,")
        ask(engine, long, max_tokens=1)
        ask(engine, other, max_tokens=1)
        _, again = ask(engine, long + " In the end,", max_tokens=1)
    with Engine(EngineConfig(ModelSource(gemma), n_ctx=4096, draft_max=0, cache_ram_mib=0)) as engine:
        ask(engine, short, max_tokens=1)
        kept = first_logprobs(engine, short + " In the end,")  # its slot kept it
    assert restored[2].cached_tokens >= 395 and kept[2].cached_tokens >= 395
    same_answer(restored, kept)
    # The 1000-token prompt, saved in part, is not put back; the 400 it
    # starts with, saved whole, are.
    assert 395 <= again.cached_tokens <= 400


def test_a_request_that_fails_to_start_ends_with_an_error(smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug while a request takes its slot ends that request, not the
    engine's worker (which would leave every client waiting)."""
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=1024)) as engine:
        ask(engine, question("What is this about?"))
        scheduler = engine._scheduler
        real = scheduler._reuse

        def broken(*args: object) -> int:
            monkeypatch.setattr(scheduler, "_reuse", real)
            raise RuntimeError("injected")

        monkeypatch.setattr(scheduler, "_reuse", broken)
        gen = engine.submit(GenerationRequest("Once upon a time", GREEDY, max_tokens=4))
        gen.text()
        assert gen.final is not None and gen.final.finish_reason is FinishReason.ERROR
        assert "injected" in (gen.final.error or "")
        _, usage = ask(engine, question("Summarise it."))
        assert usage.cached_tokens == 0  # the slot's cache was dropped: it could hold anything


# -- the cache's bookkeeping, over a stand-in for llama.cpp's context ---------------------


@dataclass
class FakeContext:
    """Sequences whose saved state is one byte per token, plus a header."""

    held: dict[int, list[int]] = field(default_factory=dict)
    room: bool = True
    fail_save: bool = False

    def state_size(self, seq: int) -> int:
        return 100 + len(self.held.get(seq, []))

    def save_state(self, seq: int, size: int) -> bytearray | None:
        if self.fail_save:
            return None
        return bytearray(bytes(self.held.get(seq, [])).rjust(size, b"\0"))

    def load_state(self, seq: int, state: bytearray) -> bool:
        self.held[seq] = list(state[100:]) if self.room else []
        return self.room


def saved_tokens(cache: PromptCache) -> list[list[int]]:
    return [s.tokens for s in cache._saved]


def test_the_least_recently_used_prompt_goes_first() -> None:
    ctx = FakeContext({0: [1] * 50, 1: [2] * 50, 2: [3] * 50})
    cache = PromptCache(NO_LIMIT)
    cache.limit = 2 * 150  # room for two
    for seq in (0, 1):
        cache.save(ctx, seq, ctx.held[seq])
    found = cache.best([1] * 60)
    assert found is not None and found[1] == 50
    assert cache.restore(ctx, 5, found[0])
    cache.save(ctx, 2, ctx.held[2])
    assert saved_tokens(cache) == [[1] * 50, [3] * 50]  # [2]*50 was the least recently used
    assert cache.bytes == 300 and cache.restored == 1


def test_a_prompt_replaces_its_own_prefixes_and_is_not_saved_twice() -> None:
    ctx = FakeContext({0: [1, 2, 3], 1: [1, 2, 3, 4, 5]})
    cache = PromptCache(NO_LIMIT)
    cache.save(ctx, 0, [1, 2, 3])
    cache.save(ctx, 1, [1, 2, 3, 4, 5])
    cache.save(ctx, 0, [1, 2, 3])  # held by the longer one already
    assert saved_tokens(cache) == [[1, 2, 3, 4, 5]]
    assert cache.best([9, 9]) is None


def test_a_failed_restore_keeps_the_saved_prompt() -> None:
    ctx = FakeContext({0: [7] * 10}, room=False)
    cache = PromptCache(NO_LIMIT)
    cache.save(ctx, 0, [7] * 10)
    found = cache.best([7] * 10)
    assert found is not None and not cache.restore(ctx, 1, found[0])
    assert saved_tokens(cache) == [[7] * 10] and cache.restored == 0


def test_with_a_window_only_a_prompt_saved_whole_comes_back() -> None:
    ctx = FakeContext({0: list(range(1, 11)), 1: list(range(1, 5))})
    cache = PromptCache(NO_LIMIT, window=6)
    cache.save(ctx, 0, list(range(1, 11)))  # longer than the window: saved in part, so not kept
    cache.save(ctx, 1, list(range(1, 5)))
    assert saved_tokens(cache) == [list(range(1, 5))]
    assert cache.best(list(range(1, 14))) == (cache._saved[0], 4)


def test_a_failed_save_keeps_what_was_saved() -> None:
    ctx = FakeContext({0: [1, 2, 3], 1: [1, 2, 3, 4]})
    cache = PromptCache(NO_LIMIT)
    cache.limit = 110  # room for one
    cache.save(ctx, 0, [1, 2, 3])
    ctx.fail_save = True
    cache.save(ctx, 1, [1, 2, 3, 4])  # would replace it, and push it out
    assert saved_tokens(cache) == [[1, 2, 3]] and cache.bytes == 103


def test_the_default_is_llama_servers_or_a_quarter_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 4 * 1024 * MIB // 4096}  # a 4 GiB machine
    monkeypatch.setattr("os.sysconf", lambda name: pages[name])
    assert default_cache_ram_mib() == 1024
    pages["SC_PHYS_PAGES"] *= 64  # 256 GiB
    assert default_cache_ram_mib() == 8192
