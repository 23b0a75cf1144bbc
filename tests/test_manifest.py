"""The manifest a packaged file (or its sidecar NAME.gguf) carries: a damaged
one is one clear line and exit 1, and its built-in defaults can shape only
the model, the context and sampling.

The files here are made by hand, as someone shipping a tampered file would.
The runtime's real entry point reads them (`cli.main`, with the bundle
looked up beside a stand-in executable instead of `sys.executable`); only
the front end is patched out, so no model loads.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import click
import pytest

from chat import cli
from chat.bundle import find_bundle
from chat.settings import Settings
from payload.flags import BAKED_FLAGS, split_baked_args
from payload.footer import ALIGNMENT, FOOTER_SIZE, Footer
from payload.manifest import encode_manifest
from tests.helpers import llamabin

BLOB = b"GGUF" + bytes(4000)  # never loaded: the front end is patched out


def manifest(args: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    """A manifest like the packager writes, with `fields` replacing its own."""
    doc: dict[str, Any] = {
        "format": 1,
        "name": "tiny",
        "gguf": {"file": "tiny.gguf", "size": len(BLOB), "sha256": hashlib.sha256(BLOB).hexdigest()},
        "defaults": {"args": args or []},
        "template": "the model's own",
    }
    doc.update(fields)
    return doc


def write_file(path: Path, content: dict[str, Any] | bytes, inside: bool = True) -> Path:
    """`path` with the weights inside ([pad][blob][manifest][footer]), or a
    plain `path` with a sidecar `path.gguf` ([blob][manifest][footer])."""
    raw = content if isinstance(content, bytes) else encode_manifest(content)
    pad = ALIGNMENT if inside else 0
    footer = Footer(
        blob_offset=pad,
        blob_size=len(BLOB),
        manifest_offset=pad + len(BLOB),
        manifest_size=len(raw),
        file_size=pad + len(BLOB) + len(raw) + FOOTER_SIZE,
    ).with_manifest(raw)
    data = bytes(pad) + BLOB + raw + footer.pack()
    if inside:
        path.write_bytes(data)
    else:
        path.write_bytes(b"#!/bin/sh\n")
        path.with_name(path.name + ".gguf").write_bytes(data)
    return path


def run(exe: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """The runtime's entry point, as if it were the file `exe`."""
    monkeypatch.setattr(cli, "find_bundle", lambda: find_bundle(exe))
    return cli.main(list(args))


@pytest.mark.parametrize(
    "content, says",
    [
        (manifest(defaults=[]), "defaults must be an object"),
        (manifest(defaults={}), "defaults.args is missing"),
        (manifest(args=["-n", 6]), "defaults.args must be a list of strings"),  # type: ignore[list-item]
        (manifest(gguf={"size": 4004}), "gguf.sha256 is missing"),
        (manifest(gguf={"size": True, "sha256": "0"}), "gguf.size must be a whole number"),
        (manifest(name=["tiny"]), "name must be a string"),
        (manifest(chat_template="{{ messages }}"), "chat_template must be an object"),
        (manifest(versions={"llamabin": 1}), "versions must be an object of strings"),
        (b'{"defaults": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (json.dumps(manifest(name="\ud800")).encode(), "a string in it is not valid Unicode"),
        (b'{"name": "tiny", "defaults": {"args": []', "not valid JSON"),
        (b"[]", "not a JSON object"),
    ],
    ids=[
        "defaults-list",
        "no-args",
        "number-arg",
        "no-sha256",
        "bool-size",
        "list-name",
        "template-text",
        "number-version",
        "deep-nesting",
        "lone-surrogate",
        "cut-json",
        "json-list",
    ],
)
def test_a_damaged_manifest_is_one_line_and_exit_1(
    content: dict[str, Any] | bytes,
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    parsed: list[Settings],
) -> None:
    exe = write_file(tmp_path / "app", content)
    assert run(exe, monkeypatch, "--cli", "-p", "hi") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"llamabin: error: this file's manifest is damaged: {says}")
    assert err.count("\n") == 1
    assert parsed == []


def test_a_damaged_sidecar_manifest_names_the_sidecar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], parsed: list[Settings]
) -> None:
    exe = write_file(tmp_path / "app", manifest(defaults=[]), inside=False)
    assert run(exe, monkeypatch, "--help") == 1
    assert capsys.readouterr().err == "llamabin: error: app.gguf's manifest is damaged: defaults must be an object\n"


@pytest.mark.parametrize("inside", [True, False], ids=["inside", "sidecar"])
def test_a_baked_host_is_ignored_with_one_warning(
    inside: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    parsed: list[Settings],
) -> None:
    baked = ["--host", "0.0.0.0", "--port", "80", "--api-key", "k", "-n", "6", "--temp", "0", "--nobrowser"]
    exe = write_file(tmp_path / "app", manifest(baked), inside=inside)
    assert run(exe, monkeypatch) == 0
    warning = "llamabin: warning: ignoring built-in defaults that only the command line may set:"
    assert capsys.readouterr().err == f"{warning} --host --port --api-key --nobrowser\n"
    (settings,) = parsed
    assert (settings.host, settings.port, settings.api_key, settings.open_browser) == ("127.0.0.1", 8080, None, True)
    assert settings.n_predict == 6 and settings.sampling.temperature == 0  # the allowed ones still apply
    # The command line still may set them.
    assert run(exe, monkeypatch, "--host", "0.0.0.0") == 0
    assert parsed[-1].host == "0.0.0.0"


