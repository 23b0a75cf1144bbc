"""The server's flags, parsed with the work function patched out (no model
loaded), and what they become in the server's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat import cli
from chat.settings import Mode, Settings


def test_server_defaults(parsed: list[Settings]) -> None:
    assert cli.main(["-m", "x.gguf", "--server"]) == 0
    s = parsed[0]
    assert s.mode is Mode.SERVER
    server = s.server_settings()
    assert (server.host, server.port, server.api_key, server.open_browser) == ("127.0.0.1", 8080, None, True)
    assert server.url == "http://127.0.0.1:8080"


def test_default_mode_keeps_the_server_flags(parsed: list[Settings]) -> None:
    cli.main(["-m", "x.gguf", "--host", "0.0.0.0", "--port", "9000", "--nobrowser", "--api-key", "k"])
    server = parsed[0].server_settings()
    assert parsed[0].mode is Mode.DEFAULT
    assert (server.host, server.port, server.api_key, server.open_browser) == ("0.0.0.0", 9000, "k", False)
    assert server.url == "http://127.0.0.1:9000"  # where a local browser connects


def test_sampling_flags_become_request_defaults_but_not_the_grammar(parsed: list[Settings]) -> None:
    cli.main(["-m", "x.gguf", "--server", "--temp", "0.2", "--top-k", "7", "-n", "50", "--json"])
    server = parsed[0].server_settings()
    assert (server.sampling.temperature, server.sampling.top_k, server.max_tokens) == (0.2, 7, 50)
    assert server.sampling.grammar is None and parsed[0].sampling.grammar


def test_api_key_file(parsed: list[Settings], tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("  from-a-file \nsecond line ignored\n")
    cli.main(["-m", "x.gguf", "--server", "--api-key-file", str(key)])
    assert parsed[0].api_key == "from-a-file"


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--api-key", "a", "--api-key-file", "f"], "not both"),
        (["--api-key", "  "], "the API key is empty"),
        (["--api-key-file", "/nonexistent/key"], "API key file not found"),
        (["--port", "70000"], "--port"),
        (["--port", "-1"], "--port"),
        (["--server", "--ask", "hi"], "cannot be used together"),
    ],
)
def test_bad_server_flags_are_usage_errors(
    parsed: list[Settings], capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert cli.main(["-m", "x.gguf", *flags]) == 2
    assert not parsed
    assert message in capsys.readouterr().err
