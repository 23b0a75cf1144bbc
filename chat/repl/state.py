"""What the chat loop and its commands share: the conversation and the
terminal they write to. (The command registry is not part of it: `/help`
is bound to its own registry.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from chat.conversation import Conversation
from chat.engine.types import Usage
from chat.errors import write_out


class Console:
    """Writes to the terminal, remembering whether the cursor is mid-line so
    a message after a streamed (or interrupted) answer starts on its own line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._midline = False

    def write(self, text: str) -> None:
        if text:
            write_out(self.out, text)
            self._midline = not text.endswith("\n")

    def end_line(self) -> None:
        if self._midline:
            self.write("\n")

    def say(self, line: str = "") -> None:
        self.end_line()
        self.write(line + "\n")

    def notice(self, text: str) -> None:
        self.say(f"[{text}]")

    def error(self, text: str) -> None:
        self.say(f"error: {text}")


@dataclass
class ReplState:
    conversation: Conversation
    console: Console
    keys_help: str = ""  # the line editor's keys, for /help; none when piped
    last_usage: Usage | None = None  # of the last answer, for /stats
    exit_requested: bool = False

    def say(self, line: str = "") -> None:
        self.console.say(line)
