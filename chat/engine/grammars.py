"""Grammars for constrained sampling: JSON by name, and JSON Schemas
converted to GBNF. The engine package is the only one that touches
llama_cpp, so front ends get the converter from here."""

from __future__ import annotations

import json
from typing import Any

from chat.engine.bindings import llama_grammar

JSON_GBNF: str = llama_grammar.JSON_GBNF
json_schema_to_gbnf = llama_grammar.json_schema_to_gbnf

from chat.errors import UsageError

__all__ = ["JSON_GBNF", "json_schema_grammar"]


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
