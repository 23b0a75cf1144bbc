"""The engine owns the model; front ends submit requests to it."""

from chat.engine.engine import Engine, EngineConfig
from chat.engine.generation import Generation
from chat.engine.types import (
    Chunk,
    EngineInfo,
    EngineStats,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenChoice,
    TokenLogprob,
    Usage,
)

__all__ = [
    "Chunk",
    "Engine",
    "EngineConfig",
    "EngineInfo",
    "EngineStats",
    "FinishReason",
    "Generation",
    "GenerationRequest",
    "SamplingParams",
    "TokenChoice",
    "TokenLogprob",
    "Usage",
]
