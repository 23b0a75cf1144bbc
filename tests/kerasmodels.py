"""Tiny random keras-hub Gemma and Gemma 2 models saved as presets, with a
SentencePiece vocabulary trained on tests/corpus.txt, and Keras's own scores to
check a conversion against. Needs the keras-test extra (keras-hub, keras,
jax): import it after pytest.importorskip("keras_hub")."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.checkpoints import train_sentencepiece

# Before keras is imported anywhere: jax is the backend the extra installs.
os.environ.setdefault("KERAS_BACKEND", "jax")


@dataclass(frozen=True)
class TinyGemma:
    vocab: int = 320
    hidden: int = 64
    ffn: int = 128  # per projection: keras-hub's intermediate_dim is twice this
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 32  # not hidden / heads, as in Gemma 7B: the query scale must follow head_dim
    gemma2: bool = False
    # Short enough to matter: the window on even layers, and caps the scores reach.
    window: int = 4
    attn_cap: float = 2.0
    final_cap: float = 3.0

    def backbone_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "vocabulary_size": self.vocab,
            "num_layers": self.layers,
            "num_query_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "hidden_dim": self.hidden,
            "intermediate_dim": 2 * self.ffn,
            "head_dim": self.head_dim,
        }
        if self.gemma2:
            config |= {
                "query_head_dim_normalize": True,  # as Gemma 2 2B and 9B have it
                "use_post_ffw_norm": True,
                "use_post_attention_norm": True,
                "attention_logit_soft_cap": self.attn_cap,
                "final_logit_soft_cap": self.final_cap,
                "use_sliding_window_attention": True,
                "sliding_window_size": self.window,
            }
        return config


def train_vocabulary(size: int) -> bytes:
    """A BPE SentencePiece model with Gemma's special pieces at Gemma's ids."""
    return train_sentencepiece(
        size,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
    )


def make_causal_lm(shape: TinyGemma = TinyGemma(), seed: int = 0) -> Any:
    """A random GemmaCausalLM of `shape`, its norm scales random too (keras
    starts them at 0, where a misplaced one would not show)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    tokenizer = keras_hub.models.GemmaTokenizer(proto=train_vocabulary(shape.vocab))
    backbone = keras_hub.models.GemmaBackbone(**shape.backbone_config())
    rng = np.random.default_rng(seed)
    for variable in backbone.weights:
        if variable.path.endswith("/scale"):
            variable.assign((0.3 * rng.standard_normal(variable.shape)).astype(np.float32))
        elif "token_embedding" in variable.path:
            # Larger than keras's initialisation, so the final soft-cap bites.
            variable.assign(rng.standard_normal(variable.shape).astype(np.float32))
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(tokenizer, sequence_length=64)
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=preprocessor)


def make_preset(folder: Path, shape: TinyGemma = TinyGemma(), seed: int = 0) -> Any:
    """`folder` as GemmaCausalLM.save_to_preset() writes it; the model."""
    lm = make_causal_lm(shape, seed)
    lm.save_to_preset(str(folder))
    return lm


def keras_logits(lm: Any, ids: list[int]) -> np.ndarray:
    """Keras's own scores for `ids`, soft-capped as GemmaCausalLM returns them: (tokens, vocab)."""
    inputs = {"token_ids": np.array([ids], dtype="int32"), "padding_mask": np.ones((1, len(ids)), dtype="int32")}
    return np.asarray(lm(inputs), dtype=np.float64)[0]
