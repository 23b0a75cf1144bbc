"""packager/llama_converter.py: checkpoints of the architectures our numpy
converter does not know go through llama.cpp's own convert_hf_to_gguf.py,
taken from the pinned llama-cpp-python sdist. A tiny random Phi-3, made with
transformers, converts and scores a text in llama.cpp as transformers' own
forward pass does; a checkpoint the converter refuses is one line, exit 2,
and leaves nothing behind. The tests that run the converter need torch and
transformers (the `convert-torch` extra) and skip without them."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from packager import llama_converter
from packager.errors import BuildError
from packager.llama_converter import available, converted, extract_parts, last_line
from payload.errors import EXIT_RUNTIME, EXIT_USAGE, UsageError
from tests.helpers import ROOT

HAVE_TORCH = all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="needs torch and transformers (the convert-torch extra)")

TEXT = "The file carries llama.cpp's CPU kernels for every x86-64 level."
# As tests/test_convert.py: llama.cpp keeps its KV cache in F16, and this
# converter writes the weights in F16 too. The largest difference seen here
# is 3.4e-3 (an AVX-512 EPYC); one weight matrix scaled by 1.5 moves the
# scores by 0.6 (test_a_wrong_weight_is_caught).
TOLERANCE = 1e-2


def test_the_pinned_version_is_constraints_txt_s() -> None:
    """The converter must come from the llama.cpp the file ships."""
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    assert f"llama_cpp_python=={llama_converter.LLAMA_CPP_PYTHON}" in pins


def test_without_torch_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert available() == "needs torch and transformers: pip install 'llamabin[convert-torch]'"
    with pytest.raises(UsageError, match=r"pip install 'llamabin\[convert-torch\]'"):
        with converted(tmp_path, tmp_path, lambda _msg: None):
            pass


def _sdist(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def test_only_the_converter_s_parts_are_unpacked_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base = "llama_cpp_python-9.9.9/vendor/llama.cpp/"
    cache = tmp_path / "cache"
    cache.mkdir()
    _sdist(
        cache / "llama_cpp_python-9.9.9.tar.gz",
        {
            base + "convert_hf_to_gguf.py": b"print('converter')\n",
            base + "conversion/__init__.py": b"",
            base + "gguf-py/gguf/__init__.py": b"",
            base + "ggml/src/ggml.c": b"int x;\n",
            "llama_cpp_python-9.9.9/setup.py": b"",
        },
        links={base + "conversion/escape.py": "/etc/passwd"},
    )
    monkeypatch.setenv("LLAMABIN_BUILD_CACHE", str(cache))
    said: list[str] = []
    script = llama_converter.converter_script(said.append, "9.9.9")
    home = cache / "llama.cpp-9.9.9-convert"
    assert script == home / "convert_hf_to_gguf.py"
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    assert files == ["conversion/__init__.py", "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]
    assert said == [], "an sdist already in the cache is not fetched again"
    assert sorted(p.name for p in cache.iterdir()) == ["llama.cpp-9.9.9-convert", "llama_cpp_python-9.9.9.tar.gz"]
    (cache / "llama_cpp_python-9.9.9.tar.gz").unlink()  # a second call needs neither the sdist nor pip
    assert llama_converter.converter_script(said.append, "9.9.9") == script


@pytest.mark.parametrize("name", ["../evil.py", "/tmp/evil.py", "x/../../evil.py"])
def test_an_archive_reaching_outside_its_folder_is_refused(name: str, tmp_path: Path) -> None:
    sdist = _sdist(tmp_path / "bad.tar.gz", {"p/convert_hf_to_gguf.py": b"", name: b"boom"})
    with pytest.raises(BuildError, match="refusing the llama-cpp-python sdist"):
        extract_parts(sdist, "p", tmp_path / "out")
    assert not (tmp_path / "evil.py").exists()


def test_the_last_error_line_is_the_message() -> None:
    logged = "INFO:hf-to-gguf:Loading model: x\nINFO:hf-to-gguf:Model architecture: Foo\n"
    assert last_line(logged + "ERROR:hf-to-gguf:Model Foo is not supported\n") == "Model Foo is not supported"
    traceback = 'Traceback (most recent call last):\n  File "c.py", line 1, in <module>\n'
    assert last_line(logged + traceback + "ValueError: Error: Missing /x/tokenizer.model\n") == (
        "Error: Missing /x/tokenizer.model"
    )
    assert (
        last_line(traceback + "OSError: [Errno 28] No space left on device\n") == "[Errno 28] No space left on device"
    )
    assert last_line("") == ""


# --- with torch and transformers ---------------------------------------------


def with_torch(*args: str) -> str:
    """tests/phi3models.py in a process of its own (it says why): its stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.phi3models", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def phi3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("phi3") / "tiny-phi3"
    with_torch("make", str(folder))
    return folder


@pytest.fixture(scope="module")
def ids(phi3: Path) -> list[int]:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(phi3 / "tokenizer.model"))
    return [sp.bos_id(), *sp.encode(TEXT)]


@pytest.fixture(scope="module")
def expected(phi3: Path, ids: list[int]) -> np.ndarray:
    return np.array(json.loads(with_torch("score", str(phi3), *map(str, ids))))


