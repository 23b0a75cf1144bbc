"""Reading what the user types: a prompt_toolkit line editor on a terminal,
plain lines when stdin is a pipe or a file.

Both raise EOFError at the end of input and KeyboardInterrupt for Ctrl-C on
an empty line; the chat loop decides what those mean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import patch_stdout

from chat.repl.registry import Registry

PROMPT = "> "
CONTINUATION = "... "

KEYS_HELP = (
    "keys: Enter sends; Escape then Enter (or Alt-Enter) starts a new line; a line of three\n"
    '      double quotes (""") opens a multi-line message and another one sends it;\n'
    "      Tab completes commands and file names; Ctrl-C stops an answer or clears the line\n"
    "      (twice on an empty line exits); Ctrl-D exits"
)


class LineReader(Protocol):
    keys_help: str

    def read(self, prompt: str) -> str:
        """One line of input, without its newline."""
        ...


class PromptReader:
    """A line editor with history, tab completion from the command registry,
    and the chat's Ctrl-C and newline keys."""

    keys_help = KEYS_HELP

    def __init__(
        self,
        registry: Registry[Any],
        history: History,
        input: Input | None = None,
        output: Output | None = None,
    ) -> None:
        self._session: PromptSession[str] = PromptSession(
            history=history,
            completer=RegistryCompleter(registry),
            complete_while_typing=False,  # prose should not pop up menus; Tab asks
            key_bindings=_key_bindings(),
            prompt_continuation=lambda width, _line, _wrap: "." * (width - 1) + " ",
            input=input,
            output=output,
        )

    def read(self, prompt: str) -> str:
        # Text a background thread (the server) prints while the user types
        # goes above the prompt instead of through it.
        with patch_stdout(raw=True):
            return self._session.prompt(prompt)


class StdinReader:
    """Lines from a pipe or a file, so a chat can be scripted."""

    keys_help = ""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def read(self, prompt: str) -> str:
        if self._stream.isatty():  # someone types, but stdout is redirected
            sys.stderr.write(prompt)
            sys.stderr.flush()
        line = self._stream.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")


class RegistryCompleter(Completer):
    def __init__(self, registry: Registry[Any]) -> None:
        self._registry = registry

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        for c in self._registry.complete(document.text_before_cursor):
            yield Completion(c.text, start_position=-c.replaces, display_meta=c.meta or None)


def _key_bindings() -> KeyBindings:
    keys = KeyBindings()

    @keys.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @keys.add("c-c")
    @keys.add("<sigint>")
    def _interrupt(event: KeyPressEvent) -> None:
        # Text on the line is only cleared; on an empty line the loop decides
        # (the first press warns, the second exits).
        buffer = event.current_buffer
        if buffer.text:
            buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt())

    return keys


def open_history(path: Path | None) -> History:
    """The history file, or none kept if its folder cannot be made: a
    read-only home, or none at all, must not stop the chat."""
    if path is None:
        return InMemoryHistory()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)  # every line typed: the user's alone, as /save's files are
    except OSError:
        return InMemoryHistory()
    return _KeptHistory(path)


class _KeptHistory(FileHistory):
    """The history file, where a failure to read or write it (a full disk,
    a folder in its place) is said once and the chat goes on: prompt_toolkit
    would print a traceback at every line."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self._path = path
        self._warned = False

    def load_history_strings(self) -> Iterator[str]:
        try:
            yield from super().load_history_strings()
        except OSError as exc:
            self._warn(exc)

    def store_string(self, string: str) -> None:
        try:
            super().store_string(string)
        except OSError as exc:
            self._warn(exc)

    def _warn(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            sys.stderr.write(f"llamabin: warning: the chat history is not kept ({self._path}: {exc.strerror})\n")


def make_reader(registry: Registry[Any], history_path: Path | None) -> LineReader:
    """The line editor when the user is at a terminal; plain lines otherwise."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        return PromptReader(registry, open_history(history_path))
    return StdinReader(sys.stdin)
