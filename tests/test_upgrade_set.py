"""`llamabin upgrade` and `llamabin set` on a real SmolLM2 file: the weights
are never rewritten (same offset, same sha256), the answers stay the same,
and a failed write leaves the old file as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from packager.rewrite import manifest_area
from payload.find import Payload, read_payload
from payload.footer import FOOTER_SIZE
from payload.manifest import encode_manifest
from tests.helpers import llamabin, run_file, tmpfs

ANSWER = ("--cli", "-p", "four score and seven", "--temp", "0", "--seed", "1", "-n", "8", "--log-disable")
# More than the spare room a build leaves (64 to 128 KiB), in two arguments:
# one argument is at most 128 KiB (MAX_ARG_STRLEN).
TOO_BIG = ("--system-prompt", "Answer like a sailor. " * 4500, "--", "--grammar", "root ::= " + '"a" ' * 25000)
OLD_VERSIONS = {"llamabin": "0.0.1", "llama-cpp-python": "0.3.1", "llama.cpp": "old", "pyinstaller": "6.0.0"}


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


@pytest.fixture
def exe(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built file (BAKED defaults: -n 6 --temp 0)."""
    copy = tmp_path / "work" / built.name
    copy.parent.mkdir()
    shutil.copy2(built, copy)
    return copy


def payload_of(path: Path) -> Payload:
    payload = read_payload(path)
    assert payload is not None, path
    return payload


def weights(path: Path) -> tuple[int, str]:
    """Where the weights are, and the sha256 of those bytes themselves."""
    payload = payload_of(path)
    h = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(payload.blob_offset)
        left = payload.blob_size
        while left:
            block = f.read(min(left, 1 << 20))
            assert block
            h.update(block)
            left -= len(block)
    assert h.hexdigest() == payload.manifest["gguf"]["sha256"]
    return payload.blob_offset, h.hexdigest()


def file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def make_older(path: Path) -> None:
    """Write, by hand, the manifest an older runtime would have recorded:
    at the same place, the footer rewritten to match."""
    payload = payload_of(path)
    raw = encode_manifest(dict(payload.manifest, versions=OLD_VERSIONS))
    footer = replace(payload.footer).with_manifest(raw)
    with path.open("r+b") as f:
        f.seek(footer.manifest_offset)
        f.write(raw + bytes(max(0, payload.footer.manifest_size - len(raw))))
        f.seek(footer.file_size - FOOTER_SIZE)
        f.write(footer.pack())
    assert payload_of(path).manifest["versions"] == OLD_VERSIONS


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("llamabin: error: "), result.stderr
    return lines[0]


def error_after_progress(result: subprocess.CompletedProcess[str]) -> str:
    """The error line that ends a command's progress lines: one, no traceback."""
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert [line for line in lines if line.startswith("llamabin: error: ")] == lines[-1:], result.stderr
    return lines[-1]


# --- (a) upgrade ------------------------------------------------------------------------


def test_upgrade_moves_the_weights_onto_the_current_runtime(
    exe: Path, built: Path, portable_lib: Path, empty_dir: Path
) -> None:
    make_older(exe)
    exe.chmod(0o751)
    before = run_file(exe, *ANSWER, cwd=empty_dir)
    assert before.returncode == 0 and before.stdout.strip(), before.stderr
    where = weights(exe)
    old = payload_of(exe).manifest

    result = llamabin("upgrade", str(exe), "--llama-lib", str(portable_lib))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(exe)
    new = payload_of(exe).manifest
    assert new["versions"] == payload_of(built).manifest["versions"] != OLD_VERSIONS
    assert {k: v for k, v in new.items() if k != "versions"} == {k: v for k, v in old.items() if k != "versions"}
    assert weights(exe) == where
    assert exe.stat().st_mode & 0o7777 == 0o751
    assert [p.name for p in exe.parent.iterdir()] == [exe.name]  # no temporary left
    after = run_file(exe, *ANSWER, cwd=empty_dir)
    assert after.returncode == 0, after.stderr
    assert after.stdout == before.stdout
    verify = run_file(exe, "--verify", cwd=empty_dir)
    assert verify.returncode == 0, verify.stderr


def test_upgrade_to_another_file_leaves_the_old_one(exe: Path, portable_lib: Path, tmp_path: Path) -> None:
    make_older(exe)
    digest = file_digest(exe)
    out = tmp_path / "new-file"
    result = llamabin("upgrade", str(exe), "-o", str(out), "--llama-lib", str(portable_lib))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert file_digest(exe) == digest
    assert weights(out) == weights(exe)
    assert payload_of(out).manifest["versions"] != OLD_VERSIONS


def test_upgrade_of_a_file_named_in_the_current_folder(exe: Path, portable_lib: Path) -> None:
    make_older(exe)
    result = llamabin("upgrade", exe.name, "--llama-lib", str(portable_lib), cwd=exe.parent)
    assert result.returncode == 0, result.stderr
    assert payload_of(exe).manifest["versions"] != OLD_VERSIONS


