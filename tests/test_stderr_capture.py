"""Capturing llama.cpp's stderr (for grammar errors) from several threads at
once must leave the process's own stderr where it was."""

from __future__ import annotations

import os
import random
import threading
import time

from chat.engine.llama import capture_stderr


def test_overlapping_captures_leave_fd_2_alone() -> None:
    before = os.fstat(2)
    start = threading.Barrier(4)

    def capture_often(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(100):
            with capture_stderr():
                time.sleep(rng.random() / 1000)

    threads = [threading.Thread(target=capture_often, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = os.fstat(2)
    # Overlapping swaps used to leave fd 2 on another capture's deleted file.
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_a_capture_reads_what_c_code_wrote() -> None:
    with capture_stderr() as got:
        os.write(2, b"parse: error parsing grammar: expecting ')' at end of input\n")
    assert got.first_line() == "expecting ')' at end of input"
