"""`llamabin build KERAS_PRESET_DIR`: a keras-hub preset of Gemma or Gemma 2
(a GemmaBackbone, as `GemmaCausalLM.save_to_preset()` writes it) converted
to an F32 GGUF, then quantized and packed as a Hugging Face checkpoint is.

Why not keras-hub's own `export_to_transformers()`: it drops Gemma 2's
post-norms and soft-caps, and it needs keras, keras-hub and a backend
(hundreds of MB). This reads the preset's files directly: config.json for the
shape, model.weights.h5 (or its shards) with h5py, and the SentencePiece model
in assets/tokenizer/. The weights are renamed to Hugging Face's names, the
inverse of keras-hub's utils/transformers/convert_gemma.py, and written by
packager.convert, so the GGUF's layout is the one a Gemma checkpoint gets.

A Keras preset carries no chat template: the GGUF has none, and the built
file chats with the built-in Gemma template, chosen by its architecture
(templates._choose); --template overrides it as for any model.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from packager.convert import MiB, check_config, read_json, scratch_gguf, write_gguf
from packager.errors import BuildError
from payload.errors import UsageError

# keras-hub's class names, as config.json registers them.
SUPPORTED = ("GemmaBackbone",)
SUPPORTED_TEXT = "keras-hub's GemmaBackbone (Gemma and Gemma 2, as GemmaCausalLM saves them)"
VOCABULARY = Path("assets") / "tokenizer" / "vocabulary.spm"
WEIGHTS = "model.weights.h5"
SHARDS = "model.weights.json"  # keras-hub shards presets over 10 GB: a map of variable -> file
# keras-hub's Gemma has no length limit of its own (its rotary embedding
# takes any position); every Gemma and Gemma 2 was trained at 8192.
CONTEXT_LENGTH = 8192
# keras-hub's Gemma rotates with a fixed base (CachedGemmaAttention's RotaryEmbedding).
ROPE_THETA = 10000.0
# The Gemma 2 options that must all be on (or, for Gemma, all off): llama.cpp
# has an architecture for each set, none for a mix.
_GEMMA2_SWITCHES = ("use_post_ffw_norm", "use_post_attention_norm", "use_sliding_window_attention")
_GEMMA2_CAPS = ("attention_logit_soft_cap", "final_logit_soft_cap")
# Where a Gemma 2 of this many layers gets its query scale from n_embd / n_head
# instead of head_dim: llama.cpp's Gemma 2 27B (src/models/gemma2.cpp).
_LLAMA_CPP_27B_LAYERS = 46


def is_keras_preset(folder: Path) -> bool:
    """A folder keras saved: metadata.json names the Keras version, or
    config.json names a registered keras class."""
    return "keras_version" in read_json(folder / "metadata.json") or "registered_name" in read_json(
        folder / "config.json"
    )


def preset_class(folder: Path) -> str:
    """The class config.json was saved from, as keras registers it (keras_hub>GemmaBackbone)."""
    config = read_json(folder / "config.json")
    return str(config.get("registered_name") or config.get("class_name") or "an unknown class")


def hf_config(folder: Path) -> dict[str, Any]:
    """The preset's GemmaBackbone config as the Hugging Face config.json of
    the same model (what packager.convert reads); refuses anything else."""
    registered = preset_class(folder)
    if registered.split(">")[-1] not in SUPPORTED:
        raise UsageError(
            f"{folder} is a Keras preset of {registered}; llamabin converts Keras presets of {SUPPORTED_TEXT}"
        )
    keras = read_json(folder / "config.json").get("config")
    if not isinstance(keras, dict):
        raise UsageError(f"{folder}/config.json has no `config` object (the backbone's settings)")
    try:
        gemma2 = _family(folder, keras)
        config: dict[str, Any] = {
            "architectures": ["Gemma2ForCausalLM" if gemma2 else "GemmaForCausalLM"],
            "vocab_size": keras["vocabulary_size"],
            "hidden_size": keras["hidden_dim"],
            # keras-hub counts the gate and up projections together (convert_gemma.py doubles HF's)
            "intermediate_size": _halved(keras["intermediate_dim"]),
            "num_hidden_layers": keras["num_layers"],
            "num_attention_heads": keras["num_query_heads"],
            "num_key_value_heads": keras["num_key_value_heads"],
            "head_dim": keras["head_dim"],
            "rms_norm_eps": keras.get("layer_norm_epsilon", 1e-6),
            "rope_theta": ROPE_THETA,
            "max_position_embeddings": CONTEXT_LENGTH,
            "tie_word_embeddings": True,  # keras-hub's ReversibleEmbedding is always tied for Gemma
        }
        if gemma2:
            config |= {
                "sliding_window": keras["sliding_window_size"],
                "attn_logit_softcapping": keras["attention_logit_soft_cap"],
                "final_logit_softcapping": keras["final_logit_soft_cap"],
            }
    except KeyError as exc:
        raise UsageError(f"{folder}/config.json has no {exc.args[0]} (a GemmaBackbone setting)") from None
    hp = check_config(folder, config, KERAS_NAMES)
    n_embd, n_head, head_dim, n_layer = hp.n_embd, hp.n_head, hp.head_dim, hp.n_layer
    # Keras scales queries by 1/sqrt(head_dim), or 1/sqrt(hidden_dim // heads)
    # without query_head_dim_normalize; llama.cpp by the first, but for its
    # Gemma 2 27B (told by the layer count) the second.
    keras_scale = head_dim if keras.get("query_head_dim_normalize", True) else n_embd // n_head
    llama_scale = n_embd // n_head if gemma2 and n_layer == _LLAMA_CPP_27B_LAYERS else head_dim
    if keras_scale != llama_scale:
        raise UsageError(
            f"{folder}: llama.cpp would scale this model's queries by 1/sqrt({llama_scale}), Keras by"
            f" 1/sqrt({keras_scale}) (query_head_dim_normalize); llamabin cannot convert it"
        )
    return config


# The GemmaBackbone's own names for the settings check_config names as Hugging Face does.
KERAS_NAMES = {
    "vocab_size": "vocabulary_size",
    "hidden_size": "hidden_dim",
    "intermediate_size": "intermediate_dim (halved)",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_query_heads",
    "head_dim": "head_dim",
    "rms_norm_eps": "layer_norm_epsilon",
    "sliding_window": "sliding_window_size",
    "attn_logit_softcapping": "attention_logit_soft_cap",
    "final_logit_softcapping": "final_logit_soft_cap",
}


def _halved(value: object) -> object:
    """keras-hub's intermediate_dim is twice HF's; anything not a whole
    number is left for check_config to refuse."""
    return value // 2 if isinstance(value, int) and not isinstance(value, bool) else value


def _family(folder: Path, keras: dict[str, Any]) -> bool:
    """True for Gemma 2 (post-norms, soft-caps, sliding window), False for
    Gemma; a preset with only some of Gemma 2's options is neither."""
    on = [name for name in _GEMMA2_SWITCHES if keras.get(name)] + [name for name in _GEMMA2_CAPS if keras.get(name)]
    if not on:
        return False
    off = [name for name in (*_GEMMA2_SWITCHES, *_GEMMA2_CAPS) if name not in on]
    if off:
        raise UsageError(
            f"{folder} is a GemmaBackbone with {', '.join(on)} but not {', '.join(off)}: llama.cpp runs"
            " Gemma (none of them) and Gemma 2 (all of them)"
        )
    return True


