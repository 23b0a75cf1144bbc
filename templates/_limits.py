"""Size limits a template must keep to, so a hostile one fails fast instead of
hanging start-up or eating all memory.

A chat template only glues messages together: it never needs numbers wider
than a machine word, nor to repeat text a million times, nor to make a prompt
much bigger than the conversation it was given.
"""

from __future__ import annotations

import math
import operator
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Sequence,
    Set,
    ValuesView,
)
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import chain
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace

# Widest result `*` or `**` may make.  Python takes minutes (and gigabytes) for
# `10 ** (10 ** 9)`, and cannot print an int of more than 4,300 digits anyway.
MAX_NUMBER_BITS = 4096

# Longest string or list one `*` may make: honest templates repeat a space or
# a dash a few times, `"a" * 10 ** 9` would take a gigabyte at once.
MAX_REPEAT_LENGTH = 1024 * 1024

# How much a template may add to the conversation's own text.  Far above any
# real chat format's markup, yet a prompt of that size is already more tokens
# than a model's context holds.
MAX_ADDED_CHARS = 4 * 1024 * 1024


class LimitError(SecurityError):
    """A template went past one of the limits above; the message says which."""

    # How the one-line error names the limit.
    kind = "size limit"


_OPERATORS: Mapping[str, Callable[[Any, Any], Any]] = {
    "*": operator.mul,
    "**": operator.pow,
    "+": operator.add,
    "%": operator.mod,
}

# The operators the sandbox checks: `*` and `**` grow a value far past the size
# of their operands, `%` pads text to whatever width it is given, and `+`
# doubles a string each time a loop adds it to itself.
GUARDED_OPERATORS = frozenset(_OPERATORS)

# The longest string (or list) one operation may make while a prompt renders:
# the prompt's own limit, as an honest template has no use for a piece longer
# than the whole prompt may be.  Set for each render; outside one (constants
# Jinja folds while compiling) no conversation is known yet.
_longest: ContextVar[int] = ContextVar("longest", default=MAX_ADDED_CHARS)


# The weights (see `weight`) of the lists, tuples and dicts met while a prompt
# renders, by id, each with its value so that the id stays its own.  The
# sandbox lets no template change a list or a dict, so a weight once found
# stays true, and building `[a, a]` costs two look-ups however big `a` is.
_known: ContextVar[dict[int, tuple[Any, int]] | None] = ContextVar("known", default=None)


@contextmanager
def longest_string(limit: int) -> Iterator[None]:
    """While rendering: no single operation may make more than `limit` characters."""
    token = _longest.set(limit)
    known = _known.set({})
    try:
        yield
    finally:
        _known.reset(known)
        _longest.reset(token)


def check_length(
    what: str | Callable[[], str], length: int, unit: str = "characters", limit: int | None = None
) -> None:
    """Refuse `what` before it runs if it would make more than the limit.
    `what` may be a function, for a message too costly to build on every `+`."""
    limit = _longest.get() if limit is None else limit
    if length > limit:
        what = what if isinstance(what, str) else what()
        raise LimitError(f"{what} would make {length:,} {unit}, more than the limit of {limit:,}")


def check_made(what: str | Callable[[], str], value: Any) -> Any:
    """`value`, unless it is a string or list longer than the limit.  Checked
    after a call, for the many that grow what they are given a few times
    (pprint, forceescape): run on their own result in a loop, they would
    grow it without end."""
    if isinstance(value, (str, list, tuple)) and len(value) > _longest.get():
        what = what if isinstance(what, str) else what()
        unit = "characters" if isinstance(value, str) else "items"
        raise LimitError(f"{what} made {len(value):,} {unit}, more than the limit of {_longest.get():,}")
    # A list of copies of one big value is short, yet prints as all of them.
    if isinstance(value, (*_CONTAINERS, Namespace)):
        check_weight(lambda: what if isinstance(what, str) else what(), value)
    return value


def text_length(value: Any) -> int:
    """How long `value` is as text, the way Jinja joins and prints it; a
    container is weighed first, as its text may be far longer than it looks."""
    if isinstance(value, str):
        return len(value)
    check_weight(lambda: f"printing {kind_of(value)}", value)
    return len(str(value))


# --- shared values ------------------------------------------------------------

_SCALARS = (int, float, complex, type(None))
_CONTAINERS = (list, tuple, dict)


