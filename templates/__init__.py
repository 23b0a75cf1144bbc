"""Chat templates: turn a conversation into the prompt text a model expects.

Templates are Jinja, rendered in a sandbox because a model file (and its
template) may come from anyone.
"""

from __future__ import annotations

from ._chat import ChatTemplate, TemplateError
from ._choose import BUILTIN_NAMES, builtin, detect_stop, from_file, from_source, resolve

__all__ = [
    "BUILTIN_NAMES",
    "ChatTemplate",
    "TemplateError",
    "builtin",
    "detect_stop",
    "from_file",
    "from_source",
    "resolve",
]
