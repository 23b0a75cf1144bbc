"""`llamabin build CHECKPOINT_DIR` for the architectures packager/convert.py
does not convert: llama.cpp's own convert_hf_to_gguf.py, run as a
subprocess, writing an F16 GGUF that the build then quantizes and packs.

The converter is taken from the pinned llama-cpp-python's PyPI sdist (the
source the shipped llama.cpp is built from, so the GGUF it writes is one that
llama.cpp loads): convert_hf_to_gguf.py, the `conversion/` package it imports
and its own `gguf-py/`, extracted once per version into the cache
scripts/build-llama-cpp.sh uses. It imports torch and transformers
(gigabytes), hence the separate `convert-torch` extra and available().
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from packager import progress
from packager.convert import architecture
from packager.errors import BuildError
from packager.gguf_write import scratch_path
from payload.errors import UsageError

# The llama-cpp-python pinned in constraints.txt (tests/test_llama_converter.py
# checks they agree): an installed packer has no constraints.txt to read.
LLAMA_CPP_PYTHON = "0.3.36"
SCRIPT = "convert_hf_to_gguf.py"
# What the script needs of the sdist's vendor/llama.cpp/, and nothing else
# (the whole source is 76 MB; these parts are a few).
PARTS = (SCRIPT, "conversion", "gguf-py")
EXTRA = "pip install 'llamabin[convert-torch]'"
MiB = 2**20

# The converter's failures that are about the checkpoint, not the machine
# (exit 2): an architecture it has no class for, a tokenizer it cannot
# read or does not know.
_USAGE = re.compile(
    r"is not supported|not recognized|[Mm]issing .*tokeniz|tokeniz\S* not found|No such file or directory: .*tokeniz",
)
_DISK_FULL = re.compile(r"No space left on device|File too large")
# logging's default format, `LEVEL:logger:message`, and an exception's last
# line, `module.ExceptionType: message`.
_LOG_PREFIX = re.compile(r"^(?:ERROR|WARNING|INFO|DEBUG|CRITICAL):[\w.-]+:")
_EXCEPTION_PREFIX = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit):\s*")


def available() -> str | None:
    """None when llama.cpp's converter can run here, else why not (one line)."""
    # find_spec, not import: importing torch takes seconds, and the converter
    # runs in its own process anyway.
    if any(importlib.util.find_spec(name) is None for name in ("torch", "transformers")):
        return f"needs torch and transformers: {EXTRA}"
    return None


def cache_root() -> Path:
    """scripts/build-llama-cpp.sh's cache, so a clone that built llama.cpp
    already holds the sdist."""
    override = os.environ.get("LLAMABIN_BUILD_CACHE")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "llamabin-build"


def converter_script(say: Callable[[str], None], version: str = LLAMA_CPP_PYTHON) -> Path:
    """convert_hf_to_gguf.py of llama-cpp-python `version`, fetched and
    extracted the first time."""
    cache = cache_root()
    home = cache / f"llama.cpp-{version}-convert"
    script = home / SCRIPT
    if script.is_file():
        return script
    try:
        cache.mkdir(parents=True, exist_ok=True)
        # Two builds at once each extract into their own directory; the
        # first rename wins and the other's copy is thrown away.
        with tempfile.TemporaryDirectory(dir=cache, prefix=".convert-") as tmp:
            sdist = cache / f"llama_cpp_python-{version}.tar.gz"
            if not sdist.is_file():  # kept only when build-llama-cpp.sh put it there
                say(f"fetching llama.cpp's converter (the llama-cpp-python {version} source, about 80 MB)")
                sdist = download_sdist(version, Path(tmp) / "dl")
            staged = Path(tmp) / "out"
            extract_parts(sdist, f"llama_cpp_python-{version}/vendor/llama.cpp", staged)
            with contextlib.suppress(OSError):
                os.rename(staged, home)
    except OSError as exc:
        raise BuildError(f"cannot unpack llama.cpp's converter in {cache}: {exc.strerror or exc}") from None
    if not script.is_file():
        raise BuildError(f"cannot unpack llama.cpp's converter in {cache}: {home} has no {SCRIPT}")
    return script


