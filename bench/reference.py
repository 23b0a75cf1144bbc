"""The reference compare.py measures the file against: llama.cpp's own tools
running the same CPU kernels as the file, on whatever machine this is.

The file picks one of its CPU-variant libraries at start (by ggml's score,
then a self-test that turns away a variant that faults, such as AMX where
it cannot run). llama.cpp's tools built with `scripts/build-llama-cpp.sh
portable-tools` are linked to libraries compiled exactly as the file's; put
in one folder with only that variant's library beside them, they can load
no other. So a gap between the two is the cost of llamabin's own code, not
of different kernels: the same comparison on an AMD and an Intel machine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.common import BUILD_WAIT_S, TOOLS, WAIT_S, build_llama_cpp, fail, log

VARIANT_LIB = re.compile(r"^libggml-cpu-(?P<variant>[\w.-]+)\.(so|dylib|dll)$")
DOCTOR_KERNELS = re.compile(r"^kernels:\s+(?P<variant>[\w.-]+), picked at start", re.MULTILINE)


@dataclass(frozen=True)
class Reference:
    bin_dir: Path
    description: str  # for the report: how it was built and which kernels it runs
    variant: str | None  # the CPU variant both run, when known


def reference_tools(exe: Path, gguf: Path, given: Path | None) -> Reference:
    """`--llama-bin DIR` as it is, or the portable tools restricted to the
    variant the file picks on this machine (checked to load that one)."""
    if given is not None:
        return Reference(_tools_dir(given), f"llama.cpp's tools from {given} (--llama-bin)", None)
    variant = picked_variant(exe)
    build = build_llama_cpp("portable-tools", BUILD_WAIT_S)
    folder = restricted(build, variant)
    check_loads(folder, variant, gguf)
    description = (
        f"llama.cpp's tools built by `scripts/build-llama-cpp.sh portable-tools` from the source llama-cpp-python "
        f"vendors, given only the `{variant}` CPU library, the one the file picked here: both run the same kernels"
    )
    return Reference(folder, description, variant)


def picked_variant(exe: Path) -> str:
    """The CPU variant the file loads on this machine, as its --doctor says."""
    try:
        result = subprocess.run([str(exe), "--doctor"], capture_output=True, text=True, timeout=WAIT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(f"{exe} --doctor failed: {exc}")
    found = DOCTOR_KERNELS.search(result.stdout)
    if result.returncode != 0 or found is None:
        fail(f"{exe} --doctor did not name the CPU variant it picked (exit {result.returncode})")
    return found.group("variant")


def restricted(build: Path, variant: str) -> Path:
    """The build's tools and libraries in one folder, with `variant`'s CPU
    library and no other (made once, beside the build, then reused)."""
    folder = build / f"only-{variant}"
    if (folder / "llama-server").is_file():
        return folder
    libs = [p for p in sorted((build / "lib").iterdir()) if p.is_file()]
    if variant not in {m["variant"] for m in map(VARIANT_LIB.match, (p.name for p in libs)) if m}:
        fail(f"{build}/lib has no CPU library for the file's variant '{variant}'")
    log(f"reference: llama.cpp's tools with the {variant} CPU library only")
    work = build / f".only-{variant}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    # Copies, not links: ggml looks for CPU libraries beside the running
    # program's real path, which a symbolic link would lead back to the build.
    for src in [*(p for p in sorted((build / "bin").iterdir()) if p.is_file()), *libs]:
        match = VARIANT_LIB.match(src.name)
        if match is None or match["variant"] == variant:
            shutil.copy2(src, work / src.name)
    # The build names libllama as llama-cpp-python opens it; the tools are
    # linked to its SONAME.
    if (work / "libllama.so").is_file() and not (work / "libllama.so.0").exists():
        shutil.copy2(work / "libllama.so", work / "libllama.so.0")
    work.rename(folder)
    return folder


def check_loads(folder: Path, variant: str, gguf: Path) -> None:
    """llama-completion from `folder` says, in its log, which CPU library it
    loaded: it must be `variant`'s."""
    argv = [str(folder / "llama-completion"), "-m", str(gguf), "-p", "hi", "-n", "1", "-no-cnv", "-v"]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(f"the reference's llama-completion did not run: {exc}")
    loaded = re.findall(r"loaded CPU backend from (\S+)", result.stdout + result.stderr)
    if [Path(p).name for p in loaded] != [f"libggml-cpu-{variant}.so"]:
        fail(f"the reference loaded {loaded or 'no CPU library'}, not the file's {variant} (exit {result.returncode})")


def _tools_dir(given: Path) -> Path:
    for candidate in (given / "bin", given):
        if all((candidate / t).is_file() for t in TOOLS):
            return candidate.resolve()
    fail(f"{given}: no {', '.join(TOOLS)} in it or in its bin/")
