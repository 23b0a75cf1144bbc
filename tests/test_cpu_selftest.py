"""A CPU variant that dies at its first computation never kills the program.

The faulting variant (tests/native/faulting_variant.c) wraps a real one,
scores above every real variant and executes an illegal instruction when
it computes, as llama.cpp's AMX kernels did on Intel Xeons: ggml's own
picker would load it and die with SIGILL at the first token.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BAKED
from tests.helpers import llamabin, run_chat, run_file

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The capital of France is"
GREEDY = ("--temp", "0", "--seed", "1", "-n", "8")


def build_faulting_variant(lib_dir: Path, out: Path) -> None:
    include = lib_dir.parent / "include"
    assert (include / "ggml-backend-impl.h").is_file(), (
        f"{include} lacks ggml's headers: rebuild the portable libraries"
    )
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler (the setup installs g++)"
    subprocess.run(
        [
            cc,
            "-shared",
            "-fPIC",
            "-O1",
            "-o",
            str(out),
            str(ROOT / "tests" / "native" / "faulting_variant.c"),
            f"-I{include}",
            f'-DREAL_VARIANT="{lib_dir / "libggml-cpu-x64.so"}"',
            "-ldl",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def faulting_lib(portable_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The portable libraries plus the faulting variant, which sorts last by
    name, so it is its score, not its name, that puts it first."""
    lib = tmp_path_factory.mktemp("faulting") / "lib"
    shutil.copytree(portable_lib, lib)
    shutil.copytree(portable_lib.parent / "include", lib.parent / "include")
    build_faulting_variant(lib, lib / "libggml-cpu-zfault.so")
    return lib


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    path = tmp_path / "cwd"
    path.mkdir()
    return path


def chat_with_lib(lib: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    old = dict(os.environ)
    os.environ.update({"LLAMA_CPP_LIB_PATH": str(lib), **(env or {})})
    try:
        return run_chat(*args)
    finally:
        os.environ.clear()
        os.environ.update(old)


def record(home: Path) -> dict[str, dict[str, object]]:
    return json.loads((home / "cache" / "cpu-kernels.json").read_text())


def test_the_faulting_variant_really_faults(faulting_lib: Path, smollm2: Path) -> None:
    """Without the self-test (forced, as LLAMABIN_CPU_VARIANT does), it dies:
    so the test below proves something."""
    result = chat_with_lib(
        faulting_lib, "-m", str(smollm2), "--cli", "-p", PROMPT, *GREEDY, env={"LLAMABIN_CPU_VARIANT": "zfault"}
    )
    assert result.returncode == -4, (result.returncode, result.stderr[-500:])  # SIGILL


def test_a_faulting_variant_is_skipped_and_the_next_one_answers(
    faulting_lib: Path, portable_lib: Path, smollm2: Path, llamabin_home: Path, tmp_path: Path
) -> None:
    plain = chat_with_lib(portable_lib, "-m", str(smollm2), "--cli", "-p", PROMPT, *GREEDY)
    assert plain.returncode == 0, plain.stderr
    best = record(llamabin_home)
    (variant,) = {str(r["variant"]) for r in best.values()}

    first = chat_with_lib(faulting_lib, "-m", str(smollm2), "--cli", "-p", PROMPT, *GREEDY)
    assert first.returncode == 0, first.stderr
    assert first.stdout == plain.stdout and first.stdout.strip()
    assert first.stderr == (
        f"llamabin: the CPU kernels 'zfault' failed a self-test on this machine"
        f" (killed by SIGILL); using '{variant}' instead\n"
    )
    assert not list(ROOT.glob("core*")) and not list(tmp_path.glob("core*"))

    # Remembered: the next launch neither tests again nor says so again.
    second = chat_with_lib(faulting_lib, "-m", str(smollm2), "--cli", "-p", PROMPT, *GREEDY)
    assert second.returncode == 0 and second.stderr == "" and second.stdout == plain.stdout

    doctor = chat_with_lib(faulting_lib, "-m", str(smollm2), "--doctor")
    assert doctor.returncode == 0, doctor.stderr
    assert f"kernels:   {variant}, picked at start from 15 variants" in doctor.stdout
    assert (
        f"self-test: {variant} passed; zfault skipped (killed by SIGILL), at an earlier launch on this machine"
    ) in doctor.stdout


def test_log_disable_silences_the_note_but_not_the_fallback(faulting_lib: Path, smollm2: Path) -> None:
    result = chat_with_lib(faulting_lib, "-m", str(smollm2), "--cli", "-p", PROMPT, *GREEDY, "--log-disable")
    assert result.returncode == 0 and result.stderr == "" and result.stdout.strip()


def test_without_a_cache_the_test_runs_at_each_launch(faulting_lib: Path, smollm2: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # no cache can be made under it, even by root
    for _ in range(2):
        result = chat_with_lib(
            faulting_lib,
            "-m",
            str(smollm2),
            "--cli",
            "-p",
            PROMPT,
            *GREEDY,
            env={"LLAMABIN_HOME": str(blocker / "home")},
        )
        assert result.returncode == 0, result.stderr
        assert "'zfault' failed a self-test" in result.stderr


def test_the_packaged_file_skips_it_too(faulting_lib: Path, smollm2: Path, empty_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    out.mkdir()
    built = llamabin("build", str(smollm2), "-o", str(out), "--llama-lib", str(faulting_lib), "--", *BAKED)
    assert built.returncode == 0, built.stderr
    exe = out / "SmolLM2-135M-Instruct.Q4_1-linux-x86_64"
    home = tmp_path / "home"
    first = run_file(exe, "--cli", "-p", PROMPT, *GREEDY, cwd=empty_dir, env={"LLAMABIN_HOME": str(home)})
    assert first.returncode == 0, first.stderr
    assert "'zfault' failed a self-test on this machine (killed by SIGILL)" in first.stderr
    assert first.stdout.strip()
    doctor = run_file(exe, "--doctor", cwd=empty_dir, env={"LLAMABIN_HOME": str(home)})
    assert "zfault skipped (killed by SIGILL), at an earlier launch on this machine" in doctor.stdout


def test_a_file_without_its_unpack_cache_still_remembers_the_choice(
    built: Path, empty_dir: Path, tmp_path: Path
) -> None:
    """Unpacked afresh at each launch (the cache folder is refused: others
    can write it), the libraries get new mtimes; the choice is keyed by the
    file itself, so the second launch does not test again."""
    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    (home / "cache").chmod(0o777)
    env = {"LLAMABIN_HOME": str(home), "HOME": str(home)}
    first = run_file(built, "--doctor", cwd=empty_dir, env=env)
    second = run_file(built, "--doctor", cwd=empty_dir, env=env)
    assert "for this launch only" in first.stdout and "for this launch only" in second.stdout
    assert "passed, at this launch" in first.stdout, first.stdout
    assert "passed, at an earlier launch on this machine" in second.stdout, second.stdout
