"""The on-disk format of a llamabin payload, shared by the packager and the runtime.

A payload is a big blob (the GGUF model) plus a small JSON manifest stored
inside a file, described by a fixed-size footer that ends the file:

    ... [pad][blob, ALIGNMENT-aligned][manifest JSON][pad] ... [footer, 64 bytes]

The footer is the last FOOTER_SIZE bytes of the file so that a reader finds
everything with one seek and one 64-byte read, whatever the blob's size:
nothing is ever scanned.  See docs/payload-layout.md for where the packager
places the blob inside a PyInstaller executable and why.

The manifest's schema (``check_manifest``) and the runtime flags a file may
carry as built-in defaults (``BAKED_FLAGS``) live here too, so that the
packager and the runtime enforce one rule.

The runtime imports this module from inside the frozen app, so it must stay
standard-library only and must not import anything from ``chat``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

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

MAX_MANIFEST_SIZE = 16 * 1024 * 1024
"""A manifest larger than this is taken as corruption rather than read into memory."""

MAX_MANIFEST_DEPTH = 16
"""Deepest nesting of lists and objects a manifest may have (ours has 3).

json.loads recurses, so a file of nested brackets would otherwise end in a
RecursionError, and so would anything that walks the result later."""

# Little-endian, no implicit padding.  The identifying fields (size, version,
# magic) come last so that a future, larger footer can still be recognised
# from the last 16 bytes of the file.
_FOOTER = struct.Struct("<QQQQQIIII8s")
FOOTER_SIZE = _FOOTER.size  # 64
_CRC_FIELD = slice(44, 48)  # where footer_crc32 sits inside the packed footer
_TAIL = struct.Struct("<II8s")  # footer_size, version, magic: the last 16 bytes


class LayoutError(ValueError):
    """The file claims to carry a payload but the payload is damaged or unknown."""


class ManifestError(LayoutError):
    """The footer is sound but the manifest is not one a runtime can use.

    The message says what is wrong without naming the manifest, so callers
    can say whose it is: "this file's manifest is damaged: {message}"."""


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


def align_up(value: int, alignment: int = ALIGNMENT) -> int:
    """Smallest multiple of ``alignment`` that is >= ``value``."""
    return -(-value // alignment) * alignment


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    """Canonical manifest bytes: sorted keys and ASCII-only, so builds are reproducible."""
    return json.dumps(manifest, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode()


def decode_manifest(data: bytes) -> dict[str, Any]:
    """Parse manifest bytes; it must be a JSON object of bounded depth,
    with text that can be printed (no lone surrogates)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        # ValueError covers JSONDecodeError and integers too long to convert.
        raise ManifestError(f"not valid JSON: {exc}") from exc
    except RecursionError:
        raise ManifestError("nested too deeply") from None
    if not isinstance(value, dict):
        raise ManifestError("not a JSON object")
    _check_depth_and_text(value)
    return value


