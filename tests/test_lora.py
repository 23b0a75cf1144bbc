"""LoRA adapters applied at run time (`--lora`, `--lora-scaled`): the
model with the adapter scores text as the merged model does (W + scale·B·A,
merged here with numpy), and both differ from the base."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chat.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
from chat.engine.llama import LoraAdapter, ModelSource
from packager.gguf_write import write_out
from tests.ggufs import lora_adapter, merged_copy
from tests.helpers import llamabin, llamabin_with_file_limit, run_file

ROOT = Path(__file__).resolve().parent.parent
GREEDY = SamplingParams(temperature=0, seed=1)
PROMPT = "The old lighthouse keeper counted the ships that passed the rocky point each evening."


@pytest.fixture(scope="module")
def adapter_and_merged(smollm2_f16: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("lora")
    deltas = lora_adapter(smollm2_f16, folder / "adapter.gguf")
    merged = merged_copy(smollm2_f16, deltas, folder / "merged.gguf")
    return folder / "adapter.gguf", merged


def _scores(model: Path, *adapters: LoraAdapter) -> np.ndarray:
    """The log-probability of each prompt token after the ones before it."""
    config = EngineConfig(ModelSource(model), n_ctx=256, n_threads=2, lora=adapters)
    with Engine(config) as engine:
        chunks = list(engine.submit(GenerationRequest(PROMPT, GREEDY, max_tokens=1, prompt_logprobs=True)))
    (scored,) = [c.prompt_logprobs for c in chunks if c.prompt_logprobs]
    return np.array([p.chosen.logprob for p in scored[1:]])


def test_an_adapter_at_run_time_scores_as_the_merged_model(
    smollm2_f16: Path, adapter_and_merged: tuple[Path, Path]
) -> None:
    adapter, merged = adapter_and_merged
    base = _scores(smollm2_f16)
    applied = _scores(smollm2_f16, LoraAdapter(adapter))
    baked = _scores(merged)
    assert np.abs(applied - baked).max() < 0.05, (applied, baked)
    assert np.abs(applied - base).max() > 0.5, "the adapter must change the model"
    half = _scores(smollm2_f16, LoraAdapter(adapter, 0.5))
    assert np.abs(half - applied).max() > 0.1 and np.abs(half - base).max() > 0.1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chat", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_the_command_line_applies_it_and_names_bad_adapters(
    smollm2_f16: Path, smollm2: Path, adapter_and_merged: tuple[Path, Path], tmp_path: Path
) -> None:
    adapter, merged = adapter_and_merged
    ask = ["--cli", "-p", "The capital of France is", "-n", "12", "--temp", "0", "--log-disable"]
    plain = _cli("-m", str(smollm2_f16), *ask)
    with_lora = _cli("-m", str(smollm2_f16), "--lora", str(adapter), *ask)
    scaled = _cli("-m", str(smollm2_f16), "--lora-scaled", str(adapter), "1.0", *ask)
    from_merged = _cli("-m", str(merged), *ask)
    assert plain.returncode == with_lora.returncode == scaled.returncode == from_merged.returncode == 0
    assert with_lora.stdout == scaled.stdout == from_merged.stdout != plain.stdout

    doctor = _cli("-m", str(smollm2_f16), "--lora-scaled", str(adapter), "0.5", "--doctor")
    assert doctor.returncode == 0, doctor.stderr
    assert f"lora:      {adapter}, applied at run time, scale 0.5" in doctor.stdout

    missing = _cli("-m", str(smollm2_f16), "--lora", str(tmp_path / "none.gguf"), *ask)
    assert missing.returncode == 2
    assert f"LoRA adapter not found: {tmp_path / 'none.gguf'}" in missing.stderr
    not_an_adapter = _cli("-m", str(smollm2_f16), "--lora", str(smollm2), *ask)
    assert not_an_adapter.returncode == 1
    assert f"cannot load LoRA adapter {smollm2}:" in not_an_adapter.stderr
    not_gguf = _cli("-m", str(smollm2_f16), "--lora", str(ROOT / "README.md"), *ask)
    assert not_gguf.returncode == 1
    assert f"not a GGUF LoRA adapter file: {ROOT / 'README.md'}" in not_gguf.stderr
    for result in (missing, not_an_adapter, not_gguf):
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_build_merges_an_adapter_into_an_f16_base(
    smollm2_f16: Path, adapter_and_merged: tuple[Path, Path], portable_lib: Path, tmp_path: Path
) -> None:
    """`llamabin build BASE --lora ADAPTER`: the file answers as the base with
    the adapter applied at run time does (the merge is kept in F32)."""
    adapter, _ = adapter_and_merged
    out = tmp_path / "dist"
    result = llamabin(
        "build", str(smollm2_f16), "--lora", str(adapter), "--llama-lib", str(portable_lib), "-o", f"{out}/"
    )
    assert result.returncode == 0, result.stderr
    exe = out / "SmolLM2-135M-Instruct-F16-adapter-linux-x86_64"
    assert result.stdout.strip() == str(exe)
    assert sorted(p.name for p in out.iterdir()) == [exe.name]
    ask = ["--cli", "-p", "The capital of France is", "-n", "12", "--temp", "0", "--log-disable"]
    packed = run_file(exe, *ask, cwd=tmp_path)
    applied = _cli("-m", str(smollm2_f16), "--lora", str(adapter), *ask)
    assert packed.returncode == applied.returncode == 0, packed.stderr
    assert packed.stdout == applied.stdout


def test_build_packs_an_adapter_beside_a_quantized_base(
    smollm2: Path, adapter_and_merged: tuple[Path, Path], portable_lib: Path, tmp_path: Path
) -> None:
    """A fine-tune of a quantized base (seed 003's row: with the alpaca
    template): the adapter travels inside the file, after the weights, and
    the file answers as the base with --lora does; inspect and --doctor say
    so, and a model given with -m does not get it."""
    adapter, _ = adapter_and_merged
    out = tmp_path / "dist"
    result = llamabin(
        "build", str(smollm2), "--lora", str(adapter), "--template", "alpaca", "--llama-lib", str(portable_lib),
        "-o", f"{out}/",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    exe = out / "SmolLM2-135M-Instruct.Q4_1-adapter-linux-x86_64"
    assert result.stdout.strip() == str(exe)
    assert "beside the quantized weights" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [exe.name], "no scratch file is left behind"
    ask = ["--cli", "-p", "The capital of France is", "-n", "12", "--temp", "0", "--log-disable"]
    packed = run_file(exe, *ask, cwd=tmp_path)
    applied = _cli("-m", str(smollm2), "--lora", str(adapter), *ask)
    plain = _cli("-m", str(smollm2), *ask)
    other = run_file(exe, "-m", str(smollm2), *ask, cwd=tmp_path)
    assert packed.returncode == applied.returncode == plain.returncode == other.returncode == 0, packed.stderr
    assert packed.stdout == applied.stdout != plain.stdout
    assert other.stdout == plain.stdout, "-m MODEL must not get the file's adapter"
    chat = run_file(exe, "--ask", "Name a color.", "-n", "8", "--temp", "0", "--verbose-prompt", cwd=tmp_path)
    assert chat.returncode == 0, chat.stderr
    assert "### Instruction:" in chat.stderr, "the alpaca template is the file's"

    shown = llamabin("inspect", str(exe))
    assert f"lora:             {adapter.name} ({adapter.stat().st_size:,} bytes after the weights)," in shown.stdout
    assert "template:         alpaca" in shown.stdout
    doctor = run_file(exe, "--doctor", cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stderr
    assert "lora:      built into this file (" in doctor.stdout and "scale 1" in doctor.stdout
    verified = run_file(exe, "--verify", cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert verified.returncode == 0, verified.stderr


def test_build_refuses_what_it_cannot_merge(
    smollm2: Path, smollm2_f16: Path, gemma: Path, adapter_and_merged: tuple[Path, Path], tmp_path: Path
) -> None:
    adapter, _ = adapter_and_merged
    other_model = llamabin("build", str(gemma), "--lora", str(adapter), "-o", f"{tmp_path}/")
    assert other_model.returncode == 2
    assert f"{adapter} is an adapter for llama models, and {gemma} is gemma3" in other_model.stderr
    not_adapter = llamabin("build", str(smollm2_f16), "--lora", str(smollm2), "-o", f"{tmp_path}/")
    assert not_adapter.returncode == 2
    assert f"{smollm2} is not a LoRA adapter GGUF" in not_adapter.stderr
    scale_alone = llamabin("build", str(smollm2_f16), "--lora-scale", "2")
    assert scale_alone.returncode == 2
    assert "--lora-scale is used only with --lora ADAPTER" in scale_alone.stderr
    for result in (other_model, not_adapter, scale_alone):
        assert "Traceback" not in result.stderr


def test_a_merge_that_cannot_be_written_leaves_nothing(
    smollm2_f16: Path, adapter_and_merged: tuple[Path, Path], tmp_path: Path
) -> None:
    """A file-size limit stands in for a disk that fills up while the merged
    model is written: one line, exit 1, and no half-written file."""
    adapter, _ = adapter_and_merged
    out = tmp_path / "dist"
    out.mkdir()
    limit = 64 * 2**20  # the merged model is about 330 MiB
    result = llamabin_with_file_limit(limit, "build", str(smollm2_f16), "--lora", str(adapter), "-o", f"{out}/")
    assert result.returncode == 1, result.stderr
    assert f"cannot write the merged model in {out}: " in result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.iterdir()) == []


def _odd_adapter(dst: Path, alpha: object, tensor: str, a: np.ndarray, b: np.ndarray) -> Path:
    import gguf

    writer = gguf.GGUFWriter(dst, "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    if isinstance(alpha, str):
        writer.add_string("adapter.lora.alpha", alpha)
    else:
        writer.add_float32("adapter.lora.alpha", float(alpha))  # type: ignore[arg-type]
    writer.add_tensor(f"{tensor}.lora_a", a)
    writer.add_tensor(f"{tensor}.lora_b", b)
    write_out(writer)
    return dst


@pytest.mark.parametrize(
    "alpha, tensor, a, b, says",
    [
        ("eight", "blk.0.attn_q.weight", np.zeros((4, 576)), np.zeros((576, 4)), "adapter.lora.alpha is 'eight'"),
        (8.0, "blk.0.attn_norm.weight", np.zeros((4, 576)), np.zeros((576, 4)), "is not a matrix the adapter"),
        (8.0, "blk.0.attn_q.weight", np.zeros((0, 576)), np.zeros((576, 0)), "is not a matrix the adapter"),
    ],
    ids=["alpha-as-text", "a-norm-vector", "rank-0"],
)
def test_an_adapter_that_cannot_be_merged_is_one_line(
    smollm2_f16: Path, tmp_path: Path, alpha: object, tensor: str, a: np.ndarray, b: np.ndarray, says: str
) -> None:
    adapter = _odd_adapter(tmp_path / "odd.gguf", alpha, tensor, a.astype(np.float32), b.astype(np.float32))
    result = llamabin("build", str(smollm2_f16), "--lora", str(adapter), "-o", f"{tmp_path / 'out'}/")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("llamabin: error:")]
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr
