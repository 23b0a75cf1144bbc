"""The architecture, checked from the imports themselves: no import circles,
and every import goes from a higher layer down to a lower one.

Layers, top down: the wiring (argv to settings to a front end), the front
ends (terminal chat, one-shot, server, doctor), what the front ends share
(the conversation, prompts, the session, the bundle), the engine, and the
ground (errors, paths, the CPU probe). The packer and the runtime share
only the neutral payload package: neither imports the other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("chat", "packager", "payload", "templates")

# (prefix, layer): the longest matching prefix wins. Higher numbers are
# higher layers; front ends (3) must not import one another.
LAYERS: tuple[tuple[str, int], ...] = (
    ("payload", 0),
    ("templates", 0),
    ("chat.errors", 0),
    ("chat.paths", 0),
    ("chat.hwcap", 0),
    ("chat.machine", 0),
    ("chat.phases", 0),
    ("chat.engine", 1),
    ("chat.prompts", 2),
    ("chat.toolcalls", 2),
    ("chat.conversation", 2),
    ("chat.bundle", 2),
    ("chat.startup", 2),
    ("chat.session", 2),
    ("chat.repl", 3),
    ("chat.oneshot", 3),
    ("chat.server", 3),
    ("chat.doctor", 3),
    ("chat.quantize", 3),
    ("chat.rpcworker", 3),
    ("chat.settings", 4),
    ("chat.loading", 4),
    ("chat.cli", 5),
    ("chat.unread_flags", 5),  # the wiring's own check of argv against the mode
    ("chat.__main__", 6),
    ("chat", 0),  # the package itself: __version__ only
)
FRONT_ENDS = ("chat.repl", "chat.oneshot", "chat.server", "chat.doctor", "chat.quantize", "chat.rpcworker")


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every module `name` imports, at the top, in functions or for types."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in known else base


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        edges[name] = {target for target in imports(name, path, known) if target in known and target != name}
    return edges


def layer(name: str) -> int | None:
    best: tuple[int, int] | None = None
    for prefix, level in LAYERS:
        if name == prefix or name.startswith(prefix + "."):
            if best is None or len(prefix) > best[0]:
                best = (len(prefix), level)
    return None if best is None else best[1]


def front_end(name: str) -> str | None:
    return next((f for f in FRONT_ENDS if name == f or name.startswith(f + ".")), None)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_a_circle_and_an_upward_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("chat.server.routes.openai") == 3 and layer("chat.settings") == 4
    assert layer("chat.engine.engine") == 1 and front_end("chat.repl.app") == "chat.repl"
    edges = graph()
    assert "chat.engine.engine" in edges["chat.engine.scheduler"] or edges["chat.cli"], "the graph is empty"


def test_no_import_circles() -> None:
    assert cycles(graph()) == []


def test_imports_only_go_down() -> None:
    upward = []
    for source, targets in graph().items():
        if not source.startswith("chat"):
            continue
        for target in targets:
            src, dst = layer(source), layer(target)
            if src is not None and dst is not None and dst > src:
                upward.append(f"{source} -> {target}")
    assert upward == []


def test_front_ends_do_not_import_one_another() -> None:
    crossing = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if front_end(source) and front_end(target) and front_end(source) != front_end(target)
    ]
    assert crossing == []


@pytest.mark.parametrize(("package", "forbidden"), [("packager", "chat"), ("chat", "packager")])
def test_the_packer_and_the_runtime_share_only_the_payload_package(package: str, forbidden: str) -> None:
    crossing = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        if source.split(".")[0] == package
        for target in targets
        if target.split(".")[0] == forbidden
    ]
    assert crossing == []


def test_the_command_line_leaves_the_heavy_imports_to_after_the_load_starts() -> None:
    """The model starts loading once the command line is read; whatever the
    command line imports comes first. The front ends' stacks (the server's
    Starlette, pydantic and uvicorn, the chat's prompt_toolkit) and Jinja
    are imported later, beside the load. `sys.frozen` takes the packaged
    file's path into llama-cpp-python (chat/engine/bindings.py), without
    the package's own __init__ and what it imports."""
    heavy = ("jinja2", "starlette", "pydantic", "uvicorn", "fastapi", "prompt_toolkit", "numpy")
    code = f"import sys; sys.frozen = True; import chat.cli; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.split() == []


def test_the_servers_models_are_built_at_first_use() -> None:
    """Building every request and response model's validator at import was
    about 30 ms of each server's start; each is built when first used."""
    code = (
        "from chat.server import ollama_types, types; "
        "models = [types.ChatCompletionRequest, types.ChatCompletion, ollama_types.ChatRequest]; "
        "print(*[m.__pydantic_complete__ for m in models]); "
        "types.ChatCompletionRequest.model_validate({'messages': [{'role': 'user', 'content': 'hi'}]}); "
        "print(types.ChatCompletionRequest.__pydantic_complete__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.split() == ["False", "False", "False", "True"]
