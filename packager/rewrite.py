"""`llamabin upgrade` and `llamabin set`: a new runtime or new defaults for a
built file, without the GGUF and without rewriting the weights.

* upgrade: the current runtime (the one `build` would use) with the old
  file's weights copied in byte for byte, and its manifest with the new
  runtime's versions. The sha256 is not recomputed: the bytes are the same.
* set: new baked defaults. The new manifest goes into the spare part of the
  manifest area, in place, when it fits; otherwise the file is rewritten by
  copy, the weights at the same offset.

Every write that replaces a file goes to a temporary name in the same
directory, is fsync'ed and renamed; an in-place write follows the order
described in docs/payload-layout.md (manifest first, then the footer).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packager import progress
from packager.build import (
    BuildOptions,
    _baked_template,
    build_target,
    check_baked_context,
    refused_message,
    runtime_versions,
    select_runtime,
)
from packager.elf import (  # the writer's helpers: the same copy, the same header fix-up
    _COOKIE_MAGIC,
    ARCHIVE_SECTION,
    ElfError,
    _copy_range,
    _patch_headers,
    _pwrite_all,
    insert_payload,
    read_elf,
)
from packager.errors import BuildError
from packager.replacing import check_replaceable, disk_error, replacing, same_file, smoke_test, temporary
from packager.sidecar import sidecar_tail
from packager.targets import host_target
from payload.errors import LlamabinError, UsageError
from payload.find import Payload, find_payload, read_payload, sidecar_path
from payload.flags import split_baked_args, unit_flags, units
from payload.footer import ALIGNMENT, FOOTER_SIZE, MANIFEST_RESERVE, Footer, LayoutError, align_up
from payload.manifest import ManifestError, check_encodable, decode_manifest, encode_manifest

Say = Callable[[str], None]


@dataclass(frozen=True)
class Rewritten:
    """What a rewrite wrote: ``path`` (the executable or its sidecar), and how."""

    path: Path
    in_place: bool
    payload: Payload


def load_payload(file: Path, not_ours: type[LlamabinError] = BuildError) -> Payload:
    """The payload of ``file`` (or its sidecar), checked; a file without one
    raises ``not_ours`` (inspect: exit 1; upgrade and set: a usage error)."""
    try:
        payload = find_payload(file)
    except ManifestError as exc:
        raise BuildError(f"the manifest of {file} is damaged: {exc}") from None
    except LayoutError as exc:
        raise BuildError(f"{file} is damaged: {exc}") from None
    except OSError as exc:
        raise BuildError(f"cannot read {file}: {exc.strerror}") from None
    if payload is not None:
        return payload
    if not file.exists():
        raise not_ours(f"no such file: {file}")
    raise not_ours(f"{file} is not a llamabin executable (no model inside)")


# --- upgrade -------------------------------------------------------------------


def upgrade(old: Path, out: Path | None, opts: BuildOptions, say: Say) -> Rewritten:
    """Write ``out`` (default: ``old``, replaced atomically): the runtime
    `build` would use now, with ``old``'s weights and manifest."""
    payload = load_payload(old, UsageError)
    target = _output(old, out)
    if target != old:
        check_replaceable(target, (old, payload.path), opts.force)
        if payload.path != old:
            check_replaceable(sidecar_path(target), (old, payload.path), opts.force)
    _check_writable(target)  # before the runtime is prepared, which may take minutes
    runtime = select_runtime(opts, say)
    runs_here = build_target(opts) == host_target()  # a file for another machine cannot be started here
    manifest = dict(payload.manifest, versions=runtime_versions(opts))
    raw = _encode(manifest)
    if payload.path != old:  # the weights are in the sidecar: rewrite only the executable
        with replacing(target, old, check=runs_here) as tmp:
            shutil.copyfile(runtime, tmp)
        side = sidecar_path(target)
        if target == old:
            done = _manifest_in_place(payload, raw)
            if done is None:
                say(f"note: {payload.path.name} keeps its manifest (no room to rewrite it in place)")
                return Rewritten(target, False, payload)
            return Rewritten(target, True, done)
        with replacing(side, None) as tmp_side:
            _copy_sidecar(payload, tmp_side, raw)
        return Rewritten(target, False, _reread(side))
    with replacing(target, old, check=runs_here) as tmp:
        with progress.bar(payload.blob_size, "copying weights") as update:
            try:
                insert_payload(runtime, tmp, old, raw, update, (payload.blob_offset, payload.blob_size))
            except ElfError as exc:
                raise BuildError(f"cannot put the weights inside the runtime: {exc}") from None
    return Rewritten(target, False, _reread(target))


