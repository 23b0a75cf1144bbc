"""Ctrl-C while llama.cpp works in another thread: the process ends as
interrupted (130), never a crash or a hang. A packaged file gets each Ctrl-C twice (the
terminal's, and the one its bootloader passes on), so the second lands
while the first is being handled; in Python 3.11 that could mark the
engine's thread as ended while it ran, and free the model under it
(exit 139), or leave a lock held for good (a hang)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT

HELD = """
import threading, time
from chat import ctrl_c
done = threading.Event()
threading.Thread(target=lambda: (time.sleep(1.5), done.set())).start()
try:
    with ctrl_c.held():
        print("waiting", flush=True)
        done.wait()
        print("the wait ended", flush=True)
except KeyboardInterrupt:
    print("then KeyboardInterrupt", flush=True)
"""


def test_ctrl_c_inside_held_waits_for_the_block_then_interrupts() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HELD],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "waiting\n"
    for _ in range(3):  # three quick Ctrl-Cs
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=30)
    assert out == "the wait ended\nthen KeyboardInterrupt\n"


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.5, 0.8, 1.2])
def test_ctrl_c_to_a_packaged_file_ends_it_as_interrupted(built: Path, tmp_path: Path, delay: float) -> None:
    """At every stage of a run: the bootloader starting, the model loading,
    a long prompt being read, the answer being written."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("The history of the printing press. " * 200)  # about 1,400 tokens: a second or more to read
    env = dict(os.environ, LLAMABIN_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen(
        [str(built), "--cli", "-f", str(prompt), "-n", "2000"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole group
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the file hung after Ctrl-C")
    # 130, or killed by SIGINT itself (before Python runs): a shell says 130 for both.
    assert proc.returncode in (130, -signal.SIGINT), err.decode(errors="replace")[-2000:]
    assert b"Traceback" not in err, err.decode(errors="replace")