def _decoder(i: int) -> str:
    # Keras names a saved layer after its class, numbering repeats in the
    # order the model holds them (saving_lib._get_unique_name).
    return "layers/gemma_decoder_block" + (f"_{i}" if i else "")


def hf_names(n_layer: int, gemma2: bool) -> dict[str, str]:
    """Each Hugging Face weight name -> the h5 group of the Keras variable it comes from."""
    names = {
        "model.embed_tokens.weight": "layers/reversible_embedding/vars",
        "model.norm.weight": "layers/rms_normalization/vars",
    }
    for i in range(n_layer):
        hf, k = f"model.layers.{i}.", _decoder(i)
        names |= {
            hf + "input_layernorm.weight": f"{k}/pre_attention_norm/vars",
            hf + "self_attn.q_proj.weight": f"{k}/attention/query_dense/vars",
            hf + "self_attn.k_proj.weight": f"{k}/attention/key_dense/vars",
            hf + "self_attn.v_proj.weight": f"{k}/attention/value_dense/vars",
            hf + "self_attn.o_proj.weight": f"{k}/attention/output_dense/vars",
            hf + "mlp.gate_proj.weight": f"{k}/gating_ffw/vars",
            hf + "mlp.up_proj.weight": f"{k}/gating_ffw_2/vars",
            hf + "mlp.down_proj.weight": f"{k}/ffw_linear/vars",
        }
        if gemma2:  # HF's Gemma 2 names Keras's post-attention norm as Gemma names the pre-ffw one
            names |= {
                hf + "post_attention_layernorm.weight": f"{k}/post_attention_norm/vars",
                hf + "pre_feedforward_layernorm.weight": f"{k}/pre_ffw_norm/vars",
                hf + "post_feedforward_layernorm.weight": f"{k}/post_ffw_norm/vars",
            }
        else:
            names[hf + "post_attention_layernorm.weight"] = f"{k}/pre_ffw_norm/vars"
    return names


def to_hf(name: str, kernel: Any, np: Any) -> Any:
    """A Keras kernel in Hugging Face's (out, in) layout: convert_gemma.py's hooks, inverted."""
    if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):  # (heads, hidden, head_dim)
        heads, hidden, head_dim = kernel.shape
        return np.ascontiguousarray(kernel.transpose(0, 2, 1).reshape(heads * head_dim, hidden))
    if name.endswith("o_proj.weight"):  # (heads, head_dim, hidden)
        heads, head_dim, hidden = kernel.shape
        return np.ascontiguousarray(kernel.transpose(2, 0, 1).reshape(hidden, heads * head_dim))
    if name.endswith(("gate_proj.weight", "up_proj.weight", "down_proj.weight")):  # (in, out)
        return np.ascontiguousarray(kernel.T)
    return kernel  # embeddings (vocab, hidden) and norm scales are as HF has them


