"""The 64-byte footer that ends every file carrying a payload.

A payload is a big blob (the GGUF model) plus a small JSON manifest stored
inside a file, described by a fixed-size footer that ends the file:

    ... [pad][blob, ALIGNMENT-aligned][manifest area: manifest JSON, spare] ... [footer, 64 bytes]

The footer is the last FOOTER_SIZE bytes of the file so that a reader finds
everything with one seek and one 64-byte read, whatever the blob's size:
nothing is ever scanned.  See docs/payload-layout.md for where the packager
places the blob inside a PyInstaller executable and why.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

MAGIC = b"LLAMABIN"
"""Last 8 bytes of every file that carries a payload."""

VERSION = 1
"""Footer format version; readers refuse versions they do not know."""

ALIGNMENT = 65536
"""The blob starts at a multiple of this file offset.

llama.cpp mmaps the GGUF in place and needs at least 32-byte alignment; 64 KiB
also matches the largest common page size (arm64 with 64 KiB pages), so the
mapping can start exactly at the blob on every platform.
"""

MANIFEST_RESERVE = 65536
"""Spare bytes a build leaves after the manifest, at least, in the manifest
area (from the blob's end to what follows: the PyInstaller archive, or the
footer of a sidecar).  `llamabin set` writes a new manifest there in place,
beside the old one, so the weights are never moved (docs/payload-layout.md)."""

MAX_MANIFEST_SIZE = 16 * 1024 * 1024
"""A manifest larger than this is taken as corruption rather than read into memory."""

# Little-endian, no implicit padding.  The identifying fields (size, version,
# magic) come last so that a future, larger footer can still be recognised
# from the last 16 bytes of the file.
_FOOTER = struct.Struct("<QQQQQIIII8s")
FOOTER_SIZE = _FOOTER.size  # 64
_CRC_FIELD = slice(44, 48)  # where footer_crc32 sits inside the packed footer
_TAIL = struct.Struct("<II8s")  # footer_size, version, magic: the last 16 bytes


class LayoutError(ValueError):
    """The file claims to carry a payload but the payload is damaged or unknown."""

    path: Path | None = None
    """The file whose payload it is, when the finder knows (payload.find)."""


@dataclass(frozen=True)
class Footer:
    """Where the blob and the manifest are, as absolute file offsets (all 64-bit)."""

    blob_offset: int
    blob_size: int
    manifest_offset: int
    manifest_size: int
    file_size: int
    """Size of the whole file, footer included: tells truncation from a damaged footer."""
    manifest_crc32: int = 0
    version: int = VERSION

    def pack(self) -> bytes:
        """Serialise to exactly FOOTER_SIZE bytes, with a CRC-32 of the footer itself."""
        for name in (
            "blob_offset",
            "blob_size",
            "manifest_offset",
            "manifest_size",
            "file_size",
        ):
            value = getattr(self, name)
            if not 0 <= value < 2**64:
                raise LayoutError(f"footer field {name}={value} does not fit in 64 bits")
        raw = bytearray(
            _FOOTER.pack(
                self.blob_offset,
                self.blob_size,
                self.manifest_offset,
                self.manifest_size,
                self.file_size,
                self.manifest_crc32 & 0xFFFFFFFF,
                0,  # footer_crc32, filled below
                FOOTER_SIZE,
                self.version,
                MAGIC,
            )
        )
        raw[_CRC_FIELD] = struct.pack("<I", zlib.crc32(raw))
        return bytes(raw)

    @classmethod
    def unpack(cls, data: bytes) -> Footer:
        """Parse a footer; LayoutError names what is wrong (magic, version, size, CRC)."""
        if len(data) < _TAIL.size:
            raise LayoutError(f"footer truncated: {len(data)} bytes, need {FOOTER_SIZE}")
        footer_size, version, magic = _TAIL.unpack(data[-_TAIL.size :])
        if magic != MAGIC:
            raise LayoutError(f"bad footer magic {magic!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise LayoutError(f"unsupported payload version {version} (this build reads {VERSION})")
        if footer_size != FOOTER_SIZE or len(data) != FOOTER_SIZE:
            raise LayoutError(
                f"footer truncated or malformed: {len(data)} bytes, declares {footer_size}, expected {FOOTER_SIZE}"
            )
        fields = _FOOTER.unpack(data)
        blank = bytearray(data)
        blank[_CRC_FIELD] = b"\0\0\0\0"
        if zlib.crc32(blank) != fields[6]:
            raise LayoutError("footer checksum mismatch: the footer is corrupted")
        return cls(
            blob_offset=fields[0],
            blob_size=fields[1],
            manifest_offset=fields[2],
            manifest_size=fields[3],
            file_size=fields[4],
            manifest_crc32=fields[5],
            version=version,
        )

    def with_manifest(self, manifest: bytes) -> Footer:
        """Copy of this footer whose manifest CRC matches ``manifest``."""
        return replace(self, manifest_size=len(manifest), manifest_crc32=zlib.crc32(manifest))


def align_up(value: int, alignment: int = ALIGNMENT) -> int:
    """Smallest multiple of ``alignment`` that is >= ``value``."""
    return -(-value // alignment) * alignment


def read_footer(f: BinaryIO, size: int) -> Footer | None:
    """The footer of the open file ``f`` of ``size`` bytes, checked against
    that size, or None when its last bytes are not a llamabin footer."""
    head = f.read(64)
    if size >= _TAIL.size:
        f.seek(size - _TAIL.size)
        if _TAIL.unpack(f.read(_TAIL.size))[2] == MAGIC:
            f.seek(max(0, size - FOOTER_SIZE))
            footer = Footer.unpack(f.read(FOOTER_SIZE))
            check_bounds(footer, size)
            return footer
    # No footer.  For an ELF file the section header table normally ends the
    # file, and in a llamabin executable exactly FOOTER_SIZE bytes follow it:
    # use that to tell a damaged or cut-off payload from a plain executable.
    elf_end = _elf_end(head)
    if elf_end is not None and elf_end > size:
        raise LayoutError(f"file is truncated: {size} bytes, its ELF headers point past the end")
    if elf_end is not None and elf_end + FOOTER_SIZE == size:
        raise LayoutError("the last 64 bytes look like a llamabin footer with a bad magic")
    return None


def check_bounds(footer: Footer, size: int) -> None:
    """Every region the footer names must lie inside this file, before the footer."""
    if footer.file_size != size:
        what = "truncated" if size < footer.file_size else "longer than recorded (bytes inserted)"
        raise LayoutError(f"file is {what}: {size} bytes, footer records {footer.file_size}")
    limit = size - FOOTER_SIZE
    for name, offset, length in (
        ("blob", footer.blob_offset, footer.blob_size),
        ("manifest", footer.manifest_offset, footer.manifest_size),
    ):
        if offset + length > limit:
            raise LayoutError(f"{name} [{offset}, +{length}) lies past the end: file truncated")
    if footer.blob_offset % ALIGNMENT:
        raise LayoutError(f"blob offset {footer.blob_offset} is not {ALIGNMENT}-aligned")
    if footer.manifest_size > MAX_MANIFEST_SIZE:
        raise LayoutError(f"manifest of {footer.manifest_size} bytes is implausibly large")
    blob_end = footer.blob_offset + footer.blob_size
    manifest_end = footer.manifest_offset + footer.manifest_size
    if footer.manifest_offset < blob_end and footer.blob_offset < manifest_end:
        raise LayoutError("blob and manifest overlap: the footer is corrupted")


def _elf_end(head: bytes) -> int | None:
    """Where the section header table of the ELF file starting with ``head`` ends, if any."""
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    endian = "<" if head[5] == 1 else ">"
    if head[4] == 2:  # ELFCLASS64
        (shoff,) = struct.unpack_from(endian + "Q", head, 0x28)
        shentsize, shnum = struct.unpack_from(endian + "HH", head, 0x3A)
    else:
        (shoff,) = struct.unpack_from(endian + "I", head, 0x20)
        shentsize, shnum = struct.unpack_from(endian + "HH", head, 0x2E)
    if not shoff:
        return None
    return int(shoff + shentsize * shnum)
