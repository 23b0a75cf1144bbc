"""Flags typed on the command line that the chosen mode would not read are
refused, not ignored: `--chat --host 0.0.0.0` expects a server, and a user
who typed it should hear there is none. Only typed flags count: defaults,
and those built into a file, are never refused here."""

from __future__ import annotations

from typing import Any

from chat.errors import UsageError
from chat.settings import Mode

# Which prompt flags each mode reads.
_READS: dict[Mode, frozenset[str]] = {
    Mode.DEFAULT: frozenset({"prompt", "system_prompt"}),
    Mode.CHAT: frozenset({"prompt", "system_prompt"}),
    Mode.CLI: frozenset({"prompt", "prompt_file"}),
    Mode.ASK: frozenset({"system_prompt"}),
    Mode.SERVER: frozenset(),
}
_WHY_NOT = {
    Mode.DEFAULT: "the chat reads what you type; -f is --cli's",
    Mode.CHAT: "the chat reads what you type; -f is --cli's",
    Mode.CLI: "its prompt is used as it is, with no chat template",
    Mode.ASK: "--ask takes the question itself ('--ask -' reads it from stdin); the system prompt is --system-prompt",
    Mode.SERVER: "each request brings its own messages",
}


# The server's flags, for the modes that run no server.
_SERVER_FLAGS = {
    "host": "--host",
    "port": "--port",
    "ollama_port": "--ollama-port",
    "api_key": "--api-key",
    "api_key_file": "--api-key-file",
    "allowed_hosts": "--allowed-host",
    "cors_origins": "--cors-origin",
    "max_connections": "--max-connections",
    "request_timeout": "--request-timeout",
    "nobrowser": "--nobrowser",
}


def check_unread_flags(mode: Mode, opts: dict[str, Any], typed: frozenset[str]) -> None:
    """A typed flag the mode would not read is refused: a user who writes
    `--chat --host 0.0.0.0` expects a server, and should hear there is none."""
    if mode is Mode.RPC_WORKER:
        return
    who = "the chat" if mode is Mode.DEFAULT else f"--{mode.value}"
    if mode not in (Mode.DEFAULT, Mode.SERVER):
        ignored = [flag for name, flag in _SERVER_FLAGS.items() if name in typed]
        if ignored:
            raise UsageError(f"{who} runs no server: {ignored[0]} is for --server and the default mode")
    flags = {"prompt": "-p", "prompt_file": "-f", "system_prompt": "--system-prompt"}
    ignored = [flag for name, flag in flags.items() if name in typed and opts[name] and name not in _READS[mode]]
    if ignored:
        raise UsageError(f"{who} does not use {' or '.join(ignored)}: {_WHY_NOT[mode]}")
    if "verbose_prompt" in typed and mode not in (Mode.CLI, Mode.ASK):
        raise UsageError(f"{who} does not use --verbose-prompt: it shows the prompt of --cli and --ask")
    if mode in (Mode.DEFAULT, Mode.CHAT) and {"prompt", "system_prompt"} <= typed:
        raise UsageError("give the chat's system prompt with -p or --system-prompt, not both")
