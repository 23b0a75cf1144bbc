"""The single file: built from the real SmolLM2 GGUF and run like a user
would, from an empty directory with a scrubbed environment (`env -i`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from packager.sidecar import write_sidecar
from payload.find import read_payload
from payload.manifest import encode_manifest
from tests.conftest import BAKED
from tests.helpers import ROOT, llamabin, run_chat, run_file

PROMPT = "four score and seven"


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_output_equals_the_unpackaged_runtime(built: Path, smollm2: Path, empty_dir: Path) -> None:
    args = ("--cli", "-p", PROMPT, "-n", "32", "--temp", "0", "--seed", "1", "-t", "2")
    packaged = run_file(built, *args, cwd=empty_dir)
    plain = run_chat("-m", str(smollm2), *args)
    assert packaged.returncode == 0, packaged.stderr
    assert packaged.stdout == plain.stdout
    assert packaged.stdout.strip()
    assert list(empty_dir.iterdir()) == []


def test_no_copy_of_the_weights_is_written_at_launch(built: Path, smollm2: Path, tmp_path: Path) -> None:
    tmpdir, home = tmp_path / "tmp", tmp_path / "home"
    tmpdir.mkdir()
    home.mkdir()
    weights = smollm2.stat().st_size
    seen: dict[str, int] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for root in (tmpdir, home):
                for dirpath, _dirs, files in os.walk(root):
                    for name in files:
                        path = os.path.join(dirpath, name)
                        try:
                            seen[path] = max(seen.get(path, 0), os.path.getsize(path))
                        except OSError:
                            pass
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        env = {"TMPDIR": str(tmpdir), "HOME": str(home)}
        result = run_file(built, "--cli", "-p", PROMPT, "-n", "48", cwd=home, env=env)
    finally:
        done.set()
        watcher.join()
    assert result.returncode == 0, result.stderr
    assert any("/runtime/" in p for p in seen), "the watcher did not see the runtime unpack"
    assert max(seen.values()) < weights / 2, max(seen.items(), key=lambda kv: kv[1])


def test_verify_passes(built: Path, empty_dir: Path) -> None:
    result = run_file(built, "--verify", cwd=empty_dir)
    assert result.returncode == 0, result.stderr
    payload = read_payload(built)
    assert payload is not None
    assert result.stdout.strip() == f"weights verified: sha256 {payload.manifest['gguf']['sha256']}"


def test_one_flipped_byte_is_caught(built: Path, tmp_path: Path, empty_dir: Path) -> None:
    copy = tmp_path / "flipped"
    shutil.copy2(built, copy)
    payload = read_payload(copy)
    assert payload is not None
    where = payload.blob_offset + payload.blob_size // 2
    with copy.open("r+b") as f:
        f.seek(where)
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 0x01]))
    verify = run_file(copy, "--verify", cwd=empty_dir)
    assert verify.returncode == 1
    assert "corrupted (sha256 mismatch)" in verify.stderr and "Traceback" not in verify.stderr
    # A plain launch checks too (first launch of this copy): no garbage output.
    launch = run_file(copy, "--cli", "-p", PROMPT, cwd=empty_dir)
    assert launch.returncode == 1 and launch.stdout == ""
    assert "corrupted" in launch.stderr


def test_a_truncated_file_gives_a_clear_error(built: Path, tmp_path: Path, empty_dir: Path) -> None:
    cut = tmp_path / "cut"
    with built.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(built.stat().st_size - 4096))
    cut.chmod(0o755)
    result = run_file(cut, "--cli", "-p", PROMPT, cwd=empty_dir)
    assert result.returncode != 0
    assert result.stdout == ""


def test_inspect_shows_the_manifest(built: Path) -> None:
    result = llamabin("inspect", str(built))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in (
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "architecture:     llama",
        "quantization:     Q4_1",
        "defaults:         -n 6 --temp 0",
        "template:         the model's own",
        "license:          apache-2.0 (text included)",
        "llama-cpp-python: 0.3.36",
    ):
        assert needle in out, needle
    lic = llamabin("inspect", "--license", str(built))
    assert lic.stdout.strip() == "Apache License 2.0 (test copy)"


def test_a_flag_beats_a_baked_default(built: Path, smollm2: Path, empty_dir: Path) -> None:
    baked = run_file(built, "--cli", "-p", PROMPT, cwd=empty_dir)
    assert baked.stdout == run_chat("-m", str(smollm2), "--cli", "-p", PROMPT, *BAKED).stdout
    longer = run_file(built, "--cli", "-p", PROMPT, "-n", "20", cwd=empty_dir)
    assert longer.stdout == run_chat("-m", str(smollm2), "--cli", "-p", PROMPT, "-n", "20", "--temp", "0").stdout
    assert len(longer.stdout) > len(baked.stdout)
    help_text = run_file(built, "--help", cwd=empty_dir).stdout
    assert "Built-in defaults (flags override them): -n 6 --temp 0" in help_text
    assert "[default: 6]" in help_text


def test_another_model_with_m(built: Path, gemma: Path, empty_dir: Path) -> None:
    result = run_file(
        built, "-m", str(gemma), "--ask", "Write a hello world program", "-n", "1", "--verbose-prompt", cwd=empty_dir
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("<bos><start_of_turn>user\nWrite a hello world program")


def test_a_gemma_build_renders_gemmas_template(gemma: Path, tmp_path: Path, empty_dir: Path) -> None:
    result = llamabin("build", str(gemma), "-o", str(tmp_path), "--name", "gemma-3-270m")
    assert result.returncode == 0, result.stderr
    exe = tmp_path / "gemma-3-270m-linux-x86_64"
    run = run_file(
        exe, "--ask", "Write a hello world program", "-n", "1", "--verbose-prompt", "--temp", "0", cwd=empty_dir
    )
    assert run.returncode == 0, run.stderr
    prompt = "<bos><start_of_turn>user\nWrite a hello world program<end_of_turn>\n<start_of_turn>model\n"
    assert run.stderr == prompt + "llamabin: note: the answer was cut short at the -n 1 token limit\n"
    assert "gemma (chosen by architecture)" in llamabin("inspect", str(exe)).stdout


def test_sidecar_layout_runs_the_same(built: Path, smollm2: Path, tmp_path: Path, empty_dir: Path) -> None:
    result = llamabin("build", str(smollm2), "-o", str(tmp_path), "--sidecar")
    assert result.returncode == 0, result.stderr
    exe = tmp_path / "SmolLM2-135M-Instruct.Q4_1-linux-x86_64"
    side = tmp_path / "SmolLM2-135M-Instruct.Q4_1-linux-x86_64.gguf"
    assert side.is_file() and exe.stat().st_size < smollm2.stat().st_size
    args = ("--cli", "-p", PROMPT, "-n", "16", "--temp", "0")
    assert run_file(exe, *args, cwd=empty_dir).stdout == run_chat("-m", str(smollm2), *args).stdout
    side.unlink()
    missing = run_file(exe, *args, cwd=empty_dir)
    assert missing.returncode == 2
    assert f"weights are missing: put {side.name} next to it" in missing.stderr


def test_a_tampered_sidecar_cannot_open_the_server_to_the_network(
    smollm2: Path, portable_lib: Path, tmp_path: Path, empty_dir: Path
) -> None:
    """Someone swaps in a NAME.gguf that bakes --host 0.0.0.0: the file runs
    without it and says so; a damaged manifest stops it in one line."""
    result = llamabin(
        "build", str(smollm2), "-o", str(tmp_path), "--sidecar", "--llama-lib", str(portable_lib), "--", "-n", "6"
    )
    assert result.returncode == 0, result.stderr
    exe = tmp_path / "SmolLM2-135M-Instruct.Q4_1-linux-x86_64"
    side = exe.with_name(exe.name + ".gguf")
    payload = read_payload(side)
    assert payload is not None
    tampered = dict(payload.manifest, defaults={"args": ["--host", "0.0.0.0", "-n", "6"]})
    write_sidecar(smollm2, side, encode_manifest(tampered))
    shown = run_file(exe, "--help", cwd=empty_dir)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == (
        "llamabin: warning: ignoring built-in defaults that only the command line may set: --host\n"
    )
    assert "Built-in defaults (flags override them): -n 6\n" in shown.stdout
    assert re.search(r"\[default:\s+127\.0\.0\.1\]", shown.stdout)
    assert not re.search(r"\[default:\s+0\.0\.0\.0\]", shown.stdout)

    write_sidecar(smollm2, side, encode_manifest(dict(payload.manifest, defaults=[])))
    damaged = run_file(exe, "--cli", "-p", PROMPT, cwd=empty_dir)
    assert damaged.returncode == 1
    assert damaged.stderr == f"llamabin: error: {side.name}'s manifest is damaged: defaults must be an object\n"
    assert damaged.stdout == ""


def test_launch_benchmark_harness_runs(built: Path, smollm2: Path, tmp_path: Path) -> None:
    """A smoke run of bench/launch.py (one round): the numbers are for
    bench/RESULTS.md, not for asserting speed here."""
    out = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "launch.py"),
            "--exe",
            str(built),
            "--gguf",
            str(smollm2),
            "--runs",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "File size minus GGUF size:" in text
    assert "| first |" in text and "| warm |" in text and "| unpackaged |" in text


def _free_port(preferred: int = 8080) -> int:
    """The card's own port when it is free, so the example runs truly verbatim."""
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise AssertionError("no free port")