class _Scale:
    """Weighs one value, giving up as soon as some part of it is past `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.known = _known.get()
        # Every container of this value, by id, with its weight and whether
        # that weight may be kept for the rest of the render.
        self.seen: dict[int, tuple[int, bool]] = {}
        self.open: set[int] = set()

    def weigh(self, value: Any) -> tuple[int, bool]:
        if isinstance(value, str):
            return len(value), True
        if isinstance(value, _SCALARS):
            return 0, True
        key = id(value)
        if self.known is not None and key in self.known:
            return self.known[key][1], True
        if key in self.seen:
            return self.seen[key]
        if key in self.open:  # a namespace holding itself prints as `{...}`
            return 5, False
        self.open.add(key)
        found = self._contents(value)
        self.open.discard(key)
        self.seen[key] = found
        if found[1] and self.known is not None and isinstance(value, _CONTAINERS):
            self.known[key] = (value, found[0])
        return found

    def _contents(self, value: Any) -> tuple[int, bool]:
        if isinstance(value, Namespace):
            # A namespace changes with `{% set ns.x %}`: weighed anew each time.
            attrs = object.__getattribute__(value, "_Namespace__attrs")
            return self._sum(chain.from_iterable(attrs.items()), 1 + len(attrs))[0], False
        if isinstance(value, Mapping):
            return self._sum(chain.from_iterable(value.items()), len(value))
        if isinstance(value, (list, tuple, Set, KeysView, ValuesView, ItemsView)):
            return self._sum(value, len(value))
        # Everything else a template can reach (a macro, the loop, undefined,
        # a range...) prints as a short fixed text whatever it holds.
        return 1, True

    def _sum(self, items: Iterable[Any], weight: int) -> tuple[int, bool]:
        pure = True
        for item in items:
            part, fixed = self.weigh(item)
            weight += part
            pure = pure and fixed
            if weight > self.limit:
                raise _TooHeavy
        return weight, pure


class _TooHeavy(Exception):
    pass


def weight(value: Any) -> int | None:
    """How many items and characters `value` holds, counting a shared value
    each time it appears, as printing or comparing `value` would meet it;
    None once past the render's limit.  `[x, x]` holds `x` twice though it
    stores it once, so forty doublings store forty lists yet print a
    terabyte: only the weight shows it."""
    if isinstance(value, str):
        return len(value)
    scale = _Scale(_longest.get())
    try:
        found = scale.weigh(value)[0]
    except _TooHeavy:
        return None
    return found if found <= scale.limit else None


def kind_of(value: Any) -> str:
    """How a message names a value too big to print: its type and length."""
    if isinstance(value, _CONTAINERS):
        return f"a {len(value):,}-item {type(value).__name__}"
    return f"a {type(value).__name__}"


def check_weight(what: str | Callable[[], str], value: Any) -> Any:
    """`value`, unless it holds more than the render's limit of items and
    characters (see `weight`)."""
    if isinstance(value, (str, *_SCALARS)):
        return value
    if weight(value) is None:
        what = what if isinstance(what, str) else what()
        raise LimitError(
            f"{what} would hold more than {_longest.get():,} items and characters,"
            " counting each repeat of a shared value"
        )
    return value


def _remember(value: Any, found: int) -> Any:
    """`value`, with its weight noted for the rest of the render."""
    known = _known.get()
    if known is not None:
        known[id(value)] = (value, found)
    return value


def weighed(items: Iterator[Any], what: str) -> Iterator[Any]:
    """`items`, refused once those taken so far hold more than the render's
    limit: `map` over a shared value makes a copy per item, and the filter
    that collects them would make them all before its result is checked."""
    total, limit = 0, _longest.get()
    for item in items:
        found = weight(item)
        total += 1 + (limit if found is None else found)
        if total > limit:
            raise LimitError(f"{what} would take more than {limit:,} items and characters from the values it is given")
        yield item


def _describe(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() <= 64:
        return str(value)
    if isinstance(value, int):
        return f"a {value.bit_length():,}-bit number"
    if isinstance(value, str):
        return f"a {len(value):,}-character string"
    return f"a {len(value):,}-item {type(value).__name__}"


def _too_wide(expression: str) -> LimitError:
    return LimitError(f"{expression} would be a number wider than the limit of {MAX_NUMBER_BITS:,} bits")


def _check_power(base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int)) or exponent <= 0 or abs(base) <= 1:
        return
    # A huge exponent is refused before the float estimate could overflow.
    if exponent > MAX_NUMBER_BITS or exponent * math.log2(abs(base)) > MAX_NUMBER_BITS:
        raise _too_wide(f"{_describe(base)} ** {_describe(exponent)}")


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_NUMBER_BITS:
            raise _too_wide(f"{_describe(left)} * {_describe(right)}")
        return
    count, sequence = (left, right) if isinstance(left, int) else (right, left)
    if isinstance(count, int) and isinstance(sequence, (str, list, tuple)):
        length = len(sequence) * count
        if length > MAX_REPEAT_LENGTH:
            unit = "characters" if isinstance(sequence, str) else "items"
            raise LimitError(
                f"repeating {_describe(sequence)} {_describe(count)} times would make {length:,}"
                f" {unit}, more than the limit of {MAX_REPEAT_LENGTH:,}"
            )


def _check_sum(left: Any, right: Any) -> None:
    # Templates add strings all the time, so the usual case costs one comparison.
    if not (isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple))):
        return
    if len(left) + len(right) > _longest.get():
        unit = "characters" if isinstance(left, str) else "items"
        check_length(f"adding {_describe(left)} and {_describe(right)}", len(left) + len(right), unit)


def _printf_key(fmt: str, start: int) -> tuple[str | None, int]:
    """The `(key)` of a `%(key)s` field at `start`, and where the field goes on;
    nested parentheses count, as in Python."""
    if not fmt.startswith("(", start):
        return None, start
    depth, end = 1, start + 1
    while end < len(fmt) and depth:
        depth += {"(": 1, ")": -1}.get(fmt[end], 0)
        end += 1
    return fmt[start + 1 : end - 1], end


def _printf_number(fmt: str, start: int) -> tuple[str, int]:
    """A field's width or precision at `start`: digits, `*` or nothing."""
    if fmt.startswith("*", start):
        return "*", start + 1
    end = start
    while end < len(fmt) and fmt[end] in "0123456789":
        end += 1
    return fmt[start:end], end


