"""`llamabin build KERAS_PRESET_DIR`: tiny random keras-hub Gemma and Gemma 2
presets (GemmaCausalLM.save_to_preset, a SentencePiece vocabulary trained
here) convert without keras and score text in llama.cpp as Keras does;
other presets are refused in one line. Needs the keras-test extra."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Looked up, not imported: jax starts threads when imported, and the one
# os.fork() a test process makes (the CPU kernels' self-test, in
# chat.engine.backends.load) must come first (see `presets`).
_missing = [m for m in ("jax", "keras_hub", "h5py") if importlib.util.find_spec(m) is None]
if _missing:
    pytest.skip(f"needs the keras-test extra ({', '.join(_missing)} missing)", allow_module_level=True)

import sentencepiece  # noqa: E402

from chat.engine import Engine, EngineConfig, GenerationRequest, SamplingParams, backends  # noqa: E402
from chat.engine.llama import ModelSource  # noqa: E402
from packager.convert import write_gguf  # noqa: E402
from packager.keras_preset import VOCABULARY, converted, hf_config, read_weights  # noqa: E402
from payload.errors import UsageError  # noqa: E402
from tests.helpers import llamabin, run_file  # noqa: E402
from tests.kerasmodels import TinyGemma, keras_logits, make_preset  # noqa: E402  (keras itself loads lazily)

TEXT = "The file carries llama.cpp's CPU kernels for every x86-64 level."
# Keras computes in float32, llama.cpp with an F16 KV cache: their log-probs
# differ by about 1e-3 here (Gemma and Gemma 2). Gemma 2's parts each move
# them by far more (test_each_gemma2_part_counts).
TOLERANCE = 1e-2


def _say(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def presets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """name -> (preset folder, the Keras model saved there)."""
    backends.load()  # its self-test forks: before jax (imported below) has threads
    made = {}
    for name, shape in (("gemma", TinyGemma()), ("gemma2", TinyGemma(gemma2=True))):
        folder = tmp_path_factory.mktemp("keras") / f"tiny-{name}"
        made[name] = (folder, make_preset(folder, shape))
    return made


def _ids(folder: Path) -> list[int]:
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / VOCABULARY))
    return [sp.bos_id(), *sp.encode(TEXT)]


def _keras_logprobs(lm: Any, ids: list[int]) -> np.ndarray:
    """Keras's log-probability of each next token of `ids`."""
    logits = keras_logits(lm, ids)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return np.array([logp[t, ids[t + 1]] for t in range(len(ids) - 1)])


def _llama_logprobs(gguf: Path, ids: list[int]) -> np.ndarray:
    with Engine(EngineConfig(ModelSource(gguf), n_ctx=128, n_threads=2)) as engine:
        assert engine.tokenize(TEXT) == ids, "llama.cpp must tokenize as SentencePiece does"
        request = GenerationRequest(ids, SamplingParams(temperature=0, seed=1), max_tokens=1, prompt_logprobs=True)
        chunks = list(engine.submit(request))
    (scored,) = [c.prompt_logprobs for c in chunks if c.prompt_logprobs]
    return np.array([p.chosen.logprob for p in scored[1:]])


@pytest.mark.parametrize("name", ["gemma", "gemma2"])
def test_the_converted_preset_scores_text_as_keras_does(
    name: str, presets: dict[str, tuple[Path, Any]], tmp_path: Path
) -> None:
    """Gemma 2's post-norms, soft-caps (2 and 3 here, which the scores
    reach), sliding window (4 tokens, on even layers) and a head_dim that is
    not hidden / heads all count."""
    folder, lm = presets[name]
    ids = _ids(folder)
    assert len(ids) > 2 * TinyGemma().window
    expected = _keras_logprobs(lm, ids)
    work = tmp_path / "work"
    work.mkdir()
    with converted(folder, work, _say) as gguf:
        got = _llama_logprobs(gguf, ids)
    print(f"{name}: {np.abs(got - expected).max():.3g}")
    assert np.abs(got - expected).max() < TOLERANCE, np.abs(got - expected).max()
    assert list(work.iterdir()) == [], "the converted GGUF is removed after the block"


@pytest.mark.parametrize(
    "part, change",
    [
        ("everything Gemma 2 adds", {"architectures": ["GemmaForCausalLM"]}),
        ("the attention soft-cap", {"attn_logit_softcapping": 50.0}),  # Gemma 2's own value: no cap here
        ("the final soft-cap", {"final_logit_softcapping": 30.0}),
        ("the sliding window", {"sliding_window": 4096}),
    ],
)
def test_each_gemma2_part_counts(
    part: str, change: dict[str, Any], presets: dict[str, tuple[Path, Any]], tmp_path: Path
) -> None:
    """The comparison above can fail: the same weights written without one
    of Gemma 2's parts score outside its tolerance."""
    folder, lm = presets["gemma2"]
    ids = _ids(folder)
    config = hf_config(folder) | change
    weights = read_weights(folder, hf_config(folder))
    gguf = tmp_path / "wrong.gguf"
    write_gguf(
        gguf, folder, config, weights, sentencepiece.SentencePieceProcessor(model_file=str(folder / VOCABULARY)), np
    )
    off = np.abs(_llama_logprobs(gguf, ids) - _keras_logprobs(lm, ids)).max()
    print(f"without {part}: {off:.3g}")
    assert off > 10 * TOLERANCE, f"leaving out {part} moves the scores by only {off}"


