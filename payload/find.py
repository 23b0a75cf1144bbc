"""Finding a file's payload: inside the file, or in its sidecar `NAME.gguf`."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payload.footer import Footer, LayoutError, read_footer
from payload.manifest import check_manifest, decode_manifest


@dataclass(frozen=True)
class Payload:
    """A validated payload: where the blob is, and the parsed manifest."""

    path: Path
    footer: Footer
    manifest: dict[str, Any]

    @property
    def blob_offset(self) -> int:
        return self.footer.blob_offset

    @property
    def blob_size(self) -> int:
        return self.footer.blob_size


def sidecar_path(executable: str | os.PathLike[str]) -> Path:
    """Where an executable's weights live when they are beside it, not inside."""
    exe = Path(executable)
    return exe.with_name(exe.name.removesuffix(".exe") + ".gguf")


def read_payload(path: str | os.PathLike[str]) -> Payload | None:
    """Find and validate the payload of ``path`` by reading its last 64 bytes.

    Returns None when the file has no payload at all (a plain PyInstaller
    executable, the Python interpreter, ...).  Raises LayoutError when it has
    one that cannot be trusted: truncated, corrupted or of an unknown version.
    Costs a few small reads whatever the file's size.  The manifest is
    decoded, not checked against the schema: find_payload does that.
    """
    file_path = Path(path)
    with open(file_path, "rb") as f:
        footer = read_footer(f, os.fstat(f.fileno()).st_size)
        if footer is None:
            return None
        f.seek(footer.manifest_offset)
        raw = f.read(footer.manifest_size)
    if len(raw) != footer.manifest_size:
        raise LayoutError(f"{file_path}: manifest truncated")
    if zlib.crc32(raw) != footer.manifest_crc32:
        raise LayoutError(f"{file_path}: manifest checksum mismatch: the manifest is corrupted")
    return Payload(path=file_path, footer=footer, manifest=decode_manifest(raw))


def find_payload(path: str | os.PathLike[str]) -> Payload | None:
    """The payload of ``path``, or of its sidecar when the file itself has
    none; None when neither carries one (or neither exists).

    The manifest is checked against the schema.  LayoutError (and its
    ManifestError) and OSError name the file that failed in ``path`` and
    ``filename``, so the caller can say whose it is."""
    exe = Path(path)
    for candidate in (exe, sidecar_path(exe)):
        if not candidate.is_file():
            continue
        try:
            payload = read_payload(candidate)
            if payload is not None:
                check_manifest(payload.manifest)
        except LayoutError as exc:
            exc.path = candidate
            raise
        if payload is not None:
            return payload
    return None
