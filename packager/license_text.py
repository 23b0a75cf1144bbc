"""The license text `llamabin build --license` stores in the file.

Read once, at the start, from a file or from a pipe: `--license <(curl -s
URL)` hands the packer a pipe, which can be read only once and must be
read to its end. What never ends or never starts is refused at once
instead of hanging the build: a FIFO that nothing writes to, a terminal,
a device such as /dev/zero (refused past the size a manifest can hold).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from payload.errors import UsageError
from payload.footer import MAX_MANIFEST_SIZE

# A pipe's text is read up to what a manifest can hold at all; a regular
# file's size is checked where the manifest is written, which says so.
MAX_STREAM_BYTES = MAX_MANIFEST_SIZE


def read_license(path: Path) -> str:
    # Without blocking, so a FIFO without a writer does not hang the open
    # (POSIX; Windows has no FIFOs, nor the flag). Binary, for Windows.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise UsageError(f"cannot read license file {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise UsageError(f"license file {path} is a directory")
        if os.isatty(fd):
            raise UsageError(f"{path} is a terminal: give the license as a file, or pipe it in")
        data = _read_all(fd) if stat.S_ISREG(mode) else _read_stream(fd, path, stat.S_ISFIFO(mode))
    except OSError as exc:
        raise UsageError(f"cannot read license file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"license file {path} is not UTF-8 text (byte {exc.start:,})") from None


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb", closefd=False) as f:
        return f.read()


def _read_stream(fd: int, path: Path, pipe: bool) -> bytes:
    """A pipe or device to its end, within MAX_STREAM_BYTES. A pipe read
    without blocking says at once whether anything holds it open to write:
    no data and no writer reads as its end, before any data came."""
    chunks: list[bytes] = []
    total = 0
    writer_seen = False
    while True:
        try:
            block = os.read(fd, 1 << 16)
        except BlockingIOError:  # a writer holds it open, and has not written yet: wait for it
            writer_seen = True
            os.set_blocking(fd, True)
            continue
        if not block:
            if pipe and not chunks and not writer_seen:
                # A FIFO nobody opened to write, or a pipe whose writer
                # ended without a word (`<(curl ...)` that failed).
                raise UsageError(f"{path} is not a regular file, and gave no text: nothing writes to it now")
            return b"".join(chunks)
        total += len(block)
        if total > MAX_STREAM_BYTES:
            raise UsageError(f"the license read from {path} goes on past {MAX_STREAM_BYTES:,} bytes")
        chunks.append(block)
