"""Writing a file in place of another without losing either: `build`,
`upgrade` and `set` write to a temporary name beside the target, start the
result once where it can run, and only then rename it over the target.
What may be replaced at all is decided here too: never the input, and
never a file that is not a llamabin executable unless asked (--force)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from packager.errors import BuildError
from payload.errors import UsageError
from payload.find import find_payload, read_payload
from payload.footer import LayoutError
from payload.manifest import ManifestError


def check_replaceable(target: Path, inputs: tuple[Path, ...], force: bool) -> None:
    """Refuse, before any work, to write over one of the `inputs`, or over
    an existing file that is not a llamabin executable (unless `force`)."""
    for given in inputs:
        if same_file(target, given):
            raise UsageError(f"the output {target} is the input {given}: give another -o")
        # A checkpoint's own files (weights, config, tokenizer); an earlier
        # build inside the folder (`build .` puts dist/ there) may be replaced.
        if given.is_dir() and target.exists() and _inside(target, given) and not _is_ours(target):
            raise UsageError(f"the output {target} is a file of the input folder {given}: give another -o")
    if target.is_dir():
        raise UsageError(f"the output {target} is a directory")
    if not force and target.exists() and not _is_ours(target):
        raise UsageError(f"{target} exists and is not a llamabin executable: give another -o, or --force to replace it")


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def same_file(a: Path, b: Path) -> bool:
    """Both exist and are one file (under any names)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _is_ours(path: Path) -> bool:
    try:
        if read_payload(path) is not None:
            return True
        # A file whose weights are in a sidecar is the bare runtime: a
        # sidecar alone does not make any file beside it ours.
        return _is_frozen_program(path) and find_payload(path) is not None
    except (LayoutError, ManifestError):  # a damaged llamabin file is still one: replacing it is what upgrade is for
        return True
    except OSError:
        return False


# The cookie PyInstaller writes at the end of the archive it appends to its
# bootloader; a code signature may follow it on macOS and Windows.
_PYINSTALLER_COOKIE = b"MEI\014\013\012\013\016"
_COOKIE_SEARCH = 1 << 20


def _is_frozen_program(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - _COOKIE_SEARCH))
        return _PYINSTALLER_COOKIE in f.read()


START_WAIT_S = 120


def smoke_test(exe: Path) -> None:
    """Start the new file once: this proves it runs, and that the baked
    defaults parse (the runtime refuses bad ones)."""
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, LLAMABIN_HOME=home)
        try:
            # An absolute path: a bare name would be looked up on PATH.
            result = subprocess.run(
                [os.path.abspath(exe), "--help"], capture_output=True, text=True, env=env, timeout=START_WAIT_S
            )
        except subprocess.TimeoutExpired:
            raise BuildError(f"the built file did not answer --help within {START_WAIT_S} s") from None
        except OSError as exc:
            raise BuildError(f"cannot start the built file: {exc.strerror} (is its folder on a noexec disk?)") from None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise BuildError(f"the built file does not start: {lines[-1] if lines else result.returncode}")


def disk_error(exc: OSError, target: Path) -> BuildError:
    if exc.errno == errno.ENOSPC:
        return BuildError(f"no space left on the device while writing {target}")
    return BuildError(f"cannot write {target}: {exc.strerror or exc}")


def temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial-{os.getpid()}")


@contextlib.contextmanager
def replacing(target: Path, keep_mode_of: Path | None, check: bool = False) -> Iterator[Path]:
    """A temporary name beside ``target`` to write; on success it is synced,
    given ``keep_mode_of``'s mode, started once (``check``) and renamed
    over ``target`` (then the directory is synced). On failure ``target`` is
    left as it was."""
    tmp = temporary(target)
    try:
        yield tmp
        mode = (keep_mode_of if keep_mode_of is not None and keep_mode_of.exists() else tmp).stat().st_mode
        os.chmod(tmp, mode & 0o7777)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if check:
            smoke_test(tmp)
        os.replace(tmp, target)
        sync_dir(target.parent)
    except OSError as exc:
        remove(tmp)
        raise disk_error(exc, target) from None
    except BaseException:
        remove(tmp)
        raise


@contextlib.contextmanager
def folders_removed_on_failure(directory: Path) -> Iterator[None]:
    """The folders that do not exist yet on the way to ``directory`` are
    removed again, when empty, if the block fails: a failed build leaves
    nothing behind, not even the folder -o named."""
    missing: list[Path] = []
    folder = Path(os.path.abspath(directory))
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        yield
    except BaseException:
        for folder in missing:  # the innermost first
            try:
                folder.rmdir()
            except OSError:  # not empty, or not ours to remove: keep it and what holds it
                break
        raise


def remove(tmp: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only filesystem refuses even a missing name
        tmp.unlink(missing_ok=True)


def sync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
