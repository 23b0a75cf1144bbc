"""Ctrl-C: one press, one KeyboardInterrupt, and none while the process
waits on work it must not leave.

A packaged file gets each press twice: the terminal sends SIGINT to the
whole process group, and the bootloader passes its own on to the Python
process. `debounce()` makes a SIGINT within DEBOUNCE_S of the last one
count for nothing, so the second never interrupts the handling of the
first.

Python raises KeyboardInterrupt between any two bytecodes of the main
thread, even inside `with lock:` or Event.wait(), where it can leave a lock
held for good (the waiter then hangs) or, in Thread.join, mark a running
thread as ended (Python 3.11). While llama.cpp runs in another thread, the
main thread waits for it inside `held()`: a Ctrl-C there is noted, not
raised, and raised once the block is left.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

DEBOUNCE_S = 0.5  # a person's second press comes later; the bootloader's, within microseconds


class Presses:
    """Tells a new press of Ctrl-C from the echo of the last one."""

    def __init__(self) -> None:
        self._last = -DEBOUNCE_S

    def new(self) -> bool:
        now = time.monotonic()
        if now - self._last < DEBOUNCE_S:
            return False
        self._last = now
        return True


# SIGINT is one per process, and so is the memory of its last press: both
# handlers here ask this one.
PRESSES = Presses()


def debounce() -> None:
    """From now on (main thread), SIGINT raises KeyboardInterrupt, except
    within DEBOUNCE_S of the one before."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if PRESSES.new():
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)


@contextmanager
def held() -> Iterator[None]:
    """Run the block with Ctrl-C noted instead of raised; raise
    KeyboardInterrupt after it if one came (and the block raised nothing
    else). Off the main thread, where Python never raises it, the block
    just runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        if PRESSES.new():
            came.append(signum)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if came:
        raise KeyboardInterrupt
