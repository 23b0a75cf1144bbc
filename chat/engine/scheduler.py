"""Continuous batching: one llama_decode per step serves every running
generation.

Each step evaluates the next token of every generation that is decoding,
then fills what is left of the batch with prompt tokens of generations still
in prefill, so a long prompt is evaluated in chunks between other streams'
tokens instead of stalling them. New requests join at the next step when a
slot is free; finished or cancelled ones leave at once. Each slot is one
sequence of the shared context and remembers the tokens its KV cache holds,
so a request reuses the longest cached prefix: the slot's own, or one the
prompt cache (prompt_cache.py) kept after its slot moved on.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from chat.engine.generation import Generation
from chat.engine.grammar_guard import GrammarError
from chat.engine.llama import BatchEntry, Context, Model, Sampler
from chat.engine.logprobs import token_logprob
from chat.engine.lookup import Drafter, LookupSettings, StepCosts
from chat.engine.prompt_cache import PromptCache, common_prefix
from chat.engine.stream import TextStream
from chat.engine.types import Chunk, EngineStats, FinishReason, TokenChoice, TokenLogprob, Usage
from chat.errors import EngineClosedError, GenerationError

T = TypeVar("T")

# A free slot is chosen for its cached prefix only if that prefix is more
# than this share of the new prompt (llama-server's --slot-prompt-similarity).
SLOT_SIMILARITY = 0.1


@dataclass
class Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV is in the cache
    last_used: int = 0  # admission counter, to evict the least recently used


@dataclass
class _Run:
    """A generation being served, and how far it has got."""

    gen: Generation
    slot: Slot
    sampler: Sampler
    text: TextStream
    stop_ids: set[int]
    limit: int
    todo: list[int]  # prompt tokens still to evaluate
    reused: int  # prompt tokens taken from the cache
    started: float
    prefilled_at: float = 0.0
    n_out: int = 0
    next_token: int | None = None  # sampled, to be evaluated at the next step
    drafter: Drafter | None = None  # the tokens so far, for drafts (prompt lookup on)
    drafted: list[int] = field(default_factory=list)  # guessed tokens evaluated after next_token this step
    logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet emitted
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)  # filled during prefill, if asked


class _Call(Generic[T]):
    """A function to run on the worker thread between two steps, and its
    outcome for the thread that waits for it."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the thread that waits
            self.error = exc
        self.done.set()

    def refuse(self) -> None:
        self.error = EngineClosedError()
        self.done.set()


# A prompt token whose logprob is wanted: its run, the batch entry (the
# token before it) whose logits predict it, and the token.
_Scored = tuple[_Run, int, int]


@dataclass
class _Totals:
    """The running totals, written only by the worker thread."""

    generations: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    last_tokens_per_second: float = 0.0
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    busy: bool = False

    def add(self, usage: Usage) -> None:
        self.prompt_tokens += usage.evaluated_prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.prompt_seconds += usage.prompt_seconds
        self.generation_seconds += usage.generation_seconds
        if usage.completion_tokens:
            self.last_tokens_per_second = usage.generation_tokens_per_second


