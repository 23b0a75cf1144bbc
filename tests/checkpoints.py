"""A tiny Hugging Face checkpoint of the Llama architecture, made in the
test with numpy, safetensors and a SentencePiece tokenizer trained on the
README, and the reference forward pass (as transformers computes it) to
check a conversion against."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

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

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def make_checkpoint(folder: Path, shape: TinyLlama = TinyLlama(), seed: int = 0) -> dict[str, np.ndarray]:
    import sentencepiece as spm
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines() if len(line.strip()) > 20]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=shape.vocab,
        model_type="bpe",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    rng = np.random.default_rng(seed)
    h, f, d = shape.hidden, shape.ffn, shape.head_dim

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)

    weights = {"model.embed_tokens.weight": matrix(shape.vocab, h), "model.norm.weight": norm()}
    weights["lm_head.weight"] = matrix(shape.vocab, h)
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
    save_file(weights, str(folder / "model.safetensors"))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": shape.vocab,
        "hidden_size": h,
        "intermediate_size": f,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "rms_norm_eps": shape.eps,
        "rope_theta": shape.theta,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
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

    h = w["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        x = rms(h, w[p + "input_layernorm.weight"])
        q = rope((x @ w[p + "self_attn.q_proj.weight"].T).reshape(n, shape.heads, d))
        k = rope((x @ w[p + "self_attn.k_proj.weight"].T).reshape(n, shape.kv_heads, d))
        v = (x @ w[p + "self_attn.v_proj.weight"].T).reshape(n, shape.kv_heads, d)
        group = shape.heads // shape.kv_heads
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attn = np.einsum("hqk,khd->qhd", scores / scores.sum(-1, keepdims=True), v).reshape(n, -1)
        h = h + attn @ w[p + "self_attn.o_proj.weight"].T
        x = rms(h, w[p + "post_attention_layernorm.weight"])
        gate = x @ w[p + "mlp.gate_proj.weight"].T
        h = h + ((gate / (1 + np.exp(-gate))) * (x @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return rms(h, w["model.norm.weight"]) @ w["lm_head.weight"].T
