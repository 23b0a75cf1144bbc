"""GGUF files the tests make from the real models, with the `gguf` library."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np


def dequantized_copy(src: Path, dst: Path) -> Path:
    """`src` with every tensor dequantized: F16 matrices, F32 vectors, as a
    checkpoint's converter writes them before quantizing."""
    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(dst, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        shape = tuple(int(d) for d in reversed(tensor.shape))  # numpy order
        values = values.reshape(shape)
        writer.add_tensor(tensor.name, values.astype(np.float16) if values.ndim > 1 else values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
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
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst
