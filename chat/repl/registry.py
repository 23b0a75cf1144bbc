"""The slash-command registry.

Each command is declared once, with its names, a one-line help, a usage
string and an optional argument completer; `/help`, tab completion and
dispatch all read the same registry, so a new command needs no other edit.

The registry is generic over the state its handlers take (`S`): it only
dispatches to them, so it knows nothing of the chat that uses it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

S = TypeVar("S")  # the state every handler of a registry takes

Handler = Callable[[S, str], None]
# Given the argument typed so far, the whole arguments it could become.
ArgCompleter = Callable[[str, "Registry[S]"], Iterable[str]]


class CommandError(Exception):
    """A command was misused; the message is the one line the user sees."""


@dataclass(frozen=True)
class Command(Generic[S]):
    name: str
    handler: Handler[S]
    help: str  # one line, shown by /help and beside completions
    usage: str = ""  # the argument: "" none, "[X]" optional, "X" required
    aliases: tuple[str, ...] = ()
    complete: ArgCompleter[S] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def synopsis(self) -> str:
        return f"/{self.name} {self.usage}".rstrip()

    def check_argument(self, arg: str) -> None:
        if arg and not self.usage:
            raise CommandError(f"/{self.name} takes no argument")
        if not arg and self.usage and not self.usage.startswith("["):
            raise CommandError(f"usage: {self.synopsis}")


class Candidate(NamedTuple):
    text: str  # what to insert
    replaces: int  # how many characters before the cursor it replaces
    meta: str  # a short description shown beside it


class Registry(Generic[S]):
    def __init__(self, commands: Iterable[Command[S]] = ()) -> None:
        self._commands: list[Command[S]] = []
        self._by_name: dict[str, Command[S]] = {}
        for command in commands:
            self.add(command)

    def add(self, command: Command[S]) -> None:
        taken = [n for n in command.names if n in self._by_name]
        if taken:
            raise ValueError(f"command name /{taken[0]} is registered twice")
        self._commands.append(command)
        self._by_name.update(dict.fromkeys(command.names, command))

    def get(self, name: str) -> Command[S] | None:
        return self._by_name.get(name.lstrip("/").lower())

    def __iter__(self) -> Iterator[Command[S]]:
        return iter(self._commands)

    def names(self) -> list[str]:
        """Every name and alias, without the slash."""
        return sorted(self._by_name)

    def run(self, state: S, line: str) -> None:
        """Run a `/name arg` line; a misuse raises CommandError."""
        name, *rest = line.strip()[1:].split(maxsplit=1) or [""]
        command = self.get(name)
        if command is None:
            raise CommandError(f"unknown command /{name}: type /help for the list")
        arg = rest[0].strip() if rest else ""
        command.check_argument(arg)
        command.handler(state, arg)

    def complete(self, line: str) -> list[Candidate]:
        """Completions for a line typed up to the cursor: command names
        after a slash, then whatever the command's own completer offers."""
        if not line.startswith("/"):
            return []
        name, space, arg = line[1:].partition(" ")
        if not space:
            typed = name.lower()
            return [Candidate("/" + n, len(line), self._by_name[n].help) for n in self.names() if n.startswith(typed)]
        command = self.get(name)
        if command is None or command.complete is None:
            return []
        arg = arg.lstrip()
        return [Candidate(c, len(arg), "") for c in command.complete(arg, self)]


def complete_path(partial: str, _registry: Registry[Any]) -> list[str]:
    """Files and folders whose path starts with `partial` (`~` allowed);
    hidden ones only once a dot is typed."""
    head, stem = os.path.split(partial)
    folder = Path(os.path.expanduser(head or "."))
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    found = []
    for entry in entries:
        if not entry.name.startswith(stem):
            continue
        if entry.name.startswith(".") and not stem.startswith("."):
            continue
        found.append(os.path.join(head, entry.name) + (os.sep if entry.is_dir() else ""))
    return found


def complete_command_name(partial: str, registry: Registry[Any]) -> list[str]:
    typed = partial.lstrip("/").lower()
    return [n for n in registry.names() if n.startswith(typed)]
