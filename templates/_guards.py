"""The sandbox's checks on calls that can make a string far longer than
anything they were given: padding to a width (`"x".center(1000000000)`),
`str.format`, joining, replacing, and the filters that do the same.  Each is
refused before it runs, against the limit of `_limits.longest_string`.
"""

from __future__ import annotations

import functools
import inspect
import re
import string
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Environment
from jinja2.filters import make_attrgetter
from jinja2.nodes import Concat, EvalContext
from jinja2.sandbox import MAX_RANGE, SandboxedEscapeFormatter, SandboxedFormatter
from markupsafe import Markup

from ._limits import check_length, check_made, check_weight, printf_length, take_joinable, weighed

Measure = Callable[[str, tuple[Any, ...], Mapping[str, Any]], int]


def _whole(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _padded(text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    return max(len(text), _whole(args[0] if args else 0))


def _tabs_expanded(text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    tabsize = args[0] if args else kwargs.get("tabsize", 8)
    return len(text) + text.count("\t") * max(_whole(tabsize), 0)


def _replaced(text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    if len(args) < 2 or not isinstance(args[0], str) or not isinstance(args[1], str):
        return len(text)  # str.replace itself refuses these
    old, new = args[0], args[1]
    count = args[2] if len(args) > 2 else kwargs.get("count", -1)
    count = count if isinstance(count, int) else -1
    hits = text.count(old) if old else len(text) + 1
    if count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def _translated(text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    table = args[0] if args else ()
    # A table is a dict or a list indexed by code point; either may map a
    # character to a long string.
    values: Iterable[Any] = ()
    if isinstance(table, Mapping):
        values = table.values()
    elif isinstance(table, (list, tuple)):
        values = table
    longest = max((len(value) for value in values if isinstance(value, str)), default=1)
    return len(text) * max(longest, 1)


# The str methods whose result can be much longer than the string and their
# arguments; the others give at most a few times the string's length.
_STR_METHODS: Mapping[str, Measure] = {
    "center": _padded,
    "ljust": _padded,
    "rjust": _padded,
    "zfill": _padded,
    "expandtabs": _tabs_expanded,
    "replace": _replaced,
    "translate": _translated,
}


def called(func: Any) -> str:
    """How a message names a call to `func`."""
    return f"{getattr(func, '__name__', None) or getattr(func, 'name', None) or 'a call'}()"


def checked_call_args(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """The arguments to call `func` with, once checked: a str method that
    would make too long a string is refused here, before it runs."""
    text = getattr(func, "__self__", None)
    if not isinstance(text, str):
        return args
    name = getattr(func, "__name__", "")
    if name == "join" and args:
        return (take_joinable(text, args[0], "join()"), *args[1:])
    measure = _STR_METHODS.get(name)
    if measure is not None:
        check_length(f"{name}()", measure(text, args, kwargs))
    return args


# --- str.format ---------------------------------------------------------------


def _spec_size(spec: str) -> int:
    """The width and precision a format spec such as `>10.3f` asks for."""
    return sum(int(digits) if len(digits) <= 18 else 10**18 for digits in re.findall("[0-9]+", spec))


class _CheckedFields(string.Formatter):
    """Checks each field's width before it is formatted, and the text made so far after."""

    _made = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._made = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_length(f"the format field {{:{format_spec}}}", _spec_size(format_spec))
        check_weight("a format field's value", value)
        piece = super().format_field(value, format_spec)
        self._made += len(piece)
        check_length("str.format()", self._made)
        return piece


class _Formatter(_CheckedFields, SandboxedFormatter):
    pass


class _EscapeFormatter(_CheckedFields, SandboxedEscapeFormatter):
    pass


def checked_format(env: Environment, method: Any) -> Callable[..., str]:
    """A str's `format` or `format_map`, sandboxed as Jinja's own wrapper
    does it, with each field checked as it is made."""
    text: str = method.__self__
    formatter: _CheckedFields
    if isinstance(text, Markup):
        formatter = _EscapeFormatter(env, escape=text.escape)
    else:
        formatter = _Formatter(env)
    is_map = method.__name__ == "format_map"

    def format(*args: Any, **kwargs: Any) -> str:
        if not is_map:
            return type(text)(formatter.vformat(text, args, kwargs))
        if kwargs or len(args) != 1:
            raise TypeError("format_map() takes exactly one argument")
        return type(text)(formatter.vformat(text, (), args[0]))

    return functools.update_wrapper(format, method)


def is_str_format(value: Any) -> bool:
    return (
        isinstance(value, (types.MethodType, types.BuiltinMethodType))
        and value.__name__ in ("format", "format_map")
        and isinstance(value.__self__, str)
    )


# --- filters ------------------------------------------------------------------


def _guarded(
    original: Callable[..., Any],
    what: str,
    measure: Callable[[Mapping[str, Any]], int],
    unit: str = "characters",
    limit: int | None = None,
) -> Callable[..., Any]:
    """`original`, refusing a call whose result `measure` finds too big.
    functools.wraps keeps the marks that tell Jinja what to pass first."""
    plain = inspect.unwrap(original)
    signature = inspect.signature(plain)
    # Jinja's async-aware filters (slice, sum...) take an eval context that
    # the plain function they wrap does not.
    skip = 1 if hasattr(original, "jinja_pass_arg") and not hasattr(plain, "jinja_pass_arg") else 0

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args[skip:], **kwargs)
        except TypeError:  # misused: the filter reports it in its own words
            return original(*args, **kwargs)
        bound.apply_defaults()
        check_length(what, measure(bound.arguments), unit, limit)
        return original(*args, **kwargs)

    return guarded


def _centered(a: Mapping[str, Any]) -> int:
    return max(len(str(a["value"])), _whole(a["width"]))


def _replaced_filter(a: Mapping[str, Any]) -> int:
    return _replaced(str(a["s"]), (str(a["old"]), str(a["new"]), a["count"]), {})


def _printf_filter(a: Mapping[str, Any]) -> int:
    return printf_length(str(a["value"]), a["kwargs"] or a["args"])


# Padding the last batch makes `linecount` items, and `slice` makes `slices`
# lists however few items there are: both counts are loops in disguise.
def _batch_padding(a: Mapping[str, Any]) -> int:
    return _whole(a["linecount"]) if a["fill_with"] is not None else 0


def _slices(a: Mapping[str, Any]) -> int:
    return _whole(a["slices"])


def _indented(a: Mapping[str, Any]) -> int:
    text, width = str(a["s"]), a["width"]
    unit = len(width) if isinstance(width, str) else _whole(width)
    return len(text) + (text.count("\n") + 2) * unit


def _wrapped(a: Mapping[str, Any]) -> int:
    # textwrap may break after every character; each break adds the wrapstring.
    text = str(a["s"])
    return len(text) + (len(text) + 1) * len(str(a["wrapstring"] or "\n"))


def _join_filter(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> Any:
        if attribute is not None:
            value = map(make_attrgetter(eval_ctx.environment, attribute), value)
        return original(eval_ctx, take_joinable(str(d), value, "the join filter"), d)

    return join


def _sum_filter(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def sum_(
        environment: Environment, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0
    ) -> Any:
        if not isinstance(start, (list, tuple)):
            return original(environment, iterable, attribute, start)
        # Adding lists up: the result holds every item of every list, and a
        # list repeated with `*` holds the same big list many times.
        if attribute is not None:
            iterable = map(make_attrgetter(environment, attribute), iterable)
        items: list[Any] = []
        length = len(start)
        for item in iterable:
            length += len(item) if isinstance(item, (list, tuple)) else 1
            check_length("the sum filter", length, "items")
            items.append(item)
        return original(environment, items, None, start)

    return sum_


def _result_checked(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    what = f"the {name} filter"
    # The value filtered comes after the context or environment, if Jinja passes one.
    at = 1 if hasattr(original, "jinja_pass_arg") else 0

    @functools.wraps(original)
    def checked(*args: Any, **kwargs: Any) -> Any:
        # Most filters are given text: one comparison before the costly Iterator check.
        if len(args) > at and type(args[at]) is not str and isinstance(args[at], Iterator):
            # Another filter's lazy result (`map`...): weighed as it is taken.
            args = (*args[:at], weighed(args[at], what), *args[at + 1 :])
        return check_made(what, original(*args, **kwargs))

    return checked


def checked_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Jinja's filters, with the ones that can make a huge result from small
    arguments checked before they run, and every result after."""
    checked = _guarded_filters(filters)
    return {name: _result_checked(name, original) for name, original in checked.items()}


def _guarded_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    checked = dict(filters)
    checked["center"] = _guarded(filters["center"], "the center filter", _centered)
    checked["indent"] = _guarded(filters["indent"], "the indent filter", _indented)
    checked["wordwrap"] = _guarded(filters["wordwrap"], "the wordwrap filter", _wrapped)
    checked["replace"] = _guarded(filters["replace"], "the replace filter", _replaced_filter)
    checked["format"] = _guarded(filters["format"], "the format filter", _printf_filter)
    checked["batch"] = _guarded(filters["batch"], "the batch filter", _batch_padding, "items")
    checked["slice"] = _guarded(filters["slice"], "the slice filter", _slices, "lists", MAX_RANGE)
    checked["join"] = _join_filter(filters["join"])
    checked["sum"] = _sum_filter(filters["sum"])
    return checked


def _lorem_ipsum(a: Mapping[str, Any]) -> int:
    # Its words are at most 12 letters, plus a space and a comma.
    return _whole(a["n"]) * max(_whole(a["min"]), _whole(a["max"])) * 14


def checked_lipsum(original: Any) -> Callable[..., Any]:
    return _guarded(original, "lipsum()", _lorem_ipsum)


# --- text joined by the compiled template -------------------------------------


def _is_literal(node: nodes.Node) -> bool:
    """Whether `node` is made of constants only, so its size is the source's."""
    if isinstance(node, nodes.Const):
        return True
    if isinstance(node, (nodes.List, nodes.Tuple)):
        return all(_is_literal(item) for item in node.items)
    if isinstance(node, nodes.Dict):
        return all(_is_literal(pair.key) and _is_literal(pair.value) for pair in node.items)
    return False


# Filters whose result is text, whatever they are given.
_TEXT_FILTERS = frozenset(
    "capitalize center e escape forceescape format indent join lower replace safe string"
    " striptags title tojson trim truncate upper urlencode wordwrap".split()
)


def _is_text(node: nodes.Node) -> bool:
    """Whether `node` surely makes text, which prints as itself, so its
    output needs no weighing: most of what chat templates print."""
    if isinstance(node, nodes.Const):
        return isinstance(node.value, str)
    if isinstance(node, (nodes.Concat, nodes.TemplateData)):
        return True
    if isinstance(node, nodes.Add):  # text plus anything is text, or an error
        return _is_text(node.left) or _is_text(node.right)
    if isinstance(node, nodes.Filter):
        return node.name in _TEXT_FILTERS
    if isinstance(node, nodes.CondExpr):
        return _is_text(node.expr1) and node.expr2 is not None and _is_text(node.expr2)
    return False


class CheckedCodeGenerator(CodeGenerator):
    """Jinja's compiler, with a size check wherever compiled code joins text
    that no sandbox method sees: `a ~ b`, and the buffers in which macros,
    blocks and `{% set %}` blocks collect their output; a weight check on the
    lists, tuples and dicts a template writes out, whose items may be one big
    value many times; and a step of the render's budget for each item a for
    loop takes, whichever way it was written."""

    # The iterable of the for loop being compiled, until it is written out.
    _loop_iter: nodes.Node | None = None

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # Jinja writes a recursive loop's iterable as `reciter` (see write);
        # any other loop's is its own expression.
        self._loop_iter = None if node.recursive else node.iter
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if node is not self._loop_iter:
            return super().visit(node, *args, **kwargs)
        self._loop_iter = None
        self.write("environment.stepped(context, ")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    def write(self, x: str) -> None:
        # Each call of a recursive loop iterates its `reciter` argument.
        super().write("environment.stepped(context, reciter)" if x == "reciter" else x)

    def _weighed(self, node: nodes.List | nodes.Tuple | nodes.Dict, frame: Frame, visit: Callable[..., None]) -> None:
        # Store targets (`{% for a, b in ... %}`) and constants need no check;
        # constants are most of the lists honest templates write.
        if getattr(node, "ctx", "load") != "load" or _is_literal(node):
            visit(node, frame)
            return
        self.write("environment.built(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._weighed(node, frame, super().visit_List)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        self._weighed(node, frame, super().visit_Tuple)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._weighed(node, frame, super().visit_Dict)

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.capped_buffer()")

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_pre(node, frame, finalize)
        if not _is_text(node):
            # A list holding one big value many times is short, yet prints
            # as all of its copies: weighed before Python makes its text.
            self.write("environment.printable(")

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if not _is_text(node):
            self.write(")")
        super()._output_child_post(node, frame, finalize)

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        # As Jinja's own, with the pieces checked before they are joined.
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.checked_pieces((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")