def _check_depth_and_text(value: Any) -> None:
    """Iterative, so that the check itself cannot recurse too deeply."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ManifestError("a string in it is not valid Unicode") from None
        elif isinstance(item, (dict, list)):
            if depth > MAX_MANIFEST_DEPTH:
                raise ManifestError("nested too deeply")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def read_payload(path: str | os.PathLike[str]) -> Payload | None:
    """Find and validate the payload of ``path`` by reading its last 64 bytes.

    Returns None when the file has no payload at all (a plain PyInstaller
    executable, the Python interpreter, ...).  Raises LayoutError when it has
    one that cannot be trusted: truncated, corrupted or of an unknown version.
    Costs a few small reads whatever the file's size.
    """
    file_path = Path(path)
    with open(file_path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        footer = _read_footer(f, size)
        if footer is None:
            return None
        _check_bounds(footer, size)
        f.seek(footer.manifest_offset)
        raw = f.read(footer.manifest_size)
    if len(raw) != footer.manifest_size:
        raise LayoutError(f"{file_path}: manifest truncated")
    if zlib.crc32(raw) != footer.manifest_crc32:
        raise LayoutError(f"{file_path}: manifest checksum mismatch: the manifest is corrupted")
    return Payload(path=file_path, footer=footer, manifest=decode_manifest(raw))


def _read_footer(f: BinaryIO, size: int) -> Footer | None:
    """The file's footer, or None when its last bytes are not a llamabin footer."""
    head = f.read(64)
    if size >= _TAIL.size:
        f.seek(size - _TAIL.size)
        if _TAIL.unpack(f.read(_TAIL.size))[2] == MAGIC:
            f.seek(max(0, size - FOOTER_SIZE))
            return Footer.unpack(f.read(FOOTER_SIZE))
    # No footer.  For an ELF file the section header table normally ends the
    # file, and in a llamabin executable exactly FOOTER_SIZE bytes follow it:
    # use that to tell a damaged or cut-off payload from a plain executable.
    elf_end = _elf_end(head)
    if elf_end is not None and elf_end > size:
        raise LayoutError(f"file is truncated: {size} bytes, its ELF headers point past the end")
    if elf_end is not None and elf_end + FOOTER_SIZE == size:
        raise LayoutError("the last 64 bytes look like a llamabin footer with a bad magic")
    return None


def _check_bounds(footer: Footer, size: int) -> None:
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


# --- the manifest's schema ---------------------------------------------------
#
# Every field a runtime or `inspect` reads, with its type.  Required fields
# are the ones the runtime cannot work without; the others are descriptive
# and may be absent or null.  Unknown fields are allowed (newer builds may
# add some), but cannot be deeper than MAX_MANIFEST_DEPTH.

_Kind = Any  # str, int, "text list", "text map", or a nested _Spec
_Spec = dict[str, tuple[_Kind, bool]]  # field -> (kind, required)

_GGUF_SPEC: _Spec = {
    "file": (str, False),
    "size": (int, True),
    "sha256": (str, True),
    "model_name": (str, False),
    "architecture": (str, False),
    "quantization": (str, False),
    "context_length": (int, False),
}
_MANIFEST_SPEC: _Spec = {
    "format": (int, False),
    "name": (str, True),
    "target": (str, False),
    "created": (str, False),
    "gguf": (_GGUF_SPEC, True),
    "defaults": ({"args": ("text list", True)}, True),
    "template": (str, False),
    "chat_template": ({"name": (str, True), "source": (str, True)}, False),
    "license": ({"name": (str, False), "text": (str, False)}, False),
    "versions": ("text map", False),
}
_KIND_NAMES = {
    str: "a string",
    int: "a whole number",
    "text list": "a list of strings",
    "text map": "an object of strings",
}


def check_manifest(manifest: dict[str, Any]) -> None:
    """Raise ManifestError naming the first field of the wrong type, then
    the first required field that is missing."""
    _check_fields(manifest, _MANIFEST_SPEC, "")


def _check_fields(obj: dict[str, Any], spec: _Spec, where: str) -> None:
    # Wrong types first: "defaults must be an object" says more about a
    # damaged file than "name is missing" would.
    for key, (kind, _required) in spec.items():
        if obj.get(key) is not None and not _is_kind(obj[key], kind):
            what = "an object" if isinstance(kind, dict) else _KIND_NAMES[kind]
            raise ManifestError(f"{where}{key} must be {what}")
    for key, (kind, required) in spec.items():
        if required and obj.get(key) is None:
            raise ManifestError(f"{where}{key} is missing")
        if isinstance(kind, dict) and obj.get(key) is not None:
            _check_fields(obj[key], kind, f"{where}{key}.")


def _is_kind(value: Any, kind: _Kind) -> bool:
    if isinstance(kind, dict):
        return isinstance(value, dict)
    if kind == "text list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "text map":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if kind is int:  # JSON true/false are bools, which Python counts as ints
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return isinstance(value, kind)


