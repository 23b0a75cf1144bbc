"""The engine on the real SmolLM2 model: KV reuse, cancelling, stops, slots."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.conversation import Conversation
from chat.engine import Engine, EngineConfig, FinishReason, GenerationRequest, SamplingParams
from chat.engine.llama import ModelSource
from chat.engine.lookup import StepCosts
from chat.engine.stream import TextStream
from chat.errors import ContextLengthExceededError, EngineClosedError
from templates import resolve

GREEDY = SamplingParams(temperature=0, seed=1)


@pytest.fixture(scope="module")
def engine(smollm2: Path) -> Iterator[Engine]:
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=2048, n_parallel=2)) as eng:
        yield eng


def conversation(engine: Engine, max_tokens: int = 24) -> Conversation:
    template = resolve(None, engine.info.metadata, engine.bos_text, engine.eos_text)
    return Conversation(engine, template, sampling=GREEDY, max_tokens=max_tokens)


def test_each_turn_evaluates_only_its_new_tokens(engine: Engine) -> None:
    conv = conversation(engine)
    questions = ["Hi, who are you?", "What is 2 + 2?", "Name a color.", "Name an animal.", "Thanks!"]
    evaluated, totals = [], []
    for q in questions:
        reply = conv.ask(q)
        "".join(reply)
        assert reply.usage is not None
        evaluated.append(reply.usage.evaluated_prompt_tokens)
        totals.append(reply.usage.prompt_tokens)
    assert totals == sorted(totals) and totals[-1] > 3 * totals[0] / 2
    # From the second turn on, only the last answer's end and the new
    # question are evaluated: flat, however long the chat is.
    assert max(evaluated[1:]) <= 30, evaluated
    assert evaluated[-1] < totals[-1] / 3


def test_cancel_stops_a_long_generation_quickly(engine: Engine) -> None:
    gen = engine.submit(GenerationRequest("Once upon a time", GREEDY, max_tokens=2000))
    chunks = iter(gen)
    next(chunks)
    started = time.perf_counter()
    gen.cancel()
    rest = list(chunks)
    assert time.perf_counter() - started < 1.0
    assert gen.final is not None and gen.final.finish_reason is FinishReason.CANCELLED
    assert gen.final.usage is not None and gen.final.usage.completion_tokens < 100
    assert rest[-1] is gen.final


def test_end_of_turn_token_never_leaks(engine: Engine) -> None:
    conv = conversation(engine, max_tokens=200)
    reply = conv.ask("Say hello.")
    text = "".join(reply)
    assert reply.finish_reason is FinishReason.STOP
    assert "<|im_end|>" not in text and "<|im_start|>" not in text


def test_stop_string_ends_generation_without_leaking(engine: Engine) -> None:
    prompt = "1, 2, 3, 4, 5,"
    plain = engine.submit(GenerationRequest(prompt, GREEDY, max_tokens=20)).text()
    assert " 8" in plain  # the model counts on
    stopped = engine.submit(GenerationRequest(prompt, GREEDY, max_tokens=20, stop=(" 8",)))
    text = stopped.text()
    assert text == plain[: plain.index(" 8")]
    assert stopped.final is not None and stopped.final.finish_reason is FinishReason.STOP


def test_max_tokens_gives_length(engine: Engine) -> None:
    gen = engine.submit(GenerationRequest("Once upon a time", GREEDY, max_tokens=5))
    gen.text()
    assert gen.final is not None and gen.final.finish_reason is FinishReason.LENGTH
    assert gen.final.usage is not None and gen.final.usage.completion_tokens == 5


def test_a_request_reuses_the_slot_holding_its_prefix(engine: Engine) -> None:
    a = "The history of the Roman Empire begins with"
    b = "A recipe for chocolate cake needs flour, sugar and"
    for prompt in (a, b):
        engine.submit(GenerationRequest(prompt, GREEDY, max_tokens=4)).text()
    again = engine.submit(GenerationRequest(a, GREEDY, max_tokens=4))
    again.text()
    assert again.final is not None and again.final.usage is not None
    usage = again.final.usage
    assert usage.cached_tokens == usage.prompt_tokens - 1  # all but the last token


def test_a_long_chat_drops_old_turns_and_never_crashes(smollm2: Path) -> None:
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=256)) as small:
        conv = conversation(small, max_tokens=40)
        conv.system_prompt = "You are terse."
        notices = []
        for i in range(12):
            reply = conv.ask(f"Tell me a fact about the number {i}.")
            "".join(reply)
            if reply.notice:
                notices.append(reply.notice)
        assert notices and "dropped the oldest" in notices[0]
        assert conv.tokens_used() <= small.n_ctx
        assert conv.system_prompt == "You are terse."


def test_utf8_split_across_tokens_is_never_printed_broken() -> None:
    stream = TextStream(())
    data = "né 🦜".encode()
    out = "".join(stream.feed(data[i : i + 1]) for i in range(len(data))) + stream.finish()
    assert out == "né 🦜"
    assert "\ufffd" not in out


def test_stop_string_split_across_tokens_is_held_back() -> None:
    stream = TextStream(("<|end|>",))
    shown = [stream.feed(p.encode()) for p in ["Hello <", "|en", "d|> more"]]
    assert shown == ["Hello ", "", ""]
    assert stream.stopped and stream.finish() == ""


def test_held_back_text_is_released_when_it_is_not_a_stop() -> None:
    stream = TextStream(("<|end|>",))
    assert stream.feed(b"a <|e") == "a "
    assert stream.feed(b"lse") == "<|else"
    assert stream.finish() == ""


def test_a_control_token_shows_as_text_only_where_special_text_is_asked(smollm2: Path) -> None:
    """Token pieces are remembered per token id: the plain piece of <|im_end|>
    (empty) and its special one (the tag) must not stand in for each other,
    whichever is asked first."""
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=256)) as eng:
        [end] = eng.tokenize("<|im_end|>", add_bos=False)
        assert eng.detokenize([end, end]) == ""
        assert "<|im_end|>" in eng.special_texts()
        assert eng.detokenize([end]) == ""
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=256)) as eng:
        assert "<|im_end|>" in eng.special_texts()
        assert eng.detokenize([end]) == ""


def test_concurrent_requests_share_each_step(engine: Engine) -> None:
    """Continuous batching: a short request submitted after a long one is
    served beside it, not after it."""
    long = engine.submit(GenerationRequest("Once upon a time", GREEDY, max_tokens=120))
    short = engine.submit(GenerationRequest("The capital of France is", GREEDY, max_tokens=4))
    assert short.text()
    long.cancel()
    long.text()
    assert long.final is not None and long.final.usage is not None
    assert long.final.finish_reason is FinishReason.CANCELLED
    assert long.final.usage.completion_tokens < 120


def test_sequences_sharing_a_full_cache_end_cleanly(smollm2: Path) -> None:
    """Three long generations in a 256-token cache shared by three slots: the
    cache runs out, and each ends with a reason (length or a clear error),
    never a hang or a crash; the engine still serves afterwards."""
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=256, n_parallel=3)) as small:
        gens = [
            small.submit(GenerationRequest(f"Story number {i}: once upon a time", GREEDY, max_tokens=200))
            for i in range(3)
        ]
        for g in gens:
            g.text()
        finals = [g.final for g in gens]
        assert all(f is not None for f in finals)
        reasons = {f.finish_reason for f in finals if f is not None}
        assert reasons <= {FinishReason.LENGTH, FinishReason.STOP, FinishReason.ERROR}
        assert FinishReason.LENGTH in reasons
        errors = [f.error for f in finals if f is not None and f.error]
        assert all("context is full" in e for e in errors)
        after = small.submit(GenerationRequest("Hello", GREEDY, max_tokens=4))
        after.text()
        assert after.final is not None and after.final.finish_reason is FinishReason.LENGTH


def test_a_split_cache_gives_each_slot_its_share(smollm2: Path) -> None:
    """-np without -kvu: each of 4 slots owns 512 of the 2048 cells, so a
    request may use 512 (not 2048), and one slot filling its share ends
    with `length` while another slot's request is unaffected."""
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=2048, n_parallel=4, kv_unified=False)) as eng:
        assert eng.n_ctx == 512
        too_long = eng.tokenize("word " * 600)
        with pytest.raises(ContextLengthExceededError):
            eng.submit(GenerationRequest(too_long, GREEDY, max_tokens=4))
        filler = eng.tokenize("Tell me a very long story. " * 60)[:480]
        long = eng.submit(GenerationRequest(filler, GREEDY, max_tokens=200))
        short = eng.submit(GenerationRequest("Once upon a time, there was a", GREEDY, max_tokens=8))
        long.text()
        short.text()
        assert long.final is not None and long.final.finish_reason is FinishReason.LENGTH
        used = long.final.usage.prompt_tokens + long.final.usage.completion_tokens if long.final.usage else 0
        assert eng.n_ctx - 2 <= used <= eng.n_ctx, "the long request did not stop at its own share"
        assert short.final is not None and short.final.usage is not None
        assert short.final.finish_reason is FinishReason.LENGTH and short.final.usage.completion_tokens == 8


