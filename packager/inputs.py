"""What `llamabin build` was given, when it is not a GGUF model: a checkpoint
it converts (packager.convert, or llama.cpp's own converter through
packager.llama_converter) or a Keras preset (packager.keras_preset), or
one line that names it and says what to do, before any work (exit 2)."""

from __future__ import annotations

from pathlib import Path

from packager.convert import SUPPORTED, architecture, read_json
from packager.errors import BuildError
from packager.keras_preset import check_preset, is_keras_preset
from packager.llama_converter import EXTRA
from packager.llama_converter import available as llama_converter_missing
from payload.errors import UsageError

CONVERT = "llama.cpp's convert_hf_to_gguf.py"


def check_model_input(path: Path) -> None:
    """Refuse a checkpoint folder or an adapter with a message naming it,
    and a missing model before any runtime is prepared for it."""
    if not path.exists():
        raise BuildError(f"model file not found: {path}")  # as packager.gguf_info says it
    if not path.is_dir():
        return
    config = read_json(path / "config.json")
    if (path / "adapter_config.json").is_file():
        base = read_json(path / "adapter_config.json").get("base_model_name_or_path") or "its base model"
        raise UsageError(
            f"{path} is a PEFT LoRA adapter (for {base}): convert it with llama.cpp's convert_lora_to_gguf.py"
            " --base BASE_DIR, then run the file with --lora ADAPTER.gguf"
        )
    arch = architecture(path)
    if arch is not None:
        if arch in SUPPORTED:
            return  # packager.convert takes it from here
        if llama_converter_missing() is None:
            return  # packager.llama_converter takes it from here; it says what llama.cpp's converter refuses
        raise UsageError(
            f"{path} is a Hugging Face checkpoint ({arch}); llamabin converts {', '.join(SUPPORTED)},"
            f" and others with llama.cpp's converter after {EXTRA}; or convert this one with"
            f" {CONVERT} {path} --outtype f16, then: llamabin build MODEL-F16.gguf --quant Q4_K_M"
        )
    if is_keras_preset(path):
        check_preset(path)  # a GemmaBackbone with its vocabulary and weights, or one line saying what is not
        return  # packager.keras_preset takes it from here
    if config:
        raise UsageError(f"{path} has a config.json without `architectures`: {CONVERT} needs it to tell the model")
    raise UsageError(f"{path} is a folder, not a GGUF model file or a checkpoint (it has no config.json)")
