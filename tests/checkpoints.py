"""A tiny Hugging Face checkpoint of the Llama architecture, made in the
test with numpy, safetensors and a SentencePiece tokenizer trained on
tests/corpus.txt, and the reference forward pass (as transformers computes it) to
check a conversion against."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TinyLlama:
    vocab: int = 320
    hidden: int = 64
    ffn: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    eps: float = 1e-5
    theta: float = 10000.0
    family: str = "llama"  # "gemma": 1 + w norms, GELU, tied output; "gemma2": post-norms, soft-caps, a window too
    window: int = 4  # Gemma 2's sliding window on even layers, short enough to matter here
    attn_cap: float = 50.0
    final_cap: float = 30.0
    heads_wide: int = 0  # config.json's head_dim, when not hidden / heads (Mistral Nemo's layout)
    padded: int = 0  # embedding rows past the tokenizer's pieces; the first is an added token
    bf16: bool = False  # weights stored as bfloat16, as most published checkpoints are

    @property
    def gemma(self) -> bool:
        return self.family in ("gemma", "gemma2")

    @property
    def gemma2(self) -> bool:
        return self.family == "gemma2"

    @property
    def head_dim(self) -> int:
        return self.heads_wide or self.hidden // self.heads


def train_sentencepiece(size: int, **special: Any) -> bytes:
    """A BPE SentencePiece model of `size` pieces trained on tests/corpus.txt
    (fixed text: what the tiny models' scores are compared on must not move
    when the README does); `special` places the special pieces (SentencePieceTrainer's
    own arguments). Default: Llama's unk 0, bos 1, eos 2 and no pad."""
    import sentencepiece as spm

    lines = (Path(__file__).parent / "corpus.txt").read_text(encoding="utf-8").splitlines()
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=size,
        model_type="bpe",
        character_coverage=1.0,
        minloglevel=2,
        **({"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1} | special),
    )
    return model.getvalue()


def make_checkpoint(folder: Path, shape: TinyLlama = TinyLlama(), seed: int = 0) -> dict[str, np.ndarray]:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(train_sentencepiece(shape.vocab))
    rng = np.random.default_rng(seed)
    h, f, d = shape.hidden, shape.ffn, shape.head_dim

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)

    rows = shape.vocab + shape.padded
    weights = {"model.embed_tokens.weight": matrix(rows, h), "model.norm.weight": norm()}
    if not shape.gemma:  # Gemma ties the output to the embeddings
        weights["lm_head.weight"] = matrix(rows, h)
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        weights[p + "input_layernorm.weight"] = norm()
        weights[p + "self_attn.q_proj.weight"] = matrix(shape.heads * d, h)
        weights[p + "self_attn.k_proj.weight"] = matrix(shape.kv_heads * d, h)
        weights[p + "self_attn.v_proj.weight"] = matrix(shape.kv_heads * d, h)
        weights[p + "self_attn.o_proj.weight"] = matrix(h, shape.heads * d)
        weights[p + "post_attention_layernorm.weight"] = norm()
        weights[p + "mlp.gate_proj.weight"] = matrix(f, h)
        weights[p + "mlp.up_proj.weight"] = matrix(f, h)
        weights[p + "mlp.down_proj.weight"] = matrix(h, f)
        if shape.gemma2:
            weights[p + "pre_feedforward_layernorm.weight"] = norm()
            weights[p + "post_feedforward_layernorm.weight"] = norm()
    if shape.bf16:
        import ml_dtypes

        weights = {name: w.astype(ml_dtypes.bfloat16) for name, w in weights.items()}
        save_file(weights, str(folder / "model.safetensors"))
        weights = {name: w.astype(np.float32) for name, w in weights.items()}  # what the reference computes with
    else:
        save_file(weights, str(folder / "model.safetensors"))
    if shape.padded:
        (folder / "added_tokens.json").write_text(json.dumps({"<|added|>": shape.vocab}))
    config: dict[str, object] = {
        "architectures": [
            {"gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM"}.get(shape.family, "LlamaForCausalLM")
        ],
        "model_type": shape.family,
        "vocab_size": rows,
        "hidden_size": h,
        "intermediate_size": f,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "rms_norm_eps": shape.eps,
        "rope_theta": shape.theta,
        "max_position_embeddings": 256,
        "tie_word_embeddings": shape.gemma,
        "torch_dtype": "float32",
    }
    if shape.gemma or shape.heads_wide:
        config["head_dim"] = d
    if shape.gemma2:
        config |= {
            "query_pre_attn_scalar": d,
            "sliding_window": shape.window,
            "attn_logit_softcapping": shape.attn_cap,
            "final_logit_softcapping": shape.final_cap,
            "hidden_activation": "gelu_pytorch_tanh",
        }
    (folder / "config.json").write_text(json.dumps(config))
    template = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "chat_template": template}))
    return weights


