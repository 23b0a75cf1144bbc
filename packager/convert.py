"""`llamabin build CHECKPOINT_DIR`: a Hugging Face checkpoint of a Llama-
architecture, Gemma or Gemma 2 model with a SentencePiece tokenizer, converted to
an F32 GGUF with numpy and the `gguf` library, then quantized (--quant)
and packed.

Why not llama.cpp's convert_hf_to_gguf.py: it ships only in the sdist and
imports torch and transformers (gigabytes) for any model. For the layout
it writes for Llama and Gemma 2 (names, the rotary permutation of q/k,
Gemma's norm offsets, the tokenizer's pieces, scores and types) this file
follows it; other architectures are
refused with a pointer to it. Needs the `convert` extra (safetensors,
sentencepiece).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from packager.errors import BuildError
from packager.gguf_write import scratch_path, write_out
from payload.errors import UsageError

SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM")
# The GGUF architecture each is written as.
_FAMILY = {"GemmaForCausalLM": "gemma", "Gemma2ForCausalLM": "gemma2"}
MiB = 2**20

# Gemma and Gemma 2: no q/k permutation (llama.cpp rotates them NEOX-style),
# norm weights stored as w where the model computes x * (1 + w), tied
# embeddings; Gemma 2 adds its own norms around attention and the
# feed-forward.
_GEMMA2_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}

# HF's names -> GGUF's, per layer.
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def architecture(folder: Path) -> str | None:
    """The checkpoint's class name from config.json, or None if it has none."""
    names = read_json(folder / "config.json").get("architectures")
    return str(names[0]) if isinstance(names, list) and names else None


def permute(weights: Any, n_head: int) -> Any:
    """HF stores q and k for rotate-half RoPE; llama.cpp's llama wants the
    pairs interleaved: the permutation convert_hf_to_gguf.py applies."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


@contextmanager
def converted(folder: Path, workdir: Path, say: Callable[[str], None]) -> Iterator[Path]:
    """`folder` as an F32 GGUF that exists inside the block."""
    arch = architecture(folder)
    if arch not in SUPPORTED:
        raise UsageError(
            f"{folder} is a {arch} checkpoint; llamabin converts {', '.join(SUPPORTED)} with a SentencePiece"
            f" tokenizer: convert others with llama.cpp's convert_hf_to_gguf.py --outtype f16 and build the GGUF"
        )
    tokenizer_model = folder / "tokenizer.model"
    if not tokenizer_model.is_file():
        raise UsageError(f"{folder} has no tokenizer.model (the SentencePiece tokenizer this converter reads)")
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise UsageError(f"{folder} has no *.safetensors weights")
    try:
        import numpy as np
        import sentencepiece
        from safetensors.numpy import load_file
    except ImportError:
        raise UsageError("converting a checkpoint needs the convert extra: pip install 'llamabin[convert]'") from None
    need = sum(p.stat().st_size for p in shards) * 2 + 64 * MiB  # F16/BF16 weights become F32
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise BuildError(
            f"not enough disk space in {workdir} to convert: about {need // MiB} MiB, {free // MiB} MiB free"
        )
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    say(f"converting {folder} ({arch}) to an F32 GGUF")
    weights: dict[str, Any] = {}
    for shard in shards:
        weights.update(load_file(str(shard)))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_model))

    def write(dst: Path) -> None:
        try:
            write_gguf(dst, folder, config, weights, sp, np)
        except KeyError as exc:
            raise UsageError(f"{folder}: {exc.args[0]} is missing from its config.json or weights") from None

    with scratch_gguf(workdir, folder, write) as tmp:
        yield tmp


@contextmanager
def scratch_gguf(workdir: Path, folder: Path, write: Callable[[Path], None]) -> Iterator[Path]:
    """`write(path)` a GGUF converted from `folder` next to the output, and
    yield it; it is removed however the build ends, and a failed write
    (a full disk, say) is one line."""
    tmp = scratch_path(workdir, folder, "convert")
    try:
        try:  # only the writing: what the caller's block raises passes through as it is
            write(tmp)
        except OSError as exc:
            raise BuildError(
                f"cannot write the converted model in {workdir}: {exc.strerror or f'{exc}, is the disk full?'}"
            ) from None
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_gguf(dst: Path, folder: Path, config: dict[str, Any], weights: dict[str, Any], sp: Any, np: Any) -> None:
    import gguf

    family = _FAMILY.get(config["architectures"][0], "llama")
    gemma, gemma2 = family != "llama", family == "gemma2"
    n_head = int(config["num_attention_heads"])
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    n_embd = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or n_embd // n_head)
    writer = gguf.GGUFWriter(dst, family)
    writer.add_name(folder.name)
    writer.add_context_length(int(config.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(n_embd)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    if gemma:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    else:
        writer.add_rope_dimension_count(head_dim)
    if gemma2:
        writer.add_sliding_window(int(config.get("sliding_window") or 4096))
        writer.add_attn_logit_softcapping(float(config.get("attn_logit_softcapping") or 50.0))
        writer.add_final_logit_softcapping(float(config.get("final_logit_softcapping") or 30.0))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_tokenizer(writer, folder, sp, gguf)

    def f32(name: str) -> Any:
        return np.asarray(weights[name], dtype=np.float32)

    def norm(name: str) -> Any:
        return f32(name) + 1 if gemma else f32(name)

    writer.add_tensor("token_embd.weight", f32("model.embed_tokens.weight"))
    writer.add_tensor("output_norm.weight", norm("model.norm.weight"))
    if "lm_head.weight" in weights and not config.get("tie_word_embeddings", gemma):
        writer.add_tensor("output.weight", f32("lm_head.weight"))
    for i in range(int(config["num_hidden_layers"])):
        for hf, ours in (_GEMMA2_LAYER_NAMES if gemma2 else _LAYER_NAMES).items():
            name = f"model.layers.{i}.{hf}"
            tensor = norm(name) if hf.endswith("layernorm.weight") else f32(name)
            if ours == "attn_q.weight" and not gemma:
                tensor = permute(tensor, n_head)
            elif ours == "attn_k.weight" and not gemma:
                tensor = permute(tensor, n_head_kv)
            writer.add_tensor(f"blk.{i}.{ours}", tensor)
    write_out(writer)


def _add_tokenizer(writer: Any, folder: Path, sp: Any, gguf: Any) -> None:
    tokens, scores, kinds = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            kinds.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            kinds.append(gguf.TokenType.CONTROL)
        elif sp.is_unused(i):
            kinds.append(gguf.TokenType.UNUSED)
        elif sp.is_byte(i):
            kinds.append(gguf.TokenType.BYTE)
        else:
            kinds.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(kinds)
    for name, token_id in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("unk", sp.unk_id())):
        if token_id >= 0:
            getattr(writer, f"add_{name}_token_id")(token_id)
    settings = read_json(folder / "tokenizer_config.json")
    writer.add_add_bos_token(bool(settings.get("add_bos_token", True)))
    writer.add_add_eos_token(bool(settings.get("add_eos_token", False)))
    template = settings.get("chat_template")
    if isinstance(template, str):
        writer.add_chat_template(template)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; {} if it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
