"""A sidecar `NAME.gguf` for platforms that cap executables at 4 GiB.

The sidecar uses the same footer as an executable with the weights inside
([blob][manifest][footer]), so the runtime reads either the same way. The
blob sits at offset 0, which is aligned, and the file is still a valid GGUF
for other tools: they stop reading at the GGUF's own end.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from packager.layout import FOOTER_SIZE, Footer, decode_manifest

CHUNK = 1 << 20


def write_sidecar(blob: Path, out: Path, manifest: bytes, progress: Callable[[int], None] | None = None) -> Footer:
    decode_manifest(manifest)  # refuse a manifest the runtime would refuse
    size = blob.stat().st_size
    with blob.open("rb") as src, out.open("wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            if progress:
                progress(len(chunk))
        footer = Footer(
            blob_offset=0,
            blob_size=size,
            manifest_offset=size,
            manifest_size=len(manifest),
            file_size=size + len(manifest) + FOOTER_SIZE,
        ).with_manifest(manifest)
        dst.write(manifest)
        dst.write(footer.pack())
    shutil.copymode(blob, out)
    return footer
