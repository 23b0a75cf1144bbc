"""`llamabin build` given something other than a GGUF model: a checkpoint
folder or an adapter is named, with what to do, in one line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager.llama_converter import available as llama_converter_missing
from tests.ggufs import lora_adapter
from tests.helpers import llamabin


def _folder(tmp_path: Path, files: dict[str, object]) -> Path:
    folder = tmp_path / "input"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content))
    return folder


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param(
            {"config.json": {"architectures": ["GPT2LMHeadModel"]}, "model.safetensors": {}},
            "is a Hugging Face checkpoint (GPT2LMHeadModel); llamabin converts LlamaForCausalLM,"
            " MistralForCausalLM, GemmaForCausalLM, Gemma2ForCausalLM, and others with llama.cpp's converter after"
            " pip install 'llamabin[convert-torch]'; or convert this one with llama.cpp's convert_hf_to_gguf.py",
            marks=pytest.mark.skipif(
                llama_converter_missing() is None,
                reason="with torch, llama.cpp's converter takes it (tests/test_llama_converter.py)",
            ),
        ),
        (
            {"config.json": {"architectures": ["LlamaForCausalLM"]}, "model.safetensors": {}},
            "has no tokenizer.model (the SentencePiece tokenizer this converter reads)",
        ),
        (
            {"adapter_config.json": {"base_model_name_or_path": "unsloth/gemma-2-2b", "r": 16}},
            "is a PEFT LoRA adapter (for unsloth/gemma-2-2b): convert it with llama.cpp's convert_lora_to_gguf.py",
        ),
        (
            {
                "metadata.json": {"keras_version": "3.5.0"},
                "config.json": {"registered_name": "keras_hub>LlamaBackbone"},
            },
            "is a Keras preset of keras_hub>LlamaBackbone; llamabin converts Keras presets of keras-hub's GemmaBackbone",
        ),
        ({"config.json": {"model_type": "llama"}}, "has a config.json without `architectures`"),
        ({"config.json": ["LlamaForCausalLM"]}, "config.json is not a JSON object"),
        ({}, "is a folder, not a GGUF model file or a checkpoint (it has no config.json)"),
    ],
)
def test_a_folder_is_named_for_what_it_is(tmp_path: Path, files: dict[str, object], message: str) -> None:
    folder = _folder(tmp_path, files)
    result = llamabin("build", str(folder), "-o", f"{tmp_path / 'dist'}/")
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "dist").exists() or list((tmp_path / "dist").iterdir()) == []


def test_an_adapter_given_as_the_model_points_to_lora(smollm2_f16: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter.gguf"
    lora_adapter(smollm2_f16, adapter)
    result = llamabin("build", str(adapter), "-o", f"{tmp_path / 'dist'}/")
    assert result.returncode == 2
    assert (
        f"{adapter} is a LoRA adapter, not a model: build the base model's file and run it with --lora adapter.gguf"
        in (result.stderr)
    )
    assert "Traceback" not in result.stderr
