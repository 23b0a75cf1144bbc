"""`llamabin build --quant TYPE [--imatrix FILE]`: quantize an F16, BF16
or F32 GGUF with llama.cpp's quantizer before packing it.

The packer holds no llama.cpp; the runtime for this machine does, so the
work runs there (payload.quantize names the command). The quantized GGUF
is written next to the output, under a hidden name, and removed when the
build ends, however it ends.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from packager import progress
from packager.errors import BuildError
from packager.gguf_info import read_gguf_info
from packager.gguf_write import scratch_path
from payload.errors import UsageError
from payload.quantize import COMMAND, NEEDS_IMATRIX, PROGRESS, QUANT_TYPES, SOURCE_TYPES

MiB = 2**20
SPARE_BYTES = 64 * MiB  # beyond the quantized file's own size, for the file system's sake


def check_options(quant: str | None, imatrix: Path | None) -> str | None:
    """The type as llama.cpp names it, or a usage error (exit 2) before any work."""
    if quant is None:
        if imatrix is not None:
            raise UsageError("--imatrix is used only with --quant TYPE")
        return None
    name = quant.upper()
    if name not in QUANT_TYPES:
        raise UsageError(f"unknown --quant type {quant}; known: {', '.join(QUANT_TYPES)}")
    if name in NEEDS_IMATRIX and imatrix is None:
        raise UsageError(
            f"--quant {name} needs an importance matrix: give one with --imatrix FILE"
            " (llama.cpp's llama-imatrix writes it)"
        )
    if imatrix is not None and not imatrix.is_file():
        raise UsageError(f"importance matrix not found: {imatrix}")
    return name


def quantized_name(stem: str, quant: str) -> str:
    """smol-f16 -> smol-Q4_K_M; model -> model.Q4_K_M."""
    renamed, n = re.subn(r"(?i)([-._])(f16|bf16|f32|fp16|fp32)$", rf"\g<1>{quant}", stem)
    return renamed if n else f"{stem}.{quant}"


def _run_with_bar(argv: list[str], desc: str) -> subprocess.CompletedProcess[str]:
    """Run the quantizer, its "progress DONE TOTAL" lines (stdout) driving a
    bar; its stderr (one line on failure) is kept for the caller."""
    with (
        subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc,
        progress.steps(desc, "tensor") as update,
    ):
        assert proc.stdout is not None and proc.stderr is not None
        errors: list[str] = []
        # Read beside stdout, so a long stderr can never fill its pipe and stall both.
        drain = threading.Thread(target=lambda: errors.append(proc.stderr.read() if proc.stderr else ""), daemon=True)
        drain.start()
        for line in proc.stdout:
            words = line.split()
            if len(words) == 3 and words[0] == PROGRESS and words[1].isdigit() and words[2].isdigit():
                update(int(words[1]), int(words[2]))
        returncode = proc.wait()
        drain.join()
    return subprocess.CompletedProcess(argv, returncode, "", "".join(errors))


@contextmanager
def quantized(
    model: Path, quant: str, imatrix: Path | None, workdir: Path, runtime: Path, say: Callable[[str], None]
) -> Iterator[Path]:
    """`model` quantized to `quant`, as a file that exists inside the block."""
    info = read_gguf_info(model)
    if info.quantization not in SOURCE_TYPES:
        raise UsageError(
            f"{model} is already quantized ({info.quantization}): --quant starts from an F16, BF16 or F32 GGUF"
        )
    free = shutil.disk_usage(workdir).free
    if free < info.size + SPARE_BYTES:  # a quantized file is never bigger than its F16/F32 source
        raise BuildError(
            f"not enough disk space in {workdir} to quantize: up to {info.size // MiB} MiB needed,"
            f" {free // MiB} MiB free"
        )
    tmp = scratch_path(workdir, model, quant)
    argv = [str(runtime), COMMAND, str(model), str(tmp), quant] + ([str(imatrix)] if imatrix else [])
    say(f"quantizing to {quant}{' with ' + str(imatrix) if imatrix else ''} (llama.cpp's quantizer)")
    started = time.monotonic()
    try:
        result = _run_with_bar(argv, f"quantizing to {quant}")
        if result.returncode < 0:  # a signal: out of memory, or a file-size limit (SIGXFSZ)
            raise BuildError(f"the quantizer was killed by signal {-result.returncode}; nothing was written")
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            message = (lines[-1] if lines else f"exit {result.returncode}").removeprefix("llamabin: error: ")
            raise (UsageError if result.returncode == 2 else BuildError)(message)
        size = tmp.stat().st_size
        say(f"quantized: {info.size / MiB:.0f} MiB -> {size / MiB:.0f} MiB in {time.monotonic() - started:.1f} s")
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
