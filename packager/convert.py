"""`llamabin build CHECKPOINT_DIR`: a Hugging Face checkpoint of a Llama-
architecture, Gemma or Gemma 2 model with a SentencePiece tokenizer, converted to
an F32 GGUF with numpy and the `gguf` library, then quantized (--quant)
and packed.

Why not llama.cpp's convert_hf_to_gguf.py: it ships only in the sdist and
imports torch and transformers (gigabytes) for any model. For the layout
it writes for Llama and Gemma 2 (names, the rotary permutation of q/k,
Gemma's norm offsets, the tokenizer's pieces, scores and types) this file
follows it; other architectures are
refused with a pointer to it. Needs the `convert` extra (safetensors, ml_dtypes,
sentencepiece).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packager.errors import BuildError
from packager.gguf_write import scratch_path, write_out
from packager.numbers import positive, whole
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
    config = load_config(folder)
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
    for shard in shards:
        if not shard.is_file():  # a dangling link (a copied hub cache), or a folder
            raise UsageError(f"{shard} is not a readable file")
    try:
        check_config(folder, config)  # before minutes of reading weights
    except KeyError as exc:
        raise UsageError(f"{folder}: {exc.args[0]} is missing from its config.json") from None
    try:
        import ml_dtypes  # noqa: F401  (teaches numpy bfloat16, the dtype most checkpoints are stored in)
        import numpy as np
        import sentencepiece
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
    except ImportError:
        raise UsageError("converting a checkpoint needs the convert extra: pip install 'llamabin[convert]'") from None
    need = sum(p.stat().st_size for p in shards) * 2 + 64 * MiB  # F16/BF16 weights become F32
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise BuildError(
            f"not enough disk space in {workdir} to convert: about {need // MiB} MiB, {free // MiB} MiB free"
        )
    say(f"converting {folder} ({arch}) to an F32 GGUF")
    weights: dict[str, Any] = {}
    for shard in shards:
        try:
            tensors = load_file(str(shard))
        except (SafetensorError, OSError, ValueError, TypeError) as exc:
            raise UsageError(f"cannot read {shard}: {exc}") from None
        twice = sorted(tensors.keys() & weights.keys())
        if twice:  # one would silently win: which is the model's?
            raise UsageError(f"{twice[0]} is in {shard} and in another shard of {folder}")
        weights.update(tensors)
    try:
        sp = sentencepiece.SentencePieceProcessor(model_proto=tokenizer_model.read_bytes())
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        raise UsageError(f"{tokenizer_model} is not a SentencePiece model: {exc}") from None

    def write(dst: Path) -> None:
        try:
            write_gguf(dst, folder, config, weights, sp, np)
        except KeyError as exc:
            raise UsageError(f"{folder}: {exc.args[0]} is missing from its config.json or weights") from None
        except (ValueError, TypeError, ArithmeticError) as exc:  # what the checks above did not foresee
            raise BuildError(f"cannot convert {folder}: {exc}") from None

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

    hp = check_config(folder, config)
    gemma, gemma2 = hp.family != "llama", hp.family == "gemma2"
    n_vocab = _vocab_rows(weights, hp, sp.vocab_size())
    _check_shapes(weights, hp.where, _shapes(hp, n_vocab))
    writer = gguf.GGUFWriter(dst, hp.family)
    writer.add_name(folder.resolve().name)
    writer.add_context_length(hp.n_ctx)
    writer.add_embedding_length(hp.n_embd)
    writer.add_block_count(hp.n_layer)
    writer.add_feed_forward_length(hp.n_ff)
    if gemma or hp.head_dim != hp.n_embd // hp.n_head:  # Mistral Nemo's heads, say, are not hidden_size / heads wide
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    if not gemma:
        writer.add_rope_dimension_count(hp.head_dim)
    if gemma2:
        writer.add_sliding_window(hp.sliding_window)
        writer.add_attn_logit_softcapping(hp.attn_cap)
        writer.add_final_logit_softcapping(hp.final_cap)
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_head_kv)
    writer.add_layer_norm_rms_eps(hp.eps)
    writer.add_rope_freq_base(hp.rope_theta)
    if hp.rope_linear is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(hp.rope_linear)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_tokenizer(writer, folder, sp, gguf, n_vocab)

    def f32(name: str) -> Any:
        return np.asarray(weights[name], dtype=np.float32)

    def norm(name: str) -> Any:
        return f32(name) + 1 if gemma else f32(name)

    writer.add_tensor("token_embd.weight", f32("model.embed_tokens.weight"))
    writer.add_tensor("output_norm.weight", norm("model.norm.weight"))
    if "lm_head.weight" in weights and not config.get("tie_word_embeddings", gemma):
        writer.add_tensor("output.weight", f32("lm_head.weight"))
    for i in range(hp.n_layer):
        for hf, ours in (_GEMMA2_LAYER_NAMES if gemma2 else _LAYER_NAMES).items():
            name = f"model.layers.{i}.{hf}"
            tensor = norm(name) if hf.endswith("layernorm.weight") else f32(name)
            if ours == "attn_q.weight" and not gemma:
                tensor = permute(tensor, hp.n_head)
            elif ours == "attn_k.weight" and not gemma:
                tensor = permute(tensor, hp.n_head_kv)
            writer.add_tensor(f"blk.{i}.{ours}", tensor)
    write_out(writer)


@dataclass(frozen=True)
class Hparams:
    """config.json's numbers, checked (check_config)."""

    where: str  # config.json's path, for messages
    config: dict[str, Any]
    family: str  # the GGUF architecture: llama, gemma or gemma2
    n_layer: int
    n_head: int
    n_head_kv: int
    n_embd: int
    n_ff: int
    head_dim: int
    n_ctx: int
    eps: float
    rope_theta: float
    rope_linear: float | None  # linear RoPE scaling's factor
    sliding_window: int
    attn_cap: float
    final_cap: float


