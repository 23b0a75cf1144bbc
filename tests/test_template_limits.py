"""A hostile chat template fails fast with one clear line: it can neither hang
start-up nor eat all memory, whether it comes from a model file, from
`--template FILE` or from a packaged file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from templates import ChatTemplate, TemplateError, builtin, from_file, from_source, resolve
from tests.helpers import run_chat

HI = [{"role": "user", "content": "hi"}]

# Each would take minutes or gigabytes if computed: the sandbox refuses it.
BOMBS = [
    pytest.param("{{ 2 ** 3000000 }}", "2 ** 3000000 would be a number wider than", id="huge-power"),
    pytest.param("{{ 10 ** (10 ** 9) }}", "10 ** 1000000000 would be a number wider than", id="tower"),
    pytest.param(
        '{{ "a" * 1000000000 }}', "repeating a 1-character string 1000000000 times", id="huge-string"
    ),
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
    source = (
        "{{ '-' * 3 }}|{{ 3 * 'ab' }}|{{ 2 ** 10 }}|{{ 2 ** -1 }}|{{ 1.5 * 4 }}|{{ [1] * 2 }}"
        "|{{ 2 ** 4000 > 0 }}"
    )
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
    pytest.param('{{ "x" | center(1000000000) }}', "the center filter would make 1,000,000,000 characters", id="center-filter"),
    pytest.param('{{ "x".center(1000000000) }}', "center() would make 1,000,000,000 characters", id="center"),
    pytest.param('{{ "x".ljust(1000000000) }}', "ljust() would make 1,000,000,000 characters", id="ljust"),
    pytest.param('{{ "x".rjust(1000000000, "-") }}', "rjust() would make 1,000,000,000 characters", id="rjust"),
    pytest.param('{{ "7".zfill(1000000000) }}', "zfill() would make 1,000,000,000 characters", id="zfill"),
    pytest.param('{{ "\t".expandtabs(1000000000) }}', "expandtabs() would make 1,000,000,001 characters", id="expandtabs"),
    pytest.param('{{ "%1000000000d" % 1 }}', "'%' formatting of a 12-character string would make 1,000,000,013", id="printf-width"),
    pytest.param('{{ "%.1000000000f" % 1.0 }}', "'%' formatting of a 13-character string would make 1,000,000,016", id="printf-precision"),
    pytest.param('{{ "%*d" % (1000000000, 1) }}', "'%' formatting of a 3-character string would make 1,000,000,004", id="printf-star"),
    pytest.param('{{ "%(n)1000000000s" % {"n": 1} }}', "'%' formatting of a 15-character string would make 1,000,000,016", id="printf-key"),
    pytest.param('{{ "%1000000000d" | format(1) }}', "'%' formatting of a 12-character string would make 1,000,000,013", id="format-filter"),
    pytest.param('{{ "{:1000000000}".format(1) }}', "the format field {:1000000000} would make 1,000,000,000 characters", id="format"),
    pytest.param('{{ "{:>{w}}".format(1, w=10**9) }}', "the format field {:>1000000000} would make 1,000,000,000", id="format-nested"),
    pytest.param('{{ "{n:1000000000}".format_map({"n": 1}) }}', "the format field {:1000000000} would make", id="format-map"),
    pytest.param('{{ ("{0}" * 1000).format("x" * 1000000) }}', "str.format() would make 5,003,000 characters", id="format-many"),
    pytest.param('{{ ("%s" * 1000) % (("x" * 1000000,) * 1000) }}', "'%' formatting of a 2,000-character string would make 5,002,000", id="printf-many"),
    pytest.param('{{ "x" | indent(1000000000, true) }}', "the indent filter would make 2,000,000,001 characters", id="indent"),
    pytest.param('{{ "abcd" | wordwrap(1, wrapstring="-" * 1000000) }}', "the wordwrap filter would make 5,000,004 characters", id="wordwrap"),
    pytest.param('{{ ("a" * 1000000) | replace("a", "b" * 1000) }}', "the replace filter would make 1,000,000,000 characters", id="replace-filter"),
    pytest.param('{{ ("a" * 1000000).replace("a", "b" * 1000) }}', "replace() would make 1,000,000,000 characters", id="replace"),
    pytest.param('{{ ("a" * 1000).translate({97: "b" * 1000000}) }}', "translate() would make 1,000,000,000 characters", id="translate"),
    pytest.param('{{ ("x" * 1000000).join(["a"] * 1000) }}', "join() would make 5,000,006 characters", id="join"),
    pytest.param('{{ (["a"] * 1000) | join("x" * 1000000) }}', "the join filter would make 5,000,006 characters", id="join-filter"),
    pytest.param('{{ [1] | tojson(indent=1000000000) }}', "tojson's indent would make 1,000,000,000 characters", id="tojson-indent"),
    pytest.param('{{ [1] | batch(1000000000, 0) | list }}', "the batch filter would make 1,000,000,000 items", id="batch"),
    pytest.param('{% for s in [1] | slice(1000000000) %}{% endfor %}', "the slice filter would make 1,000,000,000 lists, more than the limit of 100,000", id="slice"),
    pytest.param('{{ ([[0] * 1000000] * 1000) | sum(start=[]) }}', "the sum filter would make 5,000,000 items", id="sum-lists"),
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
        '{% set ns = namespace(s=[0]) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}',
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
        "{% set ns = namespace(n=1) %}{% for i in range(20000) %}{% set ns.n = ns.n + ns.n %}"
        "{% endfor %}{{ ns.n }}"
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
        "-m", str(smollm2), "--template", str(path), "--cli", "-p", "Once upon a time", "-n", "4", "--temp", "0",
        "--log-disable", timeout=60,
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
