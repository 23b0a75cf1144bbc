"""How the next token is picked. A plain greedy request takes it with
llama_get_logits_argmax_ith (patches/llama-cpp-greedy.patch), not through
llama.cpp's sampler chain: the same tokens, without copying the logits into
candidates first; every other request goes through the chain. Real model,
the portable libraries the file ships."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.engine import Chunk, Engine, EngineConfig, GenerationRequest, SamplingParams
from chat.engine import llama as llama_module
from chat.engine.bindings import llama_cpp as C
from chat.engine.llama import BatchEntry, Context, LlamaLog, Model, ModelSource
from chat.errors import GenerationError

GREEDY = SamplingParams(temperature=0)
PROMPTS = (
    "Once upon a time, a lighthouse keeper",
    "List the planets of the solar system, one a line.",
    "The quick brown fox",
)


@pytest.fixture(scope="module")
def model(smollm2: Path) -> Iterator[Model]:
    m = Model(ModelSource(smollm2), 0, LlamaLog.install(False))
    yield m
    m.close()


def test_the_shortcut_picks_the_token_llama_cpps_greedy_sampler_picks(model: Model) -> None:
    text = (Path(__file__).parent / "corpus.txt").read_text()[:400]
    tokens = model.tokenize(text, add_bos=True)[:64]
    ctx = Context(model, n_ctx=256, n_batch=256, n_seq=1, n_threads=2, log=LlamaLog.install(False))
    greedy = C.llama_sampler_init_greedy()
    try:
        ctx.decode_batch([BatchEntry(t, 0, i, True) for i, t in enumerate(tokens)])
        picked, by_chain, by_hand = [], [], []
        for i in range(len(tokens)):
            picked.append(ctx.top_token(i))
            by_chain.append(int(C.llama_sampler_sample(greedy, ctx.ptr, i)))
            logits = ctx.logits(i, model.n_vocab)
            by_hand.append(logits.index(max(logits)))  # the first of equal ones
        assert None not in picked, "the libraries in use lack llama_get_logits_argmax_ith"
        with pytest.raises(GenerationError, match="no logits for batch entry 64"):
            ctx.top_token(64)
    finally:
        C.llama_sampler_free(greedy)
        ctx.close()
    assert picked == by_chain == by_hand
    assert len(set(picked)) > 10  # real predictions, not one token over and over


def _answers(smollm2: Path, sampling: SamplingParams, logprobs: int | None = None) -> list[list[Chunk]]:
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=1024, draft_max=0)) as eng:
        requests = [GenerationRequest(p, sampling, max_tokens=40, logprobs=logprobs) for p in PROMPTS]
        return [list(eng.submit(r)) for r in requests]


def _text(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def _count_shortcuts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many tokens the shortcut picks from now on (a list, to be read later)."""
    taken = [0]
    top_token = Context.top_token

    def counted(self: Context, index: int) -> int | None:
        token = top_token(self, index)
        taken[0] += token is not None
        return token

    monkeypatch.setattr(Context, "top_token", counted)
    return taken


@pytest.mark.parametrize(
    "sampling",
    [GREEDY, SamplingParams(temperature=0, repeat_penalty=1.5, repeat_last_n=0)],
    ids=["greedy", "penalty-over-no-tokens"],
)
def test_greedy_answers_are_those_of_the_sampler_chain(
    smollm2: Path, monkeypatch: pytest.MonkeyPatch, sampling: SamplingParams
) -> None:
    """The same text with the shortcut as through llama.cpp's chain, which
    is also what a llama.cpp without the patch gets."""
    taken = _count_shortcuts(monkeypatch)
    short = [_text(a) for a in _answers(smollm2, sampling)]
    assert taken[0] >= 3 * 20
    monkeypatch.setattr(llama_module, "_argmax_function", lambda: None)
    taken[0] = 0
    assert [_text(a) for a in _answers(smollm2, sampling)] == short
    assert taken[0] == 0
    assert all(len(a) > 20 for a in short)


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingParams(temperature=0, repeat_penalty=1.5),
        SamplingParams(temperature=0, presence_penalty=1.0),
        SamplingParams(temperature=0, frequency_penalty=1.0),
        SamplingParams(temperature=0, grammar='root ::= [a-z ]+ "."'),
        SamplingParams(temperature=0.8, seed=7),
    ],
    ids=["repeat-penalty", "presence-penalty", "frequency-penalty", "grammar", "temperature"],
)
def test_a_request_the_chain_shapes_goes_through_it(
    smollm2: Path, monkeypatch: pytest.MonkeyPatch, sampling: SamplingParams
) -> None:
    taken = _count_shortcuts(monkeypatch)
    texts = [_text(a) for a in _answers(smollm2, sampling)]
    assert taken[0] == 0
    assert all(texts)
    if sampling.grammar:
        assert all(re.fullmatch(r"[a-z ]+\.?", t) for t in texts), texts


def test_a_banned_token_stays_banned(smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A logit bias goes through the chain: each answer's greedy first
    token, banned, is not its first token any more."""
    firsts = [a[0].logprobs[0].chosen.token for a in _answers(smollm2, GREEDY, logprobs=0)]
    taken = _count_shortcuts(monkeypatch)
    sampling = SamplingParams(temperature=0, logit_bias=tuple((t, -100.0) for t in set(firsts)))
    banned = [a[0].logprobs[0].chosen.token for a in _answers(smollm2, sampling, logprobs=0)]
    assert taken[0] == 0
    assert not set(banned) & set(firsts)


def test_a_penalty_over_the_whole_context_applies(smollm2: Path) -> None:
    """repeat_last_n -1 is the whole context (here 1024 tokens), as
    llama-server takes it; llama.cpp itself would take it as no window."""
    whole = [_text(a) for a in _answers(smollm2, SamplingParams(temperature=0, repeat_penalty=1.5, repeat_last_n=-1))]
    window = [
        _text(a) for a in _answers(smollm2, SamplingParams(temperature=0, repeat_penalty=1.5, repeat_last_n=1024))
    ]
    assert whole == window
    assert whole != [_text(a) for a in _answers(smollm2, GREEDY)]
