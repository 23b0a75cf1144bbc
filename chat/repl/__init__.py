"""The terminal chat: a thin front end over `Conversation`."""

from chat.repl.app import Background, Repl, run_repl

__all__ = ["Background", "Repl", "run_repl"]
