"""`llamabin build --lora ADAPTER [--lora-scale S]`: merge a LoRA adapter
GGUF into an F16, BF16 or F32 base before quantizing and packing,
W' = W + S * alpha / rank * B @ A, as llama.cpp applies it at run time.

The merged weights are kept in F32, so the merge adds no rounding of its
own before --quant. A quantized base cannot take a merge (its weights are
no longer the ones the adapter was trained against, to full precision):
the adapter is then packed beside the weights (`beside`) and the file
applies it at run time, as llama.cpp's --lora does.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from packager.errors import BuildError
from packager.gguf_info import quantization
from packager.gguf_write import copy_metadata, scratch_path, write_out
from packager.numbers import finite
from payload.errors import UsageError
from payload.quantize import SOURCE_TYPES

MiB = 2**20
ADAPTER_ALIGN = 65536  # where the adapter starts in the blob: a page boundary on every system


def is_quantized(model: Path) -> bool:
    """Whether `model` is too quantized to merge into: then an adapter is
    packed beside it instead (`beside`)."""
    return quantization(_reader(model, "model")) not in SOURCE_TYPES


def _adapter_targets(base: Any, lora: Any, model: Path, adapter: Path) -> dict[str, tuple[Any, Any]]:
    """The base's weights the adapter changes, each with its (A, B) parts;
    an adapter that is not one, or not this model's, is refused."""
    if _field(lora, "general.type") != "adapter" or _field(lora, "adapter.type") != "lora":
        raise UsageError(f"{adapter} is not a LoRA adapter GGUF (llama.cpp's convert_lora_to_gguf.py writes them)")
    arch, lora_arch = _field(base, "general.architecture"), _field(lora, "general.architecture")
    if arch != lora_arch:
        raise UsageError(f"{adapter} is an adapter for {lora_arch} models, and {model} is {arch}")
    parts = {t.name: t for t in lora.tensors}
    weights = {t.name: t for t in base.tensors}
    targets: dict[str, tuple[Any, Any]] = {}
    for name in parts:
        if name.endswith(".lora_a"):
            target = name.removesuffix(".lora_a")
            if target not in weights or f"{target}.lora_b" not in parts:
                raise UsageError(
                    f"{adapter} changes {target}, which {model} does not have: is it this model's adapter?"
                )
            targets[target] = (parts[name], parts[f"{target}.lora_b"])
    if not targets:
        raise UsageError(f"{adapter} holds no LoRA tensors")
    return targets


