"""A sidecar `NAME.gguf` for platforms that cap executables at 4 GiB.

The sidecar uses the same footer as an executable with the weights inside
([blob][manifest][spare][footer]), so the runtime reads either the same way.
The spare (MANIFEST_RESERVE zero bytes) is where `llamabin set` writes a
new manifest in place. The
blob sits at offset 0, which is aligned, and the file is still a valid GGUF
for other tools: they stop reading at the GGUF's own end.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from payload.footer import FOOTER_SIZE, MANIFEST_RESERVE, Footer
from payload.manifest import decode_manifest

CHUNK = 1 << 20


def write_sidecar(blob: Path, out: Path, manifest: bytes, progress: Callable[[int], None] | None = None) -> Footer:
    decode_manifest(manifest)  # refuse a manifest the runtime would refuse
    size = blob.stat().st_size
    with blob.open("rb") as src, out.open("wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            if progress:
                progress(len(chunk))
        footer, tail = sidecar_tail(size, manifest)
        dst.write(tail)
    shutil.copymode(blob, out)
    return footer


def sidecar_tail(blob_size: int, manifest: bytes) -> tuple[Footer, bytes]:
    """What follows a sidecar's weights: the manifest, the spare, the footer."""
    footer = Footer(
        blob_offset=0,
        blob_size=blob_size,
        manifest_offset=blob_size,
        manifest_size=len(manifest),
        file_size=blob_size + len(manifest) + MANIFEST_RESERVE + FOOTER_SIZE,
    ).with_manifest(manifest)
    return footer, manifest + bytes(MANIFEST_RESERVE) + footer.pack()
