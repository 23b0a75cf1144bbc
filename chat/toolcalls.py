"""Tool calls, apart from any API's shapes: how tools and calls enter the
prompt, how a required call is constrained, and how calls are found in an
answer.

A chat template that knows tools (it reads the `tools` variable, as Qwen's,
Llama 3.1's and Mistral's do) gets them, and the calls and results of the
conversation, as transformers passes them. Any other template gets the
format documented in docs/tool-calls.md, Hermes' (which Qwen 2.5 and
SmolLM2 were trained on): the tools in a system message, each call as
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in the assistant's
text, and each result as a `<tool_response>` in a user turn.

Calls are read from the answer in the syntaxes models are trained to write
(see `split_calls`); a required call is constrained by a grammar to one
JSON object naming a tool, its arguments valid under that tool's schema.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chat.engine.grammars import json_schema_grammar
from chat.errors import UsageError

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
# Where models trained on other formats start their calls: Hermes/Qwen,
# Mistral and Llama 3.1 (whose calls may also be a bare JSON answer).
MARKERS = (CALL_OPEN, "[TOOL_CALLS]", "<|python_tag|>")
MAX_TOOLS = 128


class ToolError(UsageError):
    """Tools that cannot be offered; `param` says where, as OpenAI names
    request fields (`tools[1].function.parameters`)."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, and the JSON
    schema of its arguments (an object)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def spec(self) -> dict[str, Any]:
        """OpenAI's shape, which chat templates are written against."""
        function = {"name": self.name, "description": self.description, "parameters": dict(self.parameters)}
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Mapping[str, Any]
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class Turn:
    """One message of a conversation that may hold tool calls or a tool's
    result (`tool_call_id`, and the tool's `name` when known)."""

    role: str
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ToolChoice:
    """OpenAI's tool_choice: "none", "auto", "required", or one tool's name."""

    mode: str = "auto"
    name: str | None = None

    @property
    def forced(self) -> bool:
        return self.mode == "required" or self.name is not None


def check_tools(tools: Sequence[Tool], choice: ToolChoice) -> None:
    """Raise ToolError, naming the place, for tools that
    cannot be offered: duplicate names, a schema that is not an object's or
    that no grammar can follow, or a choice naming no tool."""
    if len(tools) > MAX_TOOLS:
        raise ToolError("tools", f"at most {MAX_TOOLS} tools are allowed, {len(tools)} were given")
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        if tool.name in seen:
            raise ToolError(f"tools[{i}].function.name", f"'{tool.name}' is given twice")
        seen.add(tool.name)
        kind = tool.parameters.get("type", "object")
        if kind != "object":
            raise ToolError(
                f"tools[{i}].function.parameters", f"the arguments' schema must be an object's, not {kind!r}"
            )
        try:
            json_schema_grammar(dict(tool.parameters))
        except UsageError as exc:
            raise ToolError(f"tools[{i}].function.parameters", str(exc)) from None
    if choice.name is not None and choice.name not in seen:
        raise ToolError("tool_choice", f"there is no tool named '{choice.name}' in tools")
    if choice.forced and not tools:
        raise ToolError("tool_choice", "a call was required but no tools were given")


def call_grammar(tools: Sequence[Tool], choice: ToolChoice) -> str:
    """GBNF for one call, `{"name": ..., "arguments": {...}}`, to the named
    tool or to any of them, its arguments valid under the tool's schema."""
    chosen = [t for t in tools if choice.name in (None, t.name)]
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": dict(t.parameters)},
            "required": ["name", "arguments"],
        }
        for t in chosen
    ]
    return json_schema_grammar(calls[0] if len(calls) == 1 else {"oneOf": calls})


# -- into the prompt -------------------------------------------------------------