def _check_writable(target: Path) -> None:
    probe = temporary(target)
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise disk_error(exc, target) from None


def _output(old: Path, out: Path | None) -> Path:
    if out is None:
        return old
    target = out / old.name if out.is_dir() else out
    return old if same_file(target, old) else target  # -o naming the file itself: in place


# --- set -----------------------------------------------------------------------


@dataclass(frozen=True)
class NewDefaults:
    system_prompt: str | None = None
    template: str | None = None
    ctx_size: int | None = None
    runtime_args: tuple[str, ...] = ()


def set_defaults(file: Path, new: NewDefaults, say: Say) -> Rewritten:
    """Rewrite ``file``'s baked defaults: in place when the new manifest fits
    in the manifest area's spare bytes, else by copy (with a note)."""
    refused = split_baked_args(list(new.runtime_args)).refused
    if refused:
        raise UsageError(refused_message(refused))
    payload = load_payload(file, UsageError)
    manifest = _with_defaults(payload.manifest, new)
    check_baked_context(manifest["defaults"]["args"], manifest.get("gguf", {}).get("context_length"))
    raw = _encode(manifest)
    old_raw = encode_manifest(payload.manifest)
    done = _manifest_in_place(payload, raw)
    if done is not None:
        try:
            smoke_test(file)
        except BuildError:
            _manifest_in_place(done, old_raw)  # put the old defaults back
            raise
        return Rewritten(payload.path, True, done)
    say(f"note: the new manifest does not fit in {payload.path.name}'s spare space: rewriting the file by copy")
    inside = payload.path == file
    with replacing(payload.path, payload.path, check=inside) as tmp:
        if inside:
            _copy_exe(payload, tmp, raw)
        else:  # the sidecar: checked once it is in place, beside its executable
            _copy_sidecar(payload, tmp, raw)
    if not inside:
        smoke_test(file)
    return Rewritten(payload.path, False, _reread(payload.path))


def _with_defaults(manifest: dict[str, Any], new: NewDefaults) -> dict[str, Any]:
    """The manifest with the flags ``new`` names replaced (every spelling of
    each), the others kept."""
    given: list[str] = []
    if new.system_prompt is not None:
        given += ["--system-prompt", new.system_prompt]
    if new.ctx_size is not None:
        given += ["--ctx-size", str(new.ctx_size)]
    template = _baked_template(new.template) if new.template is not None else None
    if new.template is not None and template is None:
        given += ["--template", new.template]
    given += new.runtime_args
    replaced = {flag for unit in units(given) for flag in unit_flags(unit)}
    if new.template is not None:
        replaced.add("--template")
    old = split_baked_args(manifest["defaults"]["args"]).allowed
    kept = [arg for unit in units(old) if not unit_flags(unit) & replaced for arg in unit]
    updated = dict(manifest, defaults=dict(manifest["defaults"], args=kept + given))
    if new.template is not None:
        updated.pop("chat_template", None)
        if template is not None:
            updated["chat_template"] = template
        updated["template"] = Path(new.template).name if template is not None else new.template
    return updated


# --- writing a manifest in place ---------------------------------------------------


def manifest_area(payload: Payload) -> tuple[int, int] | None:
    """Where the manifest may go without touching anything else: from the
    blob's end to the PyInstaller archive (an executable) or to the footer
    (a sidecar).  None for a layout this does not know."""
    footer = payload.footer
    start = footer.blob_offset + footer.blob_size
    manifest_end = footer.manifest_offset + footer.manifest_size
    if footer.manifest_offset < start:
        return None
    end = footer.file_size - FOOTER_SIZE
    with open(payload.path, "rb") as f:
        is_elf = f.read(4) == b"\x7fELF"
    if is_elf:
        try:
            elf = read_elf(payload.path)
        except ElfError:
            return None
        after = [s.offset for s in elf.sections if s.type != 8 and s.size and s.offset >= manifest_end]
        end = min([*after, elf.shoff])
        if elf.section(ARCHIVE_SECTION).offset != end:
            return None
    return (start, end) if end >= manifest_end else None