def check_config(folder: Path, config: dict[str, Any], names: dict[str, str] | None = None) -> Hparams:
    """config.json's numbers, each checked before any weight is read: a
    config that cannot describe a model fails here in one line, not in
    numpy or at the first start of the built file. `names` gives the
    settings' own names where the config came from elsewhere (Keras)."""
    where = f"{folder / 'config.json'}"
    say = names or {}

    def bad(key: str, value: object, what: str) -> UsageError:
        return UsageError(f"{where}: {say.get(key, key)} must be {what}, not {value!r}")

    def count(key: str, default: int | None = None, high: int = 2**31 - 1) -> int:
        value = config.get(key)
        if value is None:
            if default is None:
                raise KeyError(key)
            return default
        checked = whole(value, 1, high)
        if checked is None:
            raise bad(key, value, f"a whole number from 1 to {high}")
        return checked

    def real(key: str, default: float, value: object = None) -> float:
        value = config.get(key) if value is None else value
        if value is None:
            return default
        checked = positive(value)
        if checked is None:
            raise bad(key, value, "a positive number")
        return checked

    family = _FAMILY.get(config["architectures"][0], "llama")
    n_head = count("num_attention_heads", high=4096)
    n_head_kv = count("num_key_value_heads", default=n_head, high=n_head)
    if n_head % n_head_kv:
        raise UsageError(f"{where}: num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_head_kv}")
    n_embd = count("hidden_size")
    head_dim = count("head_dim", default=n_embd // n_head or None)
    if family == "llama" and head_dim % 2:
        raise UsageError(f"{where}: head_dim {head_dim} is odd; rotary embeddings rotate pairs")
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}  # transformers 5 names it the latter
    return Hparams(
        where=where,
        config=config,
        family=family,
        n_layer=count("num_hidden_layers", high=4096),
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_embd=n_embd,
        n_ff=count("intermediate_size"),
        head_dim=head_dim,
        n_ctx=count("max_position_embeddings", default=4096),
        eps=real("rms_norm_eps", 1e-6),
        rope_theta=real(
            "rope_theta",
            10000.0,
            config.get("rope_theta") or (rope.get("rope_theta") if isinstance(rope, dict) else None),
        ),
        rope_linear=_rope_linear(rope, where),
        sliding_window=count("sliding_window", default=4096),
        attn_cap=real("attn_logit_softcapping", 50.0),
        final_cap=real("final_logit_softcapping", 30.0),
    )


