"""Writing GGUFs with the `gguf` library: what the build's steps (and the
tests' model makers) share."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def scratch_path(workdir: Path, source: Path, step: str) -> Path:
    """Where a build step (convert, lora, Q4_K_M, ...) writes its GGUF: a
    hidden file next to the output, named after the source and the step."""
    name = source.name if source.is_dir() else source.stem
    return workdir / f".{name.lstrip('.')}.{step}.{os.getpid()}.gguf"


def copy_metadata(reader: Any, writer: Any, skip: Iterable[str] = ()) -> None:
    """Every key/value of `reader` into `writer`, but the header's own
    fields, the architecture (the writer is made with it) and `skip`."""
    import gguf

    left_out = {"general.architecture", *skip}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in left_out:
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        if gguf.GGUFValueType.STRING in (kind, sub):
            # Strings as the bytes they are: a vocabulary may hold a token
            # that is not valid UTF-8, which llama.cpp takes and decoding refuses.
            value: Any = [bytes(field.parts[i]) for i in field.data]
            if kind == gguf.GGUFValueType.STRING:
                value = value[0]
        else:
            value = field.contents()
        writer.add_key_value(key, value, kind, sub)


def write_out(writer: Any) -> None:
    """Header, metadata and tensors to the file, then close it, with the
    `gguf` library's own byte bar when stderr is a terminal."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=sys.stderr.isatty())
    writer.close()
