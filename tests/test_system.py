"""The single file on the systems users actually have: an empty Debian with
no Python (chroot), a read-only directory, an odd path, no HOME, a tiny
TMPDIR, and two copies started at once. Each run must print what the same
file prints when run normally.

Needs root (chroot, mount); the chroot test also needs debootstrap and
Debian's mirror the first time (scripts/make-rootfs.sh caches the rootfs
in build/rootfs-minbase/).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_file, tmpfs
from tests.test_packaged import PROMPT

# One thread each: two copies at once (and other jobs on a 2-core CI box)
# would otherwise oversubscribe the cores and llama.cpp's spinning threads
# slow down by orders of magnitude. The text is the same for any -t.
ARGS = ("--cli", "-p", PROMPT, "-n", "16", "--temp", "0", "--seed", "1", "-t", "1")
ROOTFS = ROOT / "build" / "rootfs-minbase"
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="mount, chroot and setpriv need root")


def _sh(*cmd: str, timeout: float = 60) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)


def _world_dir(parent: str | None = None, name: str = "llamabin-sys-") -> Path:
    """A directory any user can enter (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix=name, dir=parent))
    d.chmod(0o755)
    return d


def _place(exe: Path, dest: Path) -> Path:
    """The built file at `dest`: a hard link when possible (no 150 MB copy)."""
    try:
        os.link(exe, dest)
    except OSError:
        shutil.copy2(exe, dest)
    return dest


