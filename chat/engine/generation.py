"""A submitted generation as its consumer sees it: the chunks to iterate
and the switch to cancel it.

The engine makes one per request and hands it to the scheduler's inbox;
the scheduler, on the engine's worker thread, emits its chunks. It holds
no llama.cpp object, so a front end (or a test's stand-in engine) can make
and read one without a model.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator

from chat.engine.types import Chunk, GenerationRequest


class Generation:
    """A submitted request: iterate it for chunks, or cancel it."""

    def __init__(self, request: GenerationRequest, prompt_tokens: list[int]) -> None:
        self.request = request
        self.prompt_tokens = prompt_tokens
        # A deque, not a queue.Queue: appends and pops are atomic as they
        # stand, so a consumer that polls (the server's event loop) costs
        # neither thread a lock per token; a blocking reader waits on `_more`,
        # which the engine sets while no `on_emit` notifier is registered.
        self._chunks: deque[Chunk] = deque()
        self._more = threading.Event()
        self._cancelled = threading.Event()
        self._notify: Callable[[], None] | None = None
        self._notify_final_only = False
        self.final: Chunk | None = None

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def emit(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        notify = self._notify
        if notify is None:
            self._more.set()
        elif chunk.finish_reason is not None or not self._notify_final_only:
            notify()

    def on_emit(self, notify: Callable[[], None], final_only: bool = False) -> None:
        """Have `notify` called, from the engine's thread, after each chunk
        from now on (only after the last one if `final_only`), and once now
        for any already waiting: for a consumer that `poll`s instead of
        blocking a thread per generation, such as an event loop. From then
        on, read the chunks with `poll`: iterating would wait for ever."""
        self._notify_final_only = final_only
        self._notify = notify
        notify()

    def peek(self) -> Chunk | None:
        """The chunk `poll` would return next, left in place."""
        try:
            return self._chunks[0]
        except IndexError:
            return None

    def poll(self) -> Chunk | None:
        """The next chunk if one is ready, else None at once."""
        try:
            chunk = self._chunks.popleft()
        except IndexError:
            return None
        if chunk.finish_reason is not None:
            self.final = chunk
        return chunk

    def __iter__(self) -> Iterator[Chunk]:
        while self.final is None:
            chunk = self.poll()
            if chunk is None:
                self._more.clear()
                chunk = self.poll()  # emitted before the clear: its set is spent
                if chunk is None:
                    self._more.wait()
                    continue
            yield chunk

    def text(self) -> str:
        """Wait for the end and return the whole completion."""
        return "".join(c.text for c in self)