def test_help_shows_only_the_defaults_that_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    exe = write_file(tmp_path / "app", manifest(["--host", "0.0.0.0", "-c", "512"]))
    assert run(exe, monkeypatch, "--help") == 0
    out, err = capsys.readouterr()
    assert "Built-in defaults (flags override them): -c 512\n" in out
    assert re.search(r"\[default:\s+127\.0\.0\.1\]", out) and not re.search(r"\[default:\s+0\.0\.0\.0\]", out)
    assert err.count("warning: ignoring built-in defaults") == 1


def test_a_template_path_or_another_model_is_not_taken_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], parsed: list[Settings]
) -> None:
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF")
    stolen = tmp_path / "secret.jinja"
    stolen.write_text("{{ messages }}")
    baked = ["--template", str(stolen), f"-m{other}", "--template=gemma", "-f", "/etc/passwd", "-p", "hi"]
    exe = write_file(tmp_path / "app", manifest(baked))
    assert run(exe, monkeypatch, "--chat") == 0
    assert capsys.readouterr().err.endswith(f"set: --template {stolen} -m -f -p\n")
    (settings,) = parsed
    assert settings.template == "gemma"
    assert settings.model.path == exe and settings.system_prompt is None


# What a file must never choose for the person running it.
NEVER_BAKED = (
    "--host",
    "--port",
    "--api-key",
    "--api-key-file",
    "--nobrowser",
    "--server",
    "--cli",
    "--chat",
    "--ask",
    "--allowed-host",
    "--cors-origin",
    "-m",
    "--model",
    "-p",
    "--prompt",
    "-f",
    "--file",
    "--grammar-file",
    "--verbose",
    "--log-disable",
    "--verbose-prompt",
    "--doctor",
    "--verify",
    "-h",
    "--help",
    "--version",
)


def test_the_allow_list_agrees_with_the_runtimes_flags() -> None:
    options = {opt: p for p in cli.command.params for opt in p.opts if isinstance(p, click.Option)}
    for flag, takes_value in BAKED_FLAGS.items():
        assert flag in options, f"{flag} is not a runtime flag"
        assert takes_value is not options[flag].is_flag, flag
    assert not set(NEVER_BAKED) & BAKED_FLAGS.keys()
    # A single-dash long flag that is not allowed could read as a cluster of allowed short ones.
    single_dash_long = {o for o in options if o[1:2] != "-" and len(o) > 2}
    assert single_dash_long <= BAKED_FLAGS.keys()


@pytest.mark.parametrize(
    "baked",
    [
        ["--host=0.0.0.0"],
        ["-mother.gguf"],
        ["-jm", "x.gguf"],
        ["-n6", "-jt2", "--port", "1"],
        ["--", "--host", "x"],
        ["-ngl=2", "-ngl5", "-c=9"],
        ["--system-prompt", "--host", "--host", "h"],
        ["--api-key", "-s3"],
        ["--grammar-file", "/etc/shadow", "--grammar", 'root ::= "a"'],
        ["--temp"],
        ["-kvu=1"],
        ["stray", "-n", "1"],
        ["--template", "../t.jinja", "--template", "chatml"],
        ["-c", "--server"],
    ],
)
def test_no_spelling_smuggles_a_flag_past_the_allow_list(baked: list[str]) -> None:
    """What is kept sets only allowed options as click reads it, or click
    refuses it (then the file stops with 'built-in defaults are invalid')."""
    allowed = {p.name for p in cli.command.params if set(p.opts) & BAKED_FLAGS.keys()}
    try:
        ctx = cli.command.make_context("llamabin", split_baked_args(baked).allowed)
    except click.ClickException:
        return
    given = {k for k in ctx.params if ctx.get_parameter_source(k) is click.core.ParameterSource.COMMANDLINE}
    assert given <= allowed


def test_inspect_lists_the_ignored_defaults_and_refuses_a_damaged_manifest(tmp_path: Path) -> None:
    exe = write_file(tmp_path / "app", manifest(["--host", "0.0.0.0", "--temp", "0"]))
    shown = llamabin("inspect", str(exe), timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "defaults:         --temp 0\n" in shown.stdout
    assert "ignored defaults: --host (the runtime never applies these)\n" in shown.stdout
    damaged = write_file(tmp_path / "damaged", manifest(defaults=[]))
    result = llamabin("inspect", str(damaged), timeout=120)
    assert result.returncode == 1
    assert result.stderr == f"llamabin: error: the manifest of {damaged} is damaged: defaults must be an object\n"