def _copy(preset: Path, tmp_path: Path) -> Path:
    folder = tmp_path / preset.name
    shutil.copytree(preset, folder)
    return folder


def _refusal(folder: Path, tmp_path: Path) -> str:
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UsageError) as caught:
        with converted(folder, work, _say):
            pass
    assert list(work.iterdir()) == []
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_a_preset_of_another_keras_hub_class_names_the_supported_one(tmp_path: Path) -> None:
    import keras_hub

    folder = tmp_path / "tiny-llama"
    keras_hub.models.LlamaBackbone(
        vocabulary_size=64, num_layers=1, num_query_heads=2, num_key_value_heads=1, hidden_dim=16, intermediate_dim=32
    ).save_to_preset(str(folder))
    message = _refusal(folder, tmp_path)
    assert f"{folder} is a Keras preset of keras_hub>LlamaBackbone" in message
    assert "llamabin converts Keras presets of keras-hub's GemmaBackbone (Gemma and Gemma 2" in message


def test_a_preset_without_its_vocabulary_names_the_file(presets: dict[str, tuple[Path, Any]], tmp_path: Path) -> None:
    folder = _copy(presets["gemma"][0], tmp_path)
    (folder / VOCABULARY).unlink()
    message = _refusal(folder, tmp_path)
    assert (
        message
        == f"{folder} has no assets/tokenizer/vocabulary.spm (the SentencePiece vocabulary GemmaTokenizer saves)"
    )


def test_a_gemma_with_only_some_of_gemma2s_parts_is_refused(
    presets: dict[str, tuple[Path, Any]], tmp_path: Path
) -> None:
    """llama.cpp has no architecture for it: converting it anyway would score wrongly."""
    folder = _copy(presets["gemma2"][0], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["config"]["use_sliding_window_attention"] = False
    (folder / "config.json").write_text(json.dumps(config))
    message = _refusal(folder, tmp_path)
    assert "but not use_sliding_window_attention: llama.cpp runs Gemma (none of them) and Gemma 2" in message


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("num_layers", 10**9, "num_layers must be a whole number from 1 to 4096, not 1000000000"),
        ("num_query_heads", 0, "num_query_heads must be a whole number from 1 to 4096, not 0"),
        ("num_layers", 2.7, "num_layers must be a whole number from 1 to 4096, not 2.7"),
        ("hidden_dim", 32, "model.embed_tokens.weight is 320x64, but"),
    ],
)
def test_a_preset_config_its_weights_do_not_fit_is_refused(
    presets: dict[str, tuple[Path, Any]], tmp_path: Path, key: str, value: int, says: str
) -> None:
    folder = _copy(presets["gemma"][0], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["config"][key] = value
    (folder / "config.json").write_text(json.dumps(config))
    assert says in _refusal(folder, tmp_path)


def test_build_converts_quantizes_and_packs_a_preset(
    presets: dict[str, tuple[Path, Any]], portable_lib: Path, tmp_path: Path
) -> None:
    folder, _ = presets["gemma2"]
    out = tmp_path / "dist"
    result = llamabin("build", str(folder), "--quant", "Q4_K_M", "--llama-lib", str(portable_lib), "-o", f"{out}/")
    if "does not convert Keras presets yet" in result.stderr:
        pytest.skip("packager.inputs still refuses Keras presets: packager.keras_preset is not wired in yet")
    assert result.returncode == 0, result.stderr
    exe = out / f"{folder.name}.Q4_K_M-linux-x86_64"
    assert result.stdout.strip() == str(exe)
    assert sorted(p.name for p in out.iterdir()) == [exe.name]
    answers = [
        run_file(exe, "--cli", "-p", "The file", "-n", "8", "--temp", "0", "--log-disable", cwd=tmp_path)
        for _ in range(2)
    ]
    assert answers[0].returncode == 0, answers[0].stderr
    assert answers[0].stdout.strip()
    assert answers[1].stdout == answers[0].stdout, "--temp 0 must answer the same each time"
    shown = llamabin("inspect", str(exe)).stdout
    assert "architecture:     gemma2" in shown
    assert "quantization:     Q4_K_M" in shown
    assert "template:         gemma (chosen by architecture)" in shown  # a Keras preset has no template of its own


def test_bfloat16_weights_are_read_as_keras_holds_them(tmp_path: Path) -> None:
    """keras stores bfloat16 as raw 2-byte values marked by an attribute
    (h5py has no such type): they widen to float32 exactly."""
    import keras
    import keras_hub

    backbone = keras_hub.models.GemmaBackbone(**TinyGemma(gemma2=True).backbone_config(), dtype="bfloat16")
    folder = tmp_path / "tiny-bf16"
    backbone.save_to_preset(str(folder))
    weights = read_weights(folder, hf_config(folder))

    def f32(variable: Any) -> np.ndarray:
        return np.asarray(keras.ops.cast(variable, "float32"))

    assert np.array_equal(weights["model.embed_tokens.weight"], f32(backbone.get_layer("token_embedding").embeddings))
    query = f32(backbone.get_layer("decoder_block_1").attention.query_dense.kernel)  # (heads, hidden, head_dim)
    expected = query.transpose(0, 2, 1).reshape(-1, query.shape[1])  # HF's (heads * head_dim, hidden)
    assert np.array_equal(weights["model.layers.1.self_attn.q_proj.weight"], expected)
    assert weights["model.layers.1.self_attn.q_proj.weight"].dtype == np.float32