class Scheduler:
    """The engine's worker: owns the inbox, the slots and the totals, and
    runs the step loop (`run`, on the engine's worker thread)."""

    def __init__(
        self,
        model: Model,
        ctx: Context,
        n_parallel: int,
        lookup: LookupSettings | None = None,
        cache: PromptCache | None = None,
    ) -> None:
        self.model = model
        self.ctx = ctx
        self.cache = cache
        # Prompt lookup drafts for a generation running alone: with others,
        # the batch is full of their tokens already and a draft would only
        # make every step longer.
        self.lookup = lookup
        self.slots = [Slot(seq) for seq in range(n_parallel)]
        self._totals = _Totals()
        # A request and the sampler built for it, a call to run between
        # steps, or None, which tells the loop to end.
        self._inbox: queue.Queue[tuple[Generation, Sampler] | _Call[object] | None] = queue.Queue()
        self._waiting: collections.deque[tuple[Generation, Sampler]] = collections.deque()
        self._runs: list[_Run] = []
        self._admitted = 0
        self._costs = StepCosts()  # one sequence's steps, timed: what drafts cost here
        # Set once `run` has taken the inbox's last items: a call queued
        # later would wait for ever, so it is refused instead.
        self._ended = False
        self._ending = threading.Lock()

    # -- from any thread --------------------------------------------------------

    def submit(self, gen: Generation, sampler: Sampler) -> None:
        """Queue a generation; the scheduler closes `sampler` when it ends.
        EngineClosedError (`sampler` closed) once the worker has ended."""
        with self._ending:
            if self._ended:
                sampler.close()
                raise EngineClosedError()
            self._inbox.put((gen, sampler))

    def stop(self) -> None:
        """Have `run` cancel what runs and return."""
        self._inbox.put(None)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the worker thread between two steps, and return what
        it returns (or raise what it raises); EngineClosedError if the
        worker ends first. Every llama.cpp computation belongs on that one
        thread: libgomp, which runs ggml's CPU kernels, keeps a team of
        threads for each thread that computes, and while two teams exist it
        counts more threads than cores and stops spinning at its barriers.
        One embedding computed on an HTTP thread made every later token
        about 6x slower (2 cores, 2026-12-06)."""
        job: _Call[T] = _Call(fn)
        with self._ending:
            if self._ended:
                raise EngineClosedError()
            self._inbox.put(job)  # type: ignore[arg-type]  # the queue holds calls of any result type
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]  # set by run() when no error was

    @property
    def depth(self) -> int:
        """Requests waiting for a slot (not counting those running): those
        still in the inbox and those the worker took but has no slot for."""
        return self._inbox.qsize() + len(self._waiting)

    def stats(self) -> EngineStats:
        """A copy of the totals as they are now, with the queue's depth."""
        t = self._totals
        return EngineStats(
            generations=t.generations,
            prompt_tokens=t.prompt_tokens,
            completion_tokens=t.completion_tokens,
            prompt_seconds=t.prompt_seconds,
            generation_seconds=t.generation_seconds,
            last_tokens_per_second=t.last_tokens_per_second,
            drafted_tokens=t.drafted_tokens,
            accepted_tokens=t.accepted_tokens,
            cached_prompts=len(self.cache) if self.cache else 0,
            cached_prompt_bytes=self.cache.bytes if self.cache else 0,
            restored_prompts=self.cache.restored if self.cache else 0,
            busy=t.busy,
            queue_depth=self.depth,
        )

    # -- the worker thread ------------------------------------------------------

    def run(self) -> None:
        """Serve until `stop`. However it ends (a bug may raise here), what
        runs and what waits is ended, and later submits and calls are
        refused, so no client waits for ever."""
        try:
            while self._admit():
                if not self._runs:
                    continue
                try:
                    self._step()
                except Exception as exc:  # a bug must not leave clients waiting forever
                    for r in list(self._runs):
                        self._fail(r, repr(exc))
        finally:
            self._end()

    def _end(self) -> None:
        for r in list(self._runs):
            try:
                self._finish(r, FinishReason.CANCELLED)
            except Exception as exc:  # the worker is going: each consumer must still hear of it
                r.gen.emit(Chunk("", finish_reason=FinishReason.ERROR, error=repr(exc)))
        with self._ending:
            self._ended = True
            self._set_aside(self._drain_inbox())
        while self._waiting:  # never started: ended too, so no consumer waits for ever
            gen, sampler = self._waiting.popleft()
            sampler.close()
            self._totals.generations += 1
            gen.emit(Chunk("", finish_reason=FinishReason.CANCELLED))

    # -- admission ----------------------------------------------------------

    def _admit(self) -> bool:
        """Move requests into free slots, and run the calls waiting; block
        only when nothing runs. Returns False when the engine is closing.
        Only what is in the inbox now is taken: a client that queues its
        next call while this one runs (embeddings, input after input) must
        not keep the next step from coming."""
        items: list[tuple[Generation, Sampler] | _Call[object] | None] = []
        if not self._runs and not self._waiting:
            items.append(self._inbox.get())
        for _ in range(self._inbox.qsize()):
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for k, item in enumerate(items):
            if item is None:
                self._set_aside(items[k + 1 :])  # out of the inbox already: ended with what is left in it
                return False
            if isinstance(item, _Call):
                item.run()
            else:
                self._waiting.append(item)
        while self._waiting and len(self._runs) < len(self.slots):
            gen, sampler = self._waiting.popleft()
            try:
                self._start(gen, sampler)
            except Exception as exc:  # a bug must not end the worker, leaving every client waiting
                self._refuse(gen, sampler, repr(exc))
        return True

    def _refuse(self, gen: Generation, sampler: Sampler, error: str) -> None:
        """End a generation that failed to start (before it joined the
        runs). The slot it was given may hold anything now: every idle
        slot's cache is dropped. Its consumer hears first, whatever the
        rest may raise."""
        self._totals.generations += 1
        gen.emit(Chunk("", finish_reason=FinishReason.ERROR, error=error))
        sampler.close()
        busy = {r.slot.seq for r in self._runs}
        for slot in self.slots:
            if slot.seq not in busy:
                self.ctx.forget(slot.seq, 0)
                slot.cached = []

    def _drain_inbox(self) -> list[tuple[Generation, Sampler] | _Call[object] | None]:
        left: list[tuple[Generation, Sampler] | _Call[object] | None] = []
        while True:
            try:
                left.append(self._inbox.get_nowait())
            except queue.Empty:
                return left

    def _set_aside(self, items: list[tuple[Generation, Sampler] | _Call[object] | None]) -> None:
        """Items the loop will not serve, as it ends: calls are refused,
        requests wait to be ended with the others."""
        for item in items:
            if isinstance(item, _Call):
                item.refuse()
            elif item is not None:
                self._waiting.append(item)

    def _start(self, gen: Generation, sampler: Sampler) -> None:
        if gen.cancelled:
            sampler.close()
            gen.emit(Chunk("", finish_reason=FinishReason.CANCELLED))
            self._totals.generations += 1
            return
        prompt = gen.prompt_tokens
        slot = self._pick_slot(prompt)
        # The last prompt token is always evaluated, for the logits of the
        # first answer token; scoring the prompt needs every position's.
        keep = self._reuse(slot, prompt, 0 if gen.request.prompt_logprobs else len(prompt) - 1)
        req = gen.request
        limit = req.max_tokens if req.max_tokens is not None else self.ctx.n_ctx_seq
        self._runs.append(
            _Run(
                gen,
                slot,
                sampler,
                TextStream(req.stop),
                self._stop_token_ids(req.stop),
                limit,
                prompt[keep:],
                keep,
                time.perf_counter(),
                drafter=Drafter(prompt, self.lookup, self._costs) if self.lookup else None,
            )
        )
        self._totals.busy = True

    def _pick_slot(self, prompt: list[int]) -> Slot:
        """The free slot sharing the longest prefix, if that is more than a
        tenth of the prompt (llama-server's rule: a chat template's first
        few tokens are no reason to overwrite another conversation); else
        the least recently used (an empty one first), so other chats'
        caches survive longest."""
        busy = {r.slot.seq for r in self._runs}
        free = [s for s in self.slots if s.seq not in busy]
        slot = max(free, key=lambda s: (common_prefix(s.cached, prompt), -s.last_used))
        if common_prefix(slot.cached, prompt) <= SLOT_SIMILARITY * len(prompt):
            slot = min(free, key=lambda s: s.last_used)
        self._admitted += 1
        slot.last_used = self._admitted
        return slot

    def _reuse(self, slot: Slot, prompt: list[int], most: int) -> int:
        """Leave in the slot's cache the longest prefix of `prompt` there is,
        up to `most` tokens, and return its length: the slot's own, or a
        saved prompt's put back in its place if that shares more. What the
        slot holds is saved if the new prompt keeps less than half of it
        (llama-server's rule), after the search: saving may push out of the
        cache the prompt the search finds, which can be put back all the same."""
        keep = min(common_prefix(slot.cached, prompt), most)
        if self.cache is None:
            return self._truncate(slot, keep)
        found = self.cache.best(prompt) if most > 0 else None
        if keep < len(slot.cached) / 2:
            self.cache.save(self.ctx, slot.seq, slot.cached)
        if found is None or min(found[1], most) <= keep:
            return self._truncate(slot, keep)
        saved, shared = found
        needed = len(saved.tokens) - len(slot.cached)  # cells beyond those the slot gives up
        if self.ctx.unified and self._free_cells(needed, spare=slot) < needed:
            return self._truncate(slot, keep)
        if not self.cache.restore(self.ctx, slot.seq, saved):
            self.ctx.forget(slot.seq, 0)  # it may hold part of the state
            slot.cached = []
            return 0
        slot.cached = list(saved.tokens)
        return self._truncate(slot, min(shared, most))

    def _truncate(self, slot: Slot, keep: int) -> int:
        """Drop the slot's cache after its first `keep` tokens; return how
        many it keeps. With a sliding window, the positions just before
        `keep` may have been given to another sequence once they fell out
        of this one's window (llama.cpp reuses such cells): if they are
        gone, the prompt is evaluated from the start, as in llama-server."""
        if keep < len(slot.cached):
            # Read before the cut: had the window lost every cell below
            # `keep`, the cut would leave it empty (-1) and hide that.
            first = self.ctx.first_position(slot.seq) if self.model.n_swa else 0
            if keep and not 0 <= first <= max(0, keep - self.model.n_swa):
                keep = 0
            self.ctx.forget(slot.seq, keep)
        del slot.cached[keep:]
        return keep

    # -- one step -------------------------------------------------------------

    def _step(self) -> None:
        for r in [r for r in self._runs if r.gen.cancelled]:
            self._finish(r, FinishReason.CANCELLED)
        entries, sampled, scored = self._plan()
        if not entries:
            # Every run waits for room that only another waiting run could
            # free: give up the newest, so the others can go on.
            self._fail(max(self._runs, key=lambda r: r.slot.last_used), "the context is full: try again later")
            return
        started = time.perf_counter()
        try:
            self.ctx.decode_batch(entries)
            self.ctx.synchronize()  # so the step's time is all of its work (a GPU's too)
        except GenerationError as exc:
            for r in list(self._runs):
                self._fail(r, str(exc))
            return
        if len(sampled) == 1 and not scored and all(e.logits for e in entries):
            # One run's token and its draft, if any: what drafts are weighed by.
            self._costs.add(len(entries), time.perf_counter() - started)
        for r, index, token in scored:
            r.prompt_logprobs.append(self._logprob(r, index, token))
        for r, index in sampled:
            if r.gen.request.prompt_logprobs and r.n_out == 0:
                first = r.gen.prompt_tokens[0]
                unpredicted = TokenLogprob(TokenChoice(first, self.model.token_bytes(first), None))
                r.gen.emit(Chunk("", prompt_logprobs=(unpredicted, *r.prompt_logprobs)))
            self._sample(r, index)

    def _sample(self, r: _Run, index: int) -> None:
        """The run's next token from the logits at `index`; if a draft was
        evaluated after it, each drafted token the sampler picks too is
        taken as it stands (its KV is already in the cache), up to the first
        it does not pick, whose evaluated KV is dropped with the rest. Every
        token is sampled from its own logits, as without a draft: the same
        output, in fewer steps when the guess is right."""
        drafted, r.drafted = r.drafted, []
        first_draft = len(r.slot.cached) - len(drafted)  # the first drafted token's place
        self._totals.drafted_tokens += len(drafted)
        for k in range(len(drafted) + 1):
            try:
                token = r.sampler.sample(self.ctx, index + k)
            except GrammarError as exc:  # this request's grammar: the others go on
                self._fail(r, str(exc), bad_request=True)
                return
            if r.gen.request.logprobs is not None and not self.model.is_eog(token):
                r.logprobs.append(self._logprob(r, index + k, token))
            self._on_token(r, token, first_draft + k)
            if r.next_token is None:  # the run ended
                return
            if r.drafter is not None:
                r.drafter.append(token)
            if k == len(drafted) or token != drafted[k]:
                if k < len(drafted):
                    self.ctx.forget(r.slot.seq, first_draft + k)
                    del r.slot.cached[first_draft + k :]
                if r.drafter is not None:
                    r.drafter.record(len(drafted), k)
                return
            r.next_token = None  # evaluated already, as a draft
            self._totals.accepted_tokens += 1

    def _draft(self, r: _Run, token: int) -> list[int]:
        """Up to a few tokens guessed to follow `token`, when the run is the
        only one and there is room for them."""
        if r.drafter is None or len(self._runs) != 1:
            return []
        guess = r.drafter.draft()  # its tokens end with `token`
        room = min(self.ctx.n_batch - 1, r.limit - r.n_out - 1, self.ctx.n_ctx_seq - len(r.slot.cached) - 2)
        grammar_room = r.sampler.draft_room()
        if grammar_room is not None:
            room = min(room, grammar_room)
        return guess[: max(0, room)]

    def _logprob(self, r: _Run, index: int, token: int) -> TokenLogprob:
        logits = self.ctx.logits(index, self.model.n_vocab)
        return token_logprob(logits, token, r.gen.request.logprobs or 0, self.model.token_bytes)

    def _plan(self) -> tuple[list[BatchEntry], list[tuple[_Run, int]], list[_Scored]]:
        """This step's batch: one token per decoding run, then prompt chunks,
        as far as the batch and the shared cache have room.

        Runs go in by sequence id. With a cache split per slot, llama.cpp
        puts into one micro-batch only sequences whose ids follow each other
        in the batch's order (llama_batch_allocr::split_equal): four runs in
        slots 2, 3, 0, 1 would cost two passes over the weights a step
        instead of one, as llama-server (which goes through its slots in
        order) never pays."""
        entries: list[BatchEntry] = []
        sampled: list[tuple[_Run, int]] = []
        scored: list[_Scored] = []
        in_order = sorted(self._runs, key=lambda r: r.slot.seq)
        for r in in_order:
            token, r.next_token = r.next_token, None
            if token is None:
                continue
            if self._room(r, 1) < 1:
                self._finish(r, FinishReason.LENGTH)
                continue
            drafted = self._draft(r, token)
            if drafted and self._room(r, 1 + len(drafted)) < 1 + len(drafted):
                drafted = []
            entries.append(BatchEntry(token, r.slot.seq, len(r.slot.cached), True))
            sampled.append((r, len(entries) - 1))
            r.slot.cached.append(token)
            for d in drafted:  # each with its logits: the sampler checks them one by one
                entries.append(BatchEntry(d, r.slot.seq, len(r.slot.cached), True))
                r.slot.cached.append(d)
            r.drafted = drafted
        for r in in_order:
            if r not in self._runs:  # finished above
                continue
            room = min(self.ctx.n_batch - len(entries), self._room(r, len(r.todo)))
            if not r.todo or room <= 0:
                continue
            part, r.todo = r.todo[:room], r.todo[room:]
            score = r.gen.request.prompt_logprobs
            following = part[1:] + r.todo[:1]  # the prompt token each entry's logits predict
            for i, tok in enumerate(part):
                last = not r.todo and i == len(part) - 1
                entries.append(BatchEntry(tok, r.slot.seq, len(r.slot.cached), last or score))
                r.slot.cached.append(tok)
                if score and not last:
                    scored.append((r, len(entries) - 1, following[i]))
            if not r.todo:
                sampled.append((r, len(entries) - 1))
        return entries, sampled, scored

    def _room(self, r: _Run, wanted: int) -> int:
        """Free cells for `r`, up to `wanted`. In a unified cache all
        sequences share the cells, and idle slots' caches are dropped, least
        recently used first, to make room before a running generation is
        refused any; in a split one each slot has its own share."""
        if not self.ctx.unified:
            return max(0, min(self.ctx.n_ctx_seq - len(r.slot.cached), wanted))
        return max(0, min(self._free_cells(wanted), wanted))

    def _free_cells(self, wanted: int, spare: Slot | None = None) -> int:
        """Free cells of the shared cache, after dropping idle slots' caches
        (least recently used first, each saved to the prompt cache if there
        is one) until `wanted` are free or no idle one is left. `spare`: a
        slot not to drop, the one a request is being put in."""
        free = self.ctx.n_ctx - sum(len(s.cached) for s in self.slots)
        if free >= wanted:  # every step asks: the common case needs no search
            return free
        busy = {r.slot.seq for r in self._runs}
        idle = sorted(
            (s for s in self.slots if s.seq not in busy and s is not spare and s.cached), key=lambda s: s.last_used
        )
        while free < wanted and idle:
            slot = idle.pop(0)
            free += len(slot.cached)
            if self.cache is not None:
                self.cache.save(self.ctx, slot.seq, slot.cached)
            self.ctx.forget(slot.seq, 0)
            slot.cached = []
        return free

    def _on_token(self, r: _Run, token: int, place: int) -> None:
        """`token` was sampled to go at `place` in the slot's sequence (the
        cache may hold drafted tokens past it still, not yet checked)."""
        if not r.prefilled_at:
            r.prefilled_at = time.perf_counter()
        if self.model.is_eog(token) or token in r.stop_ids:
            self._finish(r, FinishReason.STOP)
            return
        r.n_out += 1
        piece = r.text.feed(self.model.token_bytes(token))
        if piece or r.text.stopped:
            r.gen.emit(Chunk(piece, (token,), logprobs=self._take_logprobs(r)))
        if r.text.stopped:
            self._finish(r, FinishReason.STOP)
        elif r.n_out >= r.limit or place + 1 >= self.ctx.n_ctx_seq:
            self._finish(r, FinishReason.LENGTH)
        else:
            r.next_token = token

    def _take_logprobs(self, r: _Run) -> tuple[TokenLogprob, ...]:
        if not r.logprobs:
            return ()
        taken, r.logprobs = tuple(r.logprobs), []
        return taken

    def _finish(self, r: _Run, reason: FinishReason) -> None:
        tail = r.text.finish()
        if tail or r.logprobs:
            r.gen.emit(Chunk(tail, logprobs=self._take_logprobs(r)))
        now = time.perf_counter()
        prefilled = r.prefilled_at or now
        usage = Usage(len(r.gen.prompt_tokens), r.reused, r.n_out, prefilled - r.started, now - prefilled)
        self._leave(r)
        self._totals.add(usage)
        r.gen.emit(Chunk("", finish_reason=reason, usage=usage))

    def _fail(self, r: _Run, error: str, bad_request: bool = False) -> None:
        """The batch failed: the slot's cache is unknown now, so forget it.
        Or (`bad_request`) the request cannot go on, its grammar at a dead
        end: the cache holds what was evaluated, and stays for the next
        request that starts the same way."""
        if not bad_request:
            self.ctx.forget(r.slot.seq, 0)
            r.slot.cached = []
        self._leave(r)
        r.gen.emit(Chunk("", finish_reason=FinishReason.ERROR, error=error, bad_request=bad_request))

    def _leave(self, r: _Run) -> None:
        r.sampler.close()
        self._runs.remove(r)
        self._totals.generations += 1
        self._totals.busy = bool(self._runs)

    def _stop_token_ids(self, stops: tuple[str, ...]) -> set[int]:
        """Stop strings that are single control tokens (like <|im_end|>) never
        show up as text, so they must be caught by id."""
        ids: set[int] = set()
        for stop in stops:
            toks = self.model.tokenize(stop, add_bos=False)
            if len(toks) == 1 and self.model.token_text(toks[0]) == stop:
                ids.add(toks[0])
        return ids
