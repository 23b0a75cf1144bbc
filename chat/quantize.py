"""Quantizing a GGUF with llama.cpp's own quantizer, for `llamabin build
--quant`: the packer holds no llama.cpp, so it runs the runtime (which
does) as `RUNTIME __quantize__ SRC DST TYPE [IMATRIX]` (payload.quantize).

The importance matrix is read as llama.cpp's tools/quantize does: each
`NAME.in_sum2` tensor divided by its `NAME.counts`, per expert. The file is
parsed by ggml's own GGUF reader (in libggml-base, which libllama loads),
so the runtime needs no GGUF code of its own.
"""

from __future__ import annotations

import ctypes
import re
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chat.engine import backends
from chat.engine.bindings import llama_cpp as C
from chat.engine.llama import LlamaLog
from chat.errors import EXIT_OK, EXIT_USAGE, LlamabinError, ModelFileError, UsageError
from payload.quantize import COMMAND, NEEDS_IMATRIX, PROGRESS, QUANT_TYPES

_TENSOR_LINE = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")

# llama.cpp's ftype for each name.
FTYPES: dict[str, str] = {name: f"LLAMA_FTYPE_MOSTLY_{name}" for name in QUANT_TYPES} | {"F32": "LLAMA_FTYPE_ALL_F32"}

_GGML_TYPE_F32 = 0


class _GgufInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


@dataclass
class ImportanceMatrix:
    """Per-tensor weights, kept alive for as long as llama.cpp reads them."""

    names: list[bytes]
    values: list[array[float]]

    def entries(self) -> ctypes.Array[C.llama_model_imatrix_data]:
        table = (C.llama_model_imatrix_data * (len(self.names) + 1))()  # a null entry ends it
        for i, (name, data) in enumerate(zip(self.names, self.values, strict=True)):
            pointer, _ = data.buffer_info()
            table[i].name = name
            table[i].data = ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float))
            table[i].size = len(data)
        return table


def read_imatrix(path: Path) -> ImportanceMatrix:
    """An importance matrix from llama-imatrix's GGUF output."""
    gguf = _ggml_gguf()
    ctx = gguf.gguf_init_from_file(str(path).encode(), _GgufInitParams(True, None))
    if not ctx:
        raise ModelFileError(f"not an importance matrix (GGUF) file: {path}")
    try:
        tensors: dict[str, tuple[int, int]] = {}  # name -> (offset in file, floats)
        base = gguf.gguf_get_data_offset(ctx)
        for i in range(gguf.gguf_get_n_tensors(ctx)):
            name = gguf.gguf_get_tensor_name(ctx, i).decode()
            if not name.endswith((".in_sum2", ".counts")):
                continue  # not an importance matrix's: a model's weights, say (said below)
            if gguf.gguf_get_tensor_type(ctx, i) != _GGML_TYPE_F32:
                raise ModelFileError(f"importance matrix {path}: tensor {name} is not F32")
            tensors[name] = (base + gguf.gguf_get_tensor_offset(ctx, i), gguf.gguf_get_tensor_size(ctx, i) // 4)
    finally:
        gguf.gguf_free(ctx)
    names: list[bytes] = []
    values: list[array[float]] = []
    with path.open("rb") as f:
        for name, (offset, n) in sorted(tensors.items()):
            if not name.endswith(".in_sum2"):
                continue
            weight = name.removesuffix(".in_sum2")
            if f"{weight}.counts" not in tensors:
                raise ModelFileError(f"importance matrix {path}: {weight} has sums but no counts")
            sums = _floats(f, offset, n)
            counts = _floats(f, *tensors[f"{weight}.counts"])
            per = n // max(len(counts), 1)
            for j, count in enumerate(counts):  # one slice per expert
                for k in range(j * per, (j + 1) * per):
                    sums[k] = sums[k] / count if count > 0 else 1.0
            names.append(weight.encode())
            values.append(sums)
    if not names:
        raise ModelFileError(f"importance matrix {path} holds no entries (is it llama-imatrix's GGUF output?)")
    return ImportanceMatrix(names, values)


def _floats(f: object, offset: int, n: int) -> array[float]:
    data = array("f")
    f.seek(offset)  # type: ignore[attr-defined]
    data.frombytes(f.read(4 * n))  # type: ignore[attr-defined]
    if len(data) != n:
        raise ModelFileError("importance matrix file is truncated")
    return data


def _ggml_gguf() -> ctypes.CDLL:
    """ggml's GGUF functions, found through libllama (they live in the
    libggml-base it links): a handle of our own, so the argument types set
    here stay out of llama-cpp-python's."""
    lib = ctypes.CDLL(C._lib._name)
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, _GgufInitParams]
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    lib.gguf_get_n_tensors.argtypes = [ctypes.c_void_p]
    lib.gguf_get_n_tensors.restype = ctypes.c_int64
    lib.gguf_get_data_offset.argtypes = [ctypes.c_void_p]
    lib.gguf_get_data_offset.restype = ctypes.c_size_t
    for fn, restype in (
        ("gguf_get_tensor_name", ctypes.c_char_p),
        ("gguf_get_tensor_type", ctypes.c_int),
        ("gguf_get_tensor_offset", ctypes.c_size_t),
        ("gguf_get_tensor_size", ctypes.c_size_t),
    ):
        getattr(lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_int64]
        getattr(lib, fn).restype = restype
    return lib


def quantize(src: Path, dst: Path, kind: str, imatrix: Path | None = None, threads: int = 0) -> None:
    """Write `src` quantized to `kind` at `dst`; raises with llama.cpp's
    reason on failure (and leaves no `dst`)."""
    if kind not in FTYPES:
        raise UsageError(f"unknown quantization type {kind} (known: {', '.join(FTYPES)})")
    if kind in NEEDS_IMATRIX and imatrix is None:
        raise UsageError(f"{kind} needs an importance matrix: give one with --imatrix FILE")
    log = LlamaLog.install(verbose=False, info=True)  # its progress lines are INFO
    log.listener = _report_progress
    backends.load()
    params = C.llama_model_quantize_default_params()
    params.ftype = getattr(C, FTYPES[kind])
    params.nthread = threads
    matrix = read_imatrix(imatrix) if imatrix is not None else None
    table = matrix.entries() if matrix is not None else None
    if table is not None:
        params.imatrix = ctypes.cast(table, ctypes.POINTER(C.llama_model_imatrix_data))
    status = C.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if status != 0:
        dst.unlink(missing_ok=True)
        reason = log.last_error()
        if "iostream error" in reason:  # llama.cpp's words for a failed write
            reason = f"writing {dst.name} failed (is the disk full, or a file-size limit set?)"
        raise ModelFileError(f"cannot quantize {src} to {kind}: {reason}")


def _report_progress(line: str) -> None:
    """llama.cpp logs "[  12/ 272] blk.0.attn_k.weight - ..." as it starts
    each tensor: passed on as "progress 11 272" for the packer's bar."""
    found = _TENSOR_LINE.match(line)
    if found:
        print(PROGRESS, int(found[1]) - 1, found[2], flush=True)


def main(argv: Sequence[str]) -> int:
    """`RUNTIME __quantize__ SRC DST TYPE [IMATRIX]`: for the packer only."""
    if len(argv) not in (3, 4):
        print(f"usage: {COMMAND} SRC DST TYPE [IMATRIX]", file=sys.stderr)
        return EXIT_USAGE
    imatrix = Path(argv[3]) if len(argv) == 4 else None
    try:
        quantize(Path(argv[0]), Path(argv[1]), argv[2], imatrix)
    except LlamabinError as exc:
        print(f"llamabin: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return EXIT_OK
