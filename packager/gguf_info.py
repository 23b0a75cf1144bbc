"""What a GGUF file says about itself, read with the `gguf` package.

The packager checks the file here, before spending minutes on a build: a
file that is not a GGUF, or whose tensors run past its end (a truncated
download), is refused with one clear line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packager.errors import BuildError


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    size: int
    name: str
    architecture: str
    quantization: str
    context_length: int
    chat_template: str | None
    license: str | None


def read_gguf_info(path: Path) -> GGUFInfo:
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise BuildError(f"model file not found: {path}") from None
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc.strerror}") from None
    if magic != b"GGUF":
        raise BuildError(f"not a GGUF model file: {path}")
    reader = _open(path)
    _check_tensor_bounds(reader, size, path)
    arch = _field(reader, "general.architecture") or "unknown"
    return GGUFInfo(
        path=path,
        size=size,
        name=_field(reader, "general.name") or path.stem,
        architecture=arch,
        quantization=_quantization(reader),
        context_length=int(_field(reader, f"{arch}.context_length") or 0),
        chat_template=_field(reader, "tokenizer.chat_template"),
        license=_field(reader, "general.license"),
    )


def _open(path: Path):  # type: ignore[no-untyped-def]
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except (ValueError, IndexError, OSError) as exc:
        raise BuildError(f"{path} is not a valid GGUF (truncated or corrupted): {exc}") from None


def _check_tensor_bounds(reader, size: int, path: Path) -> None:  # type: ignore[no-untyped-def]
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > size:
        raise BuildError(f"{path} is truncated: its tensors need {end} bytes, the file has {size}")


def _field(reader, key: str) -> str | None:  # type: ignore[no-untyped-def]
    field = reader.fields.get(key)
    if field is None:
        return None
    value = field.contents()
    return None if value is None else str(value)


def _quantization(reader) -> str:  # type: ignore[no-untyped-def]
    from gguf.constants import LlamaFileType

    raw = _field(reader, "general.file_type")
    try:
        return LlamaFileType(int(raw or "")).name.removeprefix("MOSTLY_")
    except ValueError:
        return "unknown"