def reference_logits(weights: dict[str, np.ndarray], ids: list[int], shape: TinyLlama = TinyLlama()) -> np.ndarray:
    """transformers' LlamaForCausalLM forward pass in float64: (tokens, vocab)."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    d, n = shape.head_dim, len(ids)

    def rms(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + shape.eps) * g

    inv = 1.0 / shape.theta ** (np.arange(0, d, 2) / d)
    angles = np.outer(np.arange(n), inv)
    cos, sin = np.cos(np.concatenate([angles, angles], -1)), np.sin(np.concatenate([angles, angles], -1))

    def rope(x: np.ndarray) -> np.ndarray:  # (n, heads, d), rotate-half as transformers does
        half = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1)
        return x * cos[:, None, :] + half * sin[:, None, :]

    def norm(x: np.ndarray, name: str) -> np.ndarray:  # Gemma scales by 1 + w
        return rms(x, 1 + w[name] if shape.gemma else w[name])

    def act(x: np.ndarray) -> np.ndarray:  # SiLU; Gemma's GELU, tanh-approximated
        if shape.gemma:
            return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
        return x / (1 + np.exp(-x))

    h = w["model.embed_tokens.weight"][ids] * (np.sqrt(shape.hidden) if shape.gemma else 1)
    causal = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        x = norm(h, p + "input_layernorm.weight")
        q = rope((x @ w[p + "self_attn.q_proj.weight"].T).reshape(n, shape.heads, d))
        k = rope((x @ w[p + "self_attn.k_proj.weight"].T).reshape(n, shape.kv_heads, d))
        v = (x @ w[p + "self_attn.v_proj.weight"].T).reshape(n, shape.kv_heads, d)
        group = shape.heads // shape.kv_heads
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d)
        mask = causal
        if shape.gemma2:
            scores = np.tanh(scores / shape.attn_cap) * shape.attn_cap
            if i % 2 == 0:  # sliding layers: a query sees the last `window` positions
                mask = causal + np.tril(np.full((n, n), -np.inf), -shape.window)
        scores = scores + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attn = np.einsum("hqk,khd->qhd", scores / scores.sum(-1, keepdims=True), v).reshape(n, -1)
        out = attn @ w[p + "self_attn.o_proj.weight"].T
        if shape.gemma2:
            h = h + norm(out, p + "post_attention_layernorm.weight")
            x = norm(h, p + "pre_feedforward_layernorm.weight")
        else:
            h = h + out
            x = norm(h, p + "post_attention_layernorm.weight")
        mlp = (act(x @ w[p + "mlp.gate_proj.weight"].T) * (x @ w[p + "mlp.up_proj.weight"].T)) @ w[
            p + "mlp.down_proj.weight"
        ].T
        h = h + (norm(mlp, p + "post_feedforward_layernorm.weight") if shape.gemma2 else mlp)
    head = w["model.embed_tokens.weight"] if shape.gemma else w["lm_head.weight"]
    logits = norm(h, "model.norm.weight") @ head.T
    return np.tanh(logits / shape.final_cap) * shape.final_cap if shape.gemma2 else logits
