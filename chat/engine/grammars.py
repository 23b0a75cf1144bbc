"""Grammars the command line offers by name."""

from llama_cpp.llama_grammar import JSON_GBNF

__all__ = ["JSON_GBNF"]
