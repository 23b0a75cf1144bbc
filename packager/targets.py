"""Targets, and where the runtime for each comes from.

A runtime is the frozen executable every model's file is a copy of, the
same for every model: built once per release and target. It travels as a
platform wheel, `llamabin-runtime` (import package `llamabin_runtime`,
tagged `py3-none-manylinux_2_36_x86_64`, `py3-none-win_amd64`, ...), holding
the executable and runtime.json (target, versions, sha256). `llamabin
build` takes the runtime for a target from, in this order:

1. a wheelhouse given with --find-links DIR (the wheels are read as zips);
2. the installed `llamabin_runtime` package (`pip install llamabin` brings
   the one for the machine it runs on);
3. the source tree, for this machine's target, when llamabin runs from a
   clone with PyInstaller (packager/runtime.py freezes it, cached);
4. pip itself: `pip download llamabin-runtime==VERSION --platform ...`,
   unless --no-index.

A runtime made by another llamabin version is refused: the manifest layout
and the runtime that reads it change together.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from packager.errors import BuildError

DIST = "llamabin-runtime"
PACKAGE = "llamabin_runtime"
ROOT = Path(__file__).resolve().parent.parent

# target -> (OS part of the wheel platform tag, architecture part)
KNOWN: dict[str, tuple[str, str]] = {
    "linux-x86_64": ("manylinux", "x86_64"),
    "linux-aarch64": ("manylinux", "aarch64"),
    "macos-arm64": ("macosx", "arm64"),
    "macos-x86_64": ("macosx", "x86_64"),
    "windows-x86_64": ("win", "amd64"),
}

# The newest manylinux glibc `pip download` is asked for (pip does not widen
# a manylinux_2_N tag to older ones by itself, so each one is listed).
DOWNLOAD_GLIBC_MINORS = range(17, 41)


def host_target() -> str:
    """OS and architecture of this machine, as in SmolLM2-135M-Instruct.Q4_1-linux-x86_64."""
    system = {"darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform.rstrip("0123456789"))
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64" if system == "linux" else "arm64"}.get(
        machine, machine
    )
    return f"{system}-{machine}"


def known_targets() -> list[str]:
    return list(KNOWN)


def unknown_target_message(target: str) -> str:
    return f"unknown target '{target}': known targets are {', '.join(KNOWN)}"


def parse_targets(spec: str | None) -> list[str]:
    """`--target T[,T...]` (None: this machine's). Raises ValueError naming the known ones."""
    if spec is None:
        return [host_target()]
    targets: list[str] = []
    for part in spec.split(","):
        name = part.strip()
        if name not in KNOWN:
            raise ValueError(unknown_target_message(name))
        if name not in targets:
            targets.append(name)
    return targets


def is_windows(target: str) -> bool:
    return target.startswith("windows-")


def target_of_platform(tag: str) -> str | None:
    """The target a wheel platform tag runs on: manylinux_2_28_aarch64 -> linux-aarch64."""
    for target, (os_part, arch) in KNOWN.items():
        if os_part == "win":
            if tag == f"win_{arch}":
                return target
        elif tag.startswith(os_part) and tag.endswith("_" + arch):
            return target
    if tag.startswith("linux_"):  # an untagged local build
        return {"linux_x86_64": "linux-x86_64", "linux_aarch64": "linux-aarch64"}.get(tag)
    return None


def download_platforms(target: str) -> list[str]:
    os_part, arch = KNOWN[target]
    if os_part == "manylinux":
        return [f"manylinux_2_{minor}_{arch}" for minor in reversed(DOWNLOAD_GLIBC_MINORS)]
    if os_part == "macosx":
        return [f"macosx_15_0_{arch}"]  # pip widens a macOS tag to the older releases
    return [f"win_{arch}"]


def packer_version() -> str:
    try:
        return metadata.version("llamabin")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Runtime:
    """One runtime for one target, not yet on disk unless `path` is set."""

    target: str
    version: str
    origin: str  # where it came from, as `llamabin targets` shows it
    wheel: Path | None = None  # a runtime wheel to take it out of
    path: Path | None = None  # an installed executable
    meta: dict[str, Any] | None = None  # runtime.json; None for the source tree

    @property
    def from_source(self) -> bool:
        return self.wheel is None and self.path is None


def _read_wheel(wheel: Path) -> Runtime | None:
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        name, version, _build, tags = parse_wheel_filename(wheel.name)
    except InvalidWheelFilename:
        return None
    if name != DIST:
        return None
    target = next((t for t in (target_of_platform(tag.platform) for tag in tags) if t), None)
    if target is None:
        return None
    try:
        with zipfile.ZipFile(wheel) as zf:
            meta = json.loads(zf.read(f"{PACKAGE}/runtime.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    if not isinstance(meta, dict):
        return None
    return Runtime(
        meta.get("target", target), str(meta.get("llamabin", version)), f"wheelhouse {wheel}", wheel=wheel, meta=meta
    )


def wheelhouse_runtimes(dirs: Iterable[Path]) -> list[Runtime]:
    found = []
    for d in dirs:
        for wheel in sorted(Path(d).glob("llamabin_runtime-*.whl")):
            runtime = _read_wheel(wheel)
            if runtime is not None:
                found.append(runtime)
    return found


def installed_runtime() -> Runtime | None:
    """The installed llamabin_runtime package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    here = Path(list(spec.submodule_search_locations)[0])
    try:
        meta = json.loads((here / "runtime.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    exe = here / str(meta.get("executable", ""))
    if not isinstance(meta, dict) or not exe.is_file():
        return None
    return Runtime(str(meta.get("target")), str(meta.get("llamabin")), f"installed {here}", path=exe, meta=meta)


def source_tree_available() -> bool:
    """A clone, with PyInstaller to freeze the runtime from its sources."""
    return (
        (ROOT / "build.spec").is_file()
        and (ROOT / "chat").is_dir()
        and importlib.util.find_spec("PyInstaller") is not None
    )


def source_runtime() -> Runtime | None:
    if not source_tree_available():
        return None
    return Runtime(host_target(), packer_version(), f"source tree {ROOT}")


def available(find_links: Sequence[Path] = ()) -> dict[str, list[Runtime]]:
    """Every runtime found without the network, by target, in the order used."""
    by_target: dict[str, list[Runtime]] = {t: [] for t in KNOWN}
    candidates = wheelhouse_runtimes(find_links)
    for runtime in (installed_runtime(), source_runtime()):
        if runtime is not None:
            candidates.append(runtime)
    for runtime in candidates:
        by_target.setdefault(runtime.target, []).append(runtime)
    return by_target


def find_runtime(
    target: str, find_links: Sequence[Path] = (), no_index: bool = False, source_only: bool = False
) -> Runtime:
    """The runtime for `target` of this llamabin's version, or a BuildError
    saying where it looked and how to get one."""
    version = packer_version()
    if source_only:  # --llama-lib: the runtime is frozen here, with those libraries
        runtime = source_runtime()
        if runtime is None:
            raise BuildError(
                "--llama-lib needs llamabin's source tree and PyInstaller, to freeze the runtime with them"
            )
        if target != runtime.target:
            raise BuildError(f"--llama-lib freezes a runtime for this machine ({runtime.target}), not {target}")
        return runtime
    seen = [r for r in available(find_links).get(target, [])]
    looked = [f"--find-links {d}" for d in find_links] + ["the installed llamabin_runtime package"]
    if target == host_target():
        looked.append("the source tree" if source_tree_available() else "a source tree (none: llamabin is installed)")
    if not any(r.version == version for r in seen) and not no_index:
        seen += _pip_download(target, version, find_links)
        looked.append(f"pip download {DIST}=={version}")
    for runtime in seen:
        if runtime.version == version:
            return runtime
    if seen:
        other = seen[0]
        raise BuildError(
            f"the runtime for {target} from {other.origin} is llamabin-runtime {other.version},"
            f" but this is llamabin {version}: use the runtime of the same version"
            f" (pip install {DIST}=={version}, or a wheelhouse with it)"
        )
    # pip matches a manylinux_2_N tag exactly, so no one-platform `pip
    # download` line fits every runtime wheel: point at what does.
    fetch = (
        f"without --no-index, `build` asks pip download {DIST}=={version} for it"
        if no_index
        else f"pip download {DIST}=={version} found none either; `make wheels` on a {target} machine makes it"
    )
    raise BuildError(
        f"no runtime for {target}: looked in {', '.join(looked)}; {fetch},"
        f" or pass --find-links DIR with its wheel ({DIST.replace('-', '_')}-{version}-py3-none-*.whl)"
    )


def _pip_download(target: str, version: str, find_links: Sequence[Path]) -> list[Runtime]:
    """Let pip fetch the runtime wheel for another platform (its index, cache and config)."""
    dest = Path(tempfile.mkdtemp(prefix="llamabin-runtime-"))
    cmd = [sys.executable, "-m", "pip", "download", "-q", f"{DIST}=={version}", "--only-binary", ":all:", "--no-deps"]
    for tag in download_platforms(target):
        cmd += ["--platform", tag]
    for d in find_links:
        cmd += ["--find-links", str(d)]
    cmd += ["-d", str(dest)]
    try:
        subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = [r for r in wheelhouse_runtimes([dest]) if r.target == target]
    return [
        Runtime(r.target, r.version, f"pip download ({r.wheel.name if r.wheel else DIST})", r.wheel, None, r.meta)
        for r in found
    ]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def extract(runtime: Runtime, into: Path) -> Path:
    """The runtime's executable on disk, checked against runtime.json's sha256."""
    meta = runtime.meta or {}
    if runtime.path is not None:
        exe = runtime.path
    elif runtime.wheel is not None:
        exe = into / Path(str(meta.get("executable", "llamabin-runtime"))).name
        try:
            with zipfile.ZipFile(runtime.wheel) as zf, zf.open(f"{PACKAGE}/{exe.name}") as src, exe.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise BuildError(f"cannot read the runtime from {runtime.wheel}: {exc}") from None
        exe.chmod(0o755)
    else:
        raise ValueError("a source-tree runtime is built by packager.runtime")
    if meta.get("sha256") and sha256_file(exe) != meta["sha256"]:
        raise BuildError(f"the runtime from {runtime.origin} is damaged (sha256 mismatch): reinstall it")
    return exe
