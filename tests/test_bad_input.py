"""Every bad input gets one clear line on stderr and the right exit code."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_chat


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


NOT_UTF8 = os.fsdecode(b"hi \xff")  # how Python hands over a command line's bytes that are not UTF-8


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ["--cli", "-p", NOT_UTF8],
            "Invalid value for '-p' / '--prompt': is not UTF-8 text (byte 0xff at character 3)",
        ),
        (["--ask", NOT_UTF8], "Invalid value for '--ask': is not UTF-8 text"),
        (
            ["--ask", "hi", "--system-prompt", NOT_UTF8],
            "Invalid value for '--system-prompt' / '--system': is not UTF-8",
        ),
        (
            ["--cli", "-p", "hi", "--grammar", 'root ::= "' + NOT_UTF8 + '"'],
            "Invalid value for '--grammar': is not UTF-8",
        ),
        (["--server", "--api-key", NOT_UTF8], "Invalid value for '--api-key': is not UTF-8 text"),
        # ggml keeps at most 512 threads; past that llama.cpp crashed, or hung trying.
        (["--cli", "-p", "hi", "-t", "100000"], "Invalid value for '-t' / '--threads': must be between 1 and 512"),
    ],
    ids=["prompt", "ask", "system-prompt", "grammar", "api-key", "threads"],
)
def test_text_that_is_not_utf8_and_threads_past_ggmls_limit_are_usage_errors(
    smollm2: Path, args: list[str], says: str
) -> None:
    result = run_chat("-m", str(smollm2), *args)
    assert result.returncode == 2
    assert says in one_error_line(result.stderr)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--server", "-p", "hi"], "--server does not use -p: each request brings its own messages"),
        (["--server", "--system-prompt", "hi"], "--server does not use --system-prompt"),
        (["--ask", "hi", "-p", "be brief"], "--ask does not use -p: --ask takes the question itself"),
        (["--ask", "hi", "-f", "README.md"], "--ask does not use -f"),
        (["--cli", "-p", "hi", "--system-prompt", "be brief"], "--cli does not use --system-prompt"),
        (["--chat", "-f", "README.md"], "--chat does not use -f"),
        (["-f", "README.md"], "the chat does not use -f"),
        (["--chat", "-p", "a", "--system", "b"], "give the chat's system prompt with -p or --system-prompt, not both"),
        (["--chat", "--verbose-prompt"], "--chat does not use --verbose-prompt"),
        (["--cli", "-f", ""], "-f needs a file name ('-' reads stdin)"),
        (["--chat", "--host", "0.0.0.0"], "--chat runs no server: --host is for --server and the default mode"),
        (["--cli", "-p", "hi", "--port", "9000"], "--cli runs no server: --port is for --server"),
        (["--ask", "hi", "--api-key", "k"], "--ask runs no server: --api-key is for --server"),
    ],
)
def test_a_flag_the_mode_would_ignore_is_refused(smollm2: Path, args: list[str], says: str) -> None:
    result = run_chat("-m", str(smollm2), *args)
    assert result.returncode == 2
    assert says in one_error_line(result.stderr)


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])  # Python reads stdin differently under each
@pytest.mark.parametrize("args", [["--cli", "-f", "-"], ["--cli"], ["--ask", "-"]], ids=["file-dash", "piped", "ask"])
def test_standard_input_that_is_not_utf8_is_a_usage_error(smollm2: Path, args: list[str], locale: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chat", "-m", str(smollm2), *args],
        input=b"hello \xff\n",
        capture_output=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT), LC_ALL=locale),
    )
    assert result.returncode == 2
    assert "standard input is not UTF-8 text (byte 0xff at offset 6)" in one_error_line(result.stderr.decode())


@pytest.mark.parametrize(
    "args, says",
    [
        (["--temp", "nan"], "Invalid value for '--temp': must be between 0 and 100"),
        (["--temp", "-1"], "Invalid value for '--temp': must be between 0 and 100"),
        (["--top-p", "2"], "Invalid value for '--top-p': must be between 0 and 1"),
        (["--min-p", "inf"], "Invalid value for '--min-p': must be between 0 and 1"),
        (["--repeat-penalty", "-1"], "Invalid value for '--repeat-penalty': must be between 0 and 10"),
        (["--top-k", "-5"], "Invalid value for '--top-k': must be between 0 and 1048576"),
        (["--repeat-last-n", "-5"], "Invalid value for '--repeat-last-n': must be between -1 and 65536"),
        (["-ngl", "-5"], "Invalid value for '-ngl' / '--n-gpu-layers' / '--gpu-layers': must be at least 0"),
        (["-n", "-3"], "Invalid value for '-n' / '--n-predict': must be at least -2"),
        (["--lora-scaled", "adapter.gguf", "nan", "--cli", "-p", "hi"], "the scale must be a finite number"),
        (["-s", "99999999999999999999"], "Invalid value for '-s' / '--seed': must be between -1 and 4294967295"),
    ],
)
def test_sampling_flags_out_of_range_are_usage_errors(smollm2: Path, args: list[str], says: str) -> None:
    """The same bounds as the server's fields: a value there would be a 400."""
    result = run_chat("-m", str(smollm2), "--cli", "-p", "hi", *args)
    assert result.returncode == 2
    assert says in one_error_line(result.stderr)