def download_sdist(version: str, dest: Path) -> Path:
    """The sdist from the user's own index, with pip's config, cache and
    hash checks (as scripts/build-llama-cpp.sh fetches it)."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
    cmd += [f"llama-cpp-python=={version}", "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob("llama_cpp_python-*.tar.gz")) if dest.is_dir() else []
    if result.returncode != 0 or not found:
        tail = last_line(result.stderr + result.stdout) or f"pip exited with {result.returncode}"
        raise BuildError(f"cannot fetch llama.cpp's converter (llama-cpp-python=={version} from PyPI): {tail}")
    return found[0]


def extract_parts(sdist: Path, prefix: str, dest: Path) -> None:
    """PARTS of `prefix` in the archive into `dest`: regular files and
    folders only, and no member that could land outside `dest`."""
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                relative = wanted(member.name, prefix)
                if relative is None:
                    continue
                if not (member.isfile() or member.isdir()):
                    continue  # links and devices: the converter has none, and they could point anywhere
                target = dest.joinpath(*relative.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    continue
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, EOFError) as exc:
        raise BuildError(
            f"{sdist} is not a readable llama-cpp-python sdist ({exc}): delete it and build again"
        ) from None


def wanted(name: str, prefix: str) -> PurePosixPath | None:
    """A member's path inside PARTS, relative to `prefix`, or None for
    anything else; an absolute path or `..` refuses the whole archive."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or re.match(r"^([/\\]|[A-Za-z]:)", name):
        raise BuildError(f"refusing the llama-cpp-python sdist: it holds a path outside its folder ({name})")
    try:
        relative = path.relative_to(prefix)
    except ValueError:
        return None
    if not relative.parts or relative.parts[0] not in PARTS:
        return None
    return relative


def last_line(output: str) -> str:
    """The converter's last error as one line: a logged ERROR, or the last
    line of a traceback, without the logger's or exception's prefix."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return ""
    errors = [line for line in lines if line.startswith(("ERROR:", "CRITICAL:"))]
    traceback = any(line.startswith("Traceback (most recent call last)") for line in lines)
    # A traceback's last line is the error that stopped it, even after
    # ERROR lines logged earlier; without one, the last ERROR line.
    line = lines[-1] if traceback or not errors else errors[-1]
    line = _LOG_PREFIX.sub("", line, count=1)
    bare = _EXCEPTION_PREFIX.sub("", line, count=1) if traceback else line
    return bare or line


@contextmanager
def converted(folder: Path, workdir: Path, say: Callable[[str], None]) -> Iterator[Path]:
    """`folder` as an F16 GGUF written by llama.cpp's convert_hf_to_gguf.py,
    that exists inside the block."""
    reason = available()
    if reason is not None:
        raise UsageError(f"converting {folder} with llama.cpp's converter {reason}")
    arch = architecture(folder) or "unknown"
    weights = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth")]
    if not weights:
        raise UsageError(f"{folder} has no weights (*.safetensors or pytorch_model*.bin)")
    # F16 output is at most the size of F16/BF16 weights, half of F32 ones.
    need = sum(p.stat().st_size for p in weights) + 64 * MiB
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise BuildError(
            f"not enough disk space in {workdir} to convert: about {need // MiB} MiB, {free // MiB} MiB free"
        )
    script = converter_script(say)
    say(f"converting {folder} ({arch}) to an F16 GGUF with llama.cpp's {SCRIPT}")
    tmp = scratch_path(workdir, folder, "convert")
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # the script's own gguf-py, not the installed gguf: they must agree
    cmd = [sys.executable, str(script), str(folder), "--outfile", str(tmp), "--outtype", "f16"]
    try:
        try:  # only the converter: what the caller's block raises passes through as it is
            result = _run_with_bar(cmd, env, tmp, _f16_size(weights))
        except OSError as exc:
            raise BuildError(f"cannot run llama.cpp's converter: {exc.strerror or exc}") from None
        if result.returncode != 0 or not tmp.is_file():
            raise failure(folder, arch, workdir, result.returncode, result.stderr + result.stdout)
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _run_with_bar(cmd: list[str], env: dict[str, str], out: Path, expected: int) -> subprocess.CompletedProcess[str]:
    """Run the converter, its output kept for `failure`, while a bar
    follows the GGUF it writes against the F16 size it will reach."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
        with progress.bar(expected, "converting") as update:
            done = 0
            while proc.poll() is None:
                with contextlib.suppress(OSError):
                    size = out.stat().st_size
                    update(max(0, size - done))
                    done = max(done, size)
                time.sleep(0.2)
        log.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, "", log.read())


def _f16_size(weights: list[Path]) -> int:
    """The F16 GGUF's size, about: 2 bytes for each weight in the
    safetensors headers (other formats: their file size)."""
    total = 0
    for path in weights:
        try:
            with path.open("rb") as f:
                length = int.from_bytes(f.read(8), "little")
                if length > 100 * MiB:  # safetensors' own limit: not a header
                    raise ValueError(length)
                header = json.loads(f.read(length))
            total += sum(2 * math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            total += path.stat().st_size
    return total


def failure(folder: Path, arch: str, workdir: Path, code: int, output: str) -> BuildError | UsageError:
    """The converter's failure as one line, with the exit code its cause deserves."""
    if code < 0:  # killed: by the kernel's OOM killer, most likely
        return BuildError(f"llama.cpp's converter was killed (signal {-code}) converting {folder}: out of memory?")
    line = last_line(output) or f"it exited with {code}"
    if _DISK_FULL.search(line):
        return BuildError(f"cannot write the converted model in {workdir}: {line}")
    if _USAGE.search(line):
        return UsageError(f"llama.cpp's converter cannot convert {folder} ({arch}): {line}")
    return BuildError(f"llama.cpp's converter failed on {folder} ({arch}): {line}")
