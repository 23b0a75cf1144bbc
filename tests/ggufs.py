"""GGUF files the tests make from the real models, with the `gguf` library."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from packager.gguf_write import copy_metadata, write_out


def dequantized_copy(src: Path, dst: Path) -> Path:
    """`src` with every tensor dequantized: F16 matrices, F32 vectors, as a
    checkpoint's converter writes them before quantizing."""
    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(dst, arch)
    copy_metadata(reader, writer, skip=("general.file_type",))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        shape = tuple(int(d) for d in reversed(tensor.shape))  # numpy order
        values = values.reshape(shape)
        writer.add_tensor(tensor.name, values.astype(np.float16) if values.ndim > 1 else values)
    write_out(writer)
    return dst


def importance_matrix(model: Path, dst: Path, seed: int = 0) -> Path:
    """An importance matrix in llama-imatrix's GGUF layout for `model`'s 2-D
    weights: random positive sums over 8 calls (the format, not a measured one)."""
    reader = gguf.GGUFReader(model)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(dst, "imatrix")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", ["random"])
    writer.add_uint32("imatrix.chunk_count", 8)
    writer.add_uint32("imatrix.chunk_size", 512)
    for tensor in reader.tensors:
        if len(tensor.shape) < 2 or tensor.name == "token_embd.weight":
            continue
        columns = int(tensor.shape[0])
        writer.add_tensor(f"{tensor.name}.in_sum2", (rng.random((1, columns)) * 8 + 0.1).astype(np.float32))
        writer.add_tensor(f"{tensor.name}.counts", np.array([[8.0]], dtype=np.float32))
    write_out(writer)
    return dst


def lora_adapter(base: Path, dst: Path, rank: int = 4, alpha: float = 8.0, seed: int = 0) -> dict[str, np.ndarray]:
    """A LoRA adapter GGUF for `base` (as llama.cpp's convert_lora_to_gguf.py
    lays it out) on every layer's attn_q, attn_v and ffn_down; returns the
    weight change each tensor gets at scale 1 (alpha / rank * B @ A)."""
    reader = gguf.GGUFReader(base)
    arch = str(reader.fields["general.architecture"].contents())
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(dst, arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    deltas: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        if not tensor.name.endswith(("attn_q.weight", "attn_v.weight", "ffn_down.weight")):
            continue
        n_in, n_out = int(tensor.shape[0]), int(tensor.shape[1])  # ggml order: ne0 is the input
        a = (rng.standard_normal((rank, n_in)) * 0.1).astype(np.float32)
        b = (rng.standard_normal((n_out, rank)) * 0.1).astype(np.float32)
        writer.add_tensor(f"{tensor.name}.lora_a", a)
        writer.add_tensor(f"{tensor.name}.lora_b", b)
        deltas[tensor.name] = (alpha / rank) * (b @ a)
    write_out(writer)
    return deltas


def merged_copy(base: Path, deltas: dict[str, np.ndarray], dst: Path) -> Path:
    """`base` with `deltas` added to its weights, the changed ones kept in F32
    so that the merge adds no rounding of its own."""
    reader = gguf.GGUFReader(base)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(dst, arch)
    copy_metadata(reader, writer)
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        values = values.reshape(tuple(int(d) for d in reversed(tensor.shape)))
        if tensor.name in deltas:
            writer.add_tensor(tensor.name, values.astype(np.float32) + deltas[tensor.name])
        else:
            writer.add_tensor(tensor.name, values.astype(np.float16) if values.ndim > 1 else values)
    write_out(writer)
    return dst