def test_info_and_stats_describe_the_engine(engine: Engine, smollm2: Path) -> None:
    info = engine.info
    assert info.model_name == smollm2.name and info.model_path == smollm2
    assert info.n_ctx == engine.n_ctx == 2048 and info.n_parallel == 2
    assert info.n_vocab > 40_000 and info.n_embd == 576 and info.size_bytes > 10_000_000
    assert info.metadata["general.architecture"] == "llama"
    with pytest.raises(TypeError):
        info.metadata["general.architecture"] = "other"  # type: ignore[index]
    before = engine.stats()
    gen = engine.submit(GenerationRequest("Hello", GREEDY, max_tokens=3))
    gen.text()
    after = engine.stats()
    assert gen.final is not None and gen.final.usage is not None
    assert after.generations == before.generations + 1
    assert after.completion_tokens - before.completion_tokens == gen.final.usage.completion_tokens
    assert after.queue_depth == 0


def test_the_default_thread_count_is_every_core() -> None:
    assert EngineConfig(ModelSource(Path("model.gguf"))).n_threads == (os.cpu_count() or 1)


def test_closing_ends_the_generations_still_waiting(smollm2: Path) -> None:
    small = Engine(EngineConfig(ModelSource(smollm2), n_ctx=256))
    running = small.submit(GenerationRequest("Once upon a time", GREEDY, max_tokens=200))
    waiting = small.submit(GenerationRequest("The capital of France is", GREEDY, max_tokens=4))
    next(iter(running))  # under way in the one slot; the other waits for it
    assert small.stats().queue_depth == 1
    small.close()
    assert list(waiting)[-1].finish_reason is FinishReason.CANCELLED
    assert list(running)[-1].finish_reason is FinishReason.CANCELLED