# --- which runtime flags a file may carry as built-in defaults ---------------
#
# A packaged file (or a sidecar NAME.gguf) may come from anyone, so its
# defaults may only shape the model, its context and its sampling: never
# where the server listens, who may call it, which files are read, or the
# mode.  The packager refuses anything else at build time; the runtime drops
# it with a warning.  Each spelling maps to whether it takes a value, as in
# the runtime's command line (tests check the two agree).

BAKED_FLAGS: dict[str, bool] = {
    # the model: how it is loaded
    "-t": True,
    "--threads": True,
    "-ngl": True,
    "--n-gpu-layers": True,
    "--gpu-layers": True,
    # the context
    "-c": True,
    "--ctx-size": True,
    "--ctx-force": False,
    "-np": True,
    "--parallel": True,
    "-kvu": False,
    "--kv-unified": False,
    # sampling (the grammar as text: --grammar-file would read a path)
    "-n": True,
    "--n-predict": True,
    "--temp": True,
    "--top-k": True,
    "--top-p": True,
    "--min-p": True,
    "--repeat-penalty": True,
    "--repeat-last-n": True,
    "-s": True,
    "--seed": True,
    "--grammar": True,
    "-j": False,
    "--json": False,
    # what the chat says first: not -p, which is the input itself in --cli mode
    "--system-prompt": True,
    "--system": True,
    "--template": True,
}

_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
"""A baked --template must be a name, never a path: a template file is
stored inside the manifest instead (chat_template)."""


@dataclass(frozen=True)
class BakedArgs:
    """Built-in defaults split into those a file may carry and the rest."""

    allowed: list[str]
    refused: list[str]  # each refused flag once, as written (with its value if that was the problem)


def split_baked_args(args: list[str]) -> BakedArgs:
    """Keep the allowed flags (with their values), refuse everything else.

    Tokens are read the way click reads them (long options, `--opt=value`,
    clusters of short options, `-n6`), so what is kept sets only allowed
    options.  Words after a refused flag are taken as its value and dropped.
    """
    allowed: list[str] = []
    refused: list[str] = []
    i = 0
    while i < len(args):
        unit, problem = _next_unit(args, i)
        i += len(unit)
        if problem is None:
            allowed += unit
            continue
        if problem not in refused:
            refused.append(problem)
        while i < len(args) and not _is_option(args[i]):
            i += 1  # the refused flag's value(s)
    return BakedArgs(allowed, refused)


def _is_option(arg: str) -> bool:
    return arg[:1] == "-" and len(arg) > 1 and arg != "--"


def _is_long(name: str) -> bool:
    return name.startswith("--") or len(name) > 2


def _next_unit(args: list[str], i: int) -> tuple[list[str], str | None]:
    """The tokens of the option at args[i] (itself and perhaps its value),
    and what to call it if it is refused (None when it is allowed)."""
    arg = args[i]
    if not _is_option(arg):
        return [arg], arg
    name, eq, value = arg.partition("=")
    if _is_long(name) and name in BAKED_FLAGS:
        unit = [arg]
        if BAKED_FLAGS[name] and not eq and i + 1 < len(args):
            unit, value = [arg, args[i + 1]], args[i + 1]
        # A missing value, or one where none belongs, is left for click to report.
        return unit, _refused_value(name, value)
    if arg.startswith("--"):
        return [arg], name
    return _short_cluster(args, i)


def _short_cluster(args: list[str], i: int) -> tuple[list[str], str | None]:
    """`-jn6`: short flags, the last of which may take the rest (or the
    next word) as its value.  `-ngl5` lands here too, as click reads it."""
    arg = args[i]
    for pos, letter in enumerate(arg[1:], start=2):
        flag = "-" + letter
        if flag not in BAKED_FLAGS:
            return [arg], flag
        if BAKED_FLAGS[flag]:
            attached = pos < len(arg)
            return ([arg] if attached or i + 1 == len(args) else [arg, args[i + 1]]), None
    return [arg], None


def _refused_value(flag: str, value: str) -> str | None:
    if flag == "--template" and value and not _TEMPLATE_NAME.match(value):
        return f"--template {value}"
    return None