@contextmanager
def merged(model: Path, adapter: Path, scale: float, workdir: Path, say: Callable[[str], None]) -> Iterator[Path]:
    """`model` with `adapter` merged in, as a file that exists inside the block."""
    base = _reader(model, "model")
    lora = _reader(adapter, "LoRA adapter")
    targets = _adapter_targets(base, lora, model, adapter)
    arch = _field(base, "general.architecture")
    kind = quantization(base)
    if kind not in SOURCE_TYPES:
        raise UsageError(
            f"{model} is quantized ({kind}): --lora merges into an F16, BF16 or F32 base;"
            f" for this one, run the file with --lora {adapter.name}"
        )
    raw_alpha = _field(lora, "adapter.lora.alpha") or 0
    alpha = finite(raw_alpha)
    if alpha is None:
        raise UsageError(f"{adapter}: adapter.lora.alpha is {raw_alpha!r}, not a number")
    free = shutil.disk_usage(workdir).free
    need = model.stat().st_size * 2  # the changed weights grow to F32
    if free < need:
        raise BuildError(
            f"not enough disk space in {workdir} to merge: up to {need // MiB} MiB, {free // MiB} MiB free"
        )
    say(f"merging {adapter} into {model} ({len(targets)} weights, scale {scale:g})")
    tmp = scratch_path(workdir, model, "lora")
    try:
        try:  # only the writing: what the caller's block raises passes through as it is
            _write_merged(tmp, base, str(arch), targets, scale, alpha, adapter, model)
        except OSError as exc:
            raise BuildError(
                f"cannot write the merged model in {workdir}: {exc.strerror or f'{exc}, is the disk full?'}"
            ) from None
        except (ValueError, TypeError, IndexError, ArithmeticError, NotImplementedError) as exc:
            raise BuildError(f"cannot merge {adapter} into {model}: {exc}") from None
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def beside(
    model: Path, adapter: Path, scale: float, workdir: Path, say: Callable[[str], None]
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A quantized `model` cannot take the adapter's weights without losing
    precision twice, so the adapter travels beside it, in the same blob:
    the model's bytes, zeros up to ADAPTER_ALIGN, the adapter's bytes. The
    runtime applies it at load (llama.cpp's --lora). Yields that blob and
    the manifest's `lora` entry (offset and size within the blob)."""
    _adapter_targets(_reader(model, "model"), _reader(adapter, "LoRA adapter"), model, adapter)
    size, extra = model.stat().st_size, adapter.stat().st_size
    offset = -(-size // ADAPTER_ALIGN) * ADAPTER_ALIGN
    free = shutil.disk_usage(workdir).free
    if free < offset + extra + 64 * MiB:
        raise BuildError(
            f"not enough disk space in {workdir} to pack the adapter: {(offset + extra) // MiB} MiB, {free // MiB} MiB free"
        )
    say(f"packing {adapter} beside the quantized weights, applied at run time (scale {scale:g})")
    tmp = scratch_path(workdir, model, "with-lora")
    try:
        try:
            with tmp.open("wb") as out:
                for part, at in ((model, 0), (adapter, offset)):
                    out.seek(at)
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
        except OSError as exc:
            raise BuildError(
                f"cannot write the model and adapter in {workdir}: {exc.strerror or f'{exc}, is the disk full?'}"
            ) from None
        yield tmp, {"file": adapter.name, "offset": offset, "size": extra, "scale": scale}
    finally:
        tmp.unlink(missing_ok=True)


def _write_merged(
    dst: Path,
    base: Any,
    arch: str,
    targets: dict[str, tuple[Any, Any]],
    scale: float,
    alpha: float,
    adapter: Path,
    model: Path,
) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(dst, arch)
    copy_metadata(base, writer)
    for tensor in base.tensors:
        if tensor.name not in targets:
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
            continue
        a_part, b_part = targets[tensor.name]
        a = gguf.quants.dequantize(a_part.data, a_part.tensor_type).reshape(_numpy_shape(a_part))
        b = gguf.quants.dequantize(b_part.data, b_part.tensor_type).reshape(_numpy_shape(b_part))
        w = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(_numpy_shape(tensor))
        if w.ndim != 2 or a.ndim != 2 or b.ndim != 2 or a.shape[0] == 0:
            raise UsageError(f"{adapter}: {tensor.name} is not a matrix the adapter can change (or its rank is 0)")
        rank = a.shape[0]
        if b.shape != (w.shape[0], rank) or a.shape != (rank, w.shape[1]):
            raise UsageError(
                f"{adapter}: {tensor.name} is {w.shape[0]}x{w.shape[1]} in {model},"
                f" the adapter's B*A is {b.shape[0]}x{a.shape[1]}: is it this model's adapter?"
            )
        factor = scale * (alpha / rank if alpha else 1.0)  # llama.cpp's rule for alpha 0
        writer.add_tensor(tensor.name, w.astype(np.float32) + factor * (b.astype(np.float32) @ a.astype(np.float32)))
    write_out(writer)


def _reader(path: Path, what: str) -> Any:
    from gguf import GGUFReader

    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise UsageError(f"{what} {path} is not a GGUF file")
        return GGUFReader(path)
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {path}") from None
    except (ValueError, IndexError, OSError) as exc:
        raise UsageError(f"{what} {path} is not a valid GGUF: {exc}") from None


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    try:
        return None if field is None else field.contents()
    except UnicodeDecodeError:  # text that is not UTF-8: not a value this reads
        return None


def _numpy_shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in reversed(tensor.shape))
