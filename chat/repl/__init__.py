"""The terminal chat: a thin front end over `Conversation`."""

from chat.repl.app import Repl, run_repl

__all__ = ["Repl", "run_repl"]
