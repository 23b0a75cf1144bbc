"""Gemma 3 270M (no chat template in its GGUF) gets Gemma's format exactly."""

from __future__ import annotations

from pathlib import Path

from chat.engine import Engine, EngineConfig
from chat.engine.llama import ModelSource
from templates import resolve

# The Gemma model card's prompt for one user turn (seed card, "Chat Template").
SEED_CARD_PROMPT = "<bos><start_of_turn>user\nWrite a hello world program<end_of_turn>\n<start_of_turn>model\n"


def test_gemma_gguf_gets_gemmas_format_byte_for_byte(gemma: Path) -> None:
    with Engine(EngineConfig(ModelSource(gemma), n_ctx=512)) as engine:
        assert "tokenizer.chat_template" not in engine.info.metadata
        template = resolve(None, engine.info.metadata, engine.bos_text, engine.eos_text)
        rendered = template.render([{"role": "user", "content": "Write a hello world program"}])
        assert template.name == "gemma"
        assert rendered == SEED_CARD_PROMPT
        assert template.stop == ("<end_of_turn>",)
        tokens = engine.tokenize(rendered)
        # One BOS, not two: the template writes it, so the tokenizer must not add another.
        assert tokens[0] == engine._model.bos and tokens[1] != engine._model.bos
        assert engine._model.token_text(tokens[1]) == "<start_of_turn>"


def test_gemma_system_prompt_goes_into_the_first_user_turn(gemma: Path) -> None:
    with Engine(EngineConfig(ModelSource(gemma), n_ctx=512)) as engine:
        template = resolve(None, engine.info.metadata, engine.bos_text, engine.eos_text)
        rendered = template.render(
            [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"}]
        )
        assert rendered == "<bos><start_of_turn>user\nYou are a pirate.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