def _size(text: str) -> int:
    # A number too long to read is too big for any limit: Python would refuse
    # to read it anyway.
    return int(text) if len(text) <= 18 else 10**18


class _Printf:
    """Walks a printf-style format the way Python reads it, adding up the
    widest result each field can give, without formatting anything."""

    def __init__(self, fmt: str, values: Any) -> None:
        self.fmt = fmt
        self.values = values
        self.args = values if isinstance(values, tuple) else (values,)
        self.taken = 0

    def _next(self) -> Any:
        self.taken += 1
        return self.args[self.taken - 1] if self.taken <= len(self.args) else ""

    def _field(self, start: int) -> tuple[int, int]:
        key, at = _printf_key(self.fmt, start)
        while at < len(self.fmt) and self.fmt[at] in "-+ #0":
            at += 1
        length = 0
        for part in ("width", "precision"):
            if part == "precision":
                if not self.fmt.startswith(".", at):
                    break
                at += 1
            number, at = _printf_number(self.fmt, at)
            if number == "*":  # the width is the next value
                star = self._next()
                length += abs(star) if isinstance(star, int) else 0
            elif number:
                length += _size(number)
        while at < len(self.fmt) and self.fmt[at] in "hlL":
            at += 1
        conversion = self.fmt[at : at + 1]
        if conversion != "%":
            value = self._value(key)
            length += len(repr(value)) if conversion in ("r", "a") else text_length(value)
        return length, at + 1

    def _value(self, key: str | None) -> Any:
        if key is None:
            return self._next()
        try:
            return self.values[key]
        except (LookupError, TypeError):  # Python itself reports the bad key
            return ""

    def length(self) -> int:
        total, at = len(self.fmt), self.fmt.find("%")
        while at != -1:
            length, at = self._field(at + 1)
            total += length
            check_length(lambda: f"'%' formatting of {_describe(self.fmt)}", total)
            at = self.fmt.find("%", at)
        return total


def printf_length(fmt: str, values: Any) -> int:
    """The most characters `fmt % values` can make, refused on the way once
    past the limit, so `"%1000000000d" % 1` never allocates."""
    return _Printf(fmt, values).length()


def _check_format(left: Any, right: Any) -> None:
    if isinstance(left, str):
        printf_length(left, right)


_CHECKS: Mapping[str, Callable[[Any, Any], None]] = {
    "**": _check_power,
    "*": _check_product,
    "+": _check_sum,
    "%": _check_format,
}


def check_binop(op: str, left: Any, right: Any) -> None:
    """Refuse `left op right`, for a guarded operator, if its result would be too big."""
    _CHECKS[op](left, right)


def checked_binop(op: str, left: Any, right: Any) -> Any:
    """`left op right` for a guarded operator, refused before it is computed if too big."""
    _CHECKS[op](left, right)
    # With text on either side the result is text, already checked: the
    # common case, kept to two comparisons.
    if type(left) is str or type(right) is str or op not in "*+":
        return _OPERATORS[op](left, right)
    if isinstance(left, (list, tuple)) or isinstance(right, (list, tuple)):
        return _checked_sequence(op, left, right)
    return _OPERATORS[op](left, right)


