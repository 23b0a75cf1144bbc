"""Option parsing, with the work function patched out (no model loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat import cli
from chat.settings import Mode, Settings


def test_default_mode_is_the_chat(parsed: list[Settings]) -> None:
    assert cli.main(["-m", "x.gguf"]) == 0
    assert parsed[0].mode is Mode.DEFAULT
    assert parsed[0].model.path == Path("x.gguf")
    assert parsed[0].n_ctx is None and parsed[0].n_predict is None


def test_chat_p_is_the_system_prompt(parsed: list[Settings]) -> None:
    cli.main(["-m", "x.gguf", "--chat", "-p", "you are mosaic's godzilla"])
    assert parsed[0].mode is Mode.CHAT
    assert parsed[0].system_prompt == "you are mosaic's godzilla"
    assert parsed[0].prompt is None


def test_cli_p_is_the_prompt(parsed: list[Settings]) -> None:
    cli.main(["-m", "x.gguf", "--cli", "-p", "four score and seven", "--log-disable"])
    assert parsed[0].mode is Mode.CLI
    assert parsed[0].prompt == "four score and seven"
    assert parsed[0].system_prompt is None
    assert parsed[0].log_disable


def test_llama_cpp_flag_names(parsed: list[Settings]) -> None:
    cli.main(
        [
            "-m",
            "x.gguf",
            "--cli",
            "-p",
            "hi",
            "-c",
            "2048",
            "-n",
            "7",
            "--temp",
            "0.3",
            "--top-k",
            "5",
            "--top-p",
            "0.5",
            "--min-p",
            "0.1",
            "--repeat-penalty",
            "1.1",
            "--seed",
            "42",
            "-t",
            "3",
            "-ngl",
            "99",
        ]
    )
    s = parsed[0]
    assert (s.n_ctx, s.n_predict, s.threads, s.n_gpu_layers) == (2048, 7, 3, 99)
    p = s.sampling
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty, p.seed) == (0.3, 5, 0.5, 0.1, 1.1, 42)


def test_long_forms(parsed: list[Settings]) -> None:
    cli.main(["--model", "x.gguf", "--ctx-size", "512", "--n-predict", "3", "--threads", "1", "--n-gpu-layers", "1"])
    s = parsed[0]
    assert (s.n_ctx, s.n_predict, s.threads, s.n_gpu_layers) == (512, 3, 1, 1)


def test_ask_mode_and_json(parsed: list[Settings]) -> None:
    cli.main(["-m", "x.gguf", "--ask", "What is 2 + 2?", "--json", "--system-prompt", "be brief"])
    s = parsed[0]
    assert s.mode is Mode.ASK and s.prompt == "What is 2 + 2?" and s.system_prompt == "be brief"
    assert s.sampling.grammar and "root" in s.sampling.grammar


def test_random_seed_and_unlimited_tokens_by_default(parsed: list[Settings]) -> None:
    cli.main(["-m", "x.gguf", "--cli", "-p", "hi"])
    assert parsed[0].sampling.seed is None and parsed[0].n_predict is None


def test_conflicting_modes_are_refused(parsed: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-m", "x.gguf", "--ask", "hi", "--cli"]) == 2
    assert "cannot be used together" in capsys.readouterr().err
    assert not parsed


@pytest.mark.parametrize("flags", [["--chat", "--cli"], ["--cli", "--server"], ["--chat", "--server"]])
def test_two_modes_are_refused(parsed: list[Settings], capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    assert cli.main(["-m", "x.gguf", "-p", "x", *flags]) == 2
    err = capsys.readouterr().err
    assert f"{flags[0]} and {flags[1]} cannot be used together" in err
    assert not parsed


def test_two_grammars_are_refused(parsed: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-m", "x.gguf", "--cli", "-p", "x", "--json", "--grammar", 'root ::= "a"']) == 2
    assert "only one of" in capsys.readouterr().err


def test_the_ollama_port_must_be_another_port(parsed: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-m", "x.gguf", "--server", "--port", "9000", "--ollama-port", "9000"]) == 2
    assert "--ollama-port 9000 is the server's --port already" in capsys.readouterr().err
    assert not parsed
    assert cli.main(["-m", "x.gguf", "--server", "--ollama-port", "11434", "--draft-max", "0"]) == 0
    assert (parsed[0].ollama_port, parsed[0].draft_max) == (11434, 0)


def test_cache_ram_takes_mib_minus_one_or_zero(parsed: list[Settings], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-m", "x.gguf", "--server"]) == 0
    assert cli.main(["-m", "x.gguf", "--server", "--cache-ram", "0"]) == 0
    assert cli.main(["-m", "x.gguf", "--server", "-cram", "-1"]) == 0
    assert [s.engine_config().cache_ram_mib for s in parsed] == [None, 0, -1]
    assert cli.main(["-m", "x.gguf", "--server", "--cache-ram", "-2"]) == 2
    assert "--cache-ram" in capsys.readouterr().err
    assert cli.main(["-m", "x.gguf", "--server", "--cache-ram", "lots"]) == 2
    assert len(parsed) == 3


def test_help_is_a_manual(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for needle in ("--chat", "--cli", "--ask", "-ngl, --n-gpu-layers", "-c, --ctx-size", "Examples:", "Exit codes:"):
        assert needle in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("llamabin ")


def test_baked_defaults_apply_and_flags_override_them(parsed: list[Settings]) -> None:
    baked = {"temp": 0.1, "ctx_size": 1024}
    cli.main(["-m", "x.gguf", "--temp", "0.7"], default_map=baked)
    assert parsed[0].sampling.temperature == 0.7
    assert parsed[0].n_ctx == 1024


def test_parallel_slots_default_to_four_with_the_server(parsed: list[Settings]) -> None:
    cli.main(["-m", "x.gguf", "--server"])
    cli.main(["-m", "x.gguf"])
    cli.main(["-m", "x.gguf", "--chat"])
    cli.main(["-m", "x.gguf", "--server", "-np", "8"])
    assert [s.parallel for s in parsed] == [4, 4, 1, 8]
    assert parsed[3].engine_config().n_parallel == 8


def test_an_explicit_slot_count_splits_the_cache_as_llama_server_does(parsed: list[Settings]) -> None:
    cli.main(["-m", "x.gguf", "--server"])
    cli.main(["-m", "x.gguf", "--server", "-np", "8"])
    cli.main(["-m", "x.gguf", "--server", "-np", "8", "-kvu"])
    cli.main(["-m", "x.gguf", "--server", "--parallel", "2", "--kv-unified"])
    assert [s.engine_config().kv_unified for s in parsed] == [True, False, True, True]