@pytest.fixture(scope="module")
def native(built: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The reference: the same file run normally, from a normal temp dir."""
    cwd, home = tmp_path_factory.mktemp("native-cwd"), tmp_path_factory.mktemp("native-home")
    result = run_file(built, *ARGS, cwd=cwd, env={"HOME": str(home), "TMPDIR": tempfile.gettempdir()})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the native run printed nothing"
    return result.stdout


@pytest.fixture
def world() -> Iterator[Path]:
    d = _world_dir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- an empty Debian (minbase) with no Python, through chroot ---------------------------------


@pytest.fixture(scope="module")
def rootfs() -> Path:
    if not IS_ROOT:
        pytest.skip("chroot needs root")
    if (
        shutil.which("debootstrap") is None
        and not Path("/usr/sbin/debootstrap").exists()
        and not (ROOTFS / ".complete").exists()
    ):
        pytest.skip("debootstrap is not installed (apt-get install debootstrap)")
    made = subprocess.run(
        [str(ROOT / "scripts" / "make-rootfs.sh"), str(ROOTFS)], capture_output=True, text=True, timeout=1800
    )
    if made.returncode in (3, 4):
        pytest.skip(made.stderr.strip())
    assert made.returncode == 0, made.stderr
    return ROOTFS


@needs_root
def test_runs_in_a_minbase_chroot_without_python(built: Path, native: str, rootfs: Path) -> None:
    assert not (rootfs / "usr" / "bin" / "python3").exists(), "the rootfs has Python: not a fair test"
    assert not list((rootfs / "usr" / "lib").glob("libpython3*")), "the rootfs has libpython"
    assert (rootfs / "bin" / "sh").exists() or (rootfs / "usr" / "bin" / "sh").exists()
    inside = rootfs / "llamabin-under-test"
    cache = rootfs / "root" / ".cache" / "llamabin"
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    _place(built, inside)  # removed below: the cached rootfs is reused by later runs
    try:
        result = subprocess.run(
            ["env", "-i", chroot, str(rootfs), "/" + inside.name, *ARGS],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
    finally:
        inside.unlink(missing_ok=True)
        shutil.rmtree(cache, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == native
    leftovers = [p.name for p in (rootfs / "tmp").iterdir() if p.name.startswith("_MEI")]
    assert leftovers == [], f"the runtime left its unpacked files in the chroot's /tmp: {leftovers}"


# -- a read-only directory; a path with spaces and non-ASCII characters -----------------------


@needs_root
def test_runs_from_a_read_only_directory(built: Path, native: str, world: Path) -> None:
    ro = world / "read only"
    ro.mkdir()
    exe = _place(built, ro / "model")
    home = world / "home"
    home.mkdir()
    _sh("mount", "--bind", str(ro), str(ro))
    try:
        _sh("mount", "-o", "remount,bind,ro", str(ro))
        probe = subprocess.run(["touch", str(ro / "probe")], capture_output=True)
        assert probe.returncode != 0, "the directory is not read-only"
        result = run_file(exe, *ARGS, cwd=ro, env={"HOME": str(home)})
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == native


def test_runs_from_a_path_with_spaces_and_non_ascii(built: Path, native: str, tmp_path: Path) -> None:
    odd = tmp_path / "my models ünïcødé ☃ 模型" / "a dir with  two spaces"
    odd.mkdir(parents=True)
    exe = _place(built, odd / "SmolLM2 ëxé (copy) #1")
    home = tmp_path / "hôme dir"
    home.mkdir()
    # env -i: the C locale, so the path's bytes are not even valid in the locale's charset.
    result = run_file(exe, *ARGS, cwd=odd, env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == native
    assert sorted(p.name for p in odd.iterdir()) == [exe.name], "the run wrote next to the file"


# -- HOME unset ------------------------------------------------------------------------------


@needs_root
@pytest.mark.parametrize(
    "user",
    [
        pytest.param("nobody", id="passwd-home-missing"),
        pytest.param("54321", id="uid-without-passwd-entry"),
    ],
)
def test_runs_with_home_unset(built: Path, native: str, world: Path, user: str) -> None:
    """As a user with no usable home: `nobody` (home /nonexistent), and a
    bare uid with no passwd entry at all, as in `docker run --user 54321`."""
    exe = _place(built, world / "model")
    cwd = world / "cwd"
    cwd.mkdir()
    cwd.chmod(0o777)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    uid = user if user.isdigit() else str(int(subprocess.check_output(["id", "-u", user], text=True)))
    gid = user if user.isdigit() else str(int(subprocess.check_output(["id", "-g", user], text=True)))
    result = subprocess.run(
        ["env", "-i", setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", str(exe), *ARGS],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == native
    assert list(cwd.iterdir()) == [], "with no home the runtime wrote into the working directory"


# -- TMPDIR on a small tmpfs -------------------------------------------------------------------


SMALL = "16m"  # the runtime unpacks about 50 MB


@pytest.fixture(scope="module")
def small_tmpdir_run(built: Path) -> Iterator[tuple[subprocess.CompletedProcess[str], float, list[str], Path]]:
    """One launch with TMPDIR on a 16 MB tmpfs: the result, its duration and
    what it left in TMPDIR. No HOME, so there is no cache to unpack into
    instead (tests/test_unpack_cache.py has the launches that have one)."""
    if not IS_ROOT:
        pytest.skip("mount needs root")
    base = _world_dir()
    tmpdir, cwd = base / "small tmp", base / "cwd"
    cwd.mkdir()
    try:
        with tmpfs(tmpdir, f"size={SMALL},mode=1777"):
            start = time.monotonic()
            result = run_file(built, *ARGS, cwd=cwd, env={"TMPDIR": str(tmpdir)}, timeout=60)
            took = time.monotonic() - start
            left = sorted(p.name for p in tmpdir.iterdir())
        yield result, took, left, tmpdir
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_small_tmpdir_fails_fast_without_a_traceback(
    small_tmpdir_run: tuple[subprocess.CompletedProcess[str], float, list[str], Path],
) -> None:
    result, took, _left, _tmpdir = small_tmpdir_run
    assert result.returncode != 0
    assert took < 30, f"took {took:.1f}s to fail"
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_a_small_tmpdir_error_names_the_cause(
    small_tmpdir_run: tuple[subprocess.CompletedProcess[str], float, list[str], Path],
) -> None:
    """The bootloader is patched (patches/pyinstaller-bootloader.patch): the
    stock one says only "decompression resulted in return code -1!"."""
    result, _took, _left, _tmpdir = small_tmpdir_run
    assert "cannot write to the temporary directory" in result.stderr, result.stderr
    assert "No space left on device" in result.stderr
    assert "point TMPDIR at a directory with more room" in result.stderr
    assert "decompression resulted in return code" not in result.stderr


def test_a_small_tmpdir_is_left_clean(
    small_tmpdir_run: tuple[subprocess.CompletedProcess[str], float, list[str], Path],
) -> None:
    """A failed start removes what it unpacked, so the next program still
    has the space."""
    _result, _took, left, _tmpdir = small_tmpdir_run
    assert left == []


# -- two copies launched at the same moment ----------------------------------------------------


def test_two_copies_launched_at_once(built: Path, native: str, tmp_path: Path) -> None:
    """Same file, same HOME (both do the first-launch sha256 check and write
    the same cache record), same TMPDIR, started together."""
    home, tmpdir = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmpdir.mkdir()
    exe = _place(built, tmp_path / "model")
    cwds = [tmp_path / "a", tmp_path / "b"]
    for c in cwds:
        c.mkdir()
    env = [f"HOME={home}", f"TMPDIR={tmpdir}"]
    procs = [
        subprocess.Popen(
            ["env", "-i", *env, str(exe), *ARGS],
            cwd=c,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for c in cwds
    ]
    outs: list[tuple[int, str, str]] = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=180)
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for code, out, err in outs:
        assert code == 0, err
        assert out == native
    assert [p.name for p in tmpdir.iterdir()] == [], "an unpacked runtime was left behind"
    cache = home / ".cache" / "llamabin"
    assert (cache / "verified.json").is_file()
    assert sorted(p.name for p in cache.iterdir()) == ["cpu-kernels.json", "runtime", "verified.json"]
    # Both unpacked; one copy won the rename into place, the other's was removed.
    assert len([p.name for p in (cache / "runtime").iterdir()]) == 1


# -- older x86-64 CPUs, emulated by qemu-user ---------------------------------------------------

# What each emulated CPU lacks, and the CPU variant llama.cpp must pick on it.
OLD_CPUS = [
    pytest.param("Haswell", "haswell", id="Haswell-no-AVX512"),
    pytest.param("Nehalem", "sse42", id="Nehalem-no-AVX"),
]
QEMU = "/usr/bin/qemu-x86_64"


@pytest.fixture(scope="module")
def under_qemu(built: Path) -> Iterator[Path]:
    """A copy of the built file that the kernel hands to qemu-x86_64, child
    processes included.

    Running `qemu-x86_64 FILE` is not enough: PyInstaller's bootloader
    re-executes the file for the Python half, and that exec goes straight to
    the real CPU. So the copy is marked in its ELF header's padding bytes
    (which the loader ignores) and a binfmt_misc entry sends files with that
    mark to qemu; QEMU_CPU then picks the CPU model for every process."""
    if not IS_ROOT:
        pytest.skip("binfmt_misc needs root")
    if os.uname().machine != "x86_64" or not os.access(QEMU, os.X_OK):
        pytest.skip("needs an x86-64 host and qemu-x86_64 (apt-get install qemu-user)")
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    mounted_here = False
    if not (binfmt / "register").exists():
        if subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], capture_output=True).returncode:
            pytest.skip("binfmt_misc is not available in this container")
        mounted_here = True
    mark = os.urandom(3).hex().encode()  # 6 bytes in e_ident[9:15]
    entry = binfmt / f"llamabin-test-{mark.decode()}"
    magic = "".join(f"\\x{b:02x}" for b in b"\x7fELF\x02\x01\x01\x00\x00" + mark)
    (binfmt / "register").write_text(f":{entry.name}:M:0:{magic}::{QEMU}:")
    base = _world_dir()
    try:
        exe = base / "model"
        shutil.copy2(built, exe)
        with exe.open("r+b") as f:
            f.seek(9)
            f.write(mark)
        yield exe
    finally:
        entry.write_text("-1")
        shutil.rmtree(base, ignore_errors=True)
        if mounted_here:
            subprocess.run(["umount", str(binfmt)], capture_output=True)


@pytest.mark.parametrize("cpu, variant", OLD_CPUS)
def test_runs_on_an_older_cpu(built: Path, under_qemu: Path, cpu: str, variant: str, tmp_path: Path) -> None:
    result = run_file(
        under_qemu, *ARGS, "--verbose", cwd=tmp_path, env={"HOME": str(tmp_path), "QEMU_CPU": cpu}, timeout=900
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"libggml-cpu-{variant}.so" in result.stderr, "llama.cpp did not pick the CPU variant for that CPU"
    # The same kernels run by this CPU print exactly the same text. (Not
    # this CPU's own best kernels: variants round differently, and the text
    # of an AVX-512 host parts ways with Haswell's after a few tokens.)
    same_kernels = run_file(built, *ARGS, cwd=tmp_path, env={"HOME": str(tmp_path), "LLAMABIN_CPU_VARIANT": variant})
    assert same_kernels.returncode == 0, same_kernels.stderr
    assert result.stdout == same_kernels.stdout and result.stdout.strip()
