"""The packaged file unpacks its runtime once, into the user's cache
directory, and later launches reuse it (patches/pyinstaller-unpack-cache.patch).
Where no cache can be used it unpacks into TMPDIR for the one launch, as a
stock PyInstaller program does, and cleans up.

Every run is the real file with nothing inherited but the variables given.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import run_file, tmpfs
from tests.test_system import ARGS, IS_ROOT

KEY = re.compile(r"[0-9a-f]{16}")
DAY = 24 * 3600
needs_root = pytest.mark.skipif(not IS_ROOT, reason="mount needs root")


def runtime_of(home: Path) -> Path:
    return home / ".cache" / "llamabin" / "runtime"


def launch(exe: Path, cwd: Path, **env: Path | str) -> subprocess.CompletedProcess[str]:
    result = run_file(exe, *ARGS, cwd=cwd, env={k: str(v) for k, v in env.items()})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    return result


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def tmpdir(tmp_path: Path) -> Path:
    (tmp_path / "tmp").mkdir()
    return tmp_path / "tmp"


def test_the_first_launch_unpacks_into_the_cache_and_later_ones_reuse_it(built: Path, home: Path, tmpdir: Path) -> None:
    first = launch(built, home, HOME=home, TMPDIR=tmpdir)
    [unpacked] = runtime_of(home).iterdir()
    assert KEY.fullmatch(unpacked.name), unpacked.name
    assert (unpacked / "llama_cpp" / "lib" / "libllama.so").is_file()
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in unpacked.rglob("*") if p.is_file()}
    assert len(before) > 50
    assert list(tmpdir.iterdir()) == []

    second = launch(built, home, HOME=home, TMPDIR=tmpdir)
    assert second.stdout == first.stdout
    assert list(runtime_of(home).iterdir()) == [unpacked]
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in unpacked.rglob("*") if p.is_file()}
    assert after == before, "the second launch wrote the runtime again"
    assert list(tmpdir.iterdir()) == []


def test_doctor_says_where_the_runtime_is(built: Path, home: Path, tmpdir: Path) -> None:
    doctor = run_file(built, "--doctor", cwd=home, env={"HOME": str(home), "TMPDIR": str(tmpdir)})
    assert doctor.returncode == 0, doctor.stderr
    [unpacked] = runtime_of(home).iterdir()
    assert f"runtime:   unpacked into {unpacked} at the first launch, reused since\n" in doctor.stdout

    without = run_file(built, "--doctor", cwd=home, env={"TMPDIR": str(tmpdir)})  # no HOME: no cache
    assert without.returncode == 0, without.stderr
    assert re.search(
        rf"^runtime:   unpacked into {re.escape(str(tmpdir))}/_MEI\w+ for this launch only "
        r"\(no writable cache directory\)$",
        without.stdout,
        re.M,
    ), without.stdout
    assert list(tmpdir.iterdir()) == []


@pytest.mark.parametrize("where", ["LLAMABIN_HOME", "XDG_CACHE_HOME"])
def test_the_cache_follows_the_same_variables_as_the_rest_of_llamabin(
    built: Path, home: Path, tmpdir: Path, tmp_path: Path, where: str
) -> None:
    """LLAMABIN_HOME moves all of llamabin's files, XDG_CACHE_HOME its cache,
    as they do for the record of verified weights."""
    chosen = tmp_path / "chosen"
    launch(built, home, HOME=home, TMPDIR=tmpdir, **{where: chosen})
    cache = chosen / "cache" if where == "LLAMABIN_HOME" else chosen / "llamabin"
    assert sorted(p.name for p in cache.iterdir()) == ["cpu-kernels.json", "runtime", "verified.json"]
    [unpacked] = (cache / "runtime").iterdir()
    assert KEY.fullmatch(unpacked.name)
    assert not (home / ".cache").exists()


def test_a_damaged_cache_is_unpacked_again(built: Path, home: Path, tmpdir: Path) -> None:
    first = launch(built, home, HOME=home, TMPDIR=tmpdir)
    [unpacked] = runtime_of(home).iterdir()
    lib = unpacked / "llama_cpp" / "lib" / "libllama.so"
    size = lib.stat().st_size
    os.truncate(lib, 1000)  # as a full disk or a careless clean-up would leave it

    second = launch(built, home, HOME=home, TMPDIR=tmpdir)
    assert second.stdout == first.stdout
    assert [p.name for p in runtime_of(home).iterdir()] == [unpacked.name], "a work or stale directory was left"
    assert lib.stat().st_size == size
    assert list(tmpdir.iterdir()) == []


def test_a_library_changed_in_place_is_unpacked_again(built: Path, home: Path, tmpdir: Path) -> None:
    """Same size, and the mtime set back as `touch -d` would: only the
    ctime, which no user can set, tells that the file changed."""
    first = launch(built, home, HOME=home, TMPDIR=tmpdir)
    [unpacked] = runtime_of(home).iterdir()
    lib = unpacked / "llama_cpp" / "lib" / "libllama.so"
    original = lib.read_bytes()
    before = lib.stat()
    with open(lib, "r+b") as f:
        f.seek(len(original) // 2)
        f.write(b"\xcc" * 4096)  # int3: code that traps if it runs
    os.utime(lib, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (lib.stat().st_size, lib.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    second = launch(built, home, HOME=home, TMPDIR=tmpdir)
    assert second.stdout == first.stdout
    assert lib.read_bytes() == original
    assert [p.name for p in runtime_of(home).iterdir()] == [unpacked.name], "a work or stale directory was left"
    assert list(tmpdir.iterdir()) == []


def test_a_copy_without_its_manifest_is_unpacked_again(built: Path, home: Path, tmpdir: Path) -> None:
    """As a copy unpacked by an older bootloader is: there is nothing to
    check its files against."""
    launch(built, home, HOME=home, TMPDIR=tmpdir)
    [unpacked] = runtime_of(home).iterdir()
    manifest = unpacked / ".pyi-unpack-manifest"
    manifest.unlink()
    lib = unpacked / "llama_cpp" / "lib" / "libllama.so"
    inode = lib.stat().st_ino

    launch(built, home, HOME=home, TMPDIR=tmpdir)
    assert manifest.is_file()
    assert lib.stat().st_ino != inode, "the copy was reused unchecked"


def writable_by_group(path: Path) -> None:
    path.chmod(0o770)


def writable_by_others(path: Path) -> None:
    path.chmod(0o707)


def owned_by_nobody(path: Path) -> None:
    if not IS_ROOT:
        pytest.skip("chown needs root")
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)


def a_symlink(path: Path) -> None:
    """To the same directory moved aside: only being a symlink is wrong."""
    moved = path.with_name(path.name + "-moved")
    path.rename(moved)
    path.symlink_to(moved)


def state_of(root: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_ino, p.lstat().st_mtime_ns, p.lstat().st_ctime_ns)
        for p in root.rglob("*")
        if not p.is_dir()
    }


@pytest.mark.parametrize("spoil", [writable_by_group, writable_by_others, owned_by_nobody, a_symlink])
@pytest.mark.parametrize("level", ["llamabin", "runtime", "key"])
def test_a_cache_directory_that_is_not_the_users_alone_is_not_used(
    built: Path, home: Path, tmpdir: Path, level: str, spoil: Callable[[Path], None]
) -> None:
    """Whoever can write to one of the cache's directories could swap the
    libraries the file loads: such a cache is left alone, and the file
    unpacks into TMPDIR as if it had none."""
    reference = launch(built, home, HOME=home, TMPDIR=tmpdir)
    [unpacked] = runtime_of(home).iterdir()
    spoilt = {"llamabin": runtime_of(home).parent, "runtime": runtime_of(home), "key": unpacked}[level]
    spoil(spoilt)
    before = state_of(runtime_of(home))

    result = launch(built, home, HOME=home, TMPDIR=tmpdir)
    assert result.stdout == reference.stdout
    assert list(tmpdir.iterdir()) == []
    doctor = run_file(built, "--doctor", cwd=home, env={"HOME": str(home), "TMPDIR": str(tmpdir)})
    assert doctor.returncode == 0, doctor.stderr
    assert re.search(
        rf"^runtime:   unpacked into {re.escape(str(tmpdir))}/_MEI\w+ for this launch only "
        rf"\(not used as the cache: {re.escape(str(spoilt))} must be a directory of this user's "
        r"that no one else can write\)$",
        doctor.stdout,
        re.M,
    ), doctor.stdout
    assert list(tmpdir.iterdir()) == []
    assert state_of(runtime_of(home)) == before, "the cache was written to"


def test_without_a_usable_cache_it_unpacks_into_tmpdir_and_cleans_up(built: Path, home: Path, tmpdir: Path) -> None:
    blocked = home / "blocked"
    blocked.mkdir()
    (blocked / "cache").write_text("a file where the cache directory would go\n")
    reference = launch(built, home, HOME=home, TMPDIR=tmpdir)

    result = launch(built, home, HOME=home, TMPDIR=tmpdir, LLAMABIN_HOME=blocked)
    assert result.stdout == reference.stdout
    assert result.stderr == reference.stderr
    assert list(tmpdir.iterdir()) == []
    assert sorted(p.name for p in blocked.iterdir()) == ["cache"]


def test_other_builds_unused_for_a_month_are_removed_when_a_new_one_unpacks(
    built: Path, home: Path, tmpdir: Path
) -> None:
    runtime = runtime_of(home)
    ages = {
        "0123456789abcdef": 40 * DAY,  # another build, unused for 40 days: removed
        "fedcba9876543210": 10 * DAY,  # used 10 days ago: kept
        ".unpack-Ab12Cd": 2 * DAY,  # a crashed launch's work directory: removed
        ".unpack-Ef34Gh": 0,  # another launch unpacking right now: kept
    }
    now = time.time()
    for name, age in ages.items():
        (runtime / name).mkdir(parents=True)
        (runtime / name / "libpython3.11.so.1.0").write_bytes(b"\0" * 100)
        os.utime(runtime / name, (now - age, now - age))

    launch(built, home, HOME=home, TMPDIR=tmpdir)
    left = sorted(p.name for p in runtime.iterdir())
    [new] = [name for name in left if name not in ages]
    assert KEY.fullmatch(new)
    assert left == sorted([new, "fedcba9876543210", ".unpack-Ef34Gh"])


# -- full disks ------------------------------------------------------------------------------


@pytest.fixture
def small_mount(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small", "size=16m,mode=1777") as point:
        yield point


@pytest.fixture
def noexec_mount(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "noexec", "size=256m,mode=1777,noexec") as point:
        yield point


@needs_root
def test_a_cache_on_a_noexec_disk_is_skipped(built: Path, home: Path, tmpdir: Path, noexec_mount: Path) -> None:
    """Libraries there could not be loaded: some systems mount home noexec."""
    reference = launch(built, home, HOME=home, TMPDIR=tmpdir)
    result = launch(built, home, HOME=home, TMPDIR=tmpdir, LLAMABIN_HOME=noexec_mount)
    assert result.stdout == reference.stdout
    assert files_under(noexec_mount / "cache" / "runtime") == []
    assert list(tmpdir.iterdir()) == []


@needs_root
def test_a_cache_on_a_full_disk_is_skipped_without_a_word(
    built: Path, home: Path, tmpdir: Path, small_mount: Path
) -> None:
    """The runtime is about 50 MB: it does not fit in 16 MB, so this launch
    unpacks into TMPDIR, and nothing is left half-written in the cache."""
    reference = launch(built, home, HOME=home, TMPDIR=tmpdir)
    result = launch(built, home, HOME=home, TMPDIR=tmpdir, LLAMABIN_HOME=small_mount)
    assert result.stdout == reference.stdout
    assert result.stderr == reference.stderr
    assert files_under(small_mount / "cache" / "runtime") == []
    assert list(tmpdir.iterdir()) == []


@needs_root
def test_once_unpacked_a_full_tmpdir_does_not_matter(built: Path, home: Path, small_mount: Path) -> None:
    filler = small_mount / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=64"], capture_output=True, timeout=60)
    assert os.statvfs(small_mount).f_bavail == 0, "the tmpfs is not full"
    first = launch(built, home, HOME=home, TMPDIR=home)  # unpacks into the cache
    second = launch(built, home, HOME=home, TMPDIR=small_mount)
    assert second.stdout == first.stdout
