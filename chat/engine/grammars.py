"""Grammars for constrained sampling: JSON by name, and JSON Schemas
converted to GBNF. The engine package is the only one that touches
llama_cpp, so front ends get the converter from here."""

from __future__ import annotations

import json
from typing import Any

from chat.engine.bindings import llama_grammar
from chat.errors import UsageError

JSON_GBNF: str = llama_grammar.JSON_GBNF
json_schema_to_gbnf = llama_grammar.json_schema_to_gbnf

__all__ = ["JSON_GBNF", "check_grammar", "json_schema_grammar"]

# llama.cpp's GBNF parser recurses once per bracket, and its matcher once per
# rule in a chain of references: a grammar nested 60,000 deep overflows the
# stack and kills the process. Real grammars, JSON schemas' included, stay
# far inside these bounds.
MAX_GRAMMAR_BYTES = 128 * 1024
MAX_GRAMMAR_DEPTH = 128  # brackets open at once
MAX_GRAMMAR_RULES = 2048


def check_grammar(text: str) -> None:
    """Raise UsageError naming the limit a grammar exceeds, before any C
    code parses it."""
    size = len(text.encode("utf-8"))
    if size > MAX_GRAMMAR_BYTES:
        raise UsageError(f"the grammar is {size:,} bytes; at most {MAX_GRAMMAR_BYTES:,} are allowed")
    depth = deepest = rules = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "[":  # a literal or a character class: brackets inside do not nest
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and text[i] != close:
                i += 2 if text[i] == "\\" else 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        elif text.startswith("::=", i):
            rules += 1
        i += 1
    if deepest > MAX_GRAMMAR_DEPTH:
        raise UsageError(f"the grammar nests {deepest} brackets deep; at most {MAX_GRAMMAR_DEPTH} are allowed")
    if rules > MAX_GRAMMAR_RULES:
        raise UsageError(f"the grammar has {rules:,} rules; at most {MAX_GRAMMAR_RULES:,} are allowed")


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """A GBNF grammar whose every sentence is JSON valid under `schema`.
    Raises UsageError, with the converter's reason, for a schema it cannot
    handle."""
    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    # The converter is third-party code walking untrusted input: whatever it
    # raises means "this schema is not supported", never a server fault.
    except RecursionError:
        raise UsageError("the JSON schema is nested too deeply") from None
    except Exception as exc:
        raise UsageError(f"unsupported JSON schema: {exc or type(exc).__name__}") from None