def test_a_closed_engine_refuses_every_call(smollm2: Path) -> None:
    small = Engine(EngineConfig(ModelSource(smollm2), n_ctx=256))
    small.close()
    small.close()  # twice is harmless
    calls = [
        lambda: small.tokenize("hello"),
        lambda: small.detokenize([1, 2]),
        lambda: small.embed(["hello"]),
        lambda: small.bos_text,
        lambda: small.submit(GenerationRequest("hello", GREEDY, max_tokens=4)),
        lambda: small.submit(GenerationRequest([1, 2, 3], GREEDY, max_tokens=4)),
    ]
    for call in calls:
        with pytest.raises(EngineClosedError, match="the model is closed"):
            call()


def test_closing_waits_for_the_calls_under_way(smollm2: Path) -> None:
    """Closing while another thread embeds and tokenizes: the calls under way
    finish, later ones are refused, and nothing is freed under them (which
    would crash the process in C, not raise)."""
    small = Engine(EngineConfig(ModelSource(smollm2), n_ctx=512))
    text = "The quick brown fox jumps over the lazy dog. " * 40
    results: list[object] = []
    started = threading.Event()

    def busy() -> None:
        try:
            while True:
                results.append(small.embed([text]))
                started.set()
                results.append(small.tokenize(text))
        except EngineClosedError as exc:
            results.append(exc)

    worker = threading.Thread(target=busy)
    worker.start()
    assert started.wait(30)
    small.close()
    worker.join(30)
    assert not worker.is_alive()
    assert isinstance(results[-1], EngineClosedError)
    assert all(isinstance(r, list) and r for r in results[:-1]) and len(results) >= 2


