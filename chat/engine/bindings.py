"""Importing llama-cpp-python's ctypes bindings, and nothing else of it.

`import llama_cpp.llama_cpp` first runs the package's __init__, which loads
the high-level `Llama` class and with it numpy: about 70 MB that a packaged
file would unpack at every launch, for code llamabin never calls. In a
packaged file the package is therefore entered through a bare module that
only knows where its submodules are; run from source, the import is the
ordinary one, so other code in the process can still use `llama_cpp.Llama`.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def _bare_package() -> None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.submodule_search_locations is None:
        return  # let the ordinary import report what is missing
    package = types.ModuleType("llama_cpp")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["llama_cpp"] = package


if getattr(sys, "frozen", False) and "llama_cpp" not in sys.modules:
    _bare_package()

# Plain import statements, so PyInstaller's analysis sees what to bundle.
import llama_cpp.llama_cpp as llama_cpp  # noqa: E402
import llama_cpp.llama_grammar as llama_grammar  # noqa: E402

__all__ = ["llama_cpp", "llama_grammar"]