def _slot(area: tuple[int, int], footer: Footer, size: int) -> int | None:
    """Where a new manifest of ``size`` bytes goes without overlapping the
    current one: the area's start if it fits before it, else right after it."""
    start, end = area
    if size <= footer.manifest_offset - start:
        return start
    if size <= end - (footer.manifest_offset + footer.manifest_size):
        return footer.manifest_offset + footer.manifest_size
    return None


def _manifest_in_place(payload: Payload, raw: bytes) -> Payload | None:
    """Write ``raw`` as the manifest of ``payload.path`` without moving
    anything else, or return None when there is no room.

    The order makes a crash safe: the new manifest goes where the current
    footer does not point, and is synced; only then is the footer (64 bytes,
    one write) replaced and synced. Before that the old footer names the old,
    intact manifest; after it the new one. The old manifest's bytes are then
    zeroed, which no footer names any more."""
    area = manifest_area(payload)
    offset = None if area is None else _slot(area, payload.footer, len(raw))
    if offset is None:
        return None
    footer = replace(payload.footer, manifest_offset=offset).with_manifest(raw)
    packed = footer.pack()
    if _COOKIE_MAGIC in packed:
        return None
    old = payload.footer
    try:
        fd = os.open(payload.path, os.O_WRONLY)
    except OSError as exc:
        raise disk_error(exc, payload.path) from None
    try:
        _pwrite_all(fd, raw, offset)
        os.fsync(fd)
        _pwrite_all(fd, packed, footer.file_size - FOOTER_SIZE)
        os.fsync(fd)
        _pwrite_all(fd, bytes(old.manifest_size), old.manifest_offset)
        os.fsync(fd)
    except OSError as exc:
        raise disk_error(exc, payload.path) from None
    finally:
        os.close(fd)
    return Payload(payload.path, footer, decode_manifest(raw))


# --- rewriting by copy ---------------------------------------------------------------


def _copy_exe(payload: Payload, out: Path, raw: bytes) -> None:
    """``payload.path`` with a larger manifest area: everything up to the
    blob's end copied as is (the weights at the same offset), the new
    manifest, then the archive and the section headers moved by a multiple
    of ALIGNMENT and patched."""
    area = manifest_area(payload)
    if area is None:
        raise BuildError(f"{payload.path}: unexpected layout, cannot rewrite its manifest")
    start, archive = area
    elf = read_elf(payload.path)
    shift = align_up(max(0, start + len(raw) + MANIFEST_RESERVE - archive), ALIGNMENT)
    size = payload.footer.file_size - FOOTER_SIZE
    footer = Footer(
        blob_offset=payload.blob_offset,
        blob_size=payload.blob_size,
        manifest_offset=start,
        manifest_size=len(raw),
        file_size=size + shift + FOOTER_SIZE,
    ).with_manifest(raw)
    if _COOKIE_MAGIC in footer.pack():
        raise BuildError("the new footer happens to contain PyInstaller's cookie magic; change the defaults")
    with open(payload.path, "rb") as src, open(out, "wb") as dst:
        fd = dst.fileno()
        with progress.bar(start, "copying weights") as update:
            _copy_range(src.fileno(), fd, 0, 0, start, update)
        _pwrite_all(fd, raw + bytes(archive + shift - start - len(raw)), start)
        _copy_range(src.fileno(), fd, archive, archive + shift, size - archive)
        _patch_headers(fd, elf, archive, shift)
        _pwrite_all(fd, footer.pack(), size + shift)


def _copy_sidecar(payload: Payload, out: Path, raw: bytes) -> None:
    """A sidecar with the same weights (at offset 0) and the manifest ``raw``."""
    size = payload.blob_size
    _footer, tail = sidecar_tail(size, raw)
    with open(payload.path, "rb") as src, open(out, "wb") as dst:
        fd = dst.fileno()
        with progress.bar(size, "copying weights") as update:
            _copy_range(src.fileno(), fd, payload.blob_offset, 0, size, update)
        _pwrite_all(fd, tail, size)


# --- common ----------------------------------------------------------------------------


def _encode(manifest: dict[str, Any]) -> bytes:
    try:  # never write one the runtime would refuse
        return check_encodable(manifest)
    except ManifestError as exc:
        raise BuildError(f"cannot write this file's manifest: {exc}") from None


def _reread(path: Path) -> Payload:
    payload = read_payload(path)
    assert payload is not None, path
    return payload