def test_logprobs_follow_the_tokens_and_need_not_fit_one_batch(smollm2: Path) -> None:
    """Each generated token's logprob comes with its chunk, the greedy pick
    first among the likeliest; a prompt scored in batches of 2 scores as in
    one, with nothing taken from the cache."""
    prompt = "The capital of France is"
    request = GenerationRequest(prompt, GREEDY, max_tokens=6, logprobs=3, prompt_logprobs=True)
    scored = []
    for n_batch in (2, 64):
        with Engine(EngineConfig(ModelSource(smollm2), n_ctx=512, n_batch=n_batch)) as eng:
            eng.submit(GenerationRequest(prompt, GREEDY, max_tokens=2)).text()  # leaves the prompt cached
            chunks = list(eng.submit(request))
        (head,) = [c.prompt_logprobs for c in chunks if c.prompt_logprobs]
        generated = [lp for c in chunks for lp in c.logprobs]
        assert b"".join(lp.chosen.piece for lp in generated).decode() == "".join(c.text for c in chunks)
        assert all(lp.top[0].token == lp.chosen.token and len(lp.top) == 3 for lp in generated)
        assert head[0].chosen.logprob is None and all(p.chosen.logprob is not None for p in head[1:])
        assert b"".join(p.chosen.piece for p in head).decode().strip() == prompt
        assert chunks[-1].usage is not None and chunks[-1].usage.cached_tokens == 0
        scored.append(
            [round(p.chosen.logprob or 0, 4) for p in head] + [round(g.chosen.logprob or 0, 4) for g in generated]
        )
    assert scored[0] == pytest.approx(scored[1], abs=2e-3)


def test_prompt_lookup_drafts_change_the_speed_not_the_text(smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With drafts on, an answer that quotes its prompt takes drafted tokens,
    and greedy and seeded answers are the same as without."""
    # Whether a draft pays depends on this machine's timings: here it does.
    monkeypatch.setattr(StepCosts, "relative", lambda self, n: 1 + 0.1 * (n - 1))
    code = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
    messages = [{"role": "user", "content": f"Write this code out again exactly:\n```python\n{code}```"}]
    texts = {}
    for on in (False, True):
        with Engine(EngineConfig(ModelSource(smollm2), n_ctx=1024, draft_max=8 if on else 0)) as eng:
            template = resolve(None, eng.info.metadata, eng.bos_text, eng.eos_text)
            prompt = template.render(messages)
            for sampling in (GREEDY, SamplingParams(temperature=0.8, seed=3)):
                request = GenerationRequest(prompt, sampling, max_tokens=60, stop=template.stop)
                texts[(on, sampling.temperature)] = eng.submit(request).text()
            stats = eng.stats()
        if on:
            assert stats.accepted_tokens >= 10 and stats.drafted_tokens >= stats.accepted_tokens
        else:
            assert stats.drafted_tokens == 0
    assert "return a + b" in texts[(False, 0.0)]
    assert texts[(True, 0.0)] == texts[(False, 0.0)]
    assert texts[(True, 0.8)] == texts[(False, 0.8)]


def test_a_drafting_answer_runs_to_the_end_of_the_context(smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drafted tokens not yet checked sit in the cache past the sampled one:
    they must not count as used, or the answer ends early with `length`."""
    monkeypatch.setattr(StepCosts, "relative", lambda self, n: 1 + 0.1 * (n - 1))  # drafts pay here
    prompt = "def add(a, b):\n    return a + b\n\n\n" * 10  # a raw continuation that goes on repeating
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=256, draft_max=8)) as eng:
        gen = eng.submit(GenerationRequest(prompt, GREEDY, max_tokens=400))
        gen.text()
        stats = eng.stats()
    assert stats.accepted_tokens > 0, "no draft was taken: the test tests nothing"
    assert gen.final is not None and gen.final.usage is not None
    assert gen.final.finish_reason is FinishReason.LENGTH
    used = gen.final.usage.prompt_tokens + gen.final.usage.completion_tokens
    assert 256 - 2 <= used <= 256


