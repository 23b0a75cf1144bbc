#!/usr/bin/env python3
"""Build the runtime wheel for this machine: llamabin-runtime, tagged for its platform.

    .venv/bin/python scripts/build-runtime-wheel.py [-w wheelhouse] [--llama-lib DIR]

The runtime is the one `llamabin build` freezes from this source tree
(cached under build/runtime/), with llama.cpp's libraries from --llama-lib
or the installed llama-cpp-python. The wheel is built by setuptools from
runtime/pyproject.toml, staged in a temporary folder with the executable
and runtime.json; setuptools' bdist_wheel sets the platform tag
(`--plat-name`), so the wheel is `py3-none-PLATFORM`. On Linux the tag's
glibc is what the runtime asks for (scripts/glibc-floor.py), and at least
manylinux_2_28, the release legs' floor. Prints the wheel's path.

--exe, --target, --platform and --version make a wheel of any executable
(for a release leg on another machine, or a test).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from packager.targets import KNOWN, host_target  # noqa: E402

MANYLINUX_FLOOR = (2, 28)


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def glibc_floor(exe: Path) -> tuple[int, ...]:
    spec = importlib.util.spec_from_file_location("glibc_floor", ROOT / "scripts" / "glibc-floor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.floor(exe)
    return tuple(rows[0][0])


def platform_tag(target: str, exe: Path) -> str:
    os_part, arch = KNOWN[target]
    if os_part == "manylinux":
        major, minor = max(glibc_floor(exe)[:2], MANYLINUX_FLOOR)
        return f"manylinux_{major}_{minor}_{arch}"
    if os_part == "macosx":
        return f"macosx_11_0_{arch}"
    return f"win_{arch}"


def build_wheel(exe: Path, target: str, tag: str, version: str, versions: dict[str, str], out: Path) -> Path:
    name = "llamabin-runtime.exe" if target.startswith("windows-") else "llamabin-runtime"
    meta = {
        "format": 1,
        "target": target,
        "platform": tag,
        "llamabin": version,
        "executable": name,
        "size": exe.stat().st_size,
        "sha256": hashlib.sha256(exe.read_bytes()).hexdigest(),
        "versions": dict(versions, llamabin=version),
    }
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="runtime-wheel-") as tmp:
        stage = Path(tmp) / "runtime"
        shutil.copytree(ROOT / "runtime", stage, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        (stage / "VERSION").write_text(version + "\n")
        package = stage / "llamabin_runtime"
        shutil.copy2(exe, package / name)
        (package / name).chmod(0o755)
        (package / "runtime.json").write_text(json.dumps(meta, indent=2) + "\n")
        dist = Path(tmp) / "dist"
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(stage)]
        cmd += ["-C", f"--build-option=--plat-name {tag}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"build-runtime-wheel: pip wheel failed:\n{result.stderr[-3000:]}")
        (wheel,) = dist.glob("*.whl")
        target_path = out / wheel.name
        shutil.move(str(wheel), target_path)
    return target_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--wheel-dir", type=Path, default=ROOT / "wheelhouse")
    parser.add_argument("--llama-lib", type=Path, help="llama.cpp libraries to freeze in [default: the installed ones]")
    parser.add_argument("--exe", type=Path, help="an executable to wrap instead of freezing this tree's runtime")
    parser.add_argument("--target", default=None, help=f"what --exe runs on [default: {host_target()}]")
    parser.add_argument("--platform", help="the wheel's platform tag [default: from the target and its glibc]")
    parser.add_argument("--version", default=None, help="the version to record [default: llamabin's]")
    args = parser.parse_args()
    target = args.target or host_target()
    if target not in KNOWN:
        parser.error(f"unknown target {target!r}: known targets are {', '.join(KNOWN)}")
    version = args.version or project_version()
    if args.exe is not None:
        # With --llama-lib, the versions of the libraries frozen into --exe
        # (another target's, say) are recorded as for this machine's runtime.
        if args.llama_lib is not None:
            from packager.versions import build_versions

            exe, versions = args.exe, build_versions(args.llama_lib)
        else:
            exe, versions = args.exe, {}
    else:
        from packager.errors import BuildError
        from packager.runtime import check_lib_dir, installed_lib_dir, runtime_executable
        from packager.versions import build_versions

        try:
            lib_dir = check_lib_dir(args.llama_lib or installed_lib_dir())
            exe = runtime_executable(lib_dir)
        except BuildError as exc:
            sys.exit(f"build-runtime-wheel: {exc}")
        versions = build_versions(lib_dir)
    tag = args.platform or platform_tag(target, exe)
    print(build_wheel(exe, target, tag, version, versions, args.wheel_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
