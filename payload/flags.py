"""Which runtime flags a file may carry as built-in defaults.

The packager refuses the others at build time (and `llamabin set`), the
runtime drops them with a warning: one list, read by both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A packaged file (or a sidecar NAME.gguf) may come from anyone, so its
# defaults may only shape the model, its context and its sampling: never
# where the server listens, who may call it, which files are read, or the
# mode.  The packager refuses anything else at build time; the runtime drops
# it with a warning.  Each spelling maps to whether it takes a value, as in
# the runtime's command line (tests check the two agree).

BAKED_FLAGS: dict[str, bool] = {
    # the model: how it is loaded
    "-t": True,
    "--threads": True,
    "-ngl": True,
    "--n-gpu-layers": True,
    "--gpu-layers": True,
    "-ts": True,
    "--tensor-split": True,
    # the context
    "-c": True,
    "--ctx-size": True,
    "--ctx-force": False,
    "-np": True,
    "--parallel": True,
    "-kvu": False,
    "--kv-unified": False,
    "-cram": True,
    "--cache-ram": True,
    # sampling (the grammar as text: --grammar-file would read a path)
    "-n": True,
    "--n-predict": True,
    "--temp": True,
    "--top-k": True,
    "--top-p": True,
    "--min-p": True,
    "--repeat-penalty": True,
    "--repeat-last-n": True,
    "-s": True,
    "--seed": True,
    "--grammar": True,
    "-j": False,
    "--json": False,
    # what the chat says first: not -p, which is the input itself in --cli mode
    "--system-prompt": True,
    "--system": True,
    "--template": True,
}

_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
"""A baked --template must be a name, never a path: a template file is
stored inside the manifest instead (chat_template)."""


@dataclass(frozen=True)
class BakedArgs:
    """Built-in defaults split into those a file may carry and the rest."""

    allowed: list[str]
    refused: list[str]  # each refused flag once, as written (with its value if that was the problem)


def split_baked_args(args: list[str]) -> BakedArgs:
    """Keep the allowed flags (with their values), refuse everything else.

    Tokens are read the way click reads them (long options, `--opt=value`,
    clusters of short options, `-n6`), so what is kept sets only allowed
    options.  Words after a refused flag are taken as its value and dropped.
    """
    allowed: list[str] = []
    refused: list[str] = []
    i = 0
    while i < len(args):
        unit, problem = _next_unit(args, i)
        i += len(unit)
        if problem is None:
            allowed += unit
            continue
        if problem not in refused:
            refused.append(problem)
        while i < len(args) and not _is_option(args[i]):
            i += 1  # the refused flag's value(s)
    return BakedArgs(allowed, refused)


def _is_option(arg: str) -> bool:
    return arg[:1] == "-" and len(arg) > 1 and arg != "--"


def _is_long(name: str) -> bool:
    return name.startswith("--") or len(name) > 2


def _next_unit(args: list[str], i: int) -> tuple[list[str], str | None]:
    """The tokens of the option at args[i] (itself and perhaps its value),
    and what to call it if it is refused (None when it is allowed)."""
    arg = args[i]
    if not _is_option(arg):
        return [arg], arg
    name, eq, value = arg.partition("=")
    if _is_long(name) and name in BAKED_FLAGS:
        unit = [arg]
        if BAKED_FLAGS[name] and not eq and i + 1 < len(args):
            unit, value = [arg, args[i + 1]], args[i + 1]
        # A missing value, or one where none belongs, is left for click to report.
        return unit, _refused_value(name, value)
    if arg.startswith("--"):
        return [arg], name
    return _short_cluster(args, i)


def _short_cluster(args: list[str], i: int) -> tuple[list[str], str | None]:
    """`-jn6`: short flags, the last of which may take the rest (or the
    next word) as its value.  `-ngl5` lands here too, as click reads it."""
    arg = args[i]
    for pos, letter in enumerate(arg[1:], start=2):
        flag = "-" + letter
        if flag not in BAKED_FLAGS:
            return [arg], flag
        if BAKED_FLAGS[flag]:
            attached = pos < len(arg)
            return ([arg] if attached or i + 1 == len(args) else [arg, args[i + 1]]), None
    return [arg], None


def _refused_value(flag: str, value: str) -> str | None:
    if flag == "--template" and value and not _TEMPLATE_NAME.match(value):
        return f"--template {value}"
    return None


# The spellings of one flag: a new value for one replaces every other.
_SPELLINGS = (
    ("-t", "--threads"),
    ("-ngl", "--n-gpu-layers", "--gpu-layers"),
    ("-c", "--ctx-size"),
    ("-np", "--parallel"),
    ("-kvu", "--kv-unified"),
    ("-cram", "--cache-ram"),
    ("-ts", "--tensor-split"),
    ("-n", "--n-predict"),
    ("-s", "--seed"),
    ("-j", "--json"),
    ("--system-prompt", "--system"),
)
_CANONICAL = {spelling: names[-1] for names in _SPELLINGS for spelling in names}


def same_flag(flag: str) -> str:
    """One name for every spelling of a flag: `-c` and `--ctx-size` are one."""
    return _CANONICAL.get(flag, flag)


def units(args: list[str]) -> list[list[str]]:
    """Allowed baked args cut into options, each with its value(s)."""
    out: list[list[str]] = []
    i = 0
    while i < len(args):
        unit, _problem = _next_unit(args, i)
        out.append(unit)
        i += len(unit)
    return out


def unit_flags(unit: list[str]) -> set[str]:
    """The flags one unit from ``units`` sets, by ``same_flag`` name:
    `--opt=v` sets one, a cluster such as `-jn6` sets each of its letters."""
    head = unit[0].partition("=")[0]
    if not _is_option(head):
        return set()
    if head.startswith("--") or (_is_long(head) and head in BAKED_FLAGS):
        return {same_flag(head)}
    found = set()
    for letter in head[1:]:
        flag = "-" + letter
        found.add(same_flag(flag))
        if BAKED_FLAGS.get(flag, True):
            break  # the rest is its value
    return found


def baked_context(args: list[str]) -> tuple[int | None, bool]:
    """The context size built-in ``args`` set (the last one, as on a command
    line; None when none is set or it is not a number, which the runtime
    refuses itself) and whether they set --ctx-force."""
    size: int | None = None
    force = False
    for unit in units(split_baked_args(args).allowed):
        flags = unit_flags(unit)
        if same_flag("--ctx-force") in flags:
            force = True
        if same_flag("-c") not in flags:
            continue
        head = unit[0]
        if "=" in head:
            value = head.partition("=")[2]
        elif len(unit) > 1:
            value = unit[-1]
        else:  # a cluster such as -c8192 or -jc8192: the value follows the c
            value = head[head.index("c") + 1 :]
        try:
            size = int(value)
        except ValueError:
            size = None
    return size, force