def test_an_empty_grammar_is_refused_not_ignored(smollm2: Path) -> None:
    result = run_chat("-m", str(smollm2), "--cli", "-p", "hi", "--grammar", " ")
    assert result.returncode == 2
    assert "the grammar is empty" in one_error_line(result.stderr)


def test_a_negative_context_size_is_a_usage_error(smollm2: Path) -> None:
    result = run_chat("-m", str(smollm2), "--cli", "-p", "hi", "-c", "-5")
    assert result.returncode == 2
    assert "Invalid value for '-c' / '--ctx-size': must be at least 0" in one_error_line(result.stderr)


@pytest.mark.parametrize("args", [["--cli", "-p", "hi"], ["--ask", "hi"], ["--chat"]], ids=["cli", "ask", "chat"])
def test_a_full_disk_on_stdout_is_one_line(smollm2: Path, args: list[str]) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "chat", "-m", str(smollm2), *args, "-n", "8"],
            input="hi\n",
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
    assert result.returncode == 1
    assert one_error_line(result.stderr) == "llamabin: error: cannot write to standard output: No space left on device"


@pytest.mark.parametrize(
    "redirect, args, code, says",
    [
        (">&-", ["--cli", "-p", "hi"], 2, "standard output is closed: redirect it"),
        (">&-", ["--chat"], 2, "standard output is closed: redirect it"),
        ("<&-", ["--cli"], 2, "the prompt is empty"),
        ("<&-", ["--ask", "-"], 2, "the prompt is empty"),
        ("<&-", ["--chat"], 0, None),
    ],
)
def test_a_closed_standard_stream_is_handled(
    smollm2: Path, redirect: str, args: list[str], code: int, says: str | None
) -> None:
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "chat", "-m", str(smollm2), *args, "-n", "4"])
    result = subprocess.run(
        ["bash", "-c", f"exec {command} {redirect}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == code, result.stderr
    if says is None:
        assert "Traceback" not in result.stderr and "error" not in result.stderr
    else:
        assert says in one_error_line(result.stderr)


def test_a_reader_that_stops_reading_ends_the_run_quietly(smollm2: Path) -> None:
    # A grammar that never lets the answer end: it is still being written when the reader goes.
    endless = ["--grammar", 'root ::= "a" root', "-n", "256"]
    command = [sys.executable, "-m", "chat", "-m", str(smollm2), "--cli", "-p", "1 2 3", *endless]
    writer = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT))
    )
    assert writer.stdout is not None and writer.stderr is not None
    writer.stdout.read(1)
    writer.stdout.close()  # as `| head -c 1` does
    assert writer.wait(timeout=120) == 1
    assert writer.stderr.read() == b""


def test_a_chat_line_that_is_not_utf8_is_refused_and_the_chat_goes_on(smollm2: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chat", "-m", str(smollm2), "--chat", "-n", "2", "--temp", "0"],
        input=b"hi \xff there\n/system be \xfe nice\n/system\n",
        capture_output=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT), LC_ALL="C.UTF-8"),
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert "error: that line is not UTF-8 text (byte 0xff): nothing was done with it" in out
    assert "error: that line is not UTF-8 text (byte 0xfe)" in out
    assert "no system prompt" in out
    assert "internal error" not in out


def test_the_server_runs_with_stdout_closed(smollm2: Path) -> None:
    """A daemon or a supervisor may close it: the server prints nothing there."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "chat", "-m", str(smollm2), "--server", "--nobrowser", "--port", str(port)]
    server = subprocess.Popen(
        ["bash", "-c", f"exec {' '.join(shlex.quote(a) for a in command)} >&-"],
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=60)