def _rope_linear(rope: object, where: str) -> float | None:
    """Linear RoPE scaling's factor; None for none. Dynamic scaling is left
    out, as llama.cpp's converter does (it is applied at run time only in
    transformers); the others are not converted here."""
    kind = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else rope
    if kind in (None, "default", "dynamic"):
        return None
    if kind != "linear" or not isinstance(rope, dict):
        raise UsageError(
            f"{where}: rope_scaling {kind!r} is not converted here (linear is):"
            " convert with llama.cpp's convert_hf_to_gguf.py and build the GGUF"
        )
    factor = positive(rope.get("factor"))
    if factor is None:
        raise UsageError(f"{where}: rope_scaling's factor must be a positive number, not {rope.get('factor')!r}")
    return factor


def _vocab_rows(weights: dict[str, Any], hp: Hparams, pieces: int) -> int:
    """The embedding's rows: the tokenizer's pieces, or more when the
    checkpoint pads its vocabulary (added tokens, a round number)."""
    rows = int(weights["model.embed_tokens.weight"].shape[0])
    declared = hp.config.get("vocab_size")
    if declared is not None and declared != rows:
        raise UsageError(f"{hp.where}: vocab_size is {declared!r}, but the embeddings have {rows} rows")
    if rows < pieces:
        raise UsageError(f"{hp.where}: the embeddings have {rows} rows, fewer than the tokenizer's {pieces} pieces")
    return rows


def _shapes(hp: Hparams, n_vocab: int) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape as config.json describes the model (HF's [out, in])."""
    n_embd, n_ff = hp.n_embd, hp.n_ff
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (n_vocab, n_embd),
        "lm_head.weight": (n_vocab, n_embd),
        "model.norm.weight": (n_embd,),
    }
    q, kv = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
    layer = {
        "input_layernorm.weight": (n_embd,),
        "post_attention_layernorm.weight": (n_embd,),
        "self_attn.q_proj.weight": (q, n_embd),
        "self_attn.k_proj.weight": (kv, n_embd),
        "self_attn.v_proj.weight": (kv, n_embd),
        "self_attn.o_proj.weight": (n_embd, q),
        "mlp.gate_proj.weight": (n_ff, n_embd),
        "mlp.up_proj.weight": (n_ff, n_embd),
        "mlp.down_proj.weight": (n_embd, n_ff),
    }
    if hp.family == "gemma2":
        layer |= {"pre_feedforward_layernorm.weight": (n_embd,), "post_feedforward_layernorm.weight": (n_embd,)}
    for i in range(hp.n_layer):
        shapes |= {f"model.layers.{i}.{name}": shape for name, shape in layer.items()}
    return shapes


def _check_shapes(weights: dict[str, Any], where: str, shapes: dict[str, tuple[int, ...]]) -> None:
    for name, shape in shapes.items():
        tensor = weights.get(name)
        if tensor is not None and tuple(tensor.shape) != shape:
            got, want = "x".join(map(str, tensor.shape)), "x".join(map(str, shape))
            raise UsageError(f"{name} is {got}, but {where} makes it {want}")


def _add_tokenizer(writer: Any, folder: Path, sp: Any, gguf: Any, n_vocab: int) -> None:
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
    # Rows past the tokenizer's pieces: the added tokens where
    # added_tokens.json places them, padding elsewhere (as llama.cpp's
    # convert_hf_to_gguf.py writes them).
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        kinds.append(gguf.TokenType.UNUSED)
    for text, token_id in read_json(folder / "added_tokens.json").items():
        if isinstance(token_id, int) and not isinstance(token_id, bool) and sp.vocab_size() <= token_id < n_vocab:
            tokens[token_id] = text.encode("utf-8")
            kinds[token_id] = gguf.TokenType.USER_DEFINED
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
    template = _chat_template(folder, settings)
    if template is not None:
        writer.add_chat_template(template)


def _chat_template(folder: Path, settings: dict[str, Any]) -> str | list[dict[str, str]] | None:
    """The checkpoint's chat template: chat_template.jinja, where newer
    checkpoints keep it, else tokenizer_config.json's (a text, or a list of
    named templates whose "default" is the one used)."""
    try:
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {folder / 'chat_template.jinja'}: {exc}") from None
    template = settings.get("chat_template")
    if isinstance(template, str):
        return template
    if isinstance(template, list) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str) for t in template
    ):
        return template
    return None


def load_config(folder: Path) -> dict[str, Any]:
    """config.json as a JSON object, or one line saying why it is not one."""
    path = folder / "config.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UsageError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path} is not a JSON object")
    return value


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; {} if it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}