def llama_cpp_logprobs(folder: Path, work: Path, ids: list[int]) -> np.ndarray:
    """`folder` converted by llama.cpp's converter, loaded in llama.cpp: the
    log-probability of each next token of `ids`."""
    from chat.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
    from chat.engine.llama import ModelSource

    work.mkdir(exist_ok=True)
    with converted(folder, work, lambda _msg: None) as gguf:
        with Engine(EngineConfig(ModelSource(gguf), n_ctx=128, n_threads=2)) as engine:
            assert engine.tokenize(TEXT) == ids, "llama.cpp must tokenize as SentencePiece does"
            request = GenerationRequest(ids, SamplingParams(temperature=0, seed=1), max_tokens=1, prompt_logprobs=True)
            chunks = list(engine.submit(request))
    assert list(work.iterdir()) == [], "the converted GGUF is removed after the block"
    (scored,) = [c.prompt_logprobs for c in chunks if c.prompt_logprobs]
    return np.array([p.chosen.logprob for p in scored[1:]])


@needs_torch
def test_a_phi3_checkpoint_scores_text_as_transformers_does(
    phi3: Path, ids: list[int], expected: np.ndarray, tmp_path: Path
) -> None:
    got = llama_cpp_logprobs(phi3, tmp_path / "work", ids)
    worst = float(np.abs(got - expected).max())
    print(f"largest difference from transformers: {worst:.2e} over {len(got)} tokens")
    assert worst < TOLERANCE, worst


@needs_torch
def test_a_wrong_weight_is_caught(phi3: Path, ids: list[int], expected: np.ndarray, tmp_path: Path) -> None:
    """The comparison can fail: the same checkpoint with one matrix
    (layer 1's attention output) scaled by 1.5 scores differently."""
    from safetensors.numpy import load_file, save_file

    wrong = tmp_path / "tiny-phi3"
    shutil.copytree(phi3, wrong)
    weights = load_file(str(wrong / "model.safetensors"))
    weights["model.layers.1.self_attn.o_proj.weight"] *= 1.5
    save_file(weights, str(wrong / "model.safetensors"), metadata={"format": "pt"})
    worst = float(np.abs(llama_cpp_logprobs(wrong, tmp_path / "work", ids) - expected).max())
    print(f"largest difference with a wrong weight: {worst:.2e}")
    assert worst > 10 * TOLERANCE, worst


@needs_torch
@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("architecture", "Model NoSuchModelForCausalLM is not supported"),
        ("tokenizer", "Missing"),
    ],
)
def test_a_checkpoint_the_converter_refuses_is_one_line_exit_2(
    phi3: Path, tmp_path: Path, change: str, says: str
) -> None:
    bad = tmp_path / "bad-model"
    shutil.copytree(phi3, bad)
    if change == "architecture":
        config = json.loads((bad / "config.json").read_text())
        config["architectures"] = ["NoSuchModelForCausalLM"]
        (bad / "config.json").write_text(json.dumps(config))
    else:
        (bad / "tokenizer.model").unlink()
    error = _conversion_error(bad, tmp_path, UsageError)
    message = str(error)
    assert error.exit_code == EXIT_USAGE
    assert says in message and "\n" not in message and "Traceback" not in message, message
    assert message.startswith(f"llama.cpp's converter cannot convert {bad} ("), message


@needs_torch
def test_other_failures_are_one_line_exit_1(phi3: Path, tmp_path: Path) -> None:
    """Weights that do not fit the config: the converter's own error, exit 1."""
    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "bad-model"
    shutil.copytree(phi3, bad)
    weights = load_file(str(bad / "model.safetensors"))
    del weights["model.layers.1.mlp.down_proj.weight"]
    weights["model.layers.1.mlp.surprise.weight"] = np.zeros((2, 2), np.float32)
    save_file(weights, str(bad / "model.safetensors"), metadata={"format": "pt"})
    error = _conversion_error(bad, tmp_path, BuildError)
    message = str(error)
    assert error.exit_code == EXIT_RUNTIME
    assert message.startswith(f"llama.cpp's converter failed on {bad} (Phi3ForCausalLM): "), message
    assert "\n" not in message and "Traceback" not in message, message


E = TypeVar("E", bound=Exception)


def _conversion_error(bad: Path, tmp_path: Path, kind: type[E]) -> E:
    """The error converting `bad` raises, of `kind`; the work folder it was
    given must be left empty."""
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(kind) as caught:
        with converted(bad, work, lambda _msg: None):
            pytest.fail("the block must not run")
    assert list(work.iterdir()) == []
    return caught.value


@needs_torch
def test_one_command_converts_quantizes_and_packs_with_a_bar_per_step(
    phi3: Path, portable_lib: Path, tmp_path: Path
) -> None:
    """`llamabin build PHI3_DIR --quant Q4_K_M` on a terminal: a bar while
    llama.cpp's converter writes, one while the quantizer counts tensors,
    and a file that answers."""
    import pexpect

    from tests.helpers import run_file

    out = tmp_path / "dist"
    argv = ["-m", "packager", "build", str(phi3), "--quant", "Q4_K_M", "--llama-lib", str(portable_lib)]
    child = pexpect.spawn(
        sys.executable, [*argv, "-o", f"{out}/"], cwd=str(ROOT), timeout=180, dimensions=(24, 120), encoding="utf-8"
    )
    child.expect(r"converting: +\d+%")
    child.expect(r"quantizing to Q4_K_M: +\d+%[^\r\n]*\| *\d+/\d+ \[")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    (exe,) = out.iterdir()
    assert exe.name == f"{phi3.name}.Q4_K_M-linux-x86_64"
    answer = run_file(exe, "--cli", "-p", "The file", "-n", "4", "--temp", "0", "--log-disable", cwd=tmp_path)
    assert answer.returncode == 0, answer.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "packager", "inspect", str(exe)], capture_output=True, text=True, cwd=ROOT
    ).stdout
    assert "architecture:     phi3" in shown, shown
    assert "quantization:     Q4_K_M" in shown, shown
