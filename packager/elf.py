"""Insert a payload (GGUF blob + JSON manifest) into a PyInstaller onefile ELF executable.

PyInstaller's Linux bootloader finds its archive by scanning the file
backwards from the end for the archive's cookie, and then locates the archive
relative to that cookie (bootloader/src/pyi_archive.c: pyi_archive_open).  So
the blob must not go at the end, where every launch would scan through it;
it goes *before* the archive, which lives in the ``pydata`` ELF section:

    [ELF bootloader][pad][blob][manifest][pad][pydata = CArchive][.shstrtab][SHT][footer]

Everything from ``pydata`` on moves by a multiple of ALIGNMENT, and the ELF
header's e_shoff and the moved sections' sh_offset are patched so that the
file stays a valid ELF.  Program headers are never moved: the loader only
maps the bootloader part, which lies wholly before the insertion point.
See docs/payload-layout.md.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from payload.find import read_payload
from payload.footer import FOOTER_SIZE, MANIFEST_RESERVE, Footer, align_up
from payload.manifest import decode_manifest

ARCHIVE_SECTION = "pydata"
"""The section PyInstaller's EXE() adds with ``objcopy --add-section`` on Linux."""

_COOKIE_MAGIC = b"MEI\014\013\012\013\016"  # pyi_archive.h: struct ARCHIVE_COOKIE
_CHUNK = 8 * 1024 * 1024
_SHT_NOBITS = 8

Progress = Callable[[int], None]


class ElfError(ValueError):
    """The input is not an ELF executable we know how to insert a payload into."""


@dataclass(frozen=True)
class _Formats:
    """struct formats for one ELF class and byte order."""

    ehdr: struct.Struct
    shdr: struct.Struct
    phdr: struct.Struct


# Every header field is unpacked, so packing a patched tuple writes the others back as they were.
_FORMATS = {
    (1, "<"): _Formats(
        struct.Struct("<16sHHIIIIIHHHHHH"),
        struct.Struct("<IIIIIIIIII"),
        struct.Struct("<IIIIIIII"),
    ),
    (2, "<"): _Formats(
        struct.Struct("<16sHHIQQQIHHHHHH"),
        struct.Struct("<IIQQQQIIQQ"),
        struct.Struct("<IIQQQQQQ"),
    ),
    (1, ">"): _Formats(
        struct.Struct(">16sHHIIIIIHHHHHH"),
        struct.Struct(">IIIIIIIIII"),
        struct.Struct(">IIIIIIII"),
    ),
    (2, ">"): _Formats(
        struct.Struct(">16sHHIQQQIHHHHHH"),
        struct.Struct(">IIQQQQIIQQ"),
        struct.Struct(">IIQQQQQQ"),
    ),
}


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int
    offset: int
    size: int


@dataclass(frozen=True)
class ElfFile:
    """What insert_payload needs to know about an ELF file's headers."""

    elf_class: int  # 1 = 32-bit, 2 = 64-bit
    fmt: _Formats
    header: tuple[int | bytes, ...]
    sections: list[Section]
    section_table: bytes
    segments: list[tuple[int, int]]  # (p_offset, p_filesz)
    size: int

    @property
    def shoff(self) -> int:
        return int(self.header[6])

    def section(self, name: str) -> Section:
        for section in self.sections:
            if section.name == name:
                return section
        raise ElfError(f"no {name!r} section: not a PyInstaller onefile executable built on Linux")


