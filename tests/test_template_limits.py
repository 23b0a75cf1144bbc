"""A hostile chat template fails fast with one clear line: it can neither hang
start-up nor eat all memory, whether it comes from a model file, from
`--template FILE` or from a packaged file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import templates._budget
from templates import ChatTemplate, TemplateError, builtin, from_file, from_source, resolve
from templates._chat import compile_source
from templates._limits import LimitError
from tests.helpers import run_chat

HI = [{"role": "user", "content": "hi"}]

# Each would take minutes or gigabytes if computed: the sandbox refuses it.
BOMBS = [
    pytest.param("{{ 2 ** 3000000 }}", "2 ** 3000000 would be a number wider than", id="huge-power"),
    pytest.param("{{ 10 ** (10 ** 9) }}", "10 ** 1000000000 would be a number wider than", id="tower"),
    pytest.param('{{ "a" * 1000000000 }}', "repeating a 1-character string 1000000000 times", id="huge-string"),
    pytest.param("{{ (2 ** 4000) * (2 ** 4000) }}", "would be a number wider than", id="huge-product"),
]


def _gguf(source: str) -> ChatTemplate:
    return resolve(None, {"tokenizer.chat_template": source}, eos_token="</s>")


def _refusal(source: str) -> str:
    """The message a template gets, whether it is refused at load or at its first render."""
    with pytest.raises(TemplateError) as caught:
        _gguf(source).render(HI)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- arithmetic --------------------------------------------------------------


@pytest.mark.parametrize(("source", "reason"), BOMBS)
def test_literal_bombs_are_refused_when_the_template_loads(source: str, reason: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        _gguf(source)
    assert time.monotonic() - started < 1
    message = str(caught.value)
    assert message.startswith("chat template 'gguf' was stopped at a size limit: ")
    assert reason in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ 10 ** (messages | length * 10 ** 9) }}", "10 ** 1000000000 would be a number wider than"),
        ("{{ 'ab' * (messages | length * 10 ** 9) }}", "repeating a 2-character string 1000000000 times"),
        ("{{ messages * 10 ** 9 }}", "repeating a 1-item list 1000000000 times"),
        ("{{ [0] * 10 ** 9 }}", "repeating a 1-item list 1000000000 times"),
        ("{{ ('a' * 1000) * 10 ** 6 }}", "repeating a 1,000-character string 1000000 times"),
        ("{{ 10 ** (10 ** 9 + messages | length) }}", "10 ** 1000000001 would be a number wider than"),
    ],
)
def test_bombs_built_from_the_conversation_are_stopped_at_render(source: str, reason: str) -> None:
    template = _gguf(source)  # nothing constant to refuse at load
    started = time.monotonic()
    message = _refusal(source)
    assert time.monotonic() - started < 1
    assert message.startswith("chat template 'gguf' was stopped at a size limit: ")
    assert reason in message
    with pytest.raises(TemplateError, match="size limit"):
        template.render(HI)


def test_jinja_powers_associate_left_so_a_short_tower_is_small() -> None:
    # Jinja reads 10**10**9 as (10**10)**9, unlike Python: a 91-digit number.
    assert _gguf("{{ 10**10**9 }}").render(HI) == "1" + "0" * 90


def test_ordinary_arithmetic_and_repetition_still_work() -> None:
    source = "{{ '-' * 3 }}|{{ 3 * 'ab' }}|{{ 2 ** 10 }}|{{ 2 ** -1 }}|{{ 1.5 * 4 }}|{{ [1] * 2 }}|{{ 2 ** 4000 > 0 }}"
    assert _gguf(source).render(HI) == "---|ababab|1024|0.5|6.0|[1, 1]|True"


def test_a_template_file_with_a_bomb_is_refused_when_chosen(tmp_path: Path) -> None:
    path = tmp_path / "bomb.jinja"
    path.write_text("{{ 2 ** 3000000 }}</s>", encoding="utf-8")
    with pytest.raises(TemplateError, match="^chat template 'bomb.jinja' was stopped at a size limit"):
        from_file(path)


def test_a_packaged_template_with_a_bomb_is_refused() -> None:
    with pytest.raises(TemplateError, match="^chat template 'baked' was stopped at a size limit"):
        from_source("baked", '{{ "x" * 10 ** 12 }}<|im_end|>')


# --- the length of the prompt -------------------------------------------------


def test_rendered_prompt_is_capped() -> None:
    # 10 million characters from a loop of small pieces: no single operation
    # is big, only the total.
    source = "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}"
    message = _refusal(source)
    assert message.startswith("chat template 'gguf' was stopped at a size limit: ")
    assert "the prompt it makes is longer than the limit of" in message


def test_a_long_conversation_is_not_mistaken_for_a_runaway_template() -> None:
    pasted = "word " * (2 * 1024 * 1024)  # 10 MiB pasted by the user
    prompt = builtin("chatml").render([{"role": "user", "content": pasted}])
    assert prompt == f"<|im_start|>user\n{pasted}<|im_end|>\n<|im_start|>assistant\n"


# --- work that allocates before anything is printed ---------------------------

# Each would make a gigabyte string (or a billion-item list, or a billion
# loops) in one step, before the cap on the prompt's length sees any of it.
ALLOCATING_BOMBS = [
    pytest.param(
        '{{ "x" | center(1000000000) }}', "the center filter would make 1,000,000,000 characters", id="center-filter"
    ),
    pytest.param('{{ "x".center(1000000000) }}', "center() would make 1,000,000,000 characters", id="center"),
    pytest.param('{{ "x".ljust(1000000000) }}', "ljust() would make 1,000,000,000 characters", id="ljust"),
    pytest.param('{{ "x".rjust(1000000000, "-") }}', "rjust() would make 1,000,000,000 characters", id="rjust"),
    pytest.param('{{ "7".zfill(1000000000) }}', "zfill() would make 1,000,000,000 characters", id="zfill"),
    pytest.param(
        '{{ "\t".expandtabs(1000000000) }}', "expandtabs() would make 1,000,000,001 characters", id="expandtabs"
    ),
    pytest.param(
        '{{ "%1000000000d" % 1 }}',
        "'%' formatting of a 12-character string would make 1,000,000,013",
        id="printf-width",
    ),
    pytest.param(
        '{{ "%.1000000000f" % 1.0 }}',
        "'%' formatting of a 13-character string would make 1,000,000,016",
        id="printf-precision",
    ),
    pytest.param(
        '{{ "%*d" % (1000000000, 1) }}',
        "'%' formatting of a 3-character string would make 1,000,000,004",
        id="printf-star",
    ),
    pytest.param(
        '{{ "%(n)1000000000s" % {"n": 1} }}',
        "'%' formatting of a 15-character string would make 1,000,000,016",
        id="printf-key",
    ),
    pytest.param(
        '{{ "%1000000000d" | format(1) }}',
        "'%' formatting of a 12-character string would make 1,000,000,013",
        id="format-filter",
    ),
    pytest.param(
        '{{ "{:1000000000}".format(1) }}',
        "the format field {:1000000000} would make 1,000,000,000 characters",
        id="format",
    ),
    pytest.param(
        '{{ "{:>{w}}".format(1, w=10**9) }}',
        "the format field {:>1000000000} would make 1,000,000,000",
        id="format-nested",
    ),
    pytest.param(
        '{{ "{n:1000000000}".format_map({"n": 1}) }}', "the format field {:1000000000} would make", id="format-map"
    ),
    pytest.param(
        '{{ ("{0}" * 1000).format("x" * 1000000) }}', "str.format() would make 5,003,000 characters", id="format-many"
    ),
    pytest.param(
        '{{ ("%s" * 1000) % (("x" * 1000000,) * 1000) }}',
        "repeating a 1-item tuple 1000 times would hold more than",
        id="printf-many",
    ),
    pytest.param(
        '{{ "x" | indent(1000000000, true) }}', "the indent filter would make 2,000,000,001 characters", id="indent"
    ),
    pytest.param(
        '{{ "abcd" | wordwrap(1, wrapstring="-" * 1000000) }}',
        "the wordwrap filter would make 5,000,004 characters",
        id="wordwrap",
    ),
    pytest.param(
        '{{ ("a" * 1000000) | replace("a", "b" * 1000) }}',
        "the replace filter would make 1,000,000,000 characters",
        id="replace-filter",
    ),
    pytest.param(
        '{{ ("a" * 1000000).replace("a", "b" * 1000) }}', "replace() would make 1,000,000,000 characters", id="replace"
    ),
    pytest.param(
        '{{ ("a" * 1000).translate({97: "b" * 1000000}) }}',
        "translate() would make 1,000,000,000 characters",
        id="translate",
    ),
    pytest.param('{{ ("x" * 1000000).join(["a"] * 1000) }}', "join() would make 5,000,006 characters", id="join"),
    pytest.param(
        '{{ (["a"] * 1000) | join("x" * 1000000) }}',
        "the join filter would make 5,000,006 characters",
        id="join-filter",
    ),
    pytest.param(
        "{{ [1] | tojson(indent=1000000000) }}",
        "tojson's indent would make 1,000,000,000 characters",
        id="tojson-indent",
    ),
    pytest.param(
        "{{ [1] | batch(1000000000, 0) | list }}", "the batch filter would make 1,000,000,000 items", id="batch"
    ),
    pytest.param(
        "{% for s in [1] | slice(1000000000) %}{% endfor %}",
        "the slice filter would make 1,000,000,000 lists, more than the limit of 100,000",
        id="slice",
    ),
    pytest.param(
        "{{ ([[0] * 1000000] * 1000) | sum(start=[]) }}",
        "repeating a 1-item list 1000 times would hold more than",
        id="sum-lists",
    ),
    pytest.param("{{ lipsum(1000000000) }}", "lipsum() would make 1,400,000,000,000 characters", id="lipsum"),
]

# Doubling a string 40 times: about a terabyte, unless each step is checked.
DOUBLING = [
    pytest.param(
        '{% set ns = namespace(s="x") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}',
        "joining 2 values with '~' would make 8,388,608 characters",
        id="tilde",
    ),
    pytest.param(
        '{% set ns = namespace(s="x") %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}',
        "adding a 4,194,304-character string and a 4,194,304-character string would make 8,388,608 characters",
        id="plus",
    ),
    pytest.param(
        "{% set ns = namespace(s=[0]) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "adding a 4,194,304-item list and a 4,194,304-item list would make 8,388,608 items",
        id="plus-list",
    ),
    pytest.param(
        '{% set ns = namespace(s="x") %}{% for i in range(40) %}{% set ns.s %}{{ ns.s }}{{ ns.s }}{% endset %}{% endfor %}',
        "the text of a block or macro would make 8,388,608 characters",
        id="set-block",
    ),
    pytest.param(
        '{% macro twice(s, n) %}{{ twice(s ~ s, n - 1) if n else s }}{% endmacro %}{{ twice("x", 40) }}',
        "joining 2 values with '~' would make 8,388,608 characters",
        id="macro",
    ),
    # Filters that only grow their input a few times still grow it without
    # end when a loop feeds them their own result.
    pytest.param(
        '{% set ns = namespace(s="\\\\") %}{% for i in range(60) %}{% set ns.s = ns.s | pprint %}{% endfor %}',
        "the pprint filter made ",
        id="pprint",
    ),
    pytest.param(
        '{% set ns = namespace(s="&" * 1000000) %}{% for i in range(1000) %}'
        "{% set ns.s = ns.s | forceescape %}{% endfor %}",
        "the forceescape filter made 5,000,000 characters",
        id="forceescape",
    ),
]


@pytest.mark.parametrize(("source", "reason"), ALLOCATING_BOMBS + DOUBLING)
def test_work_that_allocates_before_printing_is_stopped_at_once(source: str, reason: str) -> None:
    started = time.monotonic()
    message = _refusal(source)
    assert time.monotonic() - started < 1
    assert message.startswith("chat template 'gguf' was stopped at a size limit: ")
    assert reason in message


def test_a_loop_over_a_huge_range_is_refused_at_once() -> None:
    started = time.monotonic()
    message = _refusal("{% for i in range(10 ** 9) %}{% endfor %}")
    assert time.monotonic() - started < 1
    assert message == (
        "chat template 'gguf' failed: OverflowError: Range too big."
        " The sandbox blocks ranges larger than MAX_RANGE (100000)."
    )


def test_ordinary_padding_formatting_and_joining_still_work() -> None:
    source = (
        "{{ 'ab' | center(6) }}|{{ 'x'.ljust(3) }}|{{ '7'.zfill(3) }}|{{ '%-4s|%03d|%.2f|%%|%*d' % ('ab', 7, 3.14159, 3, 5) }}"
        "|{{ '%(a)s' % {'a': 1} }}|{{ '{:>5}|{:.1f}|{n}'.format('ab', 2.25, n='x') }}|{{ 'a' ~ 'b' ~ 1 }}"
        "|{{ 'a' + 'b' }}|{{ [1] + [2] }}|{{ ['a', 'b'] | join(', ') }}|{{ ', '.join(['c', 'd']) }}"
        "|{{ 'a,b' | replace(',', ';') }}|{{ 'a\nb' | indent(2, true) }}|{{ {'k': [1]} | tojson(indent=1) }}"
        "|{{ [[1], [2]] | sum(start=[]) }}|{{ [1, 2, 3] | batch(2, 0) | list }}|{{ [1, 2, 3] | slice(2) | list }}"
        "|{% set block %}{{ 'c' }}{{ 'd' }}{% endset %}{{ block }}|{% macro m(s) %}<{{ s }}>{% endmacro %}{{ m('e') }}"
    )
    assert _gguf(source).render(HI) == (
        "  ab  |x  |007|ab  |007|3.14|%|  5|1|   ab|2.2|x|ab1|ab|[1, 2]|a, b|c, d|a;b|  a\n  b"
        '|{\n "k": [\n  1\n ]\n}|[1, 2]|[[1, 2], [3, 0]]|[[1, 2], [3]]|cd|<e>'
    )


def test_a_long_conversation_passes_every_check() -> None:
    # Joining, adding and collecting a whole 10 MiB conversation is what
    # templates do; only work far beyond the conversation's size is refused.
    pasted = "word " * (2 * 1024 * 1024)
    source = (
        "{% set ns = namespace(text='') %}{% for m in messages %}"
        "{% set ns.text = ns.text ~ m['role'] ~ ': ' ~ m['content'] %}{% endfor %}"
        "{% set body %}{{ ns.text }}{% endset %}"
        "{{ body + '|' + (messages | map(attribute='content') | join('\n')) }}"
    )
    assert _gguf(source).render([{"role": "user", "content": pasted}]) == f"user: {pasted}|{pasted}"


# --- work that makes nothing but never ends ------------------------------------

NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(NESTED_LOOPS, id="nested-loops"),
        # The items a loop's `if` skips are work too.
        pytest.param(
            "{% for i in range(100000) %}{% for j in range(100000) if false %}{% endfor %}{% endfor %}",
            id="filtered-loop",
        ),
        # Each call of a recursive loop iterates the list it is given.
        pytest.param(
            "{% for x in [range(100000)] * 20 recursive %}{% if x is not number %}{{ loop(x) }}{% endif %}{% endfor %}",
            id="recursive-loop",
        ),
        pytest.param(
            "{% for m in messages %}{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}"
            "{% endfor %}{% endfor %}",
            id="loop-in-a-loop-over-messages",
        ),
    ],
)
def test_a_template_that_loops_for_ever_is_stopped_at_once(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The deadline is pushed back so that the count of steps, which does not
    # depend on how busy the machine is, is what stops each of these.
    monkeypatch.setattr(templates._budget, "MAX_SECONDS", 60.0)
    started = time.monotonic()
    message = _refusal(source)
    assert time.monotonic() - started < 10
    assert message == "chat template 'gguf' was stopped at a time limit: more than 1,000,000 loop steps and calls"


def test_a_macro_that_calls_itself_twice_is_stopped_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 ** 40 calls and no loop at all: each call is slow enough that the
    # deadline, not the count, stops it.  The deadline is shortened to keep
    # the test quick.
    monkeypatch.setattr(templates._budget, "MAX_SECONDS", 0.5)
    source = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    started = time.monotonic()
    message = _refusal(source)
    assert time.monotonic() - started < 3
    assert message == "chat template 'gguf' was stopped at a time limit: still running after 0.5 seconds"


def test_a_macro_that_recurses_without_end_is_one_line() -> None:
    message = _refusal("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
    assert message.startswith("chat template 'gguf' failed: RecursionError: maximum recursion depth exceeded")


def test_a_render_made_only_to_check_a_template_is_bounded_too() -> None:
    # Whoever renders the compiled template, at load or for a chat, gets a
    # budget: it comes with each render, not with ChatTemplate.render.
    compiled = compile_source("check", NESTED_LOOPS)
    started = time.monotonic()
    with pytest.raises(LimitError, match="^more than 1,000,000 loop steps and calls$"):
        compiled.render(messages=HI)
    assert time.monotonic() - started < 3


def test_each_render_has_a_budget_of_its_own() -> None:
    # 600,000 steps: within the budget each time, not twice over it.
    template = _gguf("{% for i in range(600) %}{% for j in range(1000) %}{% endfor %}{% endfor %}done</s>")
    assert template.render(HI) == "done</s>"
    assert template.render(HI) == "done</s>"


# --- values that hold one big value many times ------------------------------------

SHARED = [
    pytest.param(
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
        "building a 2-item list would hold more than",
        id="list-literal",
    ),
    pytest.param(
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = (ns.l, ns.l) %}{% endfor %}{{ ns.l }}",
        "building a 2-item tuple would hold more than",
        id="tuple-literal",
    ),
    pytest.param(
        "{% set ns = namespace(l=1) %}{% for i in range(40) %}{% set ns.l = {'a': ns.l, 'b': ns.l} %}"
        "{% endfor %}{{ ns.l }}",
        "building a 2-item dict would hold more than",
        id="dict-literal",
    ),
    pytest.param(
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = [ns.l] + [ns.l] %}{% endfor %}{{ ns.l }}",
        "adding a 1-item list and a 1-item list would hold more than",
        id="plus",
    ),
    pytest.param(
        "{% set ns = namespace(l=1) %}{% for i in range(40) %}{% set ns.l = dict(a=ns.l, b=ns.l) %}"
        "{% endfor %}{{ ns.l }}",
        "dict() would hold more than",
        id="dict-call",
    ),
    pytest.param(
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] | list %}"
        "{% endfor %}{{ ns.l }}",
        "building a 2-item list would hold more than",
        id="filter",
    ),
    pytest.param(
        "{{ ([('x' * 1000)] * 100000) | map('upper') | list }}",
        "repeating a 1-item list 100000 times would hold more than",
        id="repeat-then-map",
    ),
    # Each item small and new, made lazily by `map`: the list that collects
    # them is stopped as it grows, not after making a gigabyte.
    pytest.param(
        "{{ ([''] * 500000) | map('center', 2000) | list | length }}",
        "the list filter would take more than",
        id="map-grows-each-item",
    ),
    # Comparing two such values would take as long as printing them.
    pytest.param(
        "{% set ns = namespace(a=[1], b=[1]) %}{% for i in range(40) %}{% set ns.a = [ns.a, ns.a] %}"
        "{% set ns.b = [ns.b, ns.b] %}{% endfor %}{{ ns.a == ns.b }}",
        "building a 2-item list would hold more than",
        id="compare",
    ),
]


@pytest.mark.parametrize(("source", "reason"), SHARED)
def test_a_value_holding_one_big_value_many_times_is_refused(source: str, reason: str) -> None:
    started = time.monotonic()
    message = _refusal(source)
    assert time.monotonic() - started < 2
    assert message.startswith("chat template 'gguf' was stopped at a size limit: ")
    assert reason in message
    assert "more than 4,194,316 items and characters" in message


def test_ordinary_lists_dicts_and_loops_still_work() -> None:
    source = (
        "{% set ns = namespace(roles=[]) %}{% for m in messages %}{% set ns.roles = ns.roles + [m['role']] %}"
        "{% endfor %}{{ ns.roles }}|{{ [messages[0]['role'], messages | length] }}|{{ {'a': (1, 'b')} }}"
        "|{% for a, b in [(1, 2)] %}{{ a + b }}{% endfor %}|{% for m in messages %}{{ loop.length }}{% endfor %}"
        "|{% for x in [[1, [2]], [3]] recursive %}{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}"
        "{% endfor %}|{{ messages | map(attribute='role') | list }}|{{ [1, 2] * 2 }}|{{ ['a'] | map('upper') | list }}"
        "|{% for x in [] %}{% else %}none{% endfor %}"
    )
    assert _gguf(source).render(HI + HI) == (
        "['user', 'user']|['user', 2]|{'a': (1, 'b')}|3|22|123|['user', 'user']|[1, 2, 1, 2]|['A']|none"
    )


# --- templates that cannot be compiled ----------------------------------------


def test_too_many_nested_blocks_is_one_clear_error() -> None:
    source = "{% for a in messages %}" * 30 + "x" + "{% endfor %}" * 30
    with pytest.raises(TemplateError) as caught:
        _gguf(source)
    assert str(caught.value) == (
        "chat template 'gguf' cannot be compiled: SyntaxError: too many statically nested blocks"
    )


def test_too_deep_nesting_is_one_clear_error() -> None:
    source = "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"
    with pytest.raises(TemplateError) as caught:
        _gguf(source)
    assert str(caught.value) == "chat template 'gguf' is nested too deeply to compile"


def test_integers_too_long_to_print_fail_as_one_line() -> None:
    # Doubling by addition is not refused, but Python will not print the result.
    source = (
        "{% set ns = namespace(n=1) %}{% for i in range(20000) %}{% set ns.n = ns.n + ns.n %}{% endfor %}{{ ns.n }}"
    )
    message = _refusal(source)
    assert message.startswith("chat template 'gguf' failed: ValueError: ")


# --- through the real command line ----------------------------------------------


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (
            "{{ 'ab' * (messages | length * 10 ** 9) }}<|im_end|>",
            "was stopped at a size limit: repeating a 2-character string 1000000000 times would make",
        ),
        ("{{ raise_exception('no questions, please') }}<|im_end|>", "rejected the conversation: no questions, please"),
    ],
    ids=["size-limit", "raise-exception"],
)
def test_ask_with_a_template_that_fails_at_render_is_a_usage_error(
    smollm2: Path, tmp_path: Path, source: str, says: str
) -> None:
    path = tmp_path / "late.jinja"
    path.write_text(source, encoding="utf-8")
    result = run_chat("-m", str(smollm2), "--template", str(path), "--ask", "hi", "--temp", "0", timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"llamabin: error: chat template 'late.jinja' {says}")
    assert result.stdout == ""


def test_cli_applies_no_template_so_a_failing_one_does_not_matter(smollm2: Path, tmp_path: Path) -> None:
    path = tmp_path / "late.jinja"
    path.write_text("{{ raise_exception('no questions, please') }}<|im_end|>", encoding="utf-8")
    result = run_chat(
        "-m",
        str(smollm2),
        "--template",
        str(path),
        "--cli",
        "-p",
        "Once upon a time",
        "-n",
        "4",
        "--temp",
        "0",
        "--log-disable",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and result.stderr == ""


@pytest.mark.parametrize(
    "source",
    ["{{ 2 ** 3000000 }}", "{{ 10 ** (10 ** 9) }}", '{{ "a" * 1000000000 }}'],
    ids=["huge-power", "tower", "huge-string"],
)
def test_command_line_refuses_a_bomb_template_in_one_line(smollm2: Path, tmp_path: Path, source: str) -> None:
    path = tmp_path / "bomb.jinja"
    path.write_text(source, encoding="utf-8")
    started = time.monotonic()
    result = run_chat("-m", str(smollm2), "--template", str(path), "--ask", "hi", timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("llamabin: error: chat template 'bomb.jinja' was stopped at a size limit: ")
    assert result.stdout == ""
