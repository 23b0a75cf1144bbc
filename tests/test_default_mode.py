"""The default mode: the terminal chat and the server in one process,
sharing one engine, under a real pseudo-terminal (pexpect). Neither may
freeze the other: requests queue for the engine, but the chat keeps
reading keys and answers once its turn comes."""

from __future__ import annotations

import io
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

from tests.serverproc import ROOT

HELPFUL = "You are a helpful assistant."
URL_RE = r"web chat and OpenAI API: (http://127\.0\.0\.1:\d+)"
READY = "type /help for commands"
PROMPT_SHOWN = "\x1b[?2004h"  # prompt_toolkit turns bracketed paste on as it shows the prompt


class Chat:
    def __init__(self, child: pexpect.spawn, url: str, shown: io.StringIO) -> None:
        self.child = child
        self.url = url
        self.shown = shown  # everything the terminal showed so far


@pytest.fixture
def chat(smollm2: Path, llamabin_home: Path) -> Iterator[Chat]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), LLAMABIN_HOME=str(llamabin_home), TERM="xterm")
    env["PROMPT_TOOLKIT_NO_CPR"] = "1"  # pexpect answers no cursor-position queries
    argv = ["-m", "chat", "-m", str(smollm2), "--nobrowser", "--port", "0", "--temp", "0", "-n", "24", "-p", HELPFUL]
    child = pexpect.spawn(
        sys.executable, argv, cwd=str(ROOT), env=env, encoding="utf-8", timeout=90, dimensions=(40, 120)
    )
    child.logfile_read = shown = io.StringIO()
    try:
        child.expect(URL_RE)
        url = child.match.group(1)
        child.expect(READY)
        child.expect_exact(PROMPT_SHOWN)
        yield Chat(child, url, shown)
    finally:
        child.close(force=True)


def ask_server(url: str, max_tokens: int = 8) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": max_tokens}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def test_the_server_answers_while_the_chat_is_idle(chat: Chat) -> None:
    response = ask_server(chat.url)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    page = httpx.get(f"{chat.url}/", timeout=10)
    assert page.status_code == 200 and "<title>llamabin</title>" in page.text
    chat.child.sendline("/exit")
    chat.child.expect(pexpect.EOF)
    chat.child.close()
    assert chat.child.exitstatus == 0
    assert "Traceback" not in chat.shown.getvalue()


def test_a_request_in_flight_does_not_stop_the_chat(chat: Chat) -> None:
    events: list[str] = []
    hang_up = threading.Event()
    # Greedy counting runs on for thousands of tokens: in flight until the
    # test hangs up, however fast or slow the machine is.
    body = {"prompt": "1, 2, 3, 4, 5, 6,", "temperature": 0, "max_tokens": 3000, "stream": True}

    def stream() -> None:
        with httpx.stream("POST", f"{chat.url}/v1/completions", json=body, timeout=180) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
                if hang_up.is_set():
                    return

    streaming = threading.Thread(target=stream)
    streaming.start()
    wait_until(lambda: len(events) >= 3, "the streamed request never got under way")

    # The chat still reads keys and runs commands while the engine is busy...
    chat.child.sendline("/help")
    chat.child.expect("commands:", timeout=30)
    chat.child.expect_exact(PROMPT_SHOWN)
    # ...and its question is answered beside the request (both share each
    # decoding step), which goes on streaming meanwhile.
    chat.child.sendline("What is the capital of France?")
    chat.child.expect("Paris", timeout=180)
    chat.child.expect_exact(PROMPT_SHOWN)
    assert streaming.is_alive(), "the request ended before the chat answered"
    seen = len(events)
    wait_until(lambda: len(events) >= seen + 3, "the request stopped streaming")
    hang_up.set()
    streaming.join(timeout=60)

    assert ask_server(chat.url).status_code == 200  # and the server goes on
    chat.child.sendline("/exit")
    chat.child.expect(pexpect.EOF)
    chat.child.close()
    assert chat.child.exitstatus == 0
    assert "Traceback" not in chat.shown.getvalue()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_taken_port_leaves_the_chat_running_alone(smollm2: Path, llamabin_home: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), LLAMABIN_HOME=str(llamabin_home), TERM="xterm")
    env["PROMPT_TOOLKIT_NO_CPR"] = "1"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["-m", "chat", "-m", str(smollm2), "--nobrowser", "--port", str(port)]
        child = pexpect.spawn(sys.executable, argv, cwd=str(ROOT), env=env, encoding="utf-8", timeout=90)
        child.logfile_read = shown = io.StringIO()
        try:
            child.expect(f"port {port} on 127.0.0.1 is already in use.*the chat runs without the server")
            child.expect(READY)
            child.expect_exact(PROMPT_SHOWN)
            child.sendline("/exit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
    assert child.exitstatus == 0
    assert "web chat and OpenAI API" not in shown.getvalue()
