"""`llamabin build --license`: a file, or a pipe such as `<(curl -s URL)`,
read once; what would hang the build is refused at once."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from packager.license_text import MAX_STREAM_BYTES, read_license
from payload.errors import UsageError

TEXT = "MIT License\n\nCopyright (c) 2026 — the authors\n"


def test_a_file_is_read() -> None:
    path = Path(__file__).parent / "corpus.txt"
    assert read_license(path) == path.read_text(encoding="utf-8")


POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes, FIFOs and devices")


@POSIX
def test_a_pipe_is_read_to_its_end_as_process_substitution_gives_it() -> None:
    """bash's <(...) names the pipe's read end as /dev/fd/N, and its
    writer may not have written yet when the packer opens it."""
    r, w = os.pipe()

    def write_late() -> None:
        time.sleep(0.3)
        os.write(w, TEXT.encode())
        os.close(w)

    writer = threading.Thread(target=write_late)
    writer.start()
    try:
        assert read_license(Path(f"/dev/fd/{r}")) == TEXT
    finally:
        writer.join()
        os.close(r)


@POSIX
def test_a_fifo_nothing_writes_to_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="is not a regular file, and gave no text: nothing writes to it now"):
        read_license(fifo)


@POSIX
def test_a_device_that_never_ends_is_refused_past_what_a_manifest_holds() -> None:
    with pytest.raises(UsageError, match=f"goes on past {MAX_STREAM_BYTES:,} bytes"):
        read_license(Path("/dev/zero"))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
def test_a_terminal_is_refused_instead_of_waiting_for_typing() -> None:
    import pty

    controller, terminal = pty.openpty()
    try:
        with pytest.raises(UsageError, match="is a terminal: give the license as a file, or pipe it in"):
            read_license(Path(os.ttyname(terminal)))
    finally:
        os.close(controller)
        os.close(terminal)


def test_text_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "LICENSE"
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(UsageError, match="is not UTF-8 text"):
        read_license(path)


@POSIX
def test_a_pipe_whose_writer_ended_without_a_word_is_refused() -> None:
    r, w = os.pipe()
    os.close(w)
    try:
        with pytest.raises(UsageError, match="gave no text"):
            read_license(Path(f"/dev/fd/{r}"))
    finally:
        os.close(r)