def test_a_step_hands_llama_cpp_its_sequences_in_order(smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a cache split per slot, llama.cpp keeps in one micro-batch only
    sequences whose ids follow each other in the batch: runs admitted in
    any slot order must still go in by slot, or each step would pass over
    the weights several times."""
    from chat.engine import llama

    batches: list[list[tuple[int, int]]] = []
    decode = llama.Context.decode_batch

    def recorded(self: llama.Context, entries: list[llama.BatchEntry]) -> None:
        batches.append([(e.seq, e.pos) for e in entries])
        decode(self, entries)

    monkeypatch.setattr(llama.Context, "decode_batch", recorded)
    topics = ["the sea", "a mountain", "a forest", "the desert"]
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=2048, n_parallel=4, kv_unified=False, draft_max=0)) as eng:
        stories = [f"Here is a long story about {t}. Once upon a time" for t in topics]
        for gen in [eng.submit(GenerationRequest(s, GREEDY, max_tokens=2)) for s in stories]:
            gen.text()  # each slot now holds one story's prompt
        batches.clear()
        # Continued in reverse: each run takes the slot with its prefix, 3, 2, 1, 0.
        continued = [s + " there" for s in reversed(stories)]
        prompt_len = {3 - i: len(eng.tokenize(s)) for i, s in enumerate(continued)}
        gens = [eng.submit(GenerationRequest(s, GREEDY, max_tokens=12)) for s in continued]
        for gen in gens:
            gen.text()
    # The tokens of decoding runs (past their prompts) in each step, by sequence id.
    steps = [[seq for seq, pos in batch if pos >= prompt_len[seq]] for batch in batches]
    four = [seqs for seqs in steps if len(seqs) == 4]
    assert four, batches
    assert all(seqs == sorted(seqs) for seqs in four), four


def test_a_burst_of_first_requests_walks_the_vocabulary_once(smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every chat request asks for the control tokens' texts, found by a
    walk over the whole vocabulary. Eight first requests arriving together
    each walked it, one after the other under the GIL: 0.12 s more to the
    first token of all eight on a Sapphire Rapids Xeon, a burst's first answers
    later than llama-server's by that much."""
    from chat.engine import llama

    walks: list[int] = []
    walk = llama.Model.special_texts

    def counted(self: llama.Model) -> frozenset[str]:
        walks.append(1)
        time.sleep(0.05)  # a long walk, so the burst surely overlaps it
        return walk(self)

    monkeypatch.setattr(llama.Model, "special_texts", counted)
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=512)) as eng:
        start = threading.Barrier(8)
        found: list[frozenset[str]] = []

        def first_request() -> None:
            start.wait()
            found.append(eng.special_texts())

        threads = [threading.Thread(target=first_request) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(walks) == 1
    assert len(found) == 8 and all(f == found[0] for f in found)
    assert "<|im_start|>" in found[0]


def test_every_computation_runs_on_the_engine_thread(smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """libgomp, under ggml's CPU kernels, keeps a team of threads per thread
    that computes; with a second team alive it stops spinning at barriers,
    and generation ran 6x slower after one embedding request computed on an
    HTTP thread, or after a load on a thread that lived on (AMX converts
    weights in parallel loops). So the load, the generation and the
    embeddings all run on the engine's one worker thread, whoever asks."""
    from chat.engine import llama
    from chat.engine.bindings import llama_cpp as C

    where: list[tuple[str, str]] = []
    decode, load = C.llama_decode, llama._load

    def recorded_decode(ctx: object, batch: object) -> int:
        where.append(("decode", threading.current_thread().name))
        return int(decode(ctx, batch))

    def recorded_load(source: ModelSource, params: object) -> object:
        where.append(("load", threading.current_thread().name))
        return load(source, params)

    monkeypatch.setattr(C, "llama_decode", recorded_decode)
    monkeypatch.setattr(llama, "_load", recorded_load)
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=512)) as eng:
        vectors: list[list[list[float]]] = []
        other = threading.Thread(target=lambda: vectors.append(eng.embed(["a lighthouse", "a bottle"])), name="http")
        other.start()
        text = eng.submit(GenerationRequest("Once upon a time", GREEDY, max_tokens=8)).text()
        other.join()
    assert text and len(vectors) == 1 and len(vectors[0]) == 2
    assert {what for what, _ in where} == {"load", "decode"}
    assert {thread for _, thread in where} == {"llamabin-engine"}, where


