"""What a GGUF file says about itself, read from its header.

The packager checks the file here, before spending time on a build: a
file that is not a GGUF, or whose tensors run past its end (a truncated
download), is refused with one clear line.

The header is walked here with `struct` (the `gguf` package gives the
value and tensor types), keeping only the scalar and string values: the
`gguf` package's GGUFReader builds an object for every vocabulary entry,
which took 3 to 15 s of a build for SmolLM2's 49,152 tokens. Big-endian
and version-1 files, rare, still go through GGUFReader.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packager.errors import BuildError
from packager.numbers import whole
from payload.errors import UsageError


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
    except FileNotFoundError:  # a usage error (exit 2), as the runtime's -m says it
        raise UsageError(f"model file not found: {path}") from None
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc.strerror}") from None
    if magic != b"GGUF":
        raise BuildError(f"not a GGUF model file: {path}")
    if _big_endian(path):
        raise BuildError(f"{path} is a big-endian GGUF: llama.cpp reads little-endian ones on this machine")
    reader = _fast_header(path) or _open(path)
    _check_tensor_bounds(reader, size, path)
    kind = _field(reader, "general.type")
    if kind == "adapter":
        raise UsageError(
            f"{path} is a LoRA adapter, not a model: build the base model's file and run it with --lora {path.name}"
        )
    if kind == "imatrix":
        raise UsageError(f"{path} is an importance matrix, not a model: give it to --imatrix with the model")
    if not reader.tensors:
        raise UsageError(f"{path} holds no tensors: it is not a model")
    arch = _field(reader, "general.architecture") or "unknown"
    return GGUFInfo(
        path=path,
        size=size,
        name=_field(reader, "general.name") or path.stem,
        architecture=arch,
        quantization=quantization(reader),
        context_length=_whole(reader, f"{arch}.context_length", path),
        chat_template=_field(reader, "tokenizer.chat_template"),
        license=_field(reader, "general.license"),
    )


def _big_endian(path: Path) -> bool:
    """GGUF has no byte-order mark: a version that reads as 2 or 3 only
    byte-swapped is a big-endian file (gguf's own reader tells them so)."""
    with path.open("rb") as f:
        f.seek(4)
        raw = f.read(4)
    return len(raw) == 4 and struct.unpack("<I", raw)[0] not in (2, 3) and struct.unpack(">I", raw)[0] in (2, 3)


def _open(path: Path):  # type: ignore[no-untyped-def]
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except (ValueError, IndexError, OSError) as exc:
        raise BuildError(f"{path} is not a valid GGUF (truncated or corrupted): {exc}") from None


class _Scalar:
    """A header value, shaped like GGUFReader's fields for `_field`."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def contents(self) -> Any:
        return self.value


@dataclass(frozen=True)
class _Tensor:
    data_offset: int
    n_bytes: int
    tensor_type: int  # ggml's type, as GGUFReader's tensors name it


@dataclass
class _Header:
    fields: dict[str, _Scalar]
    tensors: list[_Tensor]


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _fast_header(path: Path) -> _Header | None:
    """The header's scalar and string values and the tensors' extents
    (None: a layout this walk leaves to GGUFReader)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            (version,) = struct.unpack_from("<I", mm, 4)
            if version not in (2, 3):
                return None
            n_tensors, n_kv = struct.unpack_from("<QQ", mm, 8)
            pos = 24
            u64 = struct.Struct("<Q").unpack_from

            def string() -> str:
                nonlocal pos
                (n,) = struct.unpack_from("<Q", mm, pos)
                if pos + 8 + n > len(mm):
                    raise ValueError("a string runs past the end of the file")
                text = mm[pos + 8 : pos + 8 + n].decode("utf-8", errors="replace")
                pos += 8 + n
                return text

            def value(vtype: int) -> Any:
                nonlocal pos
                if vtype in _SCALARS:
                    fmt = _SCALARS[vtype]
                    (v,) = struct.unpack_from(fmt, mm, pos)
                    pos += struct.calcsize(fmt)
                    return v
                if vtype == _STRING:
                    return string()
                if vtype == _ARRAY:
                    etype, count = struct.unpack_from("<IQ", mm, pos)
                    pos += 12
                    if etype in _SCALARS:  # skipped whole: nothing the packager reads is an array
                        pos += count * struct.calcsize(_SCALARS[etype])
                    elif etype == _STRING:  # the vocabulary: only the lengths are read
                        for _ in range(count):
                            pos += 8 + u64(mm, pos)[0]
                    else:
                        for _ in range(count):
                            value(etype)
                    if pos > len(mm):
                        raise ValueError("an array runs past the end of the file")
                    return None
                raise ValueError(f"unknown value type {vtype}")

            fields: dict[str, _Scalar] = {}
            for _ in range(n_kv):
                key = string()
                (vtype,) = struct.unpack_from("<I", mm, pos)
                pos += 4
                v = value(vtype)
                if v is not None:
                    fields[key] = _Scalar(v)
            infos = []
            for _ in range(n_tensors):
                string()
                (n_dims,) = struct.unpack_from("<I", mm, pos)
                dims = struct.unpack_from(f"<{n_dims}Q", mm, pos + 4)
                ggml_type, offset = struct.unpack_from("<IQ", mm, pos + 4 + 8 * n_dims)
                pos += 4 + 8 * n_dims + 12
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
                elements = 1
                for d in dims:
                    elements *= d
                infos.append((offset, elements * type_size // block, ggml_type))
            raw = fields["general.alignment"].value if "general.alignment" in fields else 32
            alignment = whole(raw, 1, 2**31)
            if alignment is None or alignment & (alignment - 1):
                raise ValueError(f"general.alignment {raw!r} is not a power of two")
            start = -(-pos // alignment) * alignment
    except (struct.error, ValueError, KeyError, OverflowError, MemoryError, RecursionError) as exc:
        raise BuildError(f"{path} is not a valid GGUF (truncated or corrupted): {exc}") from None
    return _Header(fields, [_Tensor(start + offset, n_bytes, kind) for offset, n_bytes, kind in infos])


def _check_tensor_bounds(reader, size: int, path: Path) -> None:  # type: ignore[no-untyped-def]
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > size:
        raise BuildError(f"{path} is truncated: its tensors need {end} bytes, the file has {size}")


def _whole(reader, key: str, path: Path) -> int:  # type: ignore[no-untyped-def]
    """A whole-number field (0 if absent); llama.cpp refuses a model whose
    field has another type, so the packer does too."""
    field = reader.fields.get(key)
    value = None if field is None else field.contents()
    if value is None:
        return 0
    checked = whole(value, 0, 2**64 - 1)
    if checked is None:
        raise BuildError(f"{path} is not a valid GGUF: {key} is {value!r}, not a whole number")
    return checked


def _field(reader, key: str) -> str | None:  # type: ignore[no-untyped-def]
    field = reader.fields.get(key)
    if field is None:
        return None
    value = field.contents()
    return None if value is None else str(value)


def quantization(reader) -> str:  # type: ignore[no-untyped-def]
    """The weights' type name (Q4_K_M, F16, ...) of a GGUF reader's model."""
    from gguf.constants import LlamaFileType

    raw = _field(reader, "general.file_type")
    try:
        return LlamaFileType(int(raw or "")).name.removeprefix("MOSTLY_")
    except ValueError:
        return _most_tensors_type(reader)


def _most_tensors_type(reader) -> str:  # type: ignore[no-untyped-def]
    """Without general.file_type (some converters leave it out), the type
    most tensors have: a model whose weights are F32 is an F32 model."""
    from collections import Counter

    from gguf.constants import GGMLQuantizationType

    kinds = Counter(int(t.tensor_type) for t in reader.tensors)
    if not kinds:
        return "unknown"
    try:
        return GGMLQuantizationType(kinds.most_common(1)[0][0]).name
    except ValueError:
        return "unknown"
