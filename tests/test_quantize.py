"""`llamabin build --quant TYPE [--imatrix FILE]`: an F16 GGUF (SmolLM2's
weights, dequantized) becomes a running file in one command, quantized by
llama.cpp's own quantizer inside the runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from tests.ggufs import importance_matrix
from tests.helpers import llamabin, llamabin_with_file_limit, run_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def imatrix(smollm2_f16: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return importance_matrix(smollm2_f16, tmp_path_factory.mktemp("imatrix") / "imatrix.gguf")


def _file_type(path: Path) -> str:
    field = gguf.GGUFReader(path).fields["general.file_type"]
    return gguf.LlamaFileType(int(field.contents())).name


def _runtime_quantize(*args: str) -> subprocess.CompletedProcess[str]:
    """The runtime's side, run from source as the packer runs it frozen."""
    return subprocess.run(
        [sys.executable, "-m", "chat", "__quantize__", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


def test_one_command_quantizes_with_an_imatrix_and_packs_a_running_file(
    smollm2_f16: Path, imatrix: Path, portable_lib: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dist"
    result = llamabin(
        "build",
        str(smollm2_f16),
        "--quant",
        "q4_k_m",
        "--imatrix",
        str(imatrix),
        "--llama-lib",
        str(portable_lib),
        "-o",
        f"{out}/",
    )
    assert result.returncode == 0, result.stderr
    exe = out / "SmolLM2-135M-Instruct-Q4_K_M-linux-x86_64"
    assert result.stdout.strip() == str(exe)
    assert "quantizing to Q4_K_M with" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [exe.name], "the quantized GGUF is not left behind"
    answer = run_file(
        exe, "--cli", "-p", "The capital of France is", "-n", "8", "--temp", "0", "--log-disable", cwd=tmp_path
    )
    assert answer.returncode == 0, answer.stderr
    assert "Paris" in answer.stdout
    shown = llamabin("inspect", str(exe))
    assert "quantization:     Q4_K_M" in shown.stdout
    assert "(SmolLM2-135M-Instruct-Q4_K_M.gguf)" in shown.stdout


def test_the_importance_matrix_changes_the_weights(smollm2_f16: Path, imatrix: Path, tmp_path: Path) -> None:
    plain, weighted, again = tmp_path / "plain.gguf", tmp_path / "weighted.gguf", tmp_path / "again.gguf"
    assert _runtime_quantize(str(smollm2_f16), str(plain), "Q4_K_M").returncode == 0
    assert _runtime_quantize(str(smollm2_f16), str(weighted), "Q4_K_M", str(imatrix)).returncode == 0
    assert _runtime_quantize(str(smollm2_f16), str(again), "Q4_K_M", str(imatrix)).returncode == 0
    assert _file_type(plain) == _file_type(weighted) == "MOSTLY_Q4_K_M"
    assert plain.stat().st_size == weighted.stat().st_size
    assert plain.read_bytes() != weighted.read_bytes()
    assert weighted.read_bytes() == again.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quant", "Q9_Z"], "unknown --quant type Q9_Z; known: Q4_0"),
        (["--quant", "IQ2_XS"], "--quant IQ2_XS needs an importance matrix: give one with --imatrix FILE"),
        (["--imatrix", "x.gguf"], "--imatrix is used only with --quant TYPE"),
        (["--quant", "Q4_0", "--imatrix", "missing.gguf"], "importance matrix not found: missing.gguf"),
    ],
)
def test_bad_quant_options_are_usage_errors(smollm2_f16: Path, args: list[str], message: str) -> None:
    result = llamabin("build", str(smollm2_f16), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_model_is_named_before_any_runtime_is_prepared(tmp_path: Path) -> None:
    result = llamabin("build", str(tmp_path / "none-F16.gguf"), "--quant", "Q4_K_M")
    assert result.returncode == 2
    assert f"model file not found: {tmp_path / 'none-F16.gguf'}" in result.stderr
    assert "runtime" not in result.stderr


def test_an_already_quantized_model_is_refused(smollm2: Path, portable_lib: Path, tmp_path: Path) -> None:
    result = llamabin(
        "build", str(smollm2), "--quant", "Q4_K_M", "--llama-lib", str(portable_lib), "-o", f"{tmp_path}/"
    )
    assert result.returncode == 2
    assert "is already quantized (Q4_1): --quant starts from an F16, BF16 or F32 GGUF" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_importance_matrix_is_named(smollm2_f16: Path, smollm2: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = _runtime_quantize(str(smollm2_f16), str(out / "out.gguf"), "Q4_0", str(ROOT / "README.md"))
    assert result.returncode == 1
    assert f"not an importance matrix (GGUF) file: {ROOT / 'README.md'}" in result.stderr
    weights = _runtime_quantize(str(smollm2_f16), str(out / "out.gguf"), "Q4_0", str(smollm2))
    assert weights.returncode == 1
    assert "holds no entries (is it llama-imatrix's GGUF output?)" in weights.stderr
    assert list(out.iterdir()) == []


def test_a_write_that_fails_half_way_leaves_no_output(smollm2_f16: Path, portable_lib: Path, tmp_path: Path) -> None:
    """A file-size limit stands in for a disk that fills up mid-write: the
    quantizer's write fails, and neither its half-written GGUF nor a file is left."""
    out = tmp_path / "dist"
    out.mkdir()
    limit = 40 * 2**20  # the quantized model is about 100 MiB
    result = llamabin_with_file_limit(
        limit, "build", str(smollm2_f16), "--quant", "Q8_0", "--llama-lib", str(portable_lib), "-o", f"{out}/"
    )
    assert result.returncode == 1, result.stderr
    assert "failed (is the disk full, or a file-size limit set?)" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.iterdir()) == []


def test_a_terminal_sees_the_quantizer_count_the_tensors(smollm2_f16: Path, portable_lib: Path, tmp_path: Path) -> None:
    """On a terminal, quantizing shows a bar that counts llama.cpp's tensors
    (SmolLM2 has 272), fed by the runtime as it goes, not a silent wait."""
    pexpect = pytest.importorskip("pexpect")
    total = len(gguf.GGUFReader(smollm2_f16).tensors)
    argv = ["-m", "packager", "build", str(smollm2_f16), "--quant", "Q8_0", "--llama-lib", str(portable_lib)]
    child = pexpect.spawn(
        sys.executable, [*argv, "-o", f"{tmp_path}/dist/"], cwd=str(ROOT), timeout=120, dimensions=(24, 120)
    )
    child.expect(rf"quantizing to Q8_0: +\d+%[^\r\n]*\| *\d+/{total} \[")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
