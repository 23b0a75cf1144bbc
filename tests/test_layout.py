"""The payload layout: footer format, reading it back, and insertion into ELF executables."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from packager.elf import ElfError, insert_payload, read_elf
from payload.find import read_payload
from payload.footer import ALIGNMENT, FOOTER_SIZE, MAGIC, VERSION, Footer, LayoutError
from payload.manifest import encode_manifest

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
GiB = 1024 * MiB

needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF insertion is Linux-only")


# --- helpers ---------------------------------------------------------------


def _footer() -> Footer:
    return Footer(
        blob_offset=ALIGNMENT,
        blob_size=5 * GiB + 3,  # > 4 GiB: every field is 64-bit
        manifest_offset=ALIGNMENT + 5 * GiB + 3,
        manifest_size=17,
        file_size=6 * GiB,
        manifest_crc32=0xDEADBEEF,
    )


def _write_payload_file(path: Path, blob: bytes, manifest: dict[str, object]) -> Footer:
    """A bare payload file, no executable: [pad][blob][manifest][footer]."""
    raw = encode_manifest(manifest)
    manifest_offset = ALIGNMENT + len(blob)
    footer = Footer(
        blob_offset=ALIGNMENT,
        blob_size=len(blob),
        manifest_offset=manifest_offset,
        manifest_size=len(raw),
        file_size=manifest_offset + len(raw) + FOOTER_SIZE,
    ).with_manifest(raw)
    path.write_bytes(b"\0" * ALIGNMENT + blob + raw + footer.pack())
    return footer


def _write_random(path: Path, size: int) -> str:
    """Write ``size`` random bytes in chunks; return their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 4 * MiB))
            digest.update(chunk)
            f.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def _sha256_range(path: Path, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        while size:
            chunk = f.read(min(size, 4 * MiB))
            assert chunk, "file ended early"
            digest.update(chunk)
            size -= len(chunk)
    return digest.hexdigest()


def _readelf_ok(path: Path) -> None:
    """readelf must parse the headers and every section without a warning."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    result = subprocess.run(
        [readelf, "-h", "-S", "-l", "-W", str(path)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    assert "pydata" in result.stdout


@pytest.fixture
def fake_pyinstaller_exe(tmp_path: Path) -> Path:
    """/bin/true with a `pydata` section added the way PyInstaller adds its archive."""
    objcopy = shutil.which("objcopy")
    if objcopy is None or not Path("/bin/true").is_file():
        pytest.skip("needs objcopy and /bin/true")
    archive = tmp_path / "archive.pkg"
    archive.write_bytes(os.urandom(5000))
    exe = tmp_path / "true-onefile"
    shutil.copy2("/bin/true", exe)
    subprocess.run([objcopy, "--add-section", f"pydata={archive}", str(exe)], check=True)
    return exe


# --- the footer ------------------------------------------------------------


def test_footer_round_trip() -> None:
    footer = _footer()
    packed = footer.pack()
    assert len(packed) == FOOTER_SIZE == 64
    assert packed.endswith(MAGIC)
    assert Footer.unpack(packed) == footer


def test_footer_rejects_bad_magic() -> None:
    packed = _footer().pack()
    with pytest.raises(LayoutError, match="magic"):
        Footer.unpack(packed[:-8] + b"NOTMAGIC")


def test_footer_rejects_unknown_version() -> None:
    packed = bytearray(_footer().pack())
    struct.pack_into("<I", packed, 52, VERSION + 1)
    with pytest.raises(LayoutError, match="version"):
        Footer.unpack(bytes(packed))


def test_footer_rejects_truncation() -> None:
    packed = _footer().pack()
    with pytest.raises(LayoutError, match="truncated"):
        Footer.unpack(packed[8:])
    with pytest.raises(LayoutError, match="truncated"):
        Footer.unpack(packed[-10:])


def test_footer_rejects_corruption() -> None:
    packed = bytearray(_footer().pack())
    packed[3] ^= 0x40  # a bit flip in blob_offset
    with pytest.raises(LayoutError, match="checksum"):
        Footer.unpack(bytes(packed))


# --- read_payload ----------------------------------------------------------


def test_read_payload_of_a_bare_payload_file(tmp_path: Path) -> None:
    path = tmp_path / "model.llamabin"
    footer = _write_payload_file(path, b"GGUF" + b"x" * 1000, {"name": "tiny", "n": 1})
    payload = read_payload(path)
    assert payload is not None
    assert payload.footer == footer
    assert payload.manifest == {"name": "tiny", "n": 1}
    with open(path, "rb") as f:
        f.seek(payload.blob_offset)
        assert f.read(4) == b"GGUF"


def test_read_payload_none_without_payload(tmp_path: Path) -> None:
    assert read_payload(sys.executable) is None  # a Python interpreter, usually ELF
    small = tmp_path / "small"
    small.write_bytes(b"hi")
    assert read_payload(small) is None
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert read_payload(empty) is None


def test_read_payload_rejects_a_file_cut_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "model.llamabin"
    _write_payload_file(path, b"B" * 100_000, {"name": "tiny"})
    data = path.read_bytes()
    path.write_bytes(data[: ALIGNMENT + 50_000] + data[ALIGNMENT + 100_000 :])
    with pytest.raises(LayoutError, match="truncated"):
        read_payload(path)


def test_read_payload_rejects_a_corrupted_manifest(tmp_path: Path) -> None:
    path = tmp_path / "model.llamabin"
    footer = _write_payload_file(path, b"B" * 10, {"name": "tiny"})
    data = bytearray(path.read_bytes())
    data[footer.manifest_offset + 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(LayoutError, match="manifest"):
        read_payload(path)


def test_read_payload_rejects_a_corrupted_footer(tmp_path: Path) -> None:
    path = tmp_path / "model.llamabin"
    _write_payload_file(path, b"B" * 10, {"name": "tiny"})
    data = bytearray(path.read_bytes())
    data[-FOOTER_SIZE] ^= 0xFF  # inside the footer, magic intact: the CRC catches it
    path.write_bytes(bytes(data))
    with pytest.raises(LayoutError, match="checksum"):
        read_payload(path)


# --- insertion into an ELF (fast: no PyInstaller needed) -------------------


@needs_linux
def test_insert_keeps_a_valid_runnable_elf(fake_pyinstaller_exe: Path, tmp_path: Path) -> None:
    blob = tmp_path / "model.gguf"
    digest = _write_random(blob, 3 * MiB + 7)
    out = tmp_path / "packed"
    seen: list[int] = []
    before = read_elf(fake_pyinstaller_exe)

    footer = insert_payload(fake_pyinstaller_exe, out, blob, encode_manifest({"name": "m"}), seen.append)

    assert sum(seen) == blob.stat().st_size
    assert footer.blob_offset % ALIGNMENT == 0
    assert out.stat().st_size == footer.file_size
    assert os.access(out, os.X_OK)
    _readelf_ok(out)
    after = read_elf(out)
    # Sections before the archive stay put; the archive and later ones move by the same multiple of ALIGNMENT.
    shift = after.section("pydata").offset - before.section("pydata").offset
    assert shift > 0 and shift % ALIGNMENT == 0
    for old, new in zip(before.sections, after.sections, strict=False):
        moved = old.offset >= before.section("pydata").offset and old.index != 0
        assert new.offset == old.offset + (shift if moved else 0), old.name
    with open(fake_pyinstaller_exe, "rb") as f:
        f.seek(before.section("pydata").offset)
        archive = f.read(before.section("pydata").size)
    with open(out, "rb") as f:
        f.seek(after.section("pydata").offset)
        assert f.read(len(archive)) == archive
    assert _sha256_range(out, footer.blob_offset, footer.blob_size) == digest
    assert subprocess.run([str(out)], check=False).returncode == 0  # the kernel still loads it

    payload = read_payload(out)
    assert payload is not None and payload.manifest == {"name": "m"}


@needs_linux
def test_insert_rejects_bad_input(fake_pyinstaller_exe: Path, tmp_path: Path) -> None:
    blob = tmp_path / "model.gguf"
    blob.write_bytes(b"GGUF")
    not_elf = tmp_path / "script.sh"
    not_elf.write_text("#!/bin/sh\n")
    with pytest.raises(ElfError, match="not an ELF"):
        insert_payload(not_elf, tmp_path / "o1", blob, b"{}")
    plain = tmp_path / "plain"
    shutil.copy2("/bin/true", plain)
    with pytest.raises(ElfError, match="pydata"):
        insert_payload(plain, tmp_path / "o2", blob, b"{}")
    with pytest.raises(ValueError, match="JSON object"):
        insert_payload(fake_pyinstaller_exe, tmp_path / "o3", blob, b"[1, 2]")
    packed = tmp_path / "packed"
    insert_payload(fake_pyinstaller_exe, packed, blob, b"{}")
    with pytest.raises(ElfError, match="already"):
        insert_payload(packed, tmp_path / "o4", blob, b"{}")


@needs_linux
def test_corrupted_magic_in_an_executable_is_reported(fake_pyinstaller_exe: Path, tmp_path: Path) -> None:
    blob = tmp_path / "model.gguf"
    blob.write_bytes(b"GGUF")
    packed = tmp_path / "packed"
    insert_payload(fake_pyinstaller_exe, packed, blob, b"{}")
    with open(packed, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"?")
    with pytest.raises(LayoutError, match="magic"):
        read_payload(packed)
    assert read_payload(fake_pyinstaller_exe) is None  # the same ELF without payload


@needs_linux
def test_truncated_download_is_reported(fake_pyinstaller_exe: Path, tmp_path: Path) -> None:
    blob = tmp_path / "model.gguf"
    _write_random(blob, MiB)
    packed = tmp_path / "packed"
    insert_payload(fake_pyinstaller_exe, packed, blob, b"{}")
    with open(packed, "r+b") as f:
        f.truncate(packed.stat().st_size // 2)  # the footer and the ELF tail are gone
    with pytest.raises(LayoutError, match="truncated"):
        read_payload(packed)


# --- end to end with a real PyInstaller onefile executable -----------------

SHOW_PAYLOAD = textwrap.dedent(
    """
    import json
    import sys

    from payload.find import read_payload

    payload = read_payload(sys.executable)
    if payload is None:
        print(json.dumps(None))
    else:
        print(json.dumps({"manifest": payload.manifest, "offset": payload.blob_offset,
                          "size": payload.blob_size}))
    """
)


@pytest.fixture(scope="module")
def onefile_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny onefile program that prints its own payload (built once, ~15 s)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("ELF insertion is Linux-only")
    pytest.importorskip("PyInstaller")
    work = tmp_path_factory.mktemp("onefile")
    script = work / "show_payload.py"
    script.write_text(SHOW_PAYLOAD)
    cmd = [
        sys.executable, "-m", "PyInstaller", "--onefile", "--noconfirm", "--log-level", "WARN",
        "--paths", str(ROOT), "--distpath", str(work / "dist"), "--workpath", str(work / "build"),
        "--specpath", str(work), str(script),
    ]  # fmt: skip
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "dist" / "show_payload"


def _run(exe: Path) -> object:
    result = subprocess.run([str(exe)], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_linux
def test_onefile_with_100mb_blob_reads_its_payload(onefile_exe: Path, tmp_path: Path) -> None:
    assert _run(onefile_exe) is None  # a plain PyInstaller executable has no payload
    blob = tmp_path / "model.gguf"
    digest = _write_random(blob, 100 * MiB)
    out = tmp_path / "chat-app"
    manifest = {"name": "tiny-test-model", "format": "gguf"}

    footer = insert_payload(onefile_exe, out, blob, encode_manifest(manifest))

    shown = _run(out)
    assert shown == {
        "manifest": manifest,
        "offset": footer.blob_offset,
        "size": 100 * MiB,
    }
    assert footer.blob_offset % ALIGNMENT == 0
    assert _sha256_range(out, footer.blob_offset, footer.blob_size) == digest
    _readelf_ok(out)


@needs_linux
def test_onefile_with_sparse_5gib_blob(onefile_exe: Path, tmp_path: Path) -> None:
    """Offsets past 4 GiB, on sparse files so the test takes seconds and no real disk."""
    if shutil.disk_usage(tmp_path).free < 2 * GiB:
        pytest.skip("too little free space")
    blob = tmp_path / "big.gguf"
    with open(blob, "wb") as f:
        f.write(b"GGUF-start")
        f.truncate(5 * GiB)
        f.seek(5 * GiB - 4)
        f.write(b"END!")
    if blob.stat().st_blocks * 512 > 64 * MiB:
        pytest.skip("this filesystem does not keep sparse files")
    out = tmp_path / "chat-app"

    footer = insert_payload(onefile_exe, out, blob, encode_manifest({"name": "big"}))

    assert out.stat().st_blocks * 512 < 256 * MiB, "the copy filled the holes"
    assert footer.manifest_offset > 4 * GiB
    shown = _run(out)
    assert shown == {
        "manifest": {"name": "big"},
        "offset": footer.blob_offset,
        "size": 5 * GiB,
    }
    with open(out, "rb") as f:
        f.seek(footer.blob_offset)
        assert f.read(10) == b"GGUF-start"
        f.seek(footer.blob_offset + 5 * GiB - 4)
        assert f.read(4) == b"END!"
    _readelf_ok(out)
