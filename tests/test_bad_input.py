"""Every bad input gets one clear line on stderr and the right exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_chat


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {stderr!r}"
    assert "Traceback" not in stderr
    assert lines[0].startswith("llamabin: error: ")
    return lines[0]


def test_missing_model_file(tmp_path: Path) -> None:
    result = run_chat("-m", str(tmp_path / "nope.gguf"), "--cli", "-p", "hi")
    assert result.returncode == 2
    assert "model file not found" in one_error_line(result.stderr)


def test_no_model_at_all() -> None:
    result = run_chat("--cli", "-p", "hi")
    assert result.returncode == 2
    assert "no model given" in one_error_line(result.stderr)


def test_file_that_is_not_a_gguf(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("just some text, not a model\n")
    result = run_chat("-m", str(bogus), "--cli", "-p", "hi")
    assert result.returncode == 1
    assert "not a GGUF model file" in one_error_line(result.stderr)


def test_truncated_gguf(smollm2: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with smollm2.open("rb") as src:
        cut.write_bytes(src.read(smollm2.stat().st_size // 2))
    result = run_chat("-m", str(cut), "--cli", "-p", "hi")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "cannot load model" in line and "corrupted or incomplete" in line
    assert result.stdout == ""


def test_unknown_template_name(smollm2: Path) -> None:
    result = run_chat("-m", str(smollm2), "--template", "klingon", "--ask", "hi")
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "unknown template 'klingon'" in line and "chatml" in line


def test_context_too_large_for_memory(smollm2: Path) -> None:
    result = run_chat("-m", str(smollm2), "-c", "100000000", "--ctx-force", "--cli", "-p", "hi")
    assert result.returncode == 1
    assert "GiB of memory" in one_error_line(result.stderr)


def test_context_above_trained_size_needs_force(smollm2: Path) -> None:
    result = run_chat("-m", str(smollm2), "-c", "9000", "--cli", "-p", "hi")
    assert result.returncode == 2
    assert "8192 tokens this model was trained for" in one_error_line(result.stderr)


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt(smollm2: Path, prompt: str) -> None:
    result = run_chat("-m", str(smollm2), "--cli", "-p", prompt)
    assert result.returncode == 2
    assert "the prompt is empty" in one_error_line(result.stderr)


def test_empty_stdin(smollm2: Path) -> None:
    result = run_chat("-m", str(smollm2), "--cli", input="")
    assert result.returncode == 2
    assert "the prompt is empty" in one_error_line(result.stderr)


def test_prompt_longer_than_the_context(smollm2: Path) -> None:
    result = run_chat("-m", str(smollm2), "-c", "256", "--cli", "-p", "word " * 400)
    assert result.returncode == 1
    assert "more than the context of 256 tokens" in one_error_line(result.stderr)


def test_invalid_grammar(smollm2: Path) -> None:
    result = run_chat("-m", str(smollm2), "--cli", "-p", "hi", "--grammar", "root ::= missing")
    assert result.returncode == 2
    assert "invalid grammar: Undefined rule identifier 'missing'" in one_error_line(result.stderr)


def test_unknown_flag() -> None:
    result = run_chat("--bogus")
    assert result.returncode == 2
    assert "No such option" in one_error_line(result.stderr)


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    bogus = tmp_path / "x.gguf"
    bogus.write_text("nope")
    result = run_chat("-m", str(bogus), "--cli", "-p", "hi", "--verbose")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
