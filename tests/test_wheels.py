"""The wheels: `pip install llamabin` gives a packer that needs no compiler,
no PyInstaller and no source tree, and builds the same file the clone does.
Then `--target`: runtimes from a wheelhouse, and the errors when there is
none, or one of another version."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from packager.runtime import check_lib_dir, runtime_executable
from packager.targets import KNOWN, download_platforms, target_of_platform
from tests.helpers import ROOT, llamabin, run_chat, run_file

PROMPT = "four score and seven"
CLI = ("--cli", "-p", PROMPT, "--temp", "0", "--seed", "1", "-n", "16", "--log-disable")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
PACKER_SOURCES = ("packager", "payload", "templates", "pyproject.toml")


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("llamabin: error: ")]
    assert errors == lines[-1:] and "Traceback" not in stderr, stderr
    return errors[0]


def _newest_source() -> float:
    newest = 0.0
    for rel in PACKER_SOURCES:
        base = ROOT / rel
        for path in base.rglob("*.py") if base.is_dir() else [base]:
            newest = max(newest, path.stat().st_mtime)
    return newest


def _fresh(wheelhouse: Path, runtime: Path) -> bool:
    """`make wheels`' output, if it holds this tree's packer and runtime."""
    packers = list(wheelhouse.glob(f"llamabin-{VERSION}-*.whl"))
    runtimes = list(wheelhouse.glob(f"llamabin_runtime-{VERSION}-*.whl"))
    if len(packers) != 1 or len(runtimes) != 1 or packers[0].stat().st_mtime < _newest_source():
        return False
    with zipfile.ZipFile(runtimes[0]) as zf:
        meta = json.loads(zf.read("llamabin_runtime/runtime.json"))
    import hashlib

    return bool(meta.get("sha256") == hashlib.sha256(runtime.read_bytes()).hexdigest())


def _wheel(args: list[str], cwd: Path = ROOT) -> Path:
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else Path()


@pytest.fixture(scope="module")
def wheelhouse(portable_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheels `make wheels` writes: reused when fresh, else built here
    (the frozen runtime is the cached one the other tests use)."""
    runtime = runtime_executable(check_lib_dir(portable_lib))
    if _fresh(ROOT / "wheelhouse", runtime):
        return ROOT / "wheelhouse"
    out = tmp_path_factory.mktemp("wheelhouse")
    _wheel([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)])
    _wheel(
        [
            sys.executable,
            str(ROOT / "scripts" / "build-runtime-wheel.py"),
            "-w",
            str(out),
            "--llama-lib",
            str(portable_lib),
        ]
    )
    return out