def test_ctrl_c_during_a_load_frees_what_was_loaded(smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The load runs on the engine's thread; a Ctrl-C on the thread that
    waits for it is raised once the load has ended (llama.cpp cannot stop
    midway), and the engine it made is closed, its thread gone."""
    import signal

    from chat.engine import llama

    load = llama._load

    def slow_load(source: ModelSource, params: object) -> object:
        time.sleep(0.6)
        return load(source, params)

    monkeypatch.setattr(llama, "_load", slow_load)
    before = set(threading.enumerate())
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        Engine(EngineConfig(ModelSource(smollm2), n_ctx=512))
    assert time.monotonic() - started >= 0.6  # raised after the load, not in the middle of it
    assert not [t for t in set(threading.enumerate()) - before if t.name == "llamabin-engine"]


def test_a_worker_that_dies_leaves_no_caller_waiting(smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should a bug end the worker thread (here: a request fails to start,
    and dropping the slots' caches after it fails too), the generations
    waiting end, and later submits and embeddings are refused instead of
    waiting for ever."""
    from chat.engine import llama, scheduler

    def broken(self: object, *args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(scheduler.Scheduler, "_start", broken)
    monkeypatch.setattr(llama.Context, "forget", broken)
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the bug's traceback, expected here
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=512)) as eng:
        gen = eng.submit(GenerationRequest("Once upon a time", GREEDY, max_tokens=8))
        ended: list[object] = []

        def wait_for_the_end() -> None:
            gen.text()
            ended.append(gen.final)
            for call in (lambda: eng.embed(["a lighthouse"]), lambda: eng.submit(GenerationRequest("Hi", GREEDY))):
                try:
                    call()
                except EngineClosedError as exc:
                    ended.append(exc)

        waiter = threading.Thread(target=wait_for_the_end, daemon=True)
        waiter.start()
        waiter.join(timeout=30)
        assert not waiter.is_alive(), "a caller still waits for the dead worker"
    assert len(ended) == 3
    assert isinstance(ended[1], EngineClosedError) and isinstance(ended[2], EngineClosedError)


def test_clients_embedding_one_input_after_another_leave_room_for_the_steps(
    smollm2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each embedding input runs on the worker between two steps; two
    clients queueing input after input must not keep the steps waiting,
    each taking the other's place as soon as its own ran (what a busy
    machine makes likely, forced here: every input ends only once the other
    client's next call is queued)."""
    from chat.engine import llama

    events: list[str] = []
    embed, decode = llama.EmbeddingContext.embed, llama.Context.decode_batch
    engine: list[Engine] = []

    def recorded_embed(self: llama.EmbeddingContext, tokens: list[int]) -> list[float]:
        events.append("embed")
        deadline = time.monotonic() + 0.2
        while engine and engine[0].stats().queue_depth == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        return embed(self, tokens)

    def recorded_decode(self: llama.Context, entries: list[llama.BatchEntry]) -> None:
        events.append("step")
        decode(self, entries)

    monkeypatch.setattr(llama.EmbeddingContext, "embed", recorded_embed)
    monkeypatch.setattr(llama.Context, "decode_batch", recorded_decode)
    with Engine(EngineConfig(ModelSource(smollm2), n_ctx=1024, draft_max=0)) as eng:
        eng.embed(["warm"])  # the embedding context, made before the race
        engine.append(eng)
        # Counting goes on without an end of its own: the steps outlast the clients.
        gen = eng.submit(GenerationRequest("1, 2, 3, 4, 5, 6, 7, 8,", GREEDY, max_tokens=400))
        next(iter(gen))  # generating
        clients = [
            threading.Thread(target=lambda: [eng.embed([f"input {i} of a long list"]) for i in range(15)])
            for _ in range(2)
        ]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        gen.text()
    between_steps = "".join("e" if e == "embed" else "s" for e in events).strip("e").split("s")
    assert sum(len(run) for run in between_steps) >= 20, events  # the clients ran while it generated
    assert max(len(run) for run in between_steps) <= 2, events
