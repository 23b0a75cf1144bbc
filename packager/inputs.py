"""What `llamabin build` was given, when it is not a GGUF model: a checkpoint
it converts (packager.convert, or llama.cpp's own converter through
packager.llama_converter) or a Keras preset (packager.keras_preset), or
one line that names it and says what to do, before any work (exit 2)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from packager import convert, keras_preset, llama_converter
from packager.convert import SUPPORTED, architecture, load_config, read_json
from payload.errors import UsageError

# A converter: (folder, workdir, say) -> a context holding the GGUF it wrote.
Converter = Callable[[Path, Path, Callable[[str], None]], AbstractContextManager[Path]]

CONVERT = "llama.cpp's convert_hf_to_gguf.py"


def check_regular_file(path: Path) -> None:
    """An input file that exists must be a regular one: a FIFO or a device
    would block the read, or never end it."""
    if path.exists() and not path.is_file():
        raise UsageError(f"{path} is not a regular file")


def check_model_input(path: Path) -> Converter | None:
    """The converter a folder needs (None: `path` is a GGUF file), or a
    message naming what it is and what to do with it; a missing model is
    found here, before any runtime is prepared for it."""
    if not path.exists():
        raise UsageError(f"model file not found: {path}")  # as packager.gguf_info says it
    if not path.is_dir():
        check_regular_file(path)
        return None
    # A config.json that is there but is not a JSON object is named as such,
    # not taken for a missing one.
    config = load_config(path) if (path / "config.json").exists() else {}
    if (path / "adapter_config.json").is_file():
        base = read_json(path / "adapter_config.json").get("base_model_name_or_path") or "its base model"
        raise UsageError(
            f"{path} is a PEFT LoRA adapter (for {base}): convert it with llama.cpp's convert_lora_to_gguf.py"
            " --base BASE_DIR, then run the file with --lora ADAPTER.gguf"
        )
    arch = architecture(path)
    if arch is not None:
        if arch in SUPPORTED:
            return convert.converted  # numpy only: no torch
        if llama_converter.available() is None:
            return llama_converter.converted  # it says itself what llama.cpp's converter refuses
        raise UsageError(
            f"{path} is a Hugging Face checkpoint ({arch}); llamabin converts {', '.join(SUPPORTED)},"
            f" and others with llama.cpp's converter after {llama_converter.EXTRA}; or convert this one with"
            f" {CONVERT} {path} --outtype f16, then: llamabin build MODEL-F16.gguf --quant Q4_K_M"
        )
    if keras_preset.is_keras_preset(path):
        keras_preset.check_preset(path)  # a GemmaBackbone with its vocabulary and weights, or one line saying not
        return keras_preset.converted
    if config:
        raise UsageError(f"{path} has a config.json without `architectures`: {CONVERT} needs it to tell the model")
    raise UsageError(f"{path} is a folder, not a GGUF model file or a checkpoint (it has no config.json)")
