"""A tiny random Phi-3 checkpoint (Phi3ForCausalLM: an architecture
packager/convert.py does not convert), made with transformers itself and a
SentencePiece tokenizer trained on tests/corpus.txt, and transformers' own scores
for a text, to check llama.cpp's converter against.

tests/test_llama_converter.py runs it as a program (`python -m
tests.phi3models make FOLDER`, `... score FOLDER ID...`): torch must stay
out of the test's own process, whose llama.cpp engine forks to try its CPU
variants, and a fork of a process that has run torch's thread pool hangs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from tests.checkpoints import train_sentencepiece

VOCAB = 320


def train_tokenizer(folder: Path, vocab: int = VOCAB) -> None:
    """tokenizer.model, trained as tests/checkpoints.py trains Llama's: the
    SentencePiece kind llama.cpp's Phi-3 converter reads (no BPE
    pre-tokenizer hash to match, no network). With Phi-3's <|endoftext|>:
    llama.cpp looks it up in any model whose name says phi3, and fails to
    load one without it."""
    model = train_sentencepiece(vocab, control_symbols=["<|endoftext|>"])
    (folder / "tokenizer.model").write_bytes(model)


def make_phi3(folder: Path, seed: int = 0) -> None:
    """A two-layer Phi-3 with grouped-query attention, random weights (a
    fixed seed), saved by transformers as safetensors in float32."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    train_tokenizer(folder)
    config = Phi3Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        original_max_position_embeddings=256,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        sliding_window=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config).to(torch.float32)
    # transformers' init draws weights with std 0.02: scores nearly flat
    # whatever the text. Wider ones make the layers (and a wrong conversion
    # of them) show in every score.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.1 * torch.randn_like(param))
            else:
                param.copy_(torch.randn_like(param) / param.shape[-1] ** 0.5)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer_config = {
        "tokenizer_class": "LlamaTokenizer",  # llama.cpp's Phi-3 converter reads it: GPT2Tokenizer means Phi-4
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))


def reference_logprobs(folder: Path, ids: list[int]) -> np.ndarray:
    """transformers' own forward pass of the checkpoint (float32, CPU): the
    log-probability of each next token of `ids`, len(ids) - 1 of them."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return np.array([float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1)])


def main(argv: list[str]) -> None:
    command, folder, *ids = argv
    if command == "make":
        make_phi3(Path(folder))
    elif command == "score":
        print(json.dumps(reference_logprobs(Path(folder), [int(i) for i in ids]).tolist()))
    else:
        raise SystemExit(f"usage: python -m tests.phi3models make|score FOLDER [ID...], not {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
