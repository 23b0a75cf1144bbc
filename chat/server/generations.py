"""The server's generations in flight, bridged from the engine's worker
thread to the event loop.

The engine's worker thread wakes the event loop after each chunk (a
LoopWaker, chat.server.wakeup), and the loop takes what is ready without waiting:
no thread sits blocked per open stream, and a cancelled consumer (the
client went away, or the server is stopping) leaves nothing behind but the
generation, which is cancelled and forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple, TypeVar

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from chat.engine import Chunk, Engine, Generation, GenerationRequest, TokenLogprob
from chat.server.connections import BodyWriter
from chat.server.errors import ApiError
from chat.server.wakeup import LoopWaker

T = TypeVar("T")


class Answer(NamedTuple):
    """A whole generation: its text, its final chunk (the finish reason and
    usage), and the logprobs of its tokens and of its prompt, if asked."""

    text: str
    final: Chunk
    logprobs: list[TokenLogprob]
    prompt_logprobs: list[TokenLogprob]


RETRY_AFTER_SECONDS = 1  # a queued generation of a small model ends within seconds


class Generations:
    def __init__(self, engine: Engine, limit: int) -> None:
        self.engine = engine
        self.limit = limit
        self._active: set[Generation] = set()
        self._starting = 0  # requests being built and queued right now
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None
        self._waker: LoopWaker | None = None

    @property
    def active(self) -> int:
        return len(self._active)

    def _threads(self) -> anyio.CapacityLimiter:
        # Created on first use: an anyio limiter belongs to a running loop.
        # Threads only build and queue requests (a long prompt takes a while).
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.limit + 8)
        return self._limiter

    def _reserve(self) -> None:
        with self._lock:  # the place is taken before any await, so a burst cannot overshoot
            if len(self._active) + self._starting >= self.limit:
                # Overload is the server's state, not the client's fault:
                # 503, with when to come back.
                raise ApiError(
                    503,
                    f"The server is busy: {self.limit} requests are already waiting; retry later",
                    type="server_error",
                    code="queue_full",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            self._starting += 1

    def _wake_on(self, loop: asyncio.AbstractEventLoop) -> LoopWaker:
        # Made on first use, as the limiter is: it belongs to a running loop.
        if self._waker is None or self._waker.loop is not loop:
            self._waker = LoopWaker(loop)
        return self._waker

    async def start(self, build: Callable[[], GenerationRequest]) -> Generation:
        """Build the request and queue it, in a thread: rendering and
        tokenizing a long prompt, or compiling a grammar, takes a while."""
        self._reserve()
        place = [True]  # held until _submit turns it into an active generation, or given back
        try:
            return await anyio.to_thread.run_sync(self._submit, build, place, limiter=self._threads())
        finally:
            self._give_back(place)

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """One place under the same limit as generations, held for the
        block: other model work (tokenizing, embedding) costs the same CPU
        and memory, so a burst of it is refused with 503 too."""
        self._reserve()
        try:
            yield
        finally:
            self._give_back([True])

    async def work(self, job: Callable[[], T]) -> T:
        """`job` in a worker thread, with a place held while it runs: off
        the event loop, /health answers meanwhile."""
        async with self.admitted():
            return await anyio.to_thread.run_sync(job, limiter=self._threads())

    async def in_thread(self, job: Callable[[], T]) -> T:
        """`job` in a worker thread, for a caller already admitted."""
        return await anyio.to_thread.run_sync(job, limiter=self._threads())

    def _submit(self, build: Callable[[], GenerationRequest], place: list[bool]) -> Generation:
        gen = self.engine.submit(build())
        # Tracked from the moment it is queued, so cancel_all reaches it even
        # if the request that made it is cancelled before it gets it back.
        with self._lock:  # one step: never counted twice, nor not at all
            self._active.add(gen)
            self._take_back(place)
        return gen

    def _give_back(self, place: list[bool]) -> None:
        with self._lock:
            self._take_back(place)

    def _take_back(self, place: list[bool]) -> None:
        """Release a reserved place exactly once, whoever gets here first
        (the caller holds the lock)."""
        if place[0]:
            place[0] = False
            self._starting -= 1

    async def chunks(
        self, gen: Generation, as_they_come: bool = True, direct: Callable[[Chunk], bool] | None = None
    ) -> AsyncIterator[Chunk]:
        """The generation's chunks, ending with the final one; without
        `as_they_come`, all of them once it is over (the loop is then not
        woken at every token). However the consumer stops, the generation
        is cancelled and forgotten.

        `direct`, if given, is offered each chunk but the last that comes while the
        consumer waits with nothing in hand, on the loop, without waking
        it: a chunk it takes (returns True for) is not yielded. So a stream
        can write its plain events straight out, and the chunks it cannot
        (the last, or any while its client is slow) reach the consumer, in
        their order."""
        ready = asyncio.Event()
        idle = False  # the consumer is parked in ready.wait(), with every earlier chunk sent

        def on_loop() -> None:
            if idle and direct is not None:
                try:
                    while (chunk := gen.peek()) is not None and chunk.finish_reason is None and direct(chunk):
                        gen.poll()
                except Exception:  # noqa: S110 (the consumer then takes the chunk, and meets the error itself)
                    pass
                if gen.peek() is None:
                    return
            ready.set()

        waker = self._wake_on(asyncio.get_running_loop())
        gen.on_emit(lambda: waker.call(on_loop), final_only=not as_they_come)
        try:
            while True:
                chunk = gen.poll()
                if chunk is None:
                    ready.clear()
                    chunk = gen.poll()  # emitted before the clear: its wake-up is spent
                    if chunk is None:
                        idle = True
                        try:
                            await ready.wait()
                        finally:
                            idle = False
                        continue
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            self.release(gen)

    async def collect(self, gen: Generation, request: Request) -> Answer:
        """The whole answer, for a non-streaming response. A client that
        hangs up meanwhile cancels the generation."""
        chunks: list[Chunk] = []
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_cancel_on_disconnect, request, gen)
                async for chunk in self.chunks(gen, as_they_come=False):
                    chunks.append(chunk)
                tasks.cancel_scope.cancel()
        finally:
            self.release(gen)
        return Answer(
            "".join(c.text for c in chunks),
            chunks[-1] if chunks else Chunk(""),
            [lp for c in chunks for lp in c.logprobs],
            [lp for c in chunks for lp in c.prompt_logprobs],
        )

    def release(self, gen: Generation) -> None:
        """Cancel (a no-op once finished) and forget a generation."""
        gen.cancel()
        with self._lock:
            self._active.discard(gen)

    def cancel_all(self) -> None:
        with self._lock:
            for gen in self._active:
                gen.cancel()


def plain_text(writer: BodyWriter | None, render: Callable[[str], str]) -> Callable[[Chunk], bool] | None:
    """`chunks`' `direct` for a stream that makes one event, `render(text)`,
    of each chunk that holds only text; None without a writer."""
    if writer is None:
        return None

    def direct(chunk: Chunk) -> bool:
        return bool(chunk.text) and not chunk.logprobs and writer.write(render(chunk.text).encode())

    return direct


async def _cancel_on_disconnect(request: Request, gen: Generation) -> None:
    while not await request.is_disconnected():
        await anyio.sleep(0.25)
    gen.cancel()


class GenerationStream(StreamingResponse):
    """A stream (server-sent events, or Ollama's NDJSON) that releases its generation however it
    ends, even when the client leaves before the first event (then the
    body's own generator never starts, and its cleanup never runs)."""

    def __init__(
        self, body: AsyncIterator[str], gen: Generation, generations: Generations, media_type: str = "text/event-stream"
    ) -> None:
        super().__init__(body, media_type=media_type, headers={"Cache-Control": "no-cache"})
        self._gen = gen
        self._generations = generations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._generations.release(self._gen)
