"""llamabin's runtime: the engine and its front ends."""

__version__ = "0.1.0"