def _checked_sequence(op: str, left: Any, right: Any) -> Any:
    # `[x] * n` and `a + a` hold what they repeat as often as it is repeated,
    # which the length of the list does not show: weighed before it is made.
    if op == "*":
        count, sequence = (left, right) if isinstance(left, int) else (right, left)
        if not isinstance(count, int) or not isinstance(sequence, (list, tuple)):
            return _OPERATORS[op](left, right)  # Python reports the misuse
        parts = [weight(sequence)]
        total = None if parts[0] is None else parts[0] * max(count, 0)
        what = f"repeating {_describe(sequence)} {_describe(count)} times"
    else:
        parts = [weight(left), weight(right)]
        total = None if None in parts else sum(p for p in parts if p is not None)
        what = f"adding {_describe(left)} and {_describe(right)}"
    if total is None or total > _longest.get():
        raise LimitError(
            f"{what} would hold more than {_longest.get():,} items and characters,"
            " counting each repeat of a shared value"
        )
    return _remember(_OPERATORS[op](left, right), total)


_UNKNOWN = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


def _fold(node: nodes.Node) -> Any:
    """The value of a constant number, else _UNKNOWN, checking every constant
    `*` and `**` on the way.

    Only numbers are computed, each bounded by MAX_NUMBER_BITS; a repeated
    string is checked but never built, so this pass itself stays cheap.
    """
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, (nodes.Mul, nodes.Pow)):
        left, right = _fold(node.left), _fold(node.right)
        if left is _UNKNOWN or right is _UNKNOWN:
            return _UNKNOWN
        check_binop(node.operator, left, right)
        if not (_is_number(left) and _is_number(right)):
            return _UNKNOWN
        try:
            return _OPERATORS[node.operator](left, right)
        except (ArithmeticError, ValueError):  # e.g. 2.0 ** 5000: left for rendering to report
            return _UNKNOWN
    if isinstance(node, nodes.Neg):
        value = _fold(node.node)
        return -value if _is_number(value) else _UNKNOWN
    for child in node.iter_child_nodes():
        _fold(child)
    return _UNKNOWN


def check_constants(tree: nodes.Template) -> None:
    """Refuse at load a template whose literal arithmetic alone breaks a limit,
    e.g. `{{ 2 ** 3000000 }}`, as a syntax error is refused."""
    _fold(tree)


def output_limit(messages: Sequence[Mapping[str, Any]]) -> int:
    """Most characters a prompt for these messages may have.  Twice the
    messages' own text, as a template may show a message twice."""
    given = sum(len(str(value)) for message in messages for value in message.values())
    return MAX_ADDED_CHARS + 2 * given


def check_concat(pieces: Sequence[Any]) -> None:
    """Refuse `a ~ b ~ ...` before it is joined if the result would be too long."""
    check_length(lambda: f"joining {len(pieces)} values with '~'", sum(map(text_length, pieces)))


def take_joinable(separator: str, items: Iterable[Any], what: str) -> list[Any]:
    """The items `separator.join(items)` would join, taken one by one and
    refused once past the limit: a generator of huge strings is stopped
    before it is all made."""
    taken: list[Any] = []
    length = 0
    for item in items:
        length += text_length(item) + (len(separator) if taken else 0)
        check_length(what, length)
        taken.append(item)
    return taken


class CappedBuffer(list[Any]):
    """The list Jinja collects a macro's, block's or `{% set %}` block's text
    in, refusing text past the render's limit as it is added.  Without it a
    block that prints a variable twice and stores the result doubles the
    variable each time a loop runs it."""

    def __init__(self) -> None:
        super().__init__()
        self._length = 0

    def _grow(self, length: int) -> None:
        self._length += length
        check_length("the text of a block or macro", self._length)

    def append(self, piece: Any, /) -> None:
        self._grow(text_length(piece))
        super().append(piece)

    def extend(self, pieces: Iterable[Any], /) -> None:
        pieces = list(pieces)
        self._grow(sum(text_length(piece) for piece in pieces))
        super().extend(pieces)


def join_capped(pieces: Iterable[str], limit: int) -> str:
    """The pieces a template renders, stopping it once they pass `limit` characters."""
    out: list[str] = []
    length = 0
    for piece in pieces:
        length += len(piece)
        if length > limit:
            raise LimitError(f"the prompt it makes is longer than the limit of {limit:,} characters")
        out.append(piece)
    return "".join(out)
