"""Run one CPU-kernel library on a tiny graph, in a child process.

A CPU variant can pass its own feature check and still die at its first
instruction: llama.cpp's AMX kernels did on Linux (SIGILL at `tilezero`,
SIGSEGV at `ldtilecfg`), a hypervisor can advertise a feature it traps, and
a miscompiled kernel faults wherever it faults. `check(path)` loads the
library in a forked child, multiplies small matrices of every weight type a
GGUF commonly holds, once for a single token and once for a batch, in every
buffer type the variant offers (AMX and repacked layouts included), on two
threads (the worker threads are where AMX went wrong), and reports how the
child ended. The parent never runs a kernel that has not passed.

Only ggml's C API is used (libggml-base and libggml through ctypes), so the
child needs no model and no llama.cpp context.
"""

from __future__ import annotations

import ctypes
import math
import os
import random
import resource
import signal
import time
from array import array
from pathlib import Path

# ggml_type values (ggml.h): the types llama.cpp's quantizer writes, with a
# kernel of their own in the CPU backend. A model of another type still
# runs: its kernels share these paths.
TYPES = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "q2_k": 10,
    "q3_k": 11,
    "q4_k": 12,
    "q5_k": 13,
    "q6_k": 14,
    "iq4_nl": 20,
    "iq4_xs": 23,
    "bf16": 30,
    "mxfp4": 39,
}
K, N = 256, 64  # one k-quant super-block per row; room for AMX's 2x16 tiles
BATCHES = (1, 32)  # decode (one token) and a prompt chunk take different paths
TIMEOUT_S = 30.0
GGML_BACKEND_DEVICE_TYPE_CPU = 0


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def _bind(ggml: ctypes.CDLL) -> None:
    """Argument and result types of the calls below, all looked up through
    libggml (dlsym searches its dependency, libggml-base, too): an unbound
    call would pass pointers as 32-bit ints."""
    vp, sz, i64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64
    sigs = {
        "ggml_init": ([_InitParams], vp),
        "ggml_free": ([vp], None),
        "ggml_tensor_overhead": ([], sz),
        "ggml_graph_overhead": ([], sz),
        "ggml_new_tensor_2d": ([vp, ctypes.c_int, i64, i64], vp),
        "ggml_mul_mat": ([vp, vp, vp], vp),
        "ggml_new_graph": ([vp], vp),
        "ggml_build_forward_expand": ([vp, vp], None),
        "ggml_nbytes": ([vp], sz),
        "ggml_quantize_chunk": ([ctypes.c_int, vp, vp, i64, i64, i64, vp], sz),
        "ggml_quantize_requires_imatrix": ([ctypes.c_int], ctypes.c_bool),
        "ggml_backend_tensor_set": ([vp, vp, sz, sz], None),
        "ggml_backend_tensor_get": ([vp, vp, sz, sz], None),
        "ggml_backend_buffer_free": ([vp], None),
        "ggml_backend_load": ([ctypes.c_char_p], vp),
        "ggml_backend_reg_dev_get": ([vp, sz], vp),
        "ggml_backend_reg_get_proc_address": ([vp, ctypes.c_char_p], vp),
        "ggml_backend_dev_init": ([vp, ctypes.c_char_p], vp),
        "ggml_backend_dev_buffer_type": ([vp], vp),
        "ggml_backend_dev_supports_op": ([vp, vp], ctypes.c_bool),
        "ggml_backend_alloc_ctx_tensors_from_buft": ([vp, vp], vp),
        "ggml_backend_graph_compute": ([vp, vp], ctypes.c_int),
        "ggml_backend_free": ([vp], None),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(ggml, name)
        fn.argtypes, fn.restype = args, res


def _multiply(
    ggml: ctypes.CDLL, dev: int, backend: int, buft: int, gtype: int, weights: array, inputs: dict[int, array]
) -> None:
    """W (K x N, of gtype, in buft) times X (K x M, f32) for each batch M
    that the buffer type takes (llama.cpp asks the same before it places a
    weight in one: an extra buffer type cannot even store other types)."""
    meta = _InitParams(ggml.ggml_tensor_overhead() * 8 + ggml.ggml_graph_overhead(), None, True)
    wctx = ggml.ggml_init(meta)
    contexts: list[int] = []
    try:
        w = ggml.ggml_new_tensor_2d(wctx, gtype, K, N)
        wbuf = ggml.ggml_backend_alloc_ctx_tensors_from_buft(wctx, buft)
        if not wbuf:
            raise RuntimeError("cannot allocate the weights")
        graphs = []
        for m, x_data in inputs.items():
            ctx = ggml.ggml_init(meta)
            contexts.append(ctx)
            x = ggml.ggml_new_tensor_2d(ctx, TYPES["f32"], K, m)
            y = ggml.ggml_mul_mat(ctx, w, x)
            graph = ggml.ggml_new_graph(ctx)
            ggml.ggml_build_forward_expand(graph, y)
            if ggml.ggml_backend_dev_supports_op(dev, y):
                graphs.append((ctx, x, y, graph, m, x_data))
        if graphs:
            packed = ctypes.create_string_buffer(ggml.ggml_nbytes(w))
            imatrix = array("f", [1.0] * K)
            im_ptr = imatrix.buffer_info()[0] if ggml.ggml_quantize_requires_imatrix(gtype) else None
            ggml.ggml_quantize_chunk(gtype, weights.buffer_info()[0], packed, 0, N, K, im_ptr)
            ggml.ggml_backend_tensor_set(w, packed, 0, len(packed.raw))
        for ctx, x, y, graph, m, x_data in graphs:
            buf = ggml.ggml_backend_alloc_ctx_tensors_from_buft(ctx, ggml.ggml_backend_dev_buffer_type(dev))
            ggml.ggml_backend_tensor_set(x, x_data.buffer_info()[0], 0, len(x_data) * 4)
            status = ggml.ggml_backend_graph_compute(backend, graph)
            out = array("f", bytes(N * m * 4))
            ggml.ggml_backend_tensor_get(y, out.buffer_info()[0], 0, len(out) * 4)
            ggml.ggml_backend_buffer_free(buf)
            if status != 0 or not all(math.isfinite(v) for v in out):
                raise RuntimeError(f"type {gtype}, batch {m}: wrong result (status {status})")
        ggml.ggml_backend_buffer_free(wbuf)
    finally:
        for ctx in contexts:
            ggml.ggml_free(ctx)
        ggml.ggml_free(wctx)


def _run(variant_path: Path, ggml_path: Path) -> None:
    """The child's work: raises on a wrong result, dies on a bad instruction."""
    ggml = ctypes.CDLL(str(ggml_path))
    _bind(ggml)
    reg = ggml.ggml_backend_load(str(variant_path).encode())
    if not reg:
        raise RuntimeError("the library does not load")
    dev = ggml.ggml_backend_reg_dev_get(reg, 0)
    backend = ggml.ggml_backend_dev_init(dev, None)
    set_threads = ggml.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_set_n_threads")
    if set_threads:
        ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int)(set_threads)(backend, 2)
    bufts = [ggml.ggml_backend_dev_buffer_type(dev)]
    extra = ggml.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if extra:
        listed = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(extra)(dev)
        i = 0
        while listed and listed[i]:
            bufts.append(listed[i])
            i += 1
    rng = random.Random(1)
    weights = array("f", (rng.uniform(-1, 1) for _ in range(K * N)))
    inputs = {m: array("f", (rng.uniform(-1, 1) for _ in range(K * m))) for m in BATCHES}
    for buft in bufts:
        for gtype in TYPES.values():
            _multiply(ggml, dev, backend, buft, gtype, weights, inputs)
    ggml.ggml_backend_free(backend)


def check(variant_path: Path, ggml_path: Path) -> str | None:
    """None if the variant ran the test correctly, else why not ("killed by
    SIGILL", "timed out", ...). Needs fork (POSIX)."""
    pid = os.fork()
    if pid == 0:  # the child: no imports, no Python-level threads, never returns
        code = 0
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash here is expected: no core file
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            _run(variant_path, ggml_path)
        except BaseException:
            code = 3
        os._exit(code)
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"did not finish in {TIMEOUT_S:.0f} s"
        time.sleep(0.002)
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    code = os.WEXITSTATUS(status)
    return None if code == 0 else "computed a wrong result" if code == 3 else f"exited with status {code}"
