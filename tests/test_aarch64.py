"""linux-aarch64, built and run on this x86-64 machine: the runtime wheel
cross-built and frozen under qemu-user (scripts/runtime-wheel.sh), the file
built from it with `--target linux-aarch64`, then run under emulation as
three ARM CPUs. Its text is compared with llama.cpp's own llama-completion,
cross-built from the same source and given only the CPU variant the file
picked, on the same emulated CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import llamabin, run_file
from tests.serverproc import ServerProcess
from tests.test_server_curl import run_seed_card_example

# The CPUs of the boards people run this on, and the level of llama.cpp's
# ARM kernels each should get: no dotprod on the A53 (Raspberry Pi 3, the
# A55 class); dotprod and fp16 on the A76 (Raspberry Pi 5, RK3588's big
# cores) and the Neoverse N1 (Graviton2), which report the same features.
CPUS = {"cortex-a53": "armv8.0_1", "cortex-a76": "armv8.2_2", "neoverse-n1": "armv8.2_2"}
PROMPT = "four score and seven"
TOKENS = "16"
# Emulation runs this code about 20 times slower than the host would.
SLOW = 900

pytestmark = pytest.mark.skipif(
    os.uname().machine != "x86_64", reason="emulates aarch64 on an x86-64 host (on ARM, the x86 tests cover it)"
)


@pytest.fixture(scope="module")
def aarch64_file(smollm2: Path, aarch64_wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist-aarch64")
    result = llamabin(
        "build",
        str(smollm2),
        "--target",
        "linux-aarch64",
        "--find-links",
        str(aarch64_wheelhouse),
        "--no-index",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    exe = out / "SmolLM2-135M-Instruct.Q4_1-linux-aarch64"
    assert result.stdout.strip() == str(exe)
    return exe


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home for every run: the runtime is unpacked once, and each CPU's
    kernel choice is remembered under its own HWCAP key."""
    return tmp_path_factory.mktemp("home-aarch64")


def emulated(cpu: str, home: Path) -> dict[str, str]:
    return {"QEMU_CPU": cpu, "HOME": str(home), "LANG": "C.UTF-8"}


def doctor(exe: Path, cpu: str, home: Path) -> dict[str, str]:
    result = run_file(exe, "--doctor", cwd=home, env=emulated(cpu, home), timeout=SLOW)
    assert result.returncode == 0, result.stderr
    lines = {}
    for line in result.stdout.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            lines[name.strip()] = value.strip()
    return lines


def test_the_file_is_an_aarch64_executable(aarch64_file: Path) -> None:
    header = aarch64_file.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2  # 64-bit ELF
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    inspect = llamabin("inspect", str(aarch64_file))
    assert inspect.returncode == 0, inspect.stderr
    assert "target:           linux-aarch64" in inspect.stdout


@pytest.mark.parametrize("cpu", CPUS)
def test_doctor_names_the_variant_for_the_cpu(aarch64_file: Path, home: Path, cpu: str) -> None:
    found = doctor(aarch64_file, cpu, home)
    assert found["kernels"].startswith(f"{CPUS[cpu]}, picked at start from "), found
    assert "passed" in found["self-test"], found
    assert "; HWCAP: asimd" in found["cpu"], found  # the emulated CPU's features, not the host's


def test_the_variants_differ_where_the_cpus_do(aarch64_file: Path, home: Path) -> None:
    """The A53 lacks dotprod and fp16, which the A76 and N1 both have: the
    HWCAP bits the kernel reports differ, and so does the variant."""
    seen = {cpu: doctor(aarch64_file, cpu, home) for cpu in CPUS}
    features = {cpu: found["cpu"].split("HWCAP: ", 1)[-1] for cpu, found in seen.items()}
    assert features["cortex-a53"].startswith("asimd (no asimddp"), features
    assert features["cortex-a76"].startswith("asimd asimddp fphp asimdhp (no sve"), features
    assert features["neoverse-n1"] == features["cortex-a76"]
    kernels = {cpu: found["kernels"].split(",", 1)[0] for cpu, found in seen.items()}
    assert kernels["cortex-a53"] != kernels["cortex-a76"] == kernels["neoverse-n1"]


def reference_dir(reference: Path, variant: str, into: Path) -> Path:
    """llama-completion beside the libraries with one CPU variant only:
    ggml's loader then has no other to pick."""
    into.mkdir()
    for tool in (reference / "bin").iterdir():  # llama-completion and its own libraries
        shutil.copy2(tool, into)
    for lib in (reference / "lib").iterdir():
        if not lib.name.startswith("libggml-cpu-") or lib.name == f"libggml-cpu-{variant}.so":
            shutil.copy2(lib, into)
    shutil.copy2(into / "libllama.so", into / "libllama.so.0")  # the name the tools link it by
    return into / "llama-completion"


@pytest.mark.parametrize("cpu", CPUS)
def test_cli_prints_what_llama_completion_prints(
    aarch64_file: Path, aarch64_llama: Path, smollm2: Path, home: Path, tmp_path: Path, cpu: str
) -> None:
    flags = ("-p", PROMPT, "--temp", "0", "--seed", "1", "-n", TOKENS, "-t", "2", "-c", "2048")
    ours = run_file(aarch64_file, "--cli", *flags, "--log-disable", cwd=home, env=emulated(cpu, home), timeout=SLOW)
    assert ours.returncode == 0, ours.stderr
    completion = reference_dir(aarch64_llama, CPUS[cpu], tmp_path / "ref")
    theirs = subprocess.run(
        # -v: its log then names the CPU-variant library it loaded.
        [str(completion), "-m", str(smollm2), *flags, "-no-cnv", "--no-display-prompt", "-v"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={"QEMU_CPU": cpu, "PATH": os.environ["PATH"]},
        timeout=SLOW,
    )
    assert theirs.returncode == 0, theirs.stderr[-3000:]
    assert f"loaded CPU backend from {completion.parent}/libggml-cpu-{CPUS[cpu]}.so" in theirs.stderr
    assert ours.stdout.strip(), ours.stderr
    # llama-completion marks an answer that ended before -n with its own notice.
    assert ours.stdout.strip() == theirs.stdout.strip().removesuffix("[end of text]").rstrip()


@pytest.fixture(scope="module")
def server(aarch64_file: Path, home: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        None, program=[str(aarch64_file)], env={"QEMU_CPU": "cortex-a76"}, home=home, start_timeout=SLOW
    )
    yield proc
    proc.stop()


def test_the_server_answers_the_seed_card_curl_example(server: ServerProcess) -> None:
    run_seed_card_example(server.port, timeout=SLOW)