def read_weights(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The preset's backbone weights under Hugging Face's names, as float32 numpy arrays."""
    try:
        import h5py
        import numpy as np
    except ImportError:
        raise UsageError("converting a Keras preset needs the convert extra: pip install 'llamabin[convert]'") from None
    gemma2 = config["architectures"][0] == "Gemma2ForCausalLM"
    files = _weight_files(folder)
    opened = []
    try:
        for file in files:
            try:
                opened.append(h5py.File(file, "r"))
            except OSError as exc:
                raise UsageError(f"{file} is not a Keras weights file (HDF5): {exc}") from None
        weights = {}
        for hf, group in hf_names(int(config["num_hidden_layers"]), gemma2).items():
            found = next((f[group] for f in opened if group in f), None)
            if not isinstance(found, h5py.Group) or "0" not in found or not isinstance(found["0"], h5py.Dataset):
                raise UsageError(f"{folder}: the weights have no {group} (for {hf}); is it a GemmaBackbone's?")
            if len(found) != 1:  # quantized kernels add a scale (vars/1); LoRA is merged on saving
                raise UsageError(
                    f"{folder}: {group} holds {len(found)} variables, not 1: llamabin converts unquantized presets"
                )
            try:
                weights[hf] = to_hf(hf, _float32(found["0"], f"{folder}: {group}", np), np)
            except (ValueError, TypeError, AttributeError) as exc:  # a kernel of another shape or kind
                raise UsageError(f"{folder}: {group} is not laid out as a GemmaBackbone's: {exc}") from None
        return weights
    finally:
        for f in opened:
            f.close()


def _weight_files(folder: Path) -> list[Path]:
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    if (folder / SHARDS).is_file():
        shards: set[str] = set()
        weight_map = read_json(folder / SHARDS).get("weight_map", {})
        if not isinstance(weight_map, dict):
            raise UsageError(f"{folder}/{SHARDS}: weight_map is not an object of file names")
        for value in weight_map.values():
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise UsageError(f"{folder}/{SHARDS}: weight_map holds {value!r}, not file names")
            shards.update(names)
        missing = sorted(name for name in shards if not (folder / name).is_file())
        if missing or not shards:
            raise UsageError(f"{folder}/{SHARDS} names weight files that are not there: {', '.join(missing) or 'none'}")
        return [folder / name for name in sorted(shards)]
    raise UsageError(f"{folder} has no {WEIGHTS} (the Keras preset's weights)")


def _float32(dataset: Any, where: str, np: Any) -> Any:
    raw = dataset[()]
    if dataset.attrs.get("dtype") == "bfloat16":
        # Keras marks bfloat16 with an attribute over 2-byte raw values; its
        # float32 has the same top 16 bits (no ml_dtypes needed).
        bits = np.ascontiguousarray(raw).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    if raw.dtype.kind != "f":
        raise UsageError(f"{where} is {raw.dtype}, not float: llamabin converts unquantized presets")
    return raw.astype(np.float32)


def check_preset(folder: Path) -> dict[str, Any]:
    """Everything that can be told before converting: the class, the config,
    the vocabulary and the weights files are there. The HF-style config."""
    config = hf_config(folder)
    if not (folder / VOCABULARY).is_file():
        raise UsageError(f"{folder} has no {VOCABULARY} (the SentencePiece vocabulary GemmaTokenizer saves)")
    _weight_files(folder)
    return config


@contextmanager
def converted(folder: Path, workdir: Path, say: Callable[[str], None]) -> Iterator[Path]:
    """The Keras preset `folder` as an F32 GGUF that exists inside the block."""
    config = check_preset(folder)
    try:
        import numpy as np
        import sentencepiece
    except ImportError:
        raise UsageError("converting a Keras preset needs the convert extra: pip install 'llamabin[convert]'") from None
    files = _weight_files(folder)
    need = sum(p.stat().st_size for p in files) * 2 + 64 * MiB  # bfloat16 weights become F32
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise BuildError(
            f"not enough disk space in {workdir} to convert: about {need // MiB} MiB, {free // MiB} MiB free"
        )
    say(f"converting {folder} (Keras {config['architectures'][0].removesuffix('ForCausalLM')}) to an F32 GGUF")
    weights = read_weights(folder, config)
    try:
        sp = sentencepiece.SentencePieceProcessor(model_proto=(folder / VOCABULARY).read_bytes())
    except (OSError, RuntimeError, TypeError) as exc:
        raise UsageError(f"{folder / VOCABULARY} is not a SentencePiece model: {exc}") from None
    if sp.vocab_size() != config["vocab_size"]:
        raise UsageError(
            f"{folder}: the vocabulary has {sp.vocab_size()} pieces, the model {config['vocab_size']} embeddings"
        )
    with scratch_gguf(workdir, folder, lambda dst: write_gguf(dst, folder, config, weights, sp, np)) as tmp:
        yield tmp
