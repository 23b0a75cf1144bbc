"""The event loop's waker: callbacks asked from the engine's thread run on
the loop, every one, in order, and the asking thread does not hand the
loop its GIL on the way."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from chat.server.wakeup import LoopWaker


@pytest.fixture
def long_switch_interval() -> Iterator[None]:
    # A thread that waits for the GIL then waits for its holder to let go,
    # not for a forced switch, within the test's time.
    before = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


async def _from_thread(waker: LoopWaker, count: int) -> list[tuple[int, int]]:
    """`count` callbacks asked from another thread; what each saw."""
    seen: list[tuple[int, int]] = []
    done = asyncio.Event()

    def make(i: int) -> object:
        def callback() -> None:
            seen.append((i, threading.get_ident()))
            if i == count - 1:
                done.set()

        return callback

    thread = threading.Thread(target=lambda: [waker.call(make(i)) for i in range(count)])  # type: ignore[arg-type, func-returns-value]
    thread.start()
    await asyncio.wait_for(done.wait(), 10)
    thread.join()
    return seen


def test_callbacks_from_a_thread_all_run_on_the_loop_in_order() -> None:
    async def main() -> None:
        waker = LoopWaker(asyncio.get_running_loop())
        seen = await _from_thread(waker, 20_000)
        assert [i for i, _ in seen] == list(range(20_000))
        assert {ident for _, ident in seen} == {threading.get_ident()}

    asyncio.run(main())


def test_a_callback_asked_on_the_loop_itself_runs_too() -> None:
    async def main() -> None:
        waker = LoopWaker(asyncio.get_running_loop())
        ran = asyncio.Event()
        waker.call(ran.set)
        await asyncio.wait_for(ran.wait(), 5)

    asyncio.run(main())


@pytest.mark.skipif(os.name != "posix", reason="the GIL-keeping write is POSIX's")
def test_the_loop_runs_the_callback_only_once_the_asking_thread_lets_go_of_the_gil(
    long_switch_interval: None,
) -> None:
    """The engine's thread asks, then goes on with Python work until its
    next decode lets go of the GIL: the loop must not take the GIL (and the
    engine's time) in between."""

    async def main() -> None:
        waker = LoopWaker(asyncio.get_running_loop())
        ran_at: list[float] = []
        done = asyncio.Event()
        finished_work_at: list[float] = []

        def callback() -> None:
            ran_at.append(time.perf_counter())
            done.set()

        def engine_thread() -> None:
            waker.call(callback)
            end = time.perf_counter() + 0.2
            while time.perf_counter() < end:  # Python work, holding the GIL
                pass
            finished_work_at.append(time.perf_counter())
            time.sleep(0.01)  # a decode: the GIL is let go here

        thread = threading.Thread(target=engine_thread)
        thread.start()
        await asyncio.wait_for(done.wait(), 10)
        thread.join()
        assert ran_at[0] >= finished_work_at[0]

    asyncio.run(main())


class _NoReaders(asyncio.SelectorEventLoop):
    def add_reader(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        raise NotImplementedError


def test_a_loop_without_readers_is_woken_the_plain_way() -> None:
    loop = _NoReaders()
    try:
        waker = LoopWaker(loop)
        seen = loop.run_until_complete(_from_thread(waker, 500))
        assert [i for i, _ in seen] == list(range(500))
    finally:
        loop.close()


@pytest.mark.skipif(os.name != "posix", reason="the waker's own pipe is POSIX's")
def test_its_pipe_is_closed_once_nothing_can_reach_it() -> None:
    loop = asyncio.new_event_loop()
    waker = LoopWaker(loop)
    assert waker._pipe is not None
    fds = (waker._pipe.read_fd, waker._pipe.write_fd)
    for fd in fds:
        os.fstat(fd)
    loop.close()  # drops the loop's hold on it
    del waker
    gc.collect()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


@pytest.mark.parametrize("loop_class", [asyncio.SelectorEventLoop, _NoReaders])
def test_asking_after_the_loop_closed_neither_raises_nor_blocks(loop_class: type[asyncio.AbstractEventLoop]) -> None:
    loop = loop_class()
    waker = LoopWaker(loop)
    loop.close()
    for _ in range(100_000):  # far more than a pipe holds, were each a byte
        waker.call(lambda: None)


def test_a_failing_callback_does_not_strand_the_ones_after_it() -> None:
    errors: list[BaseException] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context["exception"]))
        waker = LoopWaker(loop)
        ran = asyncio.Event()

        def boom() -> None:
            raise ValueError("a bug")

        def ask() -> None:
            waker.call(boom)
            waker.call(ran.set)

        threading.Thread(target=ask).start()
        await asyncio.wait_for(ran.wait(), 5)

    asyncio.run(main())
    assert [type(e) for e in errors] == [ValueError]


@pytest.mark.skipif(os.name != "posix", reason="the GIL-keeping write is POSIX's")
def test_a_failed_wake_up_write_still_gets_the_callback_run() -> None:
    async def main() -> None:
        waker = LoopWaker(asyncio.get_running_loop())

        def failing_write(fd: int, data: bytes, size: int) -> int:
            ctypes.set_errno(errno.EBADF)
            return -1

        assert waker._pipe is not None
        waker._pipe = waker._pipe._replace(write=failing_write)
        seen = await _from_thread(waker, 50)
        assert [i for i, _ in seen] == list(range(50))

    asyncio.run(main())
