"""The chat end to end in a real terminal: `python -m chat --chat` runs
inside a private tmux server, keys go in as a user would type them, and the
tests read back the screen the user would see."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chat.repl.commands import builtin_commands

ROOT = Path(__file__).resolve().parent.parent
HELPFUL = "You are a helpful assistant."  # without it this small model rambles
CONTEXT_RE = re.compile(r"context: (\d+) / (\d+) tokens")

# The pane runs the chat under this: tmux itself sometimes never reaps a
# finished program (it stays a zombie), so its exit status is printed
# instead. A Ctrl-C reaches the whole foreground group; the no-op handler
# keeps this wrapper alive, and exec resets it to the default in the chat.
REPORT_EXIT = """
import signal, subprocess, sys
signal.signal(signal.SIGINT, lambda *_: None)
code = subprocess.Popen(sys.argv[1:]).wait()
print(f"[exit status {code}]", flush=True)
"""
EXIT_RE = re.compile(r"^\[exit status (-?\d+)\]$", re.M)


class Terminal:
    """One program in its own tmux server and window."""

    def __init__(self, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.server = f"llamabin-test-{uuid.uuid4().hex[:12]}"
        conf = workdir / "tmux.conf"
        # The pane stays after the program ends, so its last screen can be read.
        conf.write_text("set -g remain-on-exit on\nset -g history-limit 20000\n")
        env_flags = [f"-e{k}={v}" for k, v in env.items()]
        self._tmux(
            "-f",
            str(conf),
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            "120",
            "-y",
            "40",
            "-c",
            str(ROOT),
            *env_flags,
            shlex.join([sys.executable, "-c", REPORT_EXIT, *argv]),
        )
        self.socket = Path(self._tmux("display-message", "-p", "#{socket_path}").strip())

    def _tmux(self, *args: str) -> str:
        proc = subprocess.run(["tmux", "-L", self.server, *args], capture_output=True, text=True, check=True)
        return proc.stdout

    def keys(self, *keys: str) -> None:
        """tmux key names (Enter, C-c, Tab) or literal text."""
        for key in keys:
            literal = [] if re.fullmatch(r"Enter|Tab|C-\w", key) else ["-l"]
            self._tmux("send-keys", "-t", "chat", *literal, key)

    def type_line(self, text: str) -> None:
        self.keys(text, "Enter")

    def screen(self) -> str:
        """Everything shown so far, wrapped lines joined."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "chat").rstrip()

    def exit_status(self) -> int | None:
        found = EXIT_RE.search(self.screen())
        return int(found.group(1)) if found else None

    def wait_for(self, what: Callable[[str], object], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if what(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the screen shows:\n{screen}")
            time.sleep(0.05)

    def wait_for_exit(self, timeout: float = 10.0) -> int:
        self.wait_for(EXIT_RE.search, timeout)
        status = self.exit_status()
        assert status is not None
        return status

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.server, "kill-server"], capture_output=True)
        self.socket.unlink(missing_ok=True)  # tmux leaves it behind


def at_prompt(screen: str) -> bool:
    """The chat waits for input: its last line is the empty prompt."""
    return screen.splitlines()[-1].rstrip() == ">" if screen else False


def prompts(screen: str) -> int:
    return sum(1 for line in screen.splitlines() if line == ">" or line.startswith("> "))


def after(screen: str, marker: str) -> str:
    return screen.rsplit(marker, 1)[1] if marker in screen else ""


@pytest.fixture
def chat(smollm2: Path, llamabin_home: Path, tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    assert shutil.which("tmux"), "tmux is missing: run `make setup`"
    started: list[Terminal] = []

    def start(*flags: str) -> Terminal:
        # One thread: it is steady on a busy machine, where llama.cpp's
        # spinning threads slow each other down.
        argv = [sys.executable, "-m", "chat", "-m", str(smollm2), "--chat", "--temp", "0", "-t", "1", *flags]
        term = Terminal(argv, {"LLAMABIN_HOME": str(llamabin_home)}, tmp_path)
        started.append(term)
        term.wait_for(lambda s: "type /help for commands" in s and at_prompt(s))
        return term

    yield start
    for term in started:
        term.close()


def test_help_lists_the_commands_and_exit_returns_zero(chat: Callable[..., Terminal]) -> None:
    term = chat()
    term.type_line("/help")
    screen = term.wait_for(lambda s: "commands:" in s and at_prompt(s))
    for command in builtin_commands():
        assert f"  /{command.name}" in screen
    term.keys("/he", "Tab")
    term.wait_for(lambda s: s.splitlines()[-1].rstrip() == "> /help")  # completed on screen
    term.keys("Enter")
    term.wait_for(lambda s: s.count("commands:") == 2 and at_prompt(s))
    term.type_line("/exit")
    assert term.wait_for_exit() == 0


def test_ctrl_c_stops_a_long_answer_and_the_chat_goes_on(chat: Callable[..., Terminal]) -> None:
    term = chat("-n", "1000", "-p", HELPFUL)
    question = "Write a very long story about a dragon"
    term.type_line(question)
    # Streaming: the answer grows on screen, piece by piece, before it ends.
    first = term.wait_for(lambda s: len(after(s, question).split()) >= 3)
    assert not at_prompt(first)
    more = term.wait_for(lambda s: len(after(s, question).split()) >= len(after(first, question).split()) + 5)
    assert not at_prompt(more)

    term.keys("C-c")
    stopped_at = time.monotonic()
    screen = term.wait_for(lambda s: "[stopped; the partial answer is kept]" in s and at_prompt(s), timeout=5)
    assert time.monotonic() - stopped_at < 3
    assert term.exit_status() is None
    partial = after(screen, question).split("[stopped")[0]
    assert len(partial.split()) >= 8

    term.type_line("/context")
    screen = term.wait_for(lambda s: CONTEXT_RE.search(s) and at_prompt(s))
    assert "(2 messages)" in screen  # the question and the partial answer
    n_prompts = prompts(screen)
    term.type_line("What is the capital of France?")
    screen = term.wait_for(lambda s: prompts(s) > n_prompts and at_prompt(s))
    assert "Paris" in after(screen, "What is the capital of France?")

    term.keys("C-c")
    term.wait_for(lambda s: "press Ctrl-C again to exit" in s and at_prompt(s))
    term.keys("C-c")
    assert term.wait_for_exit() == 0


def test_context_grows_and_undo_shrinks_it(chat: Callable[..., Terminal]) -> None:
    term = chat("-n", "24")

    def context_after(command: str) -> int:
        before = len(CONTEXT_RE.findall(term.screen()))
        term.type_line(command)
        screen = term.wait_for(lambda s: len(CONTEXT_RE.findall(s)) > before and at_prompt(s))
        return int(CONTEXT_RE.findall(screen)[-1][0])

    empty = context_after("/context")
    n_prompts = prompts(term.screen())
    term.type_line("Name three fruits.")
    term.wait_for(lambda s: prompts(s) > n_prompts and at_prompt(s))
    grown = context_after("/context")
    term.type_line("/undo")
    term.wait_for(lambda s: "removed the last exchange" in s and at_prompt(s))
    shrunk = context_after("/context")
    assert empty == 0 and grown > 10 and shrunk == 0

    term.keys("C-d")
    assert term.wait_for_exit() == 0