def prompt_messages(
    turns: Sequence[Turn], tools: Sequence[Tool], native: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and the tools to render: for a template that knows
    tools (`native`), in transformers' shapes; for any other, in the
    documented format, as plain system, user and assistant messages."""
    if native:
        return [_native(t) for t in turns], [t.spec() for t in tools] or None
    messages: list[dict[str, Any]] = []
    for turn in turns:
        if turn.role == "tool":
            result = f"<tool_response>\n{turn.content}\n</tool_response>"
            if messages and messages[-1].get("tool_results"):  # results of one step share a user turn
                messages[-1]["content"] += "\n" + result
            else:
                messages.append({"role": "user", "content": result, "tool_results": True})
        elif turn.tool_calls:
            calls = "\n".join(format_call(c) for c in turn.tool_calls)
            messages.append({"role": turn.role, "content": f"{turn.content}\n{calls}" if turn.content else calls})
        else:
            messages.append({"role": turn.role, "content": turn.content})
    for m in messages:
        m.pop("tool_results", None)
    if tools:
        _add_system_text(messages, tools_system_text(tools))
    return messages, None


def _native(turn: Turn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": turn.role, "content": turn.content}
    if turn.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": dict(c.arguments)}}
            for c in turn.tool_calls
        ]
    if turn.tool_call_id is not None:
        message["tool_call_id"] = turn.tool_call_id
    if turn.name is not None:
        message["name"] = turn.name
    return message


def _add_system_text(messages: list[dict[str, Any]], text: str) -> None:
    if messages and messages[0]["role"] == "system":
        messages[0]["content"] = f"{messages[0]['content']}\n\n{text}" if messages[0]["content"] else text
    else:
        messages.insert(0, {"role": "system", "content": text})


def tools_system_text(tools: Sequence[Tool]) -> str:
    specs = "\n".join(json.dumps(t.spec(), ensure_ascii=False) for t in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{specs}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def format_call(call: ToolCall) -> str:
    body = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


# -- out of the answer -------------------------------------------------------------


class CallSplitter:
    """Separates an answer's text from the tool calls in it, as it streams.

    `feed` returns the text that is surely not part of a call; `finish`
    returns the rest of the text and the calls. An answer whose first
    non-blank character opens JSON is held whole (it may be a bare call);
    otherwise text streams until a call's marker, and what follows the
    marker is held. If what was held holds no valid call, it is text after
    all: nothing is lost, and fed whole or piece by piece, the result is
    the same."""

    def __init__(self, tools: Sequence[Tool]) -> None:
        self._names = frozenset(t.name for t in tools)
        self._text = ""
        self._sent = 0  # characters of _text already returned
        self._bare: bool | None = None  # the answer may be a bare JSON call
        self._marker: int | None = None

    def feed(self, text: str) -> str:
        self._text += text
        if self._bare is None and self._text.strip():
            self._bare = self._text.lstrip()[0] in "{["
        if self._bare is not False or self._marker is not None:
            return ""
        found = [i for i in (self._text.find(m, self._sent) for m in MARKERS) if i >= 0]
        if found:
            self._marker = min(found)
            return self._take(len(self._text[: self._marker].rstrip()))
        held = _partial_marker(self._text)
        end = len(self._text) - held
        return self._take(len(self._text[:end].rstrip()))

    def finish(self) -> tuple[str, list[ToolCall]]:
        calls: list[ToolCall] | None = None
        if self._bare:
            whole = self._text.strip()
            calls = _bare_calls(whole, self._names) or _marked_calls(whole, self._names)
            if calls:
                return "", calls
        if self._marker is not None:
            calls = _marked_calls(self._text[self._marker :], self._names)
            if calls:
                return self._take(len(self._text[: self._marker].rstrip())), calls
        return self._take(len(self._text)), []

    def _take(self, end: int) -> str:
        end = max(end, self._sent)
        out, self._sent = self._text[self._sent : end], end
        return out


def split_calls(text: str, tools: Sequence[Tool]) -> tuple[str, list[ToolCall]]:
    """A whole answer's text and calls."""
    splitter = CallSplitter(tools)
    head = splitter.feed(text)
    rest, calls = splitter.finish()
    return head + rest, calls


def _partial_marker(text: str) -> int:
    """How many characters at the end of `text` could begin a marker."""
    for n in range(min(len(text), max(len(m) for m in MARKERS) - 1), 0, -1):
        if any(m.startswith(text[-n:]) for m in MARKERS):
            return n
    return 0


def _marked_calls(text: str, names: frozenset[str]) -> list[ToolCall] | None:
    """Calls after a marker: `<tool_call>` blocks (each an object or a list),
    `[TOOL_CALLS]` and a list, or `<|python_tag|>` and an object. Anything
    but blank text between and after them makes it no call."""
    if text.startswith(CALL_OPEN):
        calls: list[ToolCall] = []
        for block in text.split(CALL_OPEN)[1:]:
            body, _, after = block.partition(CALL_CLOSE)
            found = _bare_calls(body.strip(), names)
            if not found or after.strip():
                return None
            calls += found
        return calls
    for marker in MARKERS[1:]:
        if text.startswith(marker):
            return _bare_calls(text[len(marker) :].strip(), names)
    return None


def _bare_calls(text: str, names: frozenset[str]) -> list[ToolCall] | None:
    """A JSON object `{"name", "arguments" (or "parameters")}`, or a list of
    them, each naming one of the tools."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_call(item, names) for item in items]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def _call(item: Any, names: frozenset[str]) -> ToolCall | None:
    if not isinstance(item, dict) or item.get("name") not in names:
        return None
    args = item.get("arguments", item.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):
            return None
    return ToolCall(item["name"], args) if isinstance(args, dict) else None