def read_elf(path: Path) -> ElfFile:
    """Parse the ELF, section and program headers of ``path``."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF":
            raise ElfError(f"{path} is not an ELF file")
        if ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise ElfError(f"{path}: unknown ELF class {ident[4]} or byte order {ident[5]}")
        fmt = _FORMATS[(ident[4], "<" if ident[5] == 1 else ">")]
        f.seek(0)
        raw = f.read(fmt.ehdr.size)
        if len(raw) < fmt.ehdr.size:
            raise ElfError(f"{path}: truncated ELF header")
        header = fmt.ehdr.unpack(raw)
        phoff, shoff = int(header[5]), int(header[6])
        phentsize, phnum = int(header[9]), int(header[10])
        shentsize, shnum, shstrndx = int(header[11]), int(header[12]), int(header[13])
        if shoff == 0 or shnum == 0:
            raise ElfError(f"{path} has no section header table")
        if shentsize != fmt.shdr.size or (phnum and phentsize != fmt.phdr.size):
            raise ElfError(f"{path}: unexpected header entry sizes")
        if shoff + shnum * shentsize > size:
            raise ElfError(f"{path} is truncated: its section header table ends past the file")
        f.seek(shoff)
        table = f.read(shnum * shentsize)
        shdrs = [fmt.shdr.unpack_from(table, i * shentsize) for i in range(shnum)]
        f.seek(phoff)
        ptable = f.read(phnum * phentsize)
        # p_offset and p_filesz sit at different places in Elf32_Phdr and Elf64_Phdr.
        off_i, filesz_i = (1, 4) if ident[4] == 1 else (2, 5)
        phdrs = [fmt.phdr.unpack_from(ptable, i * phentsize) for i in range(phnum)]
        segments = [(int(p[off_i]), int(p[filesz_i])) for p in phdrs]
        names = _section_names(f, shdrs, shstrndx)
    sections = [
        Section(index=i, name=names[i], type=int(s[1]), offset=int(s[4]), size=int(s[5])) for i, s in enumerate(shdrs)
    ]
    return ElfFile(ident[4], fmt, header, sections, table, segments, size)


def _section_names(f: BinaryIO, shdrs: list[tuple[int, ...]], shstrndx: int) -> list[str]:
    """Resolve sh_name through the section-name string table."""
    if not 0 < shstrndx < len(shdrs):
        return [""] * len(shdrs)
    strtab_offset, strtab_size = shdrs[shstrndx][4], shdrs[shstrndx][5]
    f.seek(strtab_offset)
    strtab: bytes = f.read(strtab_size)
    names = []
    for shdr in shdrs:
        end = strtab.find(b"\0", shdr[0])
        names.append(strtab[shdr[0] : end if end >= 0 else None].decode("ascii", "replace"))
    return names


def plan_footer(insert_at: int, exe_size: int, blob_size: int, manifest: bytes) -> tuple[Footer, int]:
    """Place blob and manifest at ``insert_at``; return the footer and the shift applied after it.

    The shift is a multiple of ALIGNMENT so every moved section keeps its
    alignment (sh_addralign and the section header table's 8 bytes divide it).
    At least MANIFEST_RESERVE spare bytes follow the manifest, for `llamabin
    set` to write a new one in place.
    """
    blob_offset = align_up(insert_at)
    manifest_offset = blob_offset + blob_size
    shift = align_up(manifest_offset + len(manifest) + MANIFEST_RESERVE - insert_at)
    footer = Footer(
        blob_offset=blob_offset,
        blob_size=blob_size,
        manifest_offset=manifest_offset,
        manifest_size=len(manifest),
        file_size=exe_size + shift + FOOTER_SIZE,
    ).with_manifest(manifest)
    return footer, shift


def insert_payload(
    exe_in: Path,
    out: Path,
    blob: Path,
    manifest: bytes,
    progress: Progress | None = None,
    blob_range: tuple[int, int] | None = None,
) -> Footer:
    """Write ``out``: ``exe_in`` with ``blob`` and ``manifest`` inserted before its PyInstaller archive.

    ``blob_range`` (offset, size) takes the blob from that part of the file
    ``blob`` instead of the whole file: `llamabin upgrade` copies an old
    file's weights this way, byte for byte.

    Streams the copy in chunks and keeps holes of a sparse blob as holes.
    ``progress`` is called with the number of blob bytes handled since the
    previous call (holes included), so ``tqdm.update`` fits directly.
    ``out`` is written in place and not fsync'ed; the caller writes to a
    temporary name, syncs if it wants to, and renames.  Raises ElfError for input that is not a PyInstaller Linux
    onefile executable, or that already carries a payload.
    """
    exe_in, out, blob = Path(exe_in), Path(out), Path(blob)
    if out.resolve() in (exe_in.resolve(), blob.resolve()):
        raise ValueError(f"output {out} would overwrite an input")
    # The runtime rejects anything but a JSON object: fail at build time instead.
    decode_manifest(manifest)
    elf = read_elf(exe_in)
    if read_payload(exe_in) is not None:
        raise ElfError(f"{exe_in} already carries a payload")
    insert_at = elf.section(ARCHIVE_SECTION).offset
    _check_movable(elf, insert_at)
    blob_start, blob_size = blob_range or (0, blob.stat().st_size)
    footer, shift = plan_footer(insert_at, elf.size, blob_size, manifest)
    if elf.elf_class == 1 and footer.file_size >= 2**31:
        # PyInstaller's bootloader is built without _FILE_OFFSET_BITS=64, so on
        # 32-bit Linux its fopen/fseeko cannot handle a file of 2 GiB or more.
        raise ElfError("a 32-bit executable cannot carry a payload this large (2 GiB max)")
    # The bootloader takes the *last* cookie magic in the file; the footer is
    # the only thing we add after the archive, so it must never contain one.
    if _COOKIE_MAGIC in footer.pack():
        raise ElfError("footer happens to contain PyInstaller's cookie magic; change the manifest")

    with (
        open(exe_in, "rb") as src,
        open(out, "wb") as dst,
        open(blob, "rb") as blob_file,
    ):
        # Everything goes through positioned writes on the descriptors, so no
        # buffered file position can disagree with copy_file_range's offsets.
        fd = dst.fileno()
        _copy_range(src.fileno(), fd, 0, 0, insert_at)
        _pwrite_all(fd, b"\0" * (footer.blob_offset - insert_at), insert_at)
        _copy_sparse(blob_file.fileno(), fd, footer.blob_offset, footer.blob_size, progress, blob_start)
        manifest_end = footer.manifest_offset + len(manifest)
        _pwrite_all(
            fd,
            manifest + b"\0" * (insert_at + shift - manifest_end),
            footer.manifest_offset,
        )
        _copy_range(src.fileno(), fd, insert_at, insert_at + shift, elf.size - insert_at)
        _patch_headers(fd, elf, insert_at, shift)
        _pwrite_all(fd, footer.pack(), elf.size + shift)
    shutil.copymode(exe_in, out)
    return footer


def _check_movable(elf: ElfFile, insert_at: int) -> None:
    """Only file contents that nothing maps into memory may move."""
    for offset, filesz in elf.segments:
        if filesz and offset + filesz > insert_at:
            raise ElfError(f"a program segment at {offset:#x} extends past the archive at {insert_at:#x}")
    for s in elf.sections:
        if s.type != _SHT_NOBITS and s.offset < insert_at < s.offset + s.size:
            raise ElfError(f"section {s.name!r} straddles the insertion point {insert_at:#x}")
    if elf.shoff < insert_at:
        raise ElfError("the section header table precedes the archive; unexpected layout")


def _patch_headers(fd: int, elf: ElfFile, insert_at: int, shift: int) -> None:
    """Rewrite e_shoff and the sh_offset of every section that moved."""
    header = list(elf.header)
    header[6] = elf.shoff + shift
    _pwrite_all(fd, elf.fmt.ehdr.pack(*header), 0)
    table = bytearray(elf.section_table)
    entry = elf.fmt.shdr
    for s in elf.sections:
        if s.index == 0 or s.type == _SHT_NOBITS or s.offset < insert_at:
            continue
        fields = list(entry.unpack_from(table, s.index * entry.size))
        fields[4] = s.offset + shift  # sh_offset is the 5th field in both ELF classes
        entry.pack_into(table, s.index * entry.size, *fields)
    _pwrite_all(fd, bytes(table), elf.shoff + shift)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """os.pwrite until every byte is written (it may write less on some filesystems)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _copy_sparse(
    src: int, dst: int, dst_offset: int, size: int, progress: Progress | None, src_offset: int = 0
) -> None:
    """Copy ``size`` bytes of ``src`` from ``src_offset`` to ``dst`` at ``dst_offset``, seeking over holes.

    Holes are found with SEEK_DATA/SEEK_HOLE; where the filesystem does not
    support them the whole file counts as data.  Skipped holes read back as
    zeros because the destination region is past its current end.
    """
    position = 0
    while position < size:
        try:
            data_start = os.lseek(src, src_offset + position, os.SEEK_DATA) - src_offset
            data_end = os.lseek(src, src_offset + data_start, os.SEEK_HOLE) - src_offset
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                data_start = data_end = size
            elif exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                data_start, data_end = position, size
            else:
                raise
        data_start, data_end = min(data_start, size), min(data_end, size)
        if progress and data_start > position:
            progress(data_start - position)
        _copy_range(
            src,
            dst,
            src_offset + data_start,
            dst_offset + data_start,
            data_end - data_start,
            progress,
        )
        position = data_end
    # A trailing hole leaves the destination short; the manifest written
    # right after extends it, so nothing else is needed here.


def _copy_range(
    src: int,
    dst: int,
    src_offset: int,
    dst_offset: int,
    length: int,
    progress: Progress | None = None,
) -> None:
    """Copy a byte range between file descriptors in chunks, without holding it in memory."""
    use_kernel = hasattr(os, "copy_file_range")
    while length > 0:
        chunk = min(length, _CHUNK)
        copied = 0
        if use_kernel:
            try:
                copied = os.copy_file_range(src, dst, chunk, src_offset, dst_offset)
            except OSError as exc:
                # Cross-device on old kernels, or a filesystem without support.
                if exc.errno not in (
                    errno.EXDEV,
                    errno.ENOSYS,
                    errno.EINVAL,
                    errno.EOPNOTSUPP,
                    errno.EPERM,
                ):
                    raise
                use_kernel = False
        if not use_kernel:
            data = os.pread(src, chunk, src_offset)
            copied = len(data)
            _pwrite_all(dst, data, dst_offset)
        if copied == 0:
            raise OSError(f"input ended early: {length} bytes missing (did it change while copying?)")
        src_offset += copied
        dst_offset += copied
        length -= copied
        if progress:
            progress(copied)
