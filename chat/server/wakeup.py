"""Waking the event loop from the engine's thread without waiting for it.

`loop.call_soon_threadsafe` wakes the loop by writing a byte to its
self-pipe with `socket.send`, which lets go of the GIL for the system call.
The woken loop takes the GIL at once and runs the token's whole path (the
stream's generator, the ASGI layers, the socket write, about 0.2 ms) while
the engine's thread, back from its one-byte write, waits for the GIL
before it can start the next decode: 0.15-0.29 ms per streamed token, 3-5%
of a small model's step (2-core Xeon, 2026-12-07).

Here the byte is written by a libc `write` called through `ctypes.PyDLL`,
which keeps the GIL: the woken loop waits for it until the engine's thread
lets it go in its next `llama_decode`, and then does its work beside the
decode, as llama-server's HTTP thread does. Where that call is not to be
had (not POSIX, or a loop without `add_reader`), `call_soon_threadsafe`
does the same work, only with the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import weakref
from collections import deque
from collections.abc import Callable
from typing import NamedTuple


def _write_holding_the_gil() -> Callable[[int, bytes, int], int] | None:
    if os.name != "posix":
        return None
    try:
        # PyDLL(None): the process's own libc, called with the GIL held.
        write = ctypes.PyDLL(None, use_errno=True).write
    except (AttributeError, OSError):
        return None
    write.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    write.restype = ctypes.c_ssize_t
    return write  # type: ignore[no-any-return]


class _Pipe(NamedTuple):
    read_fd: int
    write_fd: int
    write: Callable[[int, bytes, int], int]  # libc's, keeping the GIL


class LoopWaker:
    """Runs callbacks on one event loop, asked from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._due: deque[Callable[[], None]] = deque()
        self._pending = False  # a byte is in the pipe, or the loop is about to drain `_due`
        self._pipe: _Pipe | None = None  # None: woken with call_soon_threadsafe
        write = _write_holding_the_gil()
        if write is None:
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)  # with the GIL held, a write must never wait
        try:
            loop.add_reader(read_fd, self._run_due)
        except NotImplementedError:  # e.g. Windows' proactor loop
            os.close(read_fd)
            os.close(write_fd)
            return
        self._pipe = _Pipe(read_fd, write_fd, write)
        # Closed only once nothing can reach this waker: a thread that still
        # could would write to whatever took the number. Not at exit either:
        # the engine's (daemon) thread may still be emitting then, and the
        # system closes them anyway.
        weakref.finalize(self, _close, (read_fd, write_fd)).atexit = False

    def call(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the loop soon; callable from any thread."""
        pipe = self._pipe
        if pipe is None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self.loop.call_soon_threadsafe(callback)
            return
        self._due.append(callback)  # before the flag is read: see _run_due
        if not self._pending:
            self._pending = True
            if pipe.write(pipe.write_fd, b"\0", 1) != 1 and ctypes.get_errno() != errno.EAGAIN:
                # EAGAIN: the pipe is full, so the loop will wake anyway. Any
                # other failure: the loop must still run what is due.
                self._pending = False
                with contextlib.suppress(RuntimeError):
                    self.loop.call_soon_threadsafe(self._run_due)

    def _run_due(self) -> None:
        assert self._pipe is not None  # only a waker with a pipe runs this
        with contextlib.suppress(BlockingIOError):  # a byte per wake-up: one read takes them all
            os.read(self._pipe.read_fd, 4096)
        # Cleared before `_due` is drained: a callback added after the drain
        # finds the flag down and writes again; one added before is drained.
        self._pending = False
        while self._due:
            callback = self._due.popleft()
            try:
                callback()
            except Exception as exc:  # one callback's bug must not strand the others
                self.loop.call_exception_handler({"message": "a LoopWaker callback failed", "exception": exc})


def _close(fds: tuple[int, int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