def test_the_seed_card_curl_example_against_the_packaged_server(built: Path, empty_dir: Path) -> None:
    from tests.test_server_curl import SEED_CARD_EXAMPLE

    port = _free_port()
    proc = subprocess.Popen(
        ["env", "-i", str(built), "--server", "--nobrowser", "--port", str(port)],
        cwd=empty_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = ""
        deadline = time.monotonic() + 90
        while "listening on" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the server exited"
        assert f"listening on http://127.0.0.1:{port}" in line
        command = SEED_CARD_EXAMPLE.replace("localhost:8080", f"localhost:{port}")
        reply = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True, timeout=300
        )
        assert reply.returncode == 0, reply.stderr

        answer = json.loads(reply.stdout)
        assert answer["choices"][0]["message"]["content"].strip()
        # The web page comes from inside the file, not from a CDN.
        page = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
        assert page.returncode == 0 and "<html" in page.stdout.lower()
        script = subprocess.run(
            ["curl", "-sf", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/static/app.js"],
            capture_output=True,
            text=True,
        )
        assert script.stdout == "200"
        models = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/v1/models"], capture_output=True, text=True)
        assert [m["id"] for m in json.loads(models.stdout)["data"]] == [built.name]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(
    "variant, message",
    [
        ("x64", None),
        ("nonesuch", "LLAMABIN_CPU_VARIANT=nonesuch: no such CPU variant (there are: alderlake, "),
    ],
)
def test_a_cpu_variant_can_be_forced(built: Path, empty_dir: Path, variant: str, message: str | None) -> None:
    verbose = ("--verbose",) if message is None else ()  # --verbose would show a traceback on purpose
    result = run_file(
        built, "--cli", "-p", PROMPT, "-n", "4", *verbose, cwd=empty_dir, env={"LLAMABIN_CPU_VARIANT": variant}
    )
    if message is None:
        assert result.returncode == 0, result.stderr
        assert "libggml-cpu-x64.so" in result.stderr and result.stdout.strip()
    else:
        assert result.returncode == 1
        assert result.stderr.startswith(f"llamabin: error: {message}"), result.stderr
        assert "Traceback" not in result.stderr


def test_doctor_says_where_the_weights_are_and_what_was_seen(built: Path, empty_dir: Path) -> None:
    result = run_file(built, "--doctor", cwd=empty_dir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"inside this file, {built} at byte " in out and "mapped in place; sha256 verified" in out
    assert "llama.cpp sees: SSE3" in out
    assert re.search(r"^kernels:   (\w+), picked at start from 14 variants \(alderlake, .*zen4\)$", out, re.M), out
    assert "gpu:       none" in out
    assert "template:  the model's own; stops on <|im_end|>" in out
    assert re.search(
        r"^start-up:  load CPU kernels [\d.]+ s, verify weights [\d.]+ s, load model and context", out, re.M
    )
