"""`--cli` and `--ask` on the real models, seen from a shell script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_chat

PROMPT = "four score and seven"
GREEDY = ("--temp", "0", "--seed", "1")


def test_cli_is_deterministic_and_only_prints_the_completion(smollm2: Path) -> None:
    first = run_chat("-m", str(smollm2), "--cli", "-p", PROMPT, "-n", "32", *GREEDY, "--log-disable")
    second = run_chat("-m", str(smollm2), "--cli", "-p", PROMPT, "-n", "32", *GREEDY, "--log-disable")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip(), "no completion printed"
    assert first.stdout == second.stdout
    assert first.stderr == ""
    assert not first.stdout.startswith(PROMPT), "the prompt is echoed"


def test_cli_matches_a_direct_llama_cpp_python_completion(smollm2: Path) -> None:
    from llama_cpp import Llama

    from chat.engine import backends

    backends.load()  # the venv's llama-cpp-python runs the portable libraries: kernels load first

    ours = run_chat("-m", str(smollm2), "--cli", "-p", PROMPT, "-n", "48", *GREEDY, "-t", "2")
    # llama.cpp's default (flash attention on where the CPU backend has it)
    # is what llamabin uses; llama-cpp-python turns it off unless asked.
    llm = Llama(str(smollm2), n_ctx=4096, n_threads=2, n_threads_batch=2, flash_attn=True, verbose=False)
    direct = llm.create_completion(PROMPT, max_tokens=48, temperature=0, seed=1)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == direct["choices"][0]["text"]


def test_cli_reads_the_prompt_from_a_file_and_from_stdin(smollm2: Path, tmp_path: Path) -> None:
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(PROMPT, encoding="utf-8")
    args = ("-m", str(smollm2), "--cli", "-n", "16", *GREEDY)
    from_p = run_chat(*args, "-p", PROMPT)
    from_file = run_chat(*args, "-f", str(prompt_file))
    from_dash = run_chat(*args, "-f", "-", input=PROMPT)
    from_pipe = run_chat(*args, input=PROMPT)
    assert from_p.stdout
    assert from_file.stdout == from_dash.stdout == from_pipe.stdout == from_p.stdout


def test_ask_applies_the_chat_template_and_answers(smollm2: Path) -> None:
    result = run_chat("-m", str(smollm2), "--ask", "What is 2 + 2?", "-n", "40", *GREEDY)
    assert result.returncode == 0, result.stderr
    assert "4" in result.stdout
    assert "<|im_end|>" not in result.stdout and "<|im_start|>" not in result.stdout


def test_ask_with_a_system_prompt(smollm2: Path) -> None:
    result = run_chat(
        "-m",
        str(smollm2),
        "--ask",
        "What color is the sky on a clear day?",
        "--system-prompt",
        "You answer in one short sentence.",
        "-n",
        "40",
        *GREEDY,
    )
    assert result.returncode == 0, result.stderr
    assert "blue" in result.stdout.lower()


def test_json_switch_gives_parseable_json(smollm2: Path) -> None:
    result = run_chat(
        "-m",
        str(smollm2),
        "--ask",
        "Give a JSON object with name and age of a person",
        "--json",
        "-n",
        "200",
        *GREEDY,
    )
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)


def test_grammar_constrains_cli_output(smollm2: Path) -> None:
    result = run_chat(
        "-m",
        str(smollm2),
        "--cli",
        "-p",
        "Is the sky blue? Answer:",
        "-n",
        "8",
        "--grammar",
        'root ::= " yes" | " no"',
        *GREEDY,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout in (" yes", " no")


def test_gemma_base_model_runs_with_gemmas_template(gemma: Path) -> None:
    result = run_chat("-m", str(gemma), "--ask", "Write a hello world program", "-n", "8", *GREEDY, "--verbose")
    assert result.returncode == 0, result.stderr
    assert "<end_of_turn>" not in result.stdout


@pytest.mark.parametrize("n", ["1", "5"])
def test_n_predict_limits_the_tokens(smollm2: Path, n: str) -> None:
    from llama_cpp import Llama

    from chat.engine import backends

    backends.load()

    result = run_chat("-m", str(smollm2), "--cli", "-p", PROMPT, "-n", n, *GREEDY)
    llm = Llama(str(smollm2), vocab_only=True, verbose=False)
    assert len(llm.tokenize(result.stdout.encode(), add_bos=False)) <= int(n) + 1


@pytest.mark.parametrize("mode", [["--ask", "List three colors"], ["--cli", "-p", "Colors:"]])
def test_shaped_output_cut_short_is_said_on_stderr(smollm2: Path, mode: list[str]) -> None:
    """Half a JSON value on stdout, exit 0: a script must be able to tell."""
    cut = run_chat("-m", str(smollm2), *mode, "--json", "-n", "3", *GREEDY)
    assert cut.returncode == 0, cut.stderr
    assert cut.stderr == "llamabin: note: the answer was cut short at the -n 3 token limit\n"
    quiet = run_chat("-m", str(smollm2), *mode, "--json", "-n", "3", *GREEDY, "--log-disable")
    assert quiet.stdout == cut.stdout and quiet.stderr == ""


def test_an_answer_cut_by_the_context_names_the_context(smollm2: Path) -> None:
    cut = run_chat("-m", str(smollm2), "--cli", "-p", "Colors:", "--json", "-n", "500", "-c", "32", *GREEDY)
    assert cut.returncode == 0, cut.stderr
    assert cut.stderr == "llamabin: note: the answer was cut short at the end of the context (raise it with -c)\n"