def test_upgrade_onto_a_file_not_llamabins_is_refused(exe: Path, portable_lib: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    result = llamabin("upgrade", str(exe), "-o", str(notes), "--llama-lib", str(portable_lib))
    assert result.returncode == 2
    assert "exists and is not a llamabin executable" in one_error_line(result)
    assert notes.read_text() == "my notes\n"


def test_upgrade_with_a_sidecar_rewrites_only_the_executable(
    smollm2: Path, portable_lib: Path, tmp_path: Path, empty_dir: Path
) -> None:
    built = llamabin(
        "build", str(smollm2), "-o", str(tmp_path), "--sidecar", "--llama-lib", str(portable_lib), "--", "-n", "6"
    )
    assert built.returncode == 0, built.stderr
    exe = tmp_path / "SmolLM2-135M-Instruct.Q4_1-linux-x86_64"
    side = exe.with_name(exe.name + ".gguf")
    before = run_file(exe, *ANSWER, cwd=empty_dir)
    inode, where = side.stat().st_ino, weights(side)
    make_older(side)

    result = llamabin("upgrade", str(exe), "--llama-lib", str(portable_lib))

    assert result.returncode == 0, result.stderr
    assert side.stat().st_ino == inode  # the same sidecar file, its manifest updated in place
    assert weights(side) == where
    assert payload_of(side).manifest["versions"] != OLD_VERSIONS
    assert read_payload(exe) is None  # the executable is a plain runtime
    after = run_file(exe, *ANSWER, cwd=empty_dir)
    assert after.returncode == 0, after.stderr
    assert after.stdout == before.stdout


# --- (b), (c) set -----------------------------------------------------------------------


PIRATE = "You are a pirate called Zed."


def test_set_changes_the_system_prompt_in_place(exe: Path, empty_dir: Path) -> None:
    where, size = weights(exe), exe.stat().st_size

    result = llamabin("set", str(exe), "--system-prompt", PIRATE)

    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stderr  # in place, no copy
    assert exe.stat().st_size == size
    assert weights(exe) == where
    shown = llamabin("inspect", str(exe)).stdout
    assert f"defaults:         -n 6 --temp 0 --system-prompt {PIRATE}\n" in shown
    asked = run_file(exe, "--ask", "hello", "-n", "1", "--verbose-prompt", cwd=empty_dir)
    assert asked.returncode == 0, asked.stderr
    assert PIRATE in asked.stderr

    # Again: the next manifest goes beside this one, and a flag's other spelling is replaced too.
    again = llamabin("set", str(exe), "--system-prompt", "Be brief.", "--", "--n-predict", "3")
    assert again.returncode == 0, again.stderr
    assert exe.stat().st_size == size and weights(exe) == where
    shown = llamabin("inspect", str(exe)).stdout
    assert "defaults:         --temp 0 --system-prompt Be brief. --n-predict 3\n" in shown
    asked = run_file(exe, "--ask", "hello", "-n", "1", "--verbose-prompt", cwd=empty_dir)
    assert "Be brief." in asked.stderr and PIRATE not in asked.stderr
    with exe.open("rb") as f:
        assert PIRATE.encode() not in f.read()  # the old manifest was zeroed


def test_a_typed_system_prompt_beats_the_built_in_one(exe: Path, empty_dir: Path) -> None:
    """`./model --chat -p "you are a pirate"` (llamafile's usage) on a file
    built with --system-prompt: what is typed wins, as for every flag."""
    assert llamabin("set", str(exe), "--system-prompt", PIRATE).returncode == 0

    def system_prompt(*args: str) -> str:
        result = subprocess.run(
            ["env", "-i", str(exe), "--chat", *args],
            input="/system\n/exit\n",
            capture_output=True,
            text=True,
            cwd=empty_dir,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        shown = [line for line in result.stdout.splitlines() if line.startswith("system prompt:")]
        assert len(shown) == 1, result.stdout
        return shown[0].removeprefix("system prompt: ")

    assert system_prompt() == PIRATE
    assert system_prompt("-p", "You are a librarian.") == "You are a librarian."
    assert system_prompt("--system-prompt", "Be brief.") == "Be brief."


def test_set_a_manifest_too_large_for_the_spare_room_copies_the_file(exe: Path) -> None:
    where, size = weights(exe), exe.stat().st_size

    result = llamabin("set", str(exe), *TOO_BIG)

    assert result.returncode == 0, result.stderr
    assert "does not fit" in result.stderr and "rewriting the file by copy" in result.stderr
    assert exe.stat().st_size > size
    assert weights(exe) == where  # copied unchanged, at the same offset
    args = payload_of(exe).manifest["defaults"]["args"]
    assert args == ["-n", "6", "--temp", "0", *(a for a in TOO_BIG if a != "--")]
    # With a fresh reserve, the next change fits in place again.
    size = exe.stat().st_size
    small = llamabin("set", str(exe), "--system-prompt", PIRATE, "--", "--grammar", 'root ::= "a"')
    assert small.returncode == 0 and "note:" not in small.stderr, small.stderr
    assert exe.stat().st_size == size and weights(exe) == where


def test_set_on_an_old_file_without_spare_room_falls_back(exe: Path) -> None:
    """A file built before the reserve: the manifest fills its area."""
    payload = payload_of(exe)
    where = weights(exe)
    area = manifest_area(payload)
    assert area is not None and area[0] == payload.footer.manifest_offset
    # An unknown field grown until the manifest all but fills the area.
    base = len(encode_manifest(dict(payload.manifest, padding="")))
    raw = encode_manifest(dict(payload.manifest, padding="x" * (area[1] - area[0] - base - 10)))
    footer = payload.footer.with_manifest(raw)
    with exe.open("r+b") as f:
        f.seek(footer.manifest_offset)
        f.write(raw)
        f.seek(footer.file_size - FOOTER_SIZE)
        f.write(footer.pack())
    assert payload_of(exe).manifest["padding"]

    result = llamabin("set", str(exe), "--ctx-size", "512")

    assert result.returncode == 0, result.stderr
    assert "rewriting the file by copy" in result.stderr
    assert weights(exe) == where
    assert payload_of(exe).manifest["defaults"]["args"][-2:] == ["--ctx-size", "512"]


# --- (d) refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("upgrade",), ("set", "--system-prompt", "hi"), ("inspect",)])
def test_a_file_that_is_not_llamabin_is_a_usage_error(command: tuple[str, ...], tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copy2(sys.executable, plain)  # an ELF executable without a payload
    digest = file_digest(plain)
    result = llamabin(command[0], str(plain), *command[1:])
    assert result.returncode == 2
    assert one_error_line(result) == f"llamabin: error: {plain} is not a llamabin executable (no model inside)"
    assert file_digest(plain) == digest
    missing = llamabin(command[0], str(tmp_path / "nothing"), *command[1:])
    assert missing.returncode == 2 and "no such file" in one_error_line(missing)


@pytest.mark.parametrize("flags", [["--ctx-size", "99999"], ["--", "-c", "99999"]])
def test_set_refuses_a_context_above_the_trained_one(exe: Path, flags: list[str]) -> None:
    digest = file_digest(exe)
    result = llamabin("set", str(exe), *flags)
    assert result.returncode == 2
    assert "a built-in context of 99999 tokens is above the 8192 tokens" in one_error_line(result)
    assert file_digest(exe) == digest
    allowed = llamabin("set", str(exe), *flags, *([] if "--" in flags else ["--"]), "--ctx-force")
    assert allowed.returncode == 0, allowed.stderr


def test_set_refuses_a_flag_a_file_may_not_carry(exe: Path) -> None:
    digest = file_digest(exe)
    result = llamabin("set", str(exe), "--", "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "--host is not allowed as a built-in default" in one_error_line(result)
    assert file_digest(exe) == digest


# --- (e) failed writes ------------------------------------------------------------------------


def test_upgrade_on_a_read_only_filesystem_leaves_the_file(exe: Path, portable_lib: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "size=512m") as point:
        copy = point / exe.name
        shutil.copy2(exe, copy)
        digest = file_digest(copy)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(point)], capture_output=True, timeout=60)
        assert remount.returncode == 0, remount.stderr
        result = llamabin("upgrade", str(copy), "--llama-lib", str(portable_lib))
        assert result.returncode == 1
        assert "Read-only file system" in error_after_progress(result)
        assert file_digest(copy) == digest
        assert [p.name for p in point.iterdir()] == [copy.name]


@pytest.mark.parametrize("command", ["upgrade", "set"])
def test_a_full_disk_leaves_the_file(command: str, exe: Path, portable_lib: Path, tmp_path: Path) -> None:
    room = exe.stat().st_size + 4 * 1024 * 1024  # the file fits, a second copy does not
    with tmpfs(tmp_path / "full", f"size={room}") as point:
        copy = point / exe.name
        shutil.copy2(exe, copy)
        digest = file_digest(copy)
        if command == "upgrade":
            result = llamabin("upgrade", str(copy), "--llama-lib", str(portable_lib))
        else:  # too large for the spare room: a copy is needed
            result = llamabin("set", str(copy), *TOO_BIG)
        assert result.returncode == 1
        assert error_after_progress(result).startswith("llamabin: error: no space left on the device while writing")
        assert file_digest(copy) == digest
        assert [p.name for p in point.iterdir()] == [copy.name]


def test_inspect_still_reads_every_rewritten_file(exe: Path) -> None:
    """The rewritten footer and manifest are what `inspect` and the runtime
    read: the same JSON, nothing else moved."""
    llamabin("set", str(exe), "-c", "1024")
    payload = payload_of(exe)
    assert json.loads(encode_manifest(payload.manifest))["defaults"]["args"][-2:] == ["--ctx-size", "1024"]
    assert os.access(exe, os.X_OK)