@pytest.fixture(scope="module")
def packer(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with llamabin installed from the wheelhouse; returns its bin/."""
    empty = tmp_path_factory.mktemp("empty")
    venv = tmp_path_factory.mktemp("packer") / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, cwd=empty, env=env, timeout=300)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--find-links", str(wheelhouse), "llamabin"],
        capture_output=True,
        text=True,
        cwd=empty,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return venv / "bin"


def packer_env(bin_dir: Path, home: Path) -> dict[str, str]:
    """Only the venv's bin/ on PATH; no PYTHONPATH, no source tree."""
    return {"PATH": str(bin_dir), "HOME": str(home), "LLAMABIN_HOME": str(home / "llamabin"), "LANG": "C.UTF-8"}


def run_packer(bin_dir: Path, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = packer_env(bin_dir, cwd.parent / "home")
    return subprocess.run(
        [str(bin_dir / "llamabin"), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def test_the_wheels_are_tagged(wheelhouse: Path) -> None:
    from packaging.utils import parse_wheel_filename

    (packer_wheel,) = wheelhouse.glob(f"llamabin-{VERSION}-*.whl")
    (runtime_wheel,) = wheelhouse.glob(f"llamabin_runtime-{VERSION}-*.whl")
    assert {str(t) for t in parse_wheel_filename(packer_wheel.name)[3]} == {"py3-none-any"}
    (tag,) = parse_wheel_filename(runtime_wheel.name)[3]
    assert (tag.interpreter, tag.abi) == ("py3", "none") and target_of_platform(tag.platform) == "linux-x86_64"
    assert tag.platform.startswith("manylinux_2_") and tag.platform.endswith("_x86_64")
    with zipfile.ZipFile(packer_wheel) as zf:
        names = zf.namelist()
        requires = zf.read(next(n for n in names if n.endswith("/METADATA"))).decode()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"packager", "payload", "templates"}, tops  # the packer, not the runtime's sources
    assert f"Requires-Dist: llamabin-runtime=={VERSION}" in requires
    hard = [ln for ln in requires.splitlines() if ln.startswith("Requires-Dist:") and "extra ==" not in ln]
    assert not [ln for ln in hard if "llama-cpp-python" in ln or "pyinstaller" in ln.lower()], hard
    with zipfile.ZipFile(runtime_wheel) as zf:
        meta = json.loads(zf.read("llamabin_runtime/runtime.json"))
        mode = zf.getinfo("llamabin_runtime/llamabin-runtime").external_attr >> 16
    assert meta["target"] == "linux-x86_64" and meta["llamabin"] == VERSION and meta["platform"] == tag.platform
    assert len(meta["sha256"]) == 64 and meta["versions"]["cpu kernels"].endswith("picked at start")
    assert mode & 0o111


def test_a_packer_from_the_wheels_builds_the_same_file(packer: Path, smollm2: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "home").mkdir()
    for tool in ("cc", "gcc", "g++", "cmake", "pyinstaller"):
        assert shutil.which(tool, path=str(packer)) is None, tool
    python = packer / "python"
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u; print([m for m in ('chat', 'PyInstaller', 'llama_cpp') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env=packer_env(packer, tmp_path / "home"),
    )
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr

    built = run_packer(packer, "build", str(smollm2), "-o", "out/", cwd=work)
    assert built.returncode == 0, built.stderr
    exe = work / "out" / "SmolLM2-135M-Instruct.Q4_1-linux-x86_64"
    assert built.stdout.strip() == str(Path("out") / exe.name)
    assert "runtime for linux-x86_64: installed " in built.stderr
    assert os.access(exe, os.X_OK)

    empty = tmp_path / "empty"
    empty.mkdir()
    packaged = run_file(exe, *CLI, cwd=empty)
    plain = run_chat("-m", str(smollm2), *CLI)
    assert packaged.returncode == 0, packaged.stderr
    assert plain.returncode == 0, plain.stderr
    assert packaged.stdout == plain.stdout and packaged.stdout.strip()
    verify = run_file(exe, "--verify", cwd=empty)
    assert verify.returncode == 0, verify.stderr

    inspect = run_packer(packer, "inspect", str(exe), cwd=work)
    assert inspect.returncode == 0, inspect.stderr
    assert "target:           linux-x86_64" in inspect.stdout
    assert (
        "(SmolLM2-135M-Instruct.Q4_1.gguf)" in inspect.stdout and "weights:          98,362,432 bytes" in inspect.stdout
    )
    assert f"llamabin:         {VERSION}" in inspect.stdout
    assert "cpu kernels:      14 variants, picked at start" in inspect.stdout

    targets = run_packer(packer, "targets", cwd=work)
    assert targets.returncode == 0, targets.stderr
    line = next(ln for ln in targets.stdout.splitlines() if ln.startswith("linux-x86_64"))
    assert "(this machine)" in line and "installed " in line


def test_an_unknown_target_lists_the_known_ones(tmp_path: Path) -> None:
    result = llamabin("build", str(tmp_path / "any.gguf"), "--target", "linux-x86_64,plan9-mips")
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "unknown target 'plan9-mips'" in line and all(t in line for t in KNOWN)


def test_no_runtime_for_the_target_is_one_line(smollm2: Path, tmp_path: Path) -> None:
    empty = tmp_path / "wheels"
    empty.mkdir()
    out = tmp_path / "out"
    result = llamabin(
        "build", str(smollm2), "--target", "linux-aarch64", "--find-links", str(empty), "--no-index", "-o", f"{out}/"
    )
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "no runtime for linux-aarch64: looked in " in line and str(empty) in line
    assert "installed llamabin_runtime package" in line and "pip download llamabin-runtime==" in line
    assert "hashing" not in result.stderr  # found before the model is read through
    assert not out.exists()  # not even the folder -o named


def _fake_runtime_wheel(out: Path, exe: Path, target: str, version: str) -> Path:
    """A runtime wheel made as the real one is (same script, same backend), of any executable."""
    platform = next(p for p in download_platforms(target) if p.startswith(("manylinux_2_28", "macosx", "win")))
    script = ROOT / "scripts" / "build-runtime-wheel.py"
    args = [sys.executable, str(script), "-w", str(out), "--exe", str(exe), "--target", target, "--version", version]
    return _wheel([*args, "--platform", platform])


def test_a_runtime_of_another_version_is_refused(smollm2: Path, tmp_path: Path) -> None:
    exe = tmp_path / "tiny"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    wheels = tmp_path / "wheels"
    wheel = _fake_runtime_wheel(wheels, exe, "linux-aarch64", "0.0.9")
    assert wheel.name == "llamabin_runtime-0.0.9-py3-none-manylinux_2_28_aarch64.whl"
    result = llamabin(
        "build",
        str(smollm2),
        "--target",
        "linux-aarch64",
        "--find-links",
        str(wheels),
        "--no-index",
        "-o",
        f"{tmp_path}/out/",
    )
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "llamabin-runtime 0.0.9" in line and f"llamabin {VERSION}" in line


def test_another_target_from_a_wheelhouse(wheelhouse: Path, smollm2: Path, tmp_path: Path) -> None:
    """Given an aarch64 runtime wheel (here this machine's runtime, relabeled:
    the packer only copies it), --target linux-aarch64 writes that file and
    leaves it unstarted; several targets in one build hash the model once."""
    (runtime_wheel,) = wheelhouse.glob(f"llamabin_runtime-{VERSION}-*.whl")
    exe = tmp_path / "llamabin-runtime"
    with zipfile.ZipFile(runtime_wheel) as zf:
        exe.write_bytes(zf.read("llamabin_runtime/llamabin-runtime"))
    wheels = tmp_path / "wheels"
    _fake_runtime_wheel(wheels, exe, "linux-aarch64", VERSION)
    out = tmp_path / "out"
    result = llamabin(
        "build",
        str(smollm2),
        "--target",
        "linux-aarch64,windows-x86_64",
        "--find-links",
        str(wheels),
        "--no-index",
        "-o",
        f"{out}/",
    )
    assert result.returncode == 1  # no windows runtime: the aarch64 file is written first
    assert "no runtime for windows-x86_64" in one_error_line(result.stderr)
    built = out / "SmolLM2-135M-Instruct.Q4_1-linux-aarch64"
    assert result.stdout.strip() == str(built)
    assert "not started here" in result.stderr
    inspect = llamabin("inspect", str(built))
    assert "target:           linux-aarch64" in inspect.stdout, inspect.stderr
    targets = llamabin("targets", "--find-links", str(wheels))
    line = next(ln for ln in targets.stdout.splitlines() if ln.startswith("linux-aarch64"))
    assert f"wheelhouse {wheels}" in line


def test_platform_tags_name_targets() -> None:
    assert target_of_platform("manylinux_2_28_aarch64") == "linux-aarch64"
    assert target_of_platform("manylinux_2_36_x86_64") == "linux-x86_64"
    assert target_of_platform("macosx_11_0_arm64") == "macos-arm64"
    assert target_of_platform("win_amd64") == "windows-x86_64"
    assert target_of_platform("musllinux_1_2_x86_64") is None


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="emulates aarch64 on an x86-64 host")
def test_a_packer_from_the_wheels_builds_for_linux_aarch64(
    packer: Path, aarch64_wheelhouse: Path, aarch64_llama: Path, smollm2: Path, tmp_path: Path
) -> None:
    """The installed packer, given the real aarch64 runtime wheel (made on this
    machine, tests/test_aarch64.py), writes both files in one build; the
    aarch64 one is an aarch64 executable that answers under qemu-user."""
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "home").mkdir()
    built = run_packer(
        packer,
        "build",
        str(smollm2),
        "--target",
        "linux-x86_64,linux-aarch64",
        "--find-links",
        str(aarch64_wheelhouse),
        "-o",
        "out/",
        cwd=work,
    )
    assert built.returncode == 0, built.stderr
    names = [Path(line).name for line in built.stdout.split()]
    assert names == ["SmolLM2-135M-Instruct.Q4_1-linux-x86_64", "SmolLM2-135M-Instruct.Q4_1-linux-aarch64"]
    assert f"runtime for linux-aarch64: wheelhouse {aarch64_wheelhouse}" in built.stderr
    exe = work / "out" / names[1]
    header = exe.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    inspect = run_packer(packer, "inspect", str(exe), cwd=work)
    assert "target:           linux-aarch64" in inspect.stdout, inspect.stderr
    variants = len(list((aarch64_llama / "lib").glob("libggml-cpu-*.so")))  # 6 with GCC 12, 8 with SME
    assert f"cpu kernels:      {variants} variants, picked at start" in inspect.stdout
    answer = run_file(exe, *CLI, cwd=work, env={"QEMU_CPU": "cortex-a76", "HOME": str(tmp_path / "home")}, timeout=900)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip()
