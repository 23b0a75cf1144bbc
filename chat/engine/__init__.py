"""The engine owns the model; front ends submit requests to it."""

from chat.engine.engine import Engine, EngineConfig, Generation
from chat.engine.types import Chunk, FinishReason, GenerationRequest, SamplingParams, Usage

__all__ = [
    "Chunk",
    "Engine",
    "EngineConfig",
    "FinishReason",
    "Generation",
    "GenerationRequest",
    "SamplingParams",
    "Usage",
]
