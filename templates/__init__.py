"""Chat templates: turn a conversation into the prompt text a model expects.

Templates are Jinja, rendered in a sandbox because a model file (and its
template) may come from anyone.

Everything but the built-in names is imported at its first use: the
command line checks `--template` against BUILTIN_NAMES before the model
starts loading, and importing Jinja there would hold the load back by
about 25 ms; the template itself is only needed once the model is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._sources import BUILTIN_NAMES

if TYPE_CHECKING:
    from ._chat import ChatTemplate, TemplateError
    from ._choose import builtin, detect_stop, from_file, from_source, resolve

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


if not TYPE_CHECKING:  # for mypy, the names are the imports above

    def __getattr__(name: str) -> Any:
        if name not in __all__:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module("._choose", __name__), name)  # it imports ._chat's names too
        globals()[name] = value  # the next lookup finds it without this function
        return value
